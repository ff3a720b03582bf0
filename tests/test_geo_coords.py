"""Tests of georag.geo.coords: latitude/longitude checks, unit vectors and haversine distances."""

from __future__ import annotations

import math

import numpy as np
import pytest

from georag.errors import GeoRagError
from georag.geo.coords import (
    EARTH_RADIUS_KM,
    check_latlon,
    from_unit_vectors,
    haversine_km,
    to_unit_vectors,
)

LONDON = (51.5074, -0.1278)
PARIS = (48.8566, 2.3522)


def _angle_km(lat1: float, lon1: float, lat2: float, lon2: float, radius: float = 6371.0) -> float:
    """Independent reference: the angle between the two unit vectors, by the math module's acos."""
    p1, l1, p2, l2 = map(math.radians, (lat1, lon1, lat2, lon2))
    dot = math.sin(p1) * math.sin(p2) + math.cos(p1) * math.cos(p2) * math.cos(l2 - l1)
    return radius * math.acos(max(-1.0, min(1.0, dot)))


def test_earth_radius() -> None:
    assert EARTH_RADIUS_KM == 6371.0


def test_check_latlon_returns_1d_float64_copies() -> None:
    lat_in = np.array([1, 2, 3], dtype=np.int32)
    lon_in = [10.0, -20.0, 180.0]
    lat, lon = check_latlon(lat_in, lon_in)
    assert lat.dtype == np.float64 and lon.dtype == np.float64
    assert lat.shape == (3,) and lon.shape == (3,)
    np.testing.assert_array_equal(lat, [1.0, 2.0, 3.0])
    float_in = np.array([5.0, 6.0])
    out, _ = check_latlon(float_in, [0.0, 0.0])
    out[0] = 99.0
    assert float_in[0] == 5.0  # a copy, never a view of the caller's array


def test_check_latlon_scalar_and_bounds_inclusive() -> None:
    lat, lon = check_latlon(90.0, -180.0)
    assert lat.shape == (1,) and lon.tolist() == [-180.0]
    check_latlon([-90.0, 90.0], [180.0, -180.0])


@pytest.mark.parametrize(
    ("lat", "lon", "index"),
    [
        ([0.0, 90.5, 0.0], [0.0, 0.0, 0.0], 1),
        ([0.0, 0.0, -91.0], [0.0, 0.0, 0.0], 2),
        ([0.0, 0.0], [180.1, 0.0], 0),
        ([0.0, 0.0], [0.0, -200.0], 1),
        ([0.0, float("nan")], [0.0, 0.0], 1),
        ([0.0, 0.0, 0.0], [0.0, 0.0, float("inf")], 2),
    ],
)
def test_check_latlon_names_first_bad_index(lat: list[float], lon: list[float], index: int) -> None:
    with pytest.raises(GeoRagError, match=rf"photos: entry {index} "):
        check_latlon(lat, lon, "photos")


def test_check_latlon_shape_errors() -> None:
    with pytest.raises(GeoRagError, match="differ in length: 2 vs 3"):
        check_latlon([0.0, 1.0], [0.0, 1.0, 2.0])
    with pytest.raises(GeoRagError, match="1-D"):
        check_latlon(np.zeros((2, 2)), np.zeros((2, 2)))
    with pytest.raises(GeoRagError, match="numbers"):
        check_latlon(["north"], [0.0])


def test_to_unit_vectors_known_points() -> None:
    xyz = to_unit_vectors([0.0, 0.0, 90.0, -90.0, 0.0], [0.0, 90.0, 0.0, 0.0, 180.0])
    expected = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, -1], [-1, 0, 0]], dtype=np.float64)
    assert xyz.shape == (5, 3) and xyz.dtype == np.float64
    np.testing.assert_allclose(xyz, expected, atol=1e-15)


def test_unit_vectors_are_unit_and_round_trip() -> None:
    rng = np.random.default_rng(7)
    lat = np.concatenate([rng.uniform(-89.9, 89.9, 1000), [0.0, 45.0, -45.0, 1e-9]])
    lon = np.concatenate([rng.uniform(-179.9, 179.9, 1000), [179.999, -179.999, 0.0, -1e-9]])
    xyz = to_unit_vectors(lat, lon)
    np.testing.assert_allclose(np.linalg.norm(xyz, axis=1), 1.0, rtol=1e-15)
    lat2, lon2 = from_unit_vectors(xyz)
    np.testing.assert_allclose(lat2, lat, atol=1e-10)
    np.testing.assert_allclose(lon2, lon, atol=1e-10)


def test_round_trip_date_line_and_poles() -> None:
    lat, lon = from_unit_vectors(to_unit_vectors([10.0, -10.0], [180.0, -180.0]))
    np.testing.assert_allclose(lat, [10.0, -10.0], atol=1e-12)
    # +180 and -180 are one meridian: either sign is correct, the magnitude must be 180.
    np.testing.assert_allclose(np.abs(lon), [180.0, 180.0], atol=1e-12)
    lat, lon = from_unit_vectors(to_unit_vectors([90.0, -90.0, 89.999999], [123.0, -45.0, 30.0]))
    np.testing.assert_allclose(lat, [90.0, -90.0, 89.999999], atol=1e-12)
    # Longitude is meaningless at an exact pole; the point itself must come back.
    np.testing.assert_allclose(to_unit_vectors(lat, lon)[:2], [[0, 0, 1], [0, 0, -1]], atol=1e-15)
    assert abs(lon[2] - 30.0) < 1e-6


def test_from_unit_vectors_normalises_and_rejects_bad_vectors() -> None:
    lat, lon = from_unit_vectors([0.0, 5.0, 5.0])
    np.testing.assert_allclose([lat[0], lon[0]], [45.0, 90.0], atol=1e-12)
    lat, lon = from_unit_vectors(np.array([[1e-300, 0.0, 0.0], [-3.0, 0.0, 0.0]]))
    np.testing.assert_allclose(lat, [0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(np.abs(lon), [0.0, 180.0], atol=1e-12)
    with pytest.raises(GeoRagError, match="vector 1 is zero"):
        from_unit_vectors([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    with pytest.raises(GeoRagError, match="not finite"):
        from_unit_vectors([[np.nan, 0.0, 1.0]])
    with pytest.raises(GeoRagError, match=r"\(n, 3\)"):
        from_unit_vectors(np.ones((4, 2)))


def test_haversine_london_paris() -> None:
    d = haversine_km(*LONDON, *PARIS)
    assert d.dtype == np.float64
    assert abs(float(d) - 343.5) < 0.5
    assert abs(float(d) - _angle_km(*LONDON, *PARIS)) < 1e-6


def test_haversine_antipodes_poles_and_zero() -> None:
    r = 6371.0
    np.testing.assert_allclose(haversine_km(0.0, 0.0, 0.0, 180.0), math.pi * r, rtol=1e-14)
    np.testing.assert_allclose(haversine_km(30.0, 40.0, -30.0, -140.0), math.pi * r, rtol=1e-12)
    np.testing.assert_allclose(haversine_km(90.0, 0.0, -90.0, 0.0), math.pi * r, rtol=1e-14)
    # Pole to equator is a quarter circle whatever the longitudes.
    np.testing.assert_allclose(haversine_km(90.0, 17.0, 0.0, -123.0), math.pi * r / 2, rtol=1e-14)
    # All longitudes at a pole are the same point.
    assert float(haversine_km(90.0, 0.0, 90.0, 150.0)) < 1e-9
    assert float(haversine_km(*LONDON, *LONDON)) == 0.0
    # Across the date line: 0.2 degrees of longitude on the equator, not 359.8.
    np.testing.assert_allclose(haversine_km(0.0, 179.9, 0.0, -179.9), 0.2 * math.pi / 180 * r, rtol=1e-9)
    np.testing.assert_allclose(haversine_km(0.0, 0.0, 0.0, 180.0, radius_km=1.0), math.pi, rtol=1e-14)


def test_haversine_tiny_distance_is_accurate() -> None:
    # One metre north along a meridian: arccos-based formulas lose this to rounding.
    step_deg = math.degrees(0.001 / 6371.0)
    np.testing.assert_allclose(haversine_km(45.0, 7.0, 45.0 + step_deg, 7.0), 0.001, rtol=1e-6)


def test_haversine_broadcasts_symmetric_and_matches_reference() -> None:
    rng = np.random.default_rng(3)
    lat1, lon1 = rng.uniform(-90, 90, 50), rng.uniform(-180, 180, 50)
    lat2, lon2 = rng.uniform(-90, 90, 40), rng.uniform(-180, 180, 40)
    d = haversine_km(lat1[:, None], lon1[:, None], lat2[None, :], lon2[None, :])
    assert d.shape == (50, 40)
    ref = np.array(
        [
            [_angle_km(a, b, c, e) for c, e in zip(lat2, lon2, strict=True)]
            for a, b in zip(lat1, lon1, strict=True)
        ]
    )
    np.testing.assert_allclose(d, ref, rtol=1e-9, atol=1e-6)
    d_rev = haversine_km(lat2[None, :], lon2[None, :], lat1[:, None], lon1[:, None])
    np.testing.assert_allclose(d, d_rev, rtol=1e-14)
    assert (d >= 0).all() and (d <= math.pi * 6371.0 + 1e-9).all()
    one_to_many = haversine_km(lat1[0], lon1[0], lat2, lon2)
    np.testing.assert_allclose(one_to_many, d[0], rtol=1e-14)


def test_haversine_rejects_bad_input() -> None:
    with pytest.raises(GeoRagError, match="second points: entry 1"):
        haversine_km(0.0, 0.0, [0.0, 95.0], [0.0, 0.0])
    with pytest.raises(GeoRagError, match="first points"):
        haversine_km(np.nan, 0.0, 0.0, 0.0)
    with pytest.raises(GeoRagError, match="broadcast"):
        haversine_km([0.0, 1.0], [0.0, 1.0], [0.0, 1.0, 2.0], [0.0, 1.0, 2.0])
    with pytest.raises(GeoRagError, match="radius_km"):
        haversine_km(0.0, 0.0, 1.0, 1.0, radius_km=0.0)
