"""Prompt templates rendered exactly, variant parsing, and the evidence of the medoid selection."""

from __future__ import annotations

import math

import numpy as np
import pytest

from georag.config import PromptVariant, parse_variants
from georag.errors import GeoRagError
from georag.geo.coords import haversine_km
from georag.geo.select import agreement, medoid
from georag.llm.prompts import build_prompt

NEAR_LAT = np.array([48.85661, 48.8601, 51.5074, np.nan])
NEAR_LON = np.array([2.35222, 2.3499, -0.1278, np.nan])
FAR_LAT = np.array([-33.8688, 35.6762])
FAR_LON = np.array([151.2093, 139.6503])

SYSTEM = (
    "You are an expert in geography and in locating where photographs were taken. You look at the "
    "landscape, vegetation, architecture, signs, vehicles, people and weather in a photo and estimate its "
    "GPS coordinates as precisely as you can."
)


def test_rag_prompt_is_rendered_exactly() -> None:
    p = build_prompt(
        PromptVariant("rag", 2, 1),
        b"jpeg",
        near_lat=NEAR_LAT,
        near_lon=NEAR_LON,
        far_lat=FAR_LAT,
        far_lon=FAR_LON,
    )
    assert p.system == SYSTEM
    assert p.user == (
        "Where was this photo taken? Estimate its GPS coordinates.\n"
        "For reference, these are the GPS coordinates (latitude, longitude) of 2 photos that look SIMILAR to "
        "this one: (48.8566, 2.3522), (48.8601, 2.3499).\n"
        "These are the GPS coordinates (latitude, longitude) of 1 photos that look DISSIMILAR to this one; "
        "your answer should be far from them: (-33.8688, 151.2093).\n"
        'Answer with exactly one JSON object and nothing else, in this format: {"latitude": <float>, '
        '"longitude": <float>}'
    )
    assert p.image == b"jpeg" and p.image_mime == "image/jpeg"


def test_padding_is_skipped_and_empty_blocks_are_left_out() -> None:
    p = build_prompt(PromptVariant("rag", 16, 0), b"x", near_lat=NEAR_LAT, near_lon=NEAR_LON)
    assert "of 3 photos that look SIMILAR" in p.user and "nan" not in p.user.lower()
    assert "DISSIMILAR" not in p.user
    zero = build_prompt(PromptVariant("zero", 0, 0), b"x", near_lat=NEAR_LAT, near_lon=NEAR_LON)
    assert zero.user == (
        "Where was this photo taken? Estimate its GPS coordinates.\n"
        'Answer with exactly one JSON object and nothing else, in this format: {"latitude": <float>, '
        '"longitude": <float>}'
    )


def test_variants_parse_and_bad_ones_say_how_to_write_them() -> None:
    assert parse_variants("rag:16:16, zero,rag:5:0") == (
        PromptVariant("rag", 16, 16),
        PromptVariant("zero", 0, 0),
        PromptVariant("rag", 5, 0),
    )
    assert [str(v) for v in parse_variants("zero,rag:10:10")] == ["zero", "rag:10:10"]
    for bad in ("rag:16", "rag:a:b", "knn", ""):
        with pytest.raises(GeoRagError, match="rag:K_NEAR:K_FAR"):
            parse_variants(bad)


def _brute_medoid(lat: np.ndarray, lon: np.ndarray, pull_lat: np.ndarray, pull_lon: np.ndarray) -> int:
    sums = [
        sum(float(haversine_km(a, b, c, d)) for c, d in zip(pull_lat, pull_lon, strict=True))
        for a, b in zip(lat, lon, strict=True)
    ]
    return int(np.argmin(sums))


def test_medoid_matches_brute_force_and_ignores_an_outlier() -> None:
    rng = np.random.default_rng(3)
    for _ in range(20):
        lat, lon = rng.uniform(-80, 80, 9), rng.uniform(-180, 180, 9)
        assert medoid(lat, lon) == _brute_medoid(lat, lon, lat, lon)
        plat, plon = rng.uniform(-80, 80, 5), rng.uniform(-180, 180, 5)
        both_lat, both_lon = np.concatenate([lat, plat]), np.concatenate([lon, plon])
        assert medoid(lat, lon, also_lat=plat, also_lon=plon) == _brute_medoid(lat, lon, both_lat, both_lon)
    # Four answers around Paris and one in Sydney: the consensus is in Paris, and is one of the answers.
    lat = np.array([48.85, 48.86, -33.87, 48.84, 48.87])
    lon = np.array([2.35, 2.34, 151.21, 2.36, 2.33])
    chosen = medoid(lat, lon)
    assert chosen != 2 and math.isclose(lat[chosen], 48.85, abs_tol=0.02)
    assert agreement(lat, lon, chosen, asked=5) == 0.8
    assert agreement(lat, lon, chosen, asked=10) == 0.4  # unparsed samples count against it
    with pytest.raises(ValueError, match="no candidates"):
        medoid([], [])
