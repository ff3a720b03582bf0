"""Per-photo metrics: the distance thresholds of the benchmark tables, accuracy within them, GeoScore."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import numpy.typing as npt

from georag.errors import EvaluationError
from georag.geo.coords import haversine_km

THRESHOLDS_KM = (1.0, 25.0, 200.0, 750.0, 2500.0)
"""Street / city / region / country / continent, as in IM2GPS, IM2GPS3k and YFCC4k tables."""

GEOSCORE_MAX = 5000.0
"""The GeoScore of an exact prediction (OSV-5M, after GeoGuessr)."""

GEOSCORE_SCALE_KM = 1492.7
"""The GeoScore's decay length: 5000 * exp(-d / 1492.7)."""


def geoscore(dist_km: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """The OSV-5M GeoScore of each distance: 5000 * exp(-d / 1492.7); an infinite distance (no prediction)
    scores 0."""
    d = np.asarray(dist_km, dtype=np.float64)
    return np.asarray(GEOSCORE_MAX * np.exp(-d / GEOSCORE_SCALE_KM), dtype=np.float64)


def threshold_key(km: float) -> str:
    """The JSON key of a threshold: "1", "25", "2500" for whole kilometres, else the shortest float, "0.5"."""
    value = float(km)
    return str(int(value)) if value.is_integer() else repr(value)


def check_thresholds(thresholds_km: Iterable[float]) -> tuple[float, ...]:
    """The thresholds as sorted unique floats; EvaluationError unless there is one and all are positive."""
    values = sorted({float(t) for t in thresholds_km})
    if not values:
        raise EvaluationError("give at least one distance threshold in km, e.g. 1,25,200,750,2500")
    bad = [t for t in values if not (math.isfinite(t) and t > 0)]
    if bad:
        raise EvaluationError(f"distance thresholds must be positive km, got {bad[0]!r}")
    return tuple(values)


def parse_thresholds(text: str) -> tuple[float, ...]:
    """Comma-separated kilometres ("1,25,200,750,2500") -> sorted unique thresholds."""
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise EvaluationError(f"thresholds {text!r}: write comma-separated km, e.g. 1,25,200,2500") from exc
    return check_thresholds(values)


def accuracy(
    pred_lat: npt.ArrayLike,
    pred_lon: npt.ArrayLike,
    true_lat: npt.ArrayLike,
    true_lon: npt.ArrayLike,
    thresholds_km: tuple[float, ...] = THRESHOLDS_KM,
) -> dict[float, float]:
    """Share of photos within each threshold (haversine, R = 6371 km). A photo without a prediction (NaN)
    counts as wrong: the denominator is every photo given."""
    pl, po = np.asarray(pred_lat, dtype=np.float64), np.asarray(pred_lon, dtype=np.float64)
    tl, to = np.asarray(true_lat, dtype=np.float64), np.asarray(true_lon, dtype=np.float64)
    n = tl.size
    if n == 0:
        return dict.fromkeys(thresholds_km, 0.0)
    ok = np.isfinite(pl) & np.isfinite(po)
    d = np.full(n, np.inf)
    d[ok] = haversine_km(pl[ok], po[ok], tl[ok], to[ok])
    return {t: float(np.mean(d <= t)) for t in thresholds_km}
