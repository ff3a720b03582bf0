"""Tests of georag.evaluate.plots: CDF numbers, date-line segments, PNG files and missing dependencies."""

from __future__ import annotations

import csv
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from georag.errors import EvaluationError, MissingDependencyError
from georag.evaluate import plots
from georag.evaluate.plots import (
    CDF_FIGSIZE,
    DPI,
    MAP_FIGSIZE,
    cdf_at,
    land_rings,
    plot_error_cdf,
    plot_world_map,
    threshold_label,
    track_segments,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
IM2GPS3K_CSV = (
    Path(__file__).resolve().parents[1].parent / "shared" / "data" / "im2gps3k" / "im2gps3k_places365.csv"
)
THRESHOLDS = (1.0, 25.0, 200.0, 750.0, 2500.0)


def _pixels(figsize: tuple[float, float]) -> tuple[int, int]:
    return round(figsize[0] * DPI), round(figsize[1] * DPI)


def _assert_png(path: Path, size: tuple[int, int]) -> None:
    image_module = pytest.importorskip("PIL.Image")
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    with image_module.open(path) as image:
        assert image.format == "PNG"
        assert image.size == size


@pytest.fixture
def fresh_outlines() -> Iterator[None]:
    """land_rings() is cached per process: tests that swap the countryinfo module start and end uncached."""
    land_rings.cache_clear()
    yield
    land_rings.cache_clear()


# --- cdf_at and the threshold labels --------------------------------------------------------------


def test_cdf_at_counts_missing_predictions_in_the_denominator() -> None:
    dist = [0.5, 10.0, 10.0, 30.0, 300.0, np.nan, np.inf, 5000.0]
    got = cdf_at(dist, [1.0, 10.0, 25.0, 200.0, 750.0, 2500.0, 20_000.0])
    np.testing.assert_array_equal(got, np.array([1, 3, 3, 4, 5, 5, 6]) / 8)


def test_cdf_at_is_inclusive_and_zero_when_nothing_was_predicted() -> None:
    assert cdf_at([25.0, 25.0, 26.0, 0.0], [25.0]).tolist() == [0.75]
    assert cdf_at([np.nan, np.nan], THRESHOLDS).tolist() == [0.0] * len(THRESHOLDS)


@pytest.mark.parametrize(
    ("dist", "thresholds", "message"),
    [
        ([], [25.0], "no distances"),
        ([1.0, -2.0], [25.0], ">= 0"),
        ([1.0], [0.0], "> 0"),
        ([1.0], [np.nan], "> 0"),
        ([[1.0, 2.0]], [25.0], "1-D"),
        (["far"], [25.0], "numbers"),
    ],
)
def test_cdf_at_rejects_bad_input(dist: list[object], thresholds: list[float], message: str) -> None:
    with pytest.raises(EvaluationError, match=message):
        cdf_at(dist, thresholds)


def test_threshold_label() -> None:
    assert threshold_label(25.0, 0.28) == "25 km: 28.0 %"
    assert threshold_label(2500.0, 0.9996) == "2,500 km: 100.0 %"
    assert threshold_label(0.5, 0.0) == "0.5 km: 0.0 %"


# --- track_segments -------------------------------------------------------------------------------


def test_a_pair_away_from_the_date_line_is_one_segment() -> None:
    segs = track_segments([48.85], [2.35], [40.71], [-74.0])
    np.testing.assert_allclose(segs, [[[2.35, 48.85], [-74.0, 40.71]]])


@pytest.mark.parametrize(
    ("lon1", "lon2", "first", "second"),
    [
        (170.0, -170.0, [[170.0, 10.0], [180.0, 15.0]], [[-180.0, 15.0], [-170.0, 20.0]]),  # going east
        (-170.0, 170.0, [[-170.0, 10.0], [-180.0, 15.0]], [[180.0, 15.0], [170.0, 20.0]]),  # going west
        (175.0, 195.0, [[175.0, 10.0], [180.0, 12.5]], [[-180.0, 12.5], [-165.0, 20.0]]),  # 195 wraps to -165
    ],
)
def test_a_date_line_pair_is_split_at_180(
    lon1: float, lon2: float, first: list[list[float]], second: list[list[float]]
) -> None:
    segs = track_segments([10.0], [lon1], [20.0], [lon2])
    assert segs.shape == (2, 2, 2)
    np.testing.assert_allclose(segs, [first, second])


def test_pairs_exactly_half_a_world_apart_are_joined_directly() -> None:
    segs = track_segments([0.0], [-90.0], [0.0], [90.0])
    np.testing.assert_allclose(segs, [[[-90.0, 0.0], [90.0, 0.0]]])


def test_a_point_on_the_date_line_gives_no_zero_length_part() -> None:
    segs = track_segments([0.0], [180.0], [5.0], [170.0])  # 180 wraps to -180, the shorter way is west
    np.testing.assert_allclose(segs, [[[180.0, 0.0], [170.0, 5.0]]])


def test_segments_skip_missing_coordinates_and_keep_input_order() -> None:
    true_lat = [0.0, 10.0, np.nan, 30.0]
    true_lon = [0.0, 170.0, 0.0, 50.0]
    pred_lat = [np.nan, 20.0, 5.0, 35.0]
    pred_lon = [np.nan, -170.0, 5.0, 55.0]
    segs = track_segments(true_lat, true_lon, pred_lat, pred_lon)
    np.testing.assert_allclose(
        segs,
        [
            [[170.0, 10.0], [180.0, 15.0]],
            [[-180.0, 15.0], [-170.0, 20.0]],
            [[50.0, 30.0], [55.0, 35.0]],
        ],
    )


def test_segments_reject_arrays_of_different_lengths() -> None:
    with pytest.raises(EvaluationError, match="differ in length"):
        track_segments([0.0, 1.0], [0.0, 1.0], [0.0], [0.0, 1.0])


# --- the PNG files --------------------------------------------------------------------------------


def test_plot_error_cdf_writes_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    rng = np.random.default_rng(3)
    dist = np.concatenate([rng.lognormal(5.0, 2.0, 500), [0.0, 0.01, 25_000.0, np.nan, np.inf]])
    out = plot_error_cdf(dist, THRESHOLDS, tmp_path / "sub" / "cdf.png", title="test")
    assert out == tmp_path / "sub" / "cdf.png"
    _assert_png(out, _pixels(CDF_FIGSIZE))


def test_plot_error_cdf_without_predictions(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out = plot_error_cdf([np.nan] * 4, [25.0], str(tmp_path / "cdf.png"))
    _assert_png(out, _pixels(CDF_FIGSIZE))


def test_plot_world_map_writes_a_png_with_missing_and_date_line_pairs(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    pytest.importorskip("countryinfo")
    true_lat = [48.85, 10.0, -33.9, np.nan, 64.1]
    true_lon = [2.35, 170.0, 18.4, 0.0, -21.9]
    pred_lat = [40.7, 20.0, np.nan, 1.0, 64.0]
    pred_lon = [-74.0, -170.0, np.nan, 1.0, 200.0]
    out = plot_world_map(true_lat, true_lon, pred_lat, pred_lon, tmp_path / "map.png", title="test")
    assert out == tmp_path / "map.png"
    _assert_png(out, _pixels(MAP_FIGSIZE))


def test_plot_world_map_samples_lines_deterministically(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    pytest.importorskip("countryinfo")
    rng = np.random.default_rng(5)
    lat, lon = rng.uniform(-60, 70, 300), rng.uniform(-180, 180, 300)
    a = plot_world_map(lat, lon, lat + 3, lon - 4, tmp_path / "a.png", max_lines=50)
    b = plot_world_map(lat, lon, lat + 3, lon - 4, tmp_path / "b.png", max_lines=50)
    assert a.read_bytes() == b.read_bytes()
    c = plot_world_map(lat, lon, lat + 3, lon - 4, tmp_path / "c.png", max_lines=0)
    assert c.read_bytes() != a.read_bytes()
    with pytest.raises(EvaluationError, match="max_lines"):
        plot_world_map(lat, lon, lat, lon, tmp_path / "d.png", max_lines=-1)


def _rgb_around(fig: Any, lon: float, lat: float, radius: int) -> np.ndarray:
    """The rendered figure's RGB pixels within ``radius`` pixels of (lon, lat), as (k, 3) ints."""
    fig.canvas.draw()
    rgba = np.asarray(fig.canvas.buffer_rgba())
    x, y = fig.axes[0].transData.transform((lon, lat))
    row, col = rgba.shape[0] - int(np.rint(y)), int(np.rint(x))  # display y runs up, image rows down
    box = rgba[row - radius : row + radius + 1, col - radius : col + radius + 1, :3]
    return box.reshape(-1, 3).astype(int)


def _count(pixels: np.ndarray, colour: str) -> int:
    r, g, b = pixels.T
    if colour == "red":
        return int(np.count_nonzero((r > 170) & (g < 110) & (b < 110)))
    return int(np.count_nonzero((b > 140) & (r < 110) & (b - g > 40)))  # tab:blue is (31, 119, 180)


def test_the_world_map_shows_a_prediction_on_its_truth_and_the_truth_too() -> None:
    """The bug this replaces: truth dots drawn over the predictions hid them where the two coincide."""
    pytest.importorskip("matplotlib")
    pytest.importorskip("countryinfo")
    # Paris predicted exactly, Lima predicted 5 degrees off, and a truth in the Pacific without prediction.
    fig = plots.world_map_figure([48.85, -12.0, -20.0], [2.35, -77.0, -130.0], [48.85, -17.0, np.nan],
                                 [2.35, -77.0, np.nan])  # fmt: skip
    centre, ring = _rgb_around(fig, 2.35, 48.85, 1), _rgb_around(fig, 2.35, 48.85, 6)
    assert _count(centre, "red") >= 5, "the prediction's dot is on top, at the centre"
    assert _count(ring, "blue") >= 8, "the truth's ring shows around it"
    assert _count(_rgb_around(fig, -77.0, -17.0, 1), "red") >= 5
    assert _count(_rgb_around(fig, -77.0, -12.0, 6), "blue") >= 8
    lone = _rgb_around(fig, -130.0, -20.0, 6)
    assert _count(lone, "blue") >= 8 and _count(lone, "red") == 0
    assert _count(_rgb_around(fig, -100.0, -40.0, 6), "blue") == 0, "nothing where no photo is"
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["truth (3)", "prediction (2)", "truth \u2192 prediction (2 lines)"]


def test_land_outline_covers_the_continents_and_not_the_oceans() -> None:
    pytest.importorskip("countryinfo")
    mpath = pytest.importorskip("matplotlib.path")
    paths = [mpath.Path(ring) for ring in land_rings()]

    def on_land(lon: float, lat: float) -> bool:
        return any(p.contains_point((lon, lat)) for p in paths)

    for lon, lat in [
        (2.35, 48.85),
        (-100.0, 40.0),
        (116.4, 39.9),
        (-47.9, -15.8),
        (133.0, -25.0),
        (0.0, -89.0),
    ]:
        assert on_land(lon, lat), (lon, lat)
    for lon, lat in [(-30.0, 30.0), (-140.0, 0.0), (80.0, -30.0), (0.0, 0.0), (179.0, -60.0)]:
        assert not on_land(lon, lat), (lon, lat)


def test_real_im2gps3k_truth_against_a_jittered_copy(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    pytest.importorskip("countryinfo")
    if not IM2GPS3K_CSV.is_file():
        pytest.skip(f"needs the shared IM2GPS3k metadata at {IM2GPS3K_CSV}")
    with IM2GPS3K_CSV.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    lat = np.array([float(r["LAT"]) for r in rows])
    lon = np.array([float(r["LON"]) for r in rows])
    rng = np.random.default_rng(0)
    pred_lat = np.clip(lat + rng.normal(0.0, 5.0, lat.size), -90.0, 90.0)
    pred_lon = lon + rng.normal(0.0, 10.0, lon.size)
    pred_lat[::40] = np.nan
    out = plot_world_map(lat, lon, pred_lat, pred_lon, tmp_path / "im2gps3k.png", title="IM2GPS3k")
    _assert_png(out, _pixels(MAP_FIGSIZE))


# --- missing optional packages --------------------------------------------------------------------


def test_missing_matplotlib_raises_missing_dependency(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    with pytest.raises(MissingDependencyError, match=r"pip install matplotlib countryinfo"):
        plot_error_cdf([1.0, 2.0], [25.0], tmp_path / "cdf.png")
    with pytest.raises(MissingDependencyError, match=r"pip install matplotlib countryinfo"):
        plot_world_map([0.0], [0.0], [1.0], [1.0], tmp_path / "map.png")
    assert not list(tmp_path.iterdir())
    # The pure helpers need numpy only.
    assert cdf_at([1.0, 2.0], [1.5]).tolist() == [0.5]


@pytest.mark.usefixtures("fresh_outlines")
def test_missing_countryinfo_raises_missing_dependency(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    pytest.importorskip("matplotlib")
    monkeypatch.setitem(sys.modules, "countryinfo", None)
    with pytest.raises(MissingDependencyError, match=r"countryinfo.*pip install matplotlib countryinfo"):
        plot_world_map([0.0], [0.0], [1.0], [1.0], tmp_path / "map.png")
    assert not (tmp_path / "map.png").exists()


@pytest.mark.usefixtures("fresh_outlines")
def test_outlines_through_the_countryinfo_0_1_api(monkeypatch: pytest.MonkeyPatch) -> None:
    """countryinfo 0.1.x (pip's pick on Python 3.10) lacks all_countries(); CountryInfo().all() lists all."""
    square = [[0.0, 0.0], [10.0, 0.0], [10.0, 10.0], [0.0, 10.0], [0.0, 0.0]]
    # A ring around the south pole, cut once at the date line, as Natural Earth stores Antarctica.
    polar = [[170.0, -70.0], [180.0, -72.0], [-179.0, -72.0], [-90.0, -75.0], [0.0, -70.0], [90.0, -68.0]]
    polar.append(polar[0])
    data = {
        "a": {"geoJSON": {"features": [{"geometry": {"type": "Polygon", "coordinates": [square]}}]}},
        "b": {"geoJSON": {"features": [{"geometry": {"type": "MultiPolygon", "coordinates": [[polar]]}}]}},
        "c": {"geoJSON": {}},
        "d": {"name": "no geometry"},
    }

    class CountryInfo:
        def all(self) -> dict[str, dict[str, object]]:
            return data

    fake = types.ModuleType("countryinfo")
    fake.CountryInfo = CountryInfo  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "countryinfo", fake)
    rings = land_rings()
    assert len(rings) == 2
    np.testing.assert_array_equal(rings[0], square)
    closed = rings[1]
    assert np.array_equal(closed[0], closed[-1])
    assert [-180.0, -90.0] in closed.tolist() and [180.0, -90.0] in closed.tolist()
    # The outline keeps the coast but not the cut along the date line nor the closure along the pole.
    lines = plots.land_outlines(rings)
    edges = np.concatenate([np.stack([line[:-1], line[1:]], axis=1) for line in lines])
    assert not np.any(np.all(np.abs(edges[:, :, 0]) == 180.0, axis=1))
    assert not np.any(np.all(edges[:, :, 1] == -90.0, axis=1))
    # The square's 4 edges and the polar ring's 6 coast edges: 180..-179 became -180..-179, past the cut.
    assert len(edges) == 4 + 6
    assert [[-180.0, -72.0], [-179.0, -72.0]] in edges.tolist()
