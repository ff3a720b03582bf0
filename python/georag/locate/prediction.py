"""Prediction: where one photo was taken, how sure, by which route, and the evidence behind it."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


@dataclass(repr=False)
class Prediction:
    """One photo's prediction. A failed photo has ``error`` set and NaN coordinates, never (0, 0)."""

    id: str
    """The image file name."""
    lat: float = math.nan
    """Predicted latitude in degrees (NaN when the photo failed)."""
    lon: float = math.nan
    """Predicted longitude in degrees (NaN when the photo failed)."""
    confidence: float = 0.0
    """Agreement of the candidates in [0, 1] (see `georag.strategies.select.agreement`); 0 for fallbacks."""
    strategy: str = ""
    """The route that produced it: "rag", "knn", "knn-medoid", "vpr-guided", "vpr-guided+rag"; "A>B" when
    route A fell back to B ("rag>knn", "vpr-guided>global")."""
    error: str | None = None
    """Why the photo has no prediction (unreadable image, ...), else None."""
    fallback: str | None = None
    """Why the requested strategy fell back to retrieval (every LLM answer failed or did not parse)."""
    evidence: dict[str, Any] = field(default_factory=dict)
    """Neighbours, prompt variants, raw answers, candidates, timings per stage (the JSONL record)."""

    @property
    def ok(self) -> bool:
        """True when the photo has coordinates."""
        return self.error is None

    def row(self) -> dict[str, Any]:
        """The CSV row: id, lat, lon, confidence, strategy, error, fallback (empty strings for None/NaN)."""
        ok = self.error is None and math.isfinite(self.lat)
        return {
            "id": self.id,
            "lat": f"{self.lat:.6f}" if ok else "",
            "lon": f"{self.lon:.6f}" if ok else "",
            "confidence": f"{self.confidence:.3f}" if ok else "",
            "strategy": self.strategy,
            "error": self.error or "",
            "fallback": self.fallback or "",
        }

    def record(self) -> dict[str, Any]:
        """The JSONL record: the CSV fields (null for missing) and the evidence."""
        ok = self.error is None and math.isfinite(self.lat)
        return {
            "id": self.id,
            "lat": self.lat if ok else None,
            "lon": self.lon if ok else None,
            "confidence": self.confidence if ok else None,
            "strategy": self.strategy,
            "error": self.error,
            "fallback": self.fallback,
            "evidence": self.evidence,
        }

    @classmethod
    def from_record(cls, rec: dict[str, Any]) -> Prediction:
        """Back from a JSONL record (resuming a run)."""
        return cls(
            id=str(rec["id"]),
            lat=math.nan if rec.get("lat") is None else float(rec["lat"]),
            lon=math.nan if rec.get("lon") is None else float(rec["lon"]),
            confidence=float(rec.get("confidence") or 0.0),
            strategy=str(rec.get("strategy", "")),
            error=rec.get("error"),
            fallback=rec.get("fallback"),
            evidence=dict(rec.get("evidence") or {}),
        )

    def __repr__(self) -> str:
        if self.error:
            return f"Prediction({self.id!r}, error={self.error!r})"
        fb = f", fallback={self.fallback!r}" if self.fallback else ""
        return (
            f"Prediction({self.id!r}, lat={self.lat:.4f}, lon={self.lon:.4f}, "
            f"confidence={self.confidence:.2f}, "
            f"strategy={self.strategy!r}{fb})"
        )
