"""Accuracy of predictions: the share within 1 / 25 / 200 / 750 / 2500 km of the truth (great circle)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from georag.geo.coords import haversine_km

THRESHOLDS_KM = (1.0, 25.0, 200.0, 750.0, 2500.0)
"""Street / city / region / country / continent, as in IM2GPS, IM2GPS3k and YFCC4k tables."""


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
