"""The geodesic medoid of candidate coordinates, their pairwise distances, and a confidence from agreement.

The selection rules that use them, chosen by name, are `georag.geo.selection`.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from georag.geo.coords import haversine_km

AGREE_KM = 100.0
"""Candidates within this great-circle distance of the chosen one count as agreeing (default 100 km)."""


def medoid(
    lat: npt.ArrayLike,
    lon: npt.ArrayLike,
    *,
    also_lat: npt.ArrayLike | None = None,
    also_lon: npt.ArrayLike | None = None,
) -> int:
    """Index of the candidate with the least sum of great-circle distances to all candidates.

    The geodesic medoid is the consensus of several answers: unlike a mean of coordinates it is always one
    of the answers, and an outlier (another continent) cannot drag it into the sea. ``also_lat/also_lon``
    add points that pull on the choice without being candidates (e.g. the retrieved neighbors). Ties go to
    the earlier candidate; raises ValueError when there is no candidate.
    """
    la = np.asarray(lat, dtype=np.float64).ravel()
    lo = np.asarray(lon, dtype=np.float64).ravel()
    if la.size == 0:
        raise ValueError("no candidates")
    pa, po = la, lo
    if also_lat is not None and also_lon is not None:
        pa = np.concatenate([la, np.asarray(also_lat, dtype=np.float64).ravel()])
        po = np.concatenate([lo, np.asarray(also_lon, dtype=np.float64).ravel()])
    d = haversine_km(la[:, None], lo[:, None], pa[None, :], po[None, :])
    return int(np.argmin(d.sum(axis=1)))


def agreement(
    lat: npt.ArrayLike, lon: npt.ArrayLike, chosen: int, asked: int, agree_km: float = AGREE_KM
) -> float:
    """Confidence in [0, 1]: the share of the ``asked`` samples whose answer lies within ``agree_km`` of the
    chosen one (the chosen one included). Samples that failed or did not parse count against it."""
    la = np.asarray(lat, dtype=np.float64).ravel()
    lo = np.asarray(lon, dtype=np.float64).ravel()
    if la.size == 0:
        return 0.0
    return agreement_at(la, lo, float(la[chosen]), float(lo[chosen]), asked, agree_km)


def agreement_at(
    lat: npt.ArrayLike,
    lon: npt.ArrayLike,
    at_lat: float,
    at_lon: float,
    asked: int,
    agree_km: float = AGREE_KM,
) -> float:
    """`agreement` around any point (at_lat, at_lon), e.g. a geometric median that is no candidate."""
    la = np.asarray(lat, dtype=np.float64).ravel()
    lo = np.asarray(lon, dtype=np.float64).ravel()
    if asked <= 0 or la.size == 0:
        return 0.0
    near = haversine_km(la, lo, at_lat, at_lon) <= agree_km
    return float(min(1.0, near.sum() / asked))


def pairwise_km(lat: npt.ArrayLike, lon: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """The (n, n) great-circle distances in km between the points (zero diagonal, symmetric)."""
    la = np.asarray(lat, dtype=np.float64).ravel()
    lo = np.asarray(lon, dtype=np.float64).ravel()
    return haversine_km(la[:, None], lo[:, None], la[None, :], lo[None, :])
