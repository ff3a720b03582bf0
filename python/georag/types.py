"""Result types, the ground floor: image -> embedding -> Neighbors -> Retrieved -> Prompt -> Completion ->
Prediction. Every layer passes these; none of them imports anything of georag's."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True, repr=False)
class Neighbors:
    """Per query, the k most similar and k most dissimilar database rows, as every index returns them.

    All arrays are (B, k). Scores are cosine similarities. ``near_*`` is sorted by descending score,
    ``far_*`` by ascending score, ties by lower id. Where fewer than k rows were searchable, a row is
    padded with id -1 and score NaN. A store search also fills the rows' coordinates (degrees, NaN for
    padding); an index alone leaves them None.
    """

    near_ids: npt.NDArray[np.int64]
    near_scores: npt.NDArray[np.float32]
    far_ids: npt.NDArray[np.int64]
    far_scores: npt.NDArray[np.float32]
    near_lat: npt.NDArray[np.float64] | None = None
    """(B, k_near) latitudes of the near rows (a store search), else None."""
    near_lon: npt.NDArray[np.float64] | None = None
    far_lat: npt.NDArray[np.float64] | None = None
    far_lon: npt.NDArray[np.float64] | None = None

    def __len__(self) -> int:
        return int(self.near_ids.shape[0])

    @property
    def has_coordinates(self) -> bool:
        """True when the rows' coordinates are attached (a store search)."""
        return self.near_lat is not None

    def with_coordinates(
        self,
        near: tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]],
        far: tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]],
    ) -> Neighbors:
        """The same rows with their (lat, lon) attached."""
        return Neighbors(
            self.near_ids, self.near_scores, self.far_ids, self.far_scores, near[0], near[1], far[0], far[1]
        )

    def retrieved(self, i: int, id: str, embedding: npt.NDArray[np.float32] | None = None) -> Retrieved:
        """Query ``i``'s rows as one photo's `Retrieved` (coordinates must be attached)."""
        if self.near_lat is None or self.near_lon is None or self.far_lat is None or self.far_lon is None:
            raise ValueError("Neighbors.retrieved needs coordinates: search a GeoStore, not a bare index")
        return Retrieved(
            id,
            self.near_ids[i], self.near_scores[i], self.near_lat[i], self.near_lon[i],
            self.far_ids[i], self.far_scores[i], self.far_lat[i], self.far_lon[i],
            embedding,
        )  # fmt: skip

    def __repr__(self) -> str:
        b, kn = self.near_ids.shape
        kf = self.far_ids.shape[1]
        first = ""
        if b and kn and kf:
            first = (
                f", first query: nearest id {self.near_ids[0, 0]} ({self.near_scores[0, 0]:.4f}),"
                f" farthest id {self.far_ids[0, 0]} ({self.far_scores[0, 0]:.4f})"
            )
        return f"Neighbors(queries={b}, k_near={kn}, k_far={kf}{first})"


@dataclass(frozen=True, repr=False)
class Retrieved:
    """One photo and its k nearest and k farthest store rows (padding rows have id -1, NaN coordinates)."""

    id: str
    """The photo's id (its file name in a batch, the request's id when served)."""
    near_ids: npt.NDArray[np.int64]
    near_scores: npt.NDArray[np.float32]
    near_lat: npt.NDArray[np.float64]
    near_lon: npt.NDArray[np.float64]
    far_ids: npt.NDArray[np.int64]
    far_scores: npt.NDArray[np.float32]
    far_lat: npt.NDArray[np.float64]
    far_lon: npt.NDArray[np.float64]
    embedding: npt.NDArray[np.float32] | None = None
    """The photo's raw (d,) embedding, for routes that search again (vpr-guided: its submap); default None."""

    def valid_near(self) -> npt.NDArray[np.bool_]:
        """Which near slots hold a row (not padding)."""
        return self.near_ids >= 0

    def evidence(self) -> dict[str, Any]:
        """The neighbors as JSON-ready lists (for the JSONL record)."""

        def side(
            ids: np.ndarray, scores: np.ndarray, lat: np.ndarray, lon: np.ndarray
        ) -> list[dict[str, Any]]:
            return [
                {"row": int(i), "score": round(float(s), 5), "lat": float(a), "lon": float(b)}
                for i, s, a, b in zip(ids, scores, lat, lon, strict=True)
                if i >= 0
            ]

        return {
            "near": side(self.near_ids, self.near_scores, self.near_lat, self.near_lon),
            "far": side(self.far_ids, self.far_scores, self.far_lat, self.far_lon),
        }

    def __repr__(self) -> str:
        near, far = int(self.valid_near().sum()), int((self.far_ids >= 0).sum())
        return f"Retrieved({self.id!r}, near={near}, far={far})"


@dataclass(frozen=True, repr=False)
class Photo:
    """The photo as the LLM receives it: the file's bytes, or a downscaled JPEG (`georag.llm.image`)."""

    data: bytes
    mime: str = "image/jpeg"

    def __repr__(self) -> str:
        return f"Photo({len(self.data)} bytes, {self.mime})"


@dataclass(frozen=True, repr=False)
class Prompt:
    """What the model is asked: a system message, a user text, and the photo."""

    system: str
    """System message (role and rules); rendered by each backend in its own way."""
    user: str
    """The user's text; the image is shown BEFORE it (backends place their own image token or part)."""
    image: bytes
    """The photo, encoded (JPEG or PNG bytes as read from disk, or re-encoded)."""
    image_mime: str = "image/jpeg"
    """MIME type of ``image``; default image/jpeg."""

    def __repr__(self) -> str:
        sizes = f"system={len(self.system)} chars, user={len(self.user)} chars, image={len(self.image)} bytes"
        return f"Prompt({sizes})"


@dataclass(frozen=True)
class Completion:
    """The answers to one request."""

    texts: tuple[str, ...]
    """The n answer texts, prompt excluded."""
    seconds: float
    """Wall time of the request, retries included."""
    attempts: int = 1
    """Requests sent (1 + retries)."""
    echoed: bool = False
    """True when the server echoed the prompt and the client cut it off (a misconfigured server)."""


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
    """Agreement of the candidates in [0, 1] (see `georag.geo.select.agreement`); 0 for fallbacks."""
    strategy: str = ""
    """The route that produced it: "rag", "knn", "knn-medoid", "vpr-guided", "vpr-guided+rag"; "A>B" when
    route A fell back to B ("rag>knn", "vpr-guided>global")."""
    error: str | None = None
    """Why the photo has no prediction (unreadable image, ...), else None."""
    fallback: str | None = None
    """Why the requested strategy fell back to retrieval (every LLM answer failed or did not parse)."""
    evidence: dict[str, Any] = field(default_factory=dict)
    """Neighbors, prompt variants, raw answers, candidates, timings per stage (the JSONL record)."""

    @property
    def ok(self) -> bool:
        """True when the photo has coordinates."""
        return self.error is None

    @property
    def candidates(self) -> list[tuple[float, float]]:
        """The LLM's parsed answers as (lat, lon) pairs, in the order asked (empty for retrieval-only routes;
        vpr-guided's re-ranked gallery rows, dicts in ``evidence["candidates"]``, are not LLM answers)."""
        rag = self.evidence.get("rag")  # vpr-guided+rag keeps the rag step's evidence apart
        found = (rag if isinstance(rag, dict) else self.evidence).get("candidates") or []
        return [(float(c[0]), float(c[1])) for c in found if isinstance(c, list | tuple) and len(c) == 2]

    @property
    def regions(self) -> list[dict[str, Any]]:
        """Up to K places the LLM's answers crowd around, most populous first (`georag.geo.clusters`): each
        ``{"lat", "lon", "radius_km", "count", "share"}``, share of the samples asked ("70 % here, 20 %
        there"); empty for retrieval-only routes."""
        rag = self.evidence.get("rag")
        found = (rag if isinstance(rag, dict) else self.evidence).get("regions") or []
        return [dict(r) for r in found if isinstance(r, dict)]

    @property
    def neighbors(self) -> dict[str, list[dict[str, Any]]]:
        """The retrieved gallery rows: ``{"near": [...], "far": [...]}``, each ``{"row", "score", "lat",
        "lon"}``, near by descending score and far by ascending score (empty lists when none were kept)."""
        found = self.evidence.get("neighbors") or {}
        return {"near": list(found.get("near") or []), "far": list(found.get("far") or [])}

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
