"""Distances between predictions and truth: haversine on the R = 6371 km sphere, or the WGS-84 geodesic."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from georag.errors import EvaluationError, MissingDependencyError
from georag.geo.coords import EARTH_RADIUS_KM, check_latlon, haversine_km

DISTANCES = ("haversine", "geodesic")
"""haversine: the great circle on a sphere of radius 6371.0 km, what the benchmark papers used;
geodesic: the shortest path on the WGS-84 ellipsoid (Karney's algorithm, what GeoPy's geodesic gives)."""


def geodesic_km(
    lat1: npt.ArrayLike, lon1: npt.ArrayLike, lat2: npt.ArrayLike, lon2: npt.ArrayLike
) -> npt.NDArray[np.float64]:
    """WGS-84 geodesic distance in km between points 1 and 2 (degrees, 1-D arrays of one length).

    geographiclib (the library under GeoPy) solves one pair per call, so each distinct pair is solved once:
    benchmark predictions repeat (cell centres, the same truth photo location), which saves most calls.
    """
    try:
        from geographiclib.geodesic import Geodesic
    except ImportError as exc:  # pragma: no cover - geopy, a dependency, requires it
        raise MissingDependencyError("--distance geodesic needs geographiclib: pip install geopy") from exc
    la1, lo1 = check_latlon(lat1, lon1, "first points")
    la2, lo2 = check_latlon(lat2, lon2, "second points")
    if la1.shape != la2.shape:
        raise EvaluationError(f"point arrays differ in length: {la1.size} vs {la2.size}")
    if la1.size == 0:
        return np.zeros(0)
    pairs = np.stack([la1, lo1, la2, lo2], axis=1)
    unique, inverse = np.unique(pairs, axis=0, return_inverse=True)
    wgs84 = Geodesic.WGS84
    solved = np.array(
        [wgs84.Inverse(a, b, c, d, Geodesic.DISTANCE)["s12"] for a, b, c, d in unique.tolist()],
        dtype=np.float64,
    )
    return np.asarray(solved[inverse.reshape(-1)] / 1000.0, dtype=np.float64)


def distance_km(
    name: str, lat1: npt.ArrayLike, lon1: npt.ArrayLike, lat2: npt.ArrayLike, lon2: npt.ArrayLike
) -> npt.NDArray[np.float64]:
    """Distance in km by ``name`` ("haversine" or "geodesic", see DISTANCES) between 1-D point arrays."""
    if name == "haversine":
        return haversine_km(lat1, lon1, lat2, lon2, EARTH_RADIUS_KM)
    if name == "geodesic":
        return geodesic_km(lat1, lon1, lat2, lon2)
    raise EvaluationError(f"unknown distance {name!r}; choose one of {', '.join(DISTANCES)}")
