"""EvalReport: the scores of one predictions file against ground truth, and its JSON form."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from georag.evaluate.bootstrap import CI_LEVEL
from georag.evaluate.metrics import threshold_key

Interval = tuple[float, float]


@dataclass(frozen=True)
class Counts:
    """How the rows of the two files met."""

    n: int
    """The denominator: every truth row (``denominator="truth"``) or the scored ones (``"predicted"``)."""
    truth: int
    """Truth rows (after the reader dropped unusable ones)."""
    predictions: int
    """Rows in the predictions file (with an id)."""
    joined: int
    """Truth rows that have a prediction."""
    scored: int
    """Joined rows with usable coordinates: the rows the distances are measured on."""
    missing: int
    """Truth rows without any prediction (wrong at every threshold under ``denominator="truth"``)."""
    extra: int
    """Predictions whose id is not in the truth (ignored)."""
    failures: int
    """Joined predictions without usable coordinates (georag error, empty or invalid lat/lon)."""
    fallbacks: int
    """Joined predictions where georag fell back to retrieval (scored like the others)."""
    by_extension: int
    """Joined pairs whose ids matched only without an image extension ("x" and "x.jpg")."""


@dataclass(frozen=True, repr=False)
class Rows:
    """The denominator's rows, for plots and further analysis: NaN where a row has no prediction."""

    ids: tuple[str, ...]
    true_lat: npt.NDArray[np.float64]
    true_lon: npt.NDArray[np.float64]
    pred_lat: npt.NDArray[np.float64]
    pred_lon: npt.NDArray[np.float64]
    dist_km: npt.NDArray[np.float64]

    @property
    def scored(self) -> npt.NDArray[np.bool_]:
        """True where the row has a distance."""
        return np.isfinite(self.dist_km)

    def __repr__(self) -> str:
        return f"Rows({len(self.ids)} rows, {int(self.scored.sum())} scored)"


@dataclass(frozen=True, repr=False)
class EvalReport:
    """Accuracy within each threshold, error statistics and GeoScore of one predictions file."""

    thresholds_km: tuple[float, ...]
    accuracy: dict[float, float]
    """Share of the ``n`` denominator rows within each threshold."""
    mean_km: float
    """Mean error over the scored rows (NaN when none)."""
    median_km: float
    """Median error over the scored rows (NaN when none)."""
    geoscore: float
    """Mean GeoScore 5000 * exp(-d / 1492.7) over the ``n`` rows; a row without a prediction scores 0."""
    counts: Counts
    distance: str
    """"haversine" or "geodesic"."""
    denominator: str
    """"truth" or "predicted"."""
    accuracy_ci: dict[float, Interval] | None
    """95% percentile-bootstrap interval of each accuracy (None without resamples)."""
    median_ci: Interval | None
    """95% percentile-bootstrap interval of the median error (None without resamples)."""
    resamples: int
    seed: int
    missing_ids: tuple[str, ...]
    extra_ids: tuple[str, ...]
    failed_ids: tuple[str, ...]
    rows: Rows
    strict: bool = False
    """True when accuracy counted d < t (G3's convention), False for d <= t."""

    @property
    def n(self) -> int:
        """The denominator."""
        return self.counts.n

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict: n, accuracy (keys the thresholds in km as text, "1", "25", "0.5"), median_km,
        mean_km, missing (a count), geoscore, ci, counts and the id lists; NaN becomes null."""
        keys = [threshold_key(t) for t in self.thresholds_km]
        ci: dict[str, Any] | None = None
        if self.accuracy_ci is not None:
            ci = {
                "level": CI_LEVEL,
                "method": "percentile bootstrap",
                "resamples": self.resamples,
                "seed": self.seed,
                "accuracy": {
                    k: _pair(self.accuracy_ci[t]) for k, t in zip(keys, self.thresholds_km, strict=True)
                },
                "median_km": _pair(self.median_ci) if self.median_ci is not None else None,
            }
        return {
            "n": self.n,
            "accuracy": {k: self.accuracy[t] for k, t in zip(keys, self.thresholds_km, strict=True)},
            "median_km": _num(self.median_km),
            "mean_km": _num(self.mean_km),
            "missing": self.counts.missing,
            "geoscore": _num(self.geoscore),
            "ci": ci,
            "counts": asdict(self.counts),
            "thresholds_km": list(self.thresholds_km),
            "distance": self.distance,
            "accuracy_counts": "d < t" if self.strict else "d <= t",
            "denominator": self.denominator,
            "missing_ids": list(self.missing_ids),
            "extra_ids": list(self.extra_ids),
            "failed_ids": list(self.failed_ids),
        }

    def __repr__(self) -> str:
        acc = ", ".join(f"{threshold_key(t)} km: {100 * a:.1f}%" for t, a in self.accuracy.items())
        return (
            f"EvalReport(n={self.n}, accuracy={{{acc}}}, median_km={self.median_km:.1f}, "
            f"mean_km={self.mean_km:.1f}, geoscore={self.geoscore:.1f}, distance={self.distance!r}, "
            f"denominator={self.denominator!r}, missing={self.counts.missing}, "
            f"failures={self.counts.failures}, fallbacks={self.counts.fallbacks})"
        )


def _num(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _pair(interval: Interval) -> list[float | None]:
    return [_num(interval[0]), _num(interval[1])]
