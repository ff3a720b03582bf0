"""Coordinates on the sphere: latitude/longitude checks, unit vectors and great-circle distances."""

from __future__ import annotations

import logging

import numpy as np
import numpy.typing as npt

from georag.errors import InputError

log = logging.getLogger(__name__)

EARTH_RADIUS_KM = 6371.0  # the mean radius (IUGG); geolocation benchmarks report distances with it


def _first_bad(lat: npt.NDArray[np.float64], lon: npt.NDArray[np.float64]) -> int | None:
    bad = ~(np.isfinite(lat) & np.isfinite(lon) & (np.abs(lat) <= 90.0) & (np.abs(lon) <= 180.0))
    if not bad.any():
        return None
    return int(np.flatnonzero(bad.ravel())[0])


def check_latlon(
    lat: npt.ArrayLike, lon: npt.ArrayLike, what: str = "coordinates"
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Returns ``lat`` and ``lon`` as 1-D float64 copies after checking they are valid degrees.

    A scalar counts as one coordinate. Raises InputError when the two differ in length, are not 1-D,
    or when any latitude is outside [-90, 90], any longitude outside [-180, 180], or either is NaN/inf;
    the message names ``what`` and the first bad index.
    """
    try:
        la = np.array(lat, dtype=np.float64, ndmin=1)
        lo = np.array(lon, dtype=np.float64, ndmin=1)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{what}: latitude and longitude must be numbers ({exc})") from exc
    if la.ndim != 1 or lo.ndim != 1:
        raise InputError(f"{what}: latitude and longitude must be 1-D, got shapes {la.shape} and {lo.shape}")
    if la.shape != lo.shape:
        raise InputError(f"{what}: latitude and longitude differ in length: {la.size} vs {lo.size}")
    i = _first_bad(la, lo)
    if i is not None:
        raise InputError(
            f"{what}: entry {i} is not a valid latitude/longitude in degrees: ({la[i]!r}, {lo[i]!r})"
        )
    return la, lo


def to_unit_vectors(lat: npt.ArrayLike, lon: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """The (n, 3) unit-sphere points of degrees ``lat``/``lon``: x toward (0, 0), z toward the north pole.

    Close points on the globe are close vectors here, also across the date line and near the poles,
    which is what makes them the right space for clustering and nearest-centre search.
    """
    la, lo = check_latlon(lat, lon)
    phi = np.radians(la)
    lam = np.radians(lo)
    cos_phi = np.cos(phi)
    return np.stack([cos_phi * np.cos(lam), cos_phi * np.sin(lam), np.sin(phi)], axis=1)


def from_unit_vectors(
    xyz: npt.ArrayLike,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Latitude and longitude in degrees of (n, 3) vectors (or one (3,) vector), normalised first.

    Longitude is in [-180, 180]; at a pole, where it is undefined, it is whatever ``atan2`` gives
    (0 for an exact pole). Raises InputError for a wrong shape, a non-finite or a zero vector.
    """
    arr = np.array(xyz, dtype=np.float64, ndmin=2)
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise InputError(f"unit vectors must have shape (n, 3), got {np.shape(xyz)}")
    if not np.isfinite(arr).all():
        i = int(np.flatnonzero(~np.isfinite(arr).all(axis=1))[0])
        raise InputError(f"vector {i} is not finite: {arr[i].tolist()}")
    scale = np.abs(arr).max(axis=1) if arr.size else np.zeros(0)
    if (scale == 0).any():
        i = int(np.flatnonzero(scale == 0)[0])
        raise InputError(f"vector {i} is zero and has no direction on the sphere")
    # Dividing by the largest component first keeps the squares in the norm from under- or overflowing.
    arr = arr / scale[:, None]
    x, y, z = (arr / np.linalg.norm(arr, axis=1)[:, None]).T
    # atan2 of z against the horizontal length keeps full precision near the poles, where arcsin(z) loses it.
    lat = np.degrees(np.arctan2(z, np.hypot(x, y)))
    lon = np.degrees(np.arctan2(y, x))
    return lat, lon


def haversine_km(
    lat1: npt.ArrayLike,
    lon1: npt.ArrayLike,
    lat2: npt.ArrayLike,
    lon2: npt.ArrayLike,
    radius_km: float = EARTH_RADIUS_KM,
) -> npt.NDArray[np.float64]:
    """Great-circle distance in km between points 1 and 2 (degrees), broadcasting like numpy.

    Uses the haversine form, accurate for tiny distances; the clip keeps rounding from pushing the
    argument of arcsin past 1 for near-antipodal points. Raises InputError for invalid coordinates,
    shapes that do not broadcast, or a radius that is not positive and finite.
    """
    if not (np.isfinite(radius_km) and radius_km > 0):
        raise InputError(f"radius_km must be positive and finite, got {radius_km!r}")
    try:
        p1, l1, p2, l2 = np.broadcast_arrays(
            *(np.asarray(v, dtype=np.float64) for v in (lat1, lon1, lat2, lon2))
        )
    except ValueError as exc:
        raise InputError(f"coordinate arrays do not broadcast together: {exc}") from exc
    for label, la, lo in (("first", p1, l1), ("second", p2, l2)):
        i = _first_bad(la, lo)
        if i is not None:
            raise InputError(
                f"{label} points: entry {i} is not a valid latitude/longitude in degrees: "
                f"({la.ravel()[i]!r}, {lo.ravel()[i]!r})"
            )
    phi1, phi2 = np.radians(p1), np.radians(p2)
    dphi = phi2 - phi1
    dlam = np.radians(l2 - l1)
    a = np.sin(dphi / 2) ** 2 + np.cos(phi1) * np.cos(phi2) * np.sin(dlam / 2) ** 2
    return np.asarray(2.0 * radius_km * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0))), dtype=np.float64)
