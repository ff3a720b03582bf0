"""Tests of georag.evaluate: published GeoEstimation and OSV-5M numbers, distances against GeoPy, the
bootstrap against a direct computation, predictions/truth reading and joining."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from geopy.distance import geodesic, great_circle

from georag.errors import GeoRagError
from georag.evaluate import (
    THRESHOLDS_KM,
    EvaluationError,
    Predictions,
    ScoreOptions,
    Truth,
    accuracy,
    compare,
    distance_km,
    evaluate,
    evaluate_predictions,
    geoscore,
    join_ids,
    parse_thresholds,
    read_predictions,
    read_truth,
    strip_extension,
    threshold_key,
)
from georag.evaluate.bootstrap import bootstrap, paired_difference, percentile_interval

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
GEOEST = SHARED / "geoestimation"
RESULTS = sorted((GEOEST / "results").glob("*/*.csv"))
OSV5M = SHARED / "osv5m" / "select.csv"
RESULT_COLS = ("img_id", "predicted_lat", "predicted_long")
MODELS = ("ISNs_M-fstar-S3", "base-vgg-c_L-m", "base-vgg_L-m", "base_L-m", "base_M-fstar", "base_M-m")
MOVED = "514234452_8824524fbe_243_59555137@N00.jpg"  # crosses 2500 km under the geodesic (data README)


def need(path: Path) -> None:
    if not path.exists():
        pytest.skip(f"needs the shared reference data (../shared/data): missing {path}")


def published(path: Path) -> tuple[list[dict[str, str]], dict[str, str]]:
    """The data rows and the summary {name: printed value} of a GeoEstimation result file, read
    independently with the csv module: rows up to the blank line, then a header row and a value row."""
    with open(path, newline="") as f:
        lines = list(csv.reader(f))
    blank = next(i for i, r in enumerate(lines) if not any(c.strip() for c in r))
    header = lines[0]
    rows = [dict(zip(header, r, strict=True)) for r in lines[1:blank]]
    summary = dict(zip(lines[blank + 1], lines[blank + 2], strict=True))
    return rows, summary


def meta_for(path: Path) -> Path:
    return GEOEST / "meta" / f"{path.parent.name}_places365.csv"


def decimals(printed: str) -> int:
    return len(printed.partition(".")[2])


@pytest.fixture(scope="module")
def geoest_files() -> list[Path]:
    need(GEOEST)
    assert len(RESULTS) == 12, RESULTS
    return RESULTS


# ---- the published numbers ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", [f"{b}/{m}" for b in ("im2gps3k", "im2gps") for m in MODELS])
def test_geoestimation_summary_rows_are_reproduced(name: str) -> None:
    path = GEOEST / "results" / f"{name}.csv"
    need(path)
    rows, summary = published(path)
    report = evaluate_predictions(
        read_predictions(path, *RESULT_COLS), read_truth(meta_for(path), "im2gps"), ScoreOptions(bootstrap=0)
    )
    assert report.n == len(rows) == report.counts.scored and report.counts.missing == 0
    names = [k for k in summary if k.endswith("km)") and "acc" in k]
    assert len(names) == 5
    for t, key in zip(THRESHOLDS_KM, names, strict=True):
        printed = summary[key]
        assert f"{report.accuracy[t]:.{decimals(printed)}f}" == printed, (key, report.accuracy[t])
        # Exactly: the count of photos, not just the rounded share.
        assert report.accuracy[t] * report.n == pytest.approx(round(float(printed) * report.n), abs=1e-9)
    mean_printed = summary["mean deviation (km)"]
    assert f"{report.mean_km:.{decimals(mean_printed)}f}" == mean_printed


def test_isns_im2gps3k_is_the_paper_row(geoest_files: list[Path]) -> None:
    path = GEOEST / "results" / "im2gps3k" / "ISNs_M-fstar-S3.csv"
    report = evaluate_predictions(
        read_predictions(path, *RESULT_COLS), read_truth(meta_for(path), "im2gps"), ScoreOptions(bootstrap=0)
    )
    paper = ["10.5", "28.0", "36.6", "49.7", "66.0"]
    assert [f"{100 * report.accuracy[t]:.1f}" for t in THRESHOLDS_KM] == paper


def test_geodesic_moves_one_image_across_2500_km(geoest_files: list[Path]) -> None:
    path = GEOEST / "results" / "im2gps3k" / "ISNs_M-fstar-S3.csv"
    preds, truth = read_predictions(path, *RESULT_COLS), read_truth(meta_for(path), "im2gps")
    hav = evaluate_predictions(preds, truth, ScoreOptions(bootstrap=0))
    geo = evaluate_predictions(preds, truth, ScoreOptions(distance="geodesic", bootstrap=0))
    assert f"{100 * hav.accuracy[2500.0]:.3f}" == "65.966"
    assert f"{100 * geo.accuracy[2500.0]:.3f}" == "65.999"
    assert (geo.accuracy[2500.0] - hav.accuracy[2500.0]) * hav.n == pytest.approx(1.0)
    for t in THRESHOLDS_KM[:-1]:
        assert geo.accuracy[t] == hav.accuracy[t]
    crossed = (geo.rows.dist_km <= 2500) != (hav.rows.dist_km <= 2500)
    assert [geo.rows.ids[i] for i in np.flatnonzero(crossed)] == [MOVED]
    i = hav.rows.ids.index(MOVED)
    assert hav.rows.dist_km[i] == pytest.approx(2500.70, abs=0.005)
    assert geo.rows.dist_km[i] == pytest.approx(2492.63, abs=0.005)


@pytest.mark.parametrize("index", range(12))
def test_per_image_distances_match_great_circle_distance(index: int, geoest_files: list[Path]) -> None:
    path = geoest_files[index]
    rows, _ = published(path)
    report = evaluate_predictions(
        read_predictions(path, *RESULT_COLS), read_truth(meta_for(path), "im2gps"), ScoreOptions(bootstrap=0)
    )
    theirs = {r["img_id"]: float(r["great_circle_distance"]) for r in rows}
    ours = dict(zip(report.rows.ids, report.rows.dist_km.tolist(), strict=True))
    diff = np.array([ours[k] - v for k, v in theirs.items()])
    # The column is rounded to 0.01 km (and was computed in float32): within half a unit plus a little.
    assert np.abs(diff).max() < 0.0055 and np.abs(diff).mean() < 0.003


def test_osv5m_geoscore_is_reproduced_by_haversine() -> None:
    need(OSV5M)
    with open(OSV5M, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 50
    names = ("pred_lat", "pred_lon", "true_lat", "true_lon")
    cols = {k: np.array([float(r[k]) for r in rows]) for k in names}
    score = np.array([float(r["score"]) for r in rows])
    hav = distance_km("haversine", cols["pred_lat"], cols["pred_lon"], cols["true_lat"], cols["true_lon"])
    geo = distance_km("geodesic", cols["pred_lat"], cols["pred_lon"], cols["true_lat"], cols["true_lon"])
    np.testing.assert_allclose(hav, [float(r["distance"]) for r in rows], rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(geoscore(hav), score, rtol=1e-12, atol=1e-9)
    # The WGS-84 geodesic does not reproduce it: OSV-5M, like the other benchmarks, used the sphere.
    assert np.abs(geoscore(geo) - score).max() > 1.0
    ids = [r["id"] for r in rows]
    report = evaluate(ids, cols["pred_lat"], cols["pred_lon"], ids, cols["true_lat"], cols["true_lon"])
    assert report.geoscore == pytest.approx(score.mean(), rel=1e-12)


# ---- distances against GeoPy -----------------------------------------------------------------------------


def _random_pairs(n: int, seed: int = 7) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    lat = np.degrees(np.arcsin(rng.uniform(-1, 1, size=(2, n))))  # uniform on the sphere
    lon = rng.uniform(-180, 180, size=(2, n))
    return lat[0], lon[0], lat[1], lon[1]


def test_random_pairs_match_geopy() -> None:
    la1, lo1, la2, lo2 = _random_pairs(500)
    hav = distance_km("haversine", la1, lo1, la2, lo2)
    geo = distance_km("geodesic", la1, lo1, la2, lo2)
    for i in range(la1.size):
        a, b = (la1[i], lo1[i]), (la2[i], lo2[i])
        assert hav[i] == pytest.approx(great_circle(a, b, radius=6371.0).km, abs=1e-6)
        assert geo[i] == pytest.approx(geodesic(a, b).km, rel=1e-12, abs=1e-9)


@pytest.mark.parametrize("name", ["haversine", "geodesic"])
def test_distances_are_symmetric_and_zero_on_the_diagonal(name: str) -> None:
    la1, lo1, la2, lo2 = _random_pairs(300, seed=3)
    np.testing.assert_allclose(
        distance_km(name, la1, lo1, la2, lo2), distance_km(name, la2, lo2, la1, lo1), rtol=1e-12
    )
    np.testing.assert_allclose(distance_km(name, la1, lo1, la1, lo1), 0.0, atol=1e-9)


SPECIAL = [
    pytest.param((0.0, 0.0), (0.0, 180.0), id="antipodes-equator"),
    pytest.param((30.0, 40.0), (-30.0, -140.0), id="antipodes"),
    pytest.param((45.0, 10.0), (-45.0, -169.9999), id="near-antipodes"),
    pytest.param((90.0, 0.0), (-90.0, 0.0), id="pole-to-pole"),
    pytest.param((90.0, 0.0), (90.0, 123.0), id="north-pole-any-lon"),
    pytest.param((-90.0, 45.0), (-89.0, -135.0), id="south-pole"),
    pytest.param((89.9, 0.0), (89.9, 180.0), id="over-the-pole"),
    pytest.param((0.0, 179.5), (0.0, -179.5), id="date-line-equator"),
    pytest.param((-16.5, 179.9), (-17.0, -179.8), id="date-line-fiji"),
    pytest.param((65.0, -180.0), (65.0, 180.0), id="date-line-same-point"),
]


@pytest.mark.parametrize(("p", "q"), SPECIAL)
def test_special_points_match_geopy(p: tuple[float, float], q: tuple[float, float]) -> None:
    args = ([p[0]], [p[1]], [q[0]], [q[1]])
    hav = float(distance_km("haversine", *args)[0])
    geo = float(distance_km("geodesic", *args)[0])
    # The arcsine form loses digits at the antipodes (its slope is infinite there): micrometres, not more.
    assert hav == pytest.approx(great_circle(p, q, radius=6371.0).km, abs=1e-3)
    assert geo == pytest.approx(geodesic(p, q).km, rel=1e-12, abs=1e-9)


def test_special_values() -> None:
    half = math.pi * 6371.0
    assert distance_km("haversine", [0.0], [0.0], [0.0], [180.0])[0] == pytest.approx(half, rel=1e-12)
    assert distance_km("haversine", [90.0], [0.0], [-90.0], [0.0])[0] == pytest.approx(half, rel=1e-12)
    # Pole to pole on WGS-84 is twice the meridian quadrant, 10001.966 km.
    assert distance_km("geodesic", [90.0], [0.0], [-90.0], [0.0])[0] == pytest.approx(20003.931, abs=1e-3)
    # Across the date line the short way: 1 degree of the equator.
    one_degree = distance_km("haversine", [0.0], [179.5], [0.0], [-179.5])[0]
    assert one_degree == pytest.approx(half / 180, rel=1e-12)
    assert distance_km("geodesic", [65.0], [-180.0], [65.0], [180.0])[0] == pytest.approx(0.0, abs=1e-9)


def test_distance_errors() -> None:
    with pytest.raises(EvaluationError, match="unknown distance"):
        distance_km("manhattan", [0.0], [0.0], [1.0], [1.0])
    with pytest.raises(GeoRagError, match="not a valid latitude"):
        distance_km("geodesic", [91.0], [0.0], [1.0], [1.0])
    assert distance_km("geodesic", [], [], [], []).shape == (0,)


# ---- metrics, bootstrap ----------------------------------------------------------------------------------


def test_threshold_keys_and_parsing() -> None:
    assert [threshold_key(t) for t in (1, 25.0, 2500, 0.5, 0.25)] == ["1", "25", "2500", "0.5", "0.25"]
    assert parse_thresholds("2500, 1,25,1") == (1.0, 25.0, 2500.0)
    for bad in ("", "1,x", "0,5", "-1", "nan"):
        with pytest.raises(EvaluationError, match="threshold"):
            parse_thresholds(bad)


def test_geoscore_bounds() -> None:
    np.testing.assert_allclose(geoscore([0.0, 1492.7, np.inf]), [5000.0, 5000.0 / math.e, 0.0])


def test_accuracy_keeps_its_behaviour() -> None:
    acc = accuracy([0.0, 10.0, np.nan], [0.0, 0.0, np.nan], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0])
    assert acc[1.0] == pytest.approx(1 / 3) and acc[2500.0] == pytest.approx(2 / 3)
    assert accuracy([], [], [], []) == dict.fromkeys(THRESHOLDS_KM, 0.0)


def _direct(
    d: np.ndarray, thresholds: tuple[float, ...], resamples: int, seed: int
) -> tuple[np.ndarray, ...]:
    """The bootstrap written out plainly, drawing the same indices."""
    idx = np.random.default_rng(seed).integers(0, d.size, size=(resamples, d.size))
    sample = d[idx]
    acc = np.stack([(sample <= t).mean(axis=1) for t in thresholds], axis=1)
    med = np.array([np.median(s[np.isfinite(s)]) if np.isfinite(s).any() else np.nan for s in sample])
    return acc, med


def test_bootstrap_matches_a_direct_computation() -> None:
    rng = np.random.default_rng(1)
    d = np.concatenate([rng.exponential(800.0, 300), np.full(40, np.inf), [25.0, 25.0, 1.0]])
    rng.shuffle(d)
    acc, med = bootstrap(d, THRESHOLDS_KM, 200, seed=5)
    acc_ref, med_ref = _direct(d, THRESHOLDS_KM, 200, seed=5)
    np.testing.assert_array_equal(acc, acc_ref)
    np.testing.assert_allclose(med, med_ref, rtol=1e-15)
    lo, hi = percentile_interval(acc)
    np.testing.assert_allclose(lo, np.percentile(acc_ref, 2.5, axis=0))
    np.testing.assert_allclose(hi, np.percentile(acc_ref, 97.5, axis=0))


def test_bootstrap_with_nothing_scored_gives_nan_median_interval() -> None:
    acc, med = bootstrap(np.full(5, np.inf), (1.0,), 50, seed=0)
    assert (acc == 0).all() and np.isnan(med).all()
    lo, hi = percentile_interval(med)
    assert np.isnan(lo) and np.isnan(hi)


def test_paired_difference_matches_a_direct_computation() -> None:
    rng = np.random.default_rng(2)
    a, b = rng.exponential(500.0, 250), rng.exponential(700.0, 250)
    reps = paired_difference(a, b, (25.0, 750.0), 100, seed=9)
    idx = np.random.default_rng(9).integers(0, 250, size=(100, 250))
    ref = np.stack([(a[idx] <= t).mean(1) - (b[idx] <= t).mean(1) for t in (25.0, 750.0)], axis=1)
    np.testing.assert_allclose(reps, ref, atol=1e-15)


# ---- evaluate, compare -----------------------------------------------------------------------------------

TRUTH_IDS = [f"p{i}.jpg" for i in range(10)]
TRUTH_LAT = np.linspace(-40.0, 50.0, 10)
TRUTH_LON = np.linspace(-100.0, 120.0, 10)


def test_denominators_and_counts() -> None:
    # p0..p3 exact, p4 ~ 111 km off, p5 failed (NaN), p6 and p7 absent, p8 and p9 given without ".jpg",
    # "zzz" is not in the truth.
    ids = ["p0.jpg", "p1.jpg", "p2.jpg", "p3.jpg", "p4.jpg", "p5.jpg", "p8", "p9", "zzz"]
    lat = np.r_[TRUTH_LAT[:4], TRUTH_LAT[4] + 1.0, np.nan, TRUTH_LAT[8:], 0.0]
    lon = np.r_[TRUTH_LON[:6], TRUTH_LON[8:], 0.0]
    full = evaluate(ids, lat, lon, TRUTH_IDS, TRUTH_LAT, TRUTH_LON, bootstrap=0)
    c = full.counts
    assert (c.n, c.truth, c.predictions, c.joined, c.scored) == (10, 10, 9, 8, 7)
    assert (c.missing, c.extra, c.failures, c.by_extension) == (2, 1, 1, 2)
    assert full.missing_ids == ("p6.jpg", "p7.jpg") and full.extra_ids == ("zzz",)
    assert full.failed_ids == ("p5.jpg",)
    assert full.accuracy[1.0] == pytest.approx(6 / 10) and full.accuracy[200.0] == pytest.approx(7 / 10)
    assert full.geoscore == pytest.approx(geoscore(full.rows.dist_km[full.rows.scored]).sum() / 10)
    scored = evaluate(ids, lat, lon, TRUTH_IDS, TRUTH_LAT, TRUTH_LON, denominator="predicted", bootstrap=0)
    assert scored.n == 7 and scored.accuracy[1.0] == pytest.approx(6 / 7)
    assert scored.accuracy[200.0] == 1.0
    assert scored.median_km == full.median_km == 0.0 and scored.mean_km == full.mean_km
    assert full.rows.dist_km[4] == pytest.approx(111.19, abs=0.01)
    text = repr(full)
    assert "n=10" in text and "1 km: 60.0%" in text and "missing=2" in text


def test_report_json_schema() -> None:
    report = evaluate(TRUTH_IDS[:8], TRUTH_LAT[:8], TRUTH_LON[:8], TRUTH_IDS, TRUTH_LAT, TRUTH_LON,
                      thresholds=(0.5, 25, 2500), bootstrap=50)  # fmt: skip
    doc = json.loads(json.dumps(report.to_json(), allow_nan=False))
    assert doc["n"] == 10 and doc["missing"] == 2 and doc["missing_ids"] == ["p8.jpg", "p9.jpg"]
    assert list(doc["accuracy"]) == ["0.5", "25", "2500"] and doc["accuracy"]["25"] == pytest.approx(0.8)
    assert doc["median_km"] == 0.0 and doc["mean_km"] == 0.0 and doc["geoscore"] == pytest.approx(4000.0)
    assert set(doc["ci"]["accuracy"]) == {"0.5", "25", "2500"} and doc["ci"]["resamples"] == 50
    lo, hi = doc["ci"]["accuracy"]["25"]
    assert lo <= 0.8 <= hi
    assert doc["counts"]["scored"] == 8 and doc["distance"] == "haversine" and doc["denominator"] == "truth"


def test_every_prediction_failed_scores_zero() -> None:
    nan = np.full(10, np.nan)
    report = evaluate(TRUTH_IDS, nan, nan, TRUTH_IDS, TRUTH_LAT, TRUTH_LON, bootstrap=20)
    assert all(a == 0.0 for a in report.accuracy.values()) and math.isnan(report.median_km)
    assert report.counts.failures == 10 and report.to_json()["median_km"] is None
    with pytest.raises(EvaluationError, match="no row to score"):
        evaluate(TRUTH_IDS, nan, nan, TRUTH_IDS, TRUTH_LAT, TRUTH_LON, denominator="predicted")


def test_evaluate_errors() -> None:
    with pytest.raises(EvaluationError, match="no prediction id matches"):
        evaluate(["a"], [0.0], [0.0], TRUTH_IDS, TRUTH_LAT, TRUTH_LON)
    with pytest.raises(EvaluationError, match="more than once"):
        evaluate(["p1.jpg", "p1.jpg"], [0.0, 0.0], [0.0, 0.0], TRUTH_IDS, TRUTH_LAT, TRUTH_LON)
    with pytest.raises(EvaluationError, match="unknown denominator"):
        evaluate(TRUTH_IDS, TRUTH_LAT, TRUTH_LON, TRUTH_IDS, TRUTH_LAT, TRUTH_LON, denominator="all")
    with pytest.raises(GeoRagError, match="truth coordinates"):
        evaluate(["a"], [0.0], [0.0], ["a"], [95.0], [0.0])


def test_compare_paired_difference_covers_the_true_one() -> None:
    # A hits (d = 0) with probability 0.6; B is A with 15% of A's hits turned into misses: the true
    # difference at every threshold is 0.6 * 0.15 = 0.09.
    rng = np.random.default_rng(11)
    n = 4000
    ids = [f"x{i}" for i in range(n)]
    tl, to = rng.uniform(-60, 60, n), rng.uniform(-180, 180, n)
    hit_a = rng.random(n) < 0.6
    hit_b = hit_a & (rng.random(n) >= 0.15)
    far = np.where(tl > 0, tl - 80.0, tl + 80.0)  # 80 degrees of latitude away: beyond 2500 km
    truth = Truth.from_arrays(ids, tl, to)
    a = Predictions.from_arrays(ids, np.where(hit_a, tl, far), to)
    b = Predictions.from_arrays(ids, np.where(hit_b, tl, far), to)
    result = compare(a, b, truth, ScoreOptions(bootstrap=1000, seed=0))
    assert result.difference_ci is not None
    for t in THRESHOLDS_KM:
        lo, hi = result.difference_ci[t]
        assert lo < 0.09 < hi and lo > 0.0
        assert result.difference[t] == pytest.approx((hit_a.sum() - hit_b.sum()) / n)
        # Paired is much tighter than the two separate intervals would suggest.
        assert result.a.accuracy_ci is not None and result.b.accuracy_ci is not None
        assert hi - lo < (result.a.accuracy_ci[t][1] - result.a.accuracy_ci[t][0])
    assert "A - B" in repr(result) and result.to_json()["difference"]["ci"]["25"][0] > 0


def test_compare_on_common_rows_with_predicted_denominator() -> None:
    truth = Truth.from_arrays(TRUTH_IDS, TRUTH_LAT, TRUTH_LON)
    a = Predictions.from_arrays(TRUTH_IDS[:8], TRUTH_LAT[:8], TRUTH_LON[:8])
    b = Predictions.from_arrays(TRUTH_IDS[2:], TRUTH_LAT[2:], TRUTH_LON[2:])
    both = compare(a, b, truth, ScoreOptions(denominator="predicted", bootstrap=0))
    assert both.n == 6 and both.a.accuracy[1.0] == both.b.accuracy[1.0] == 1.0
    every = compare(a, b, truth, ScoreOptions(bootstrap=0))
    assert every.n == 10 and every.difference[1.0] == 0.0 and every.difference_ci is None


# ---- reading and joining ---------------------------------------------------------------------------------


def test_result_file_reading_stops_at_the_blank_line(geoest_files: list[Path]) -> None:
    path = GEOEST / "results" / "im2gps" / "base_M-m.csv"
    preds = read_predictions(path, *RESULT_COLS)
    assert len(preds) == 237 and preds.ignored_after_blank == 2 and preds.kind == "csv"
    assert not preds.failed.any() and "blank line" in preds.notes[0]
    assert "rows=237" in repr(preds)


def test_georag_csv_and_jsonl(tmp_path: Path) -> None:
    from georag.locate.output import PredictionWriter
    from georag.types import Prediction

    with PredictionWriter(tmp_path / "p.csv", [], 0) as w:
        w.write(Prediction("a.jpg", 10.0, 20.0, 0.8, "rag"))
        w.write(Prediction("b.jpg", error="unreadable image"))
        w.write(Prediction("c.jpg", 1.0, 2.0, 0.0, "rag>knn", fallback="no answer parsed"))
    for name, kind in (("p.csv", "georag-csv"), ("p.jsonl", "georag-jsonl")):
        preds = read_predictions(tmp_path / name)
        assert preds.kind == kind and preds.ids == ("a.jpg", "b.jpg", "c.jpg")
        assert preds.failure == ("", "unreadable image", "")
        assert preds.fallback.tolist() == [False, False, True]
        assert np.isnan(preds.lat[1]) and preds.lat[2] == 1.0


def test_csv_cells_that_are_not_coordinates(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text("id,lat,lon,strategy\n,1,1,knn\na,,5\nb,x,5,knn\nc,95,5,knn\nd,1,2,rag>knn\n")
    preds = read_predictions(path)
    assert preds.kind == "csv" and preds.skipped == 1 and "without an id" in preds.notes[0]
    assert preds.failure == ("no coordinates", "not a number", "out of range", "")
    assert preds.fallback.tolist() == [False, False, False, True]


def test_reading_errors(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text("photo,latitude,longitude\na,1,2\n")
    with pytest.raises(EvaluationError, match=r"no column 'id' \(--id-col\).*'photo', 'latitude'"):
        read_predictions(path)
    (tmp_path / "e.csv").write_text("")
    with pytest.raises(EvaluationError, match="empty"):
        read_predictions(tmp_path / "e.csv")
    (tmp_path / "j.jsonl").write_text('{"name": "a", "lat": 1, "lon": 2}\n{"cut": \n')
    with pytest.raises(EvaluationError, match=r"no column 'id'.*'lat', 'lon', 'name'"):
        read_predictions(tmp_path / "j.jsonl")
    with pytest.raises(EvaluationError, match="does not exist"):
        read_predictions(tmp_path / "nope.csv")


def test_jsonl_skips_a_cut_line(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    lines = [
        '{"id": 1, "lat": "1.5", "lon": 2}',
        "",
        '{"id": "b", "lat": null, "lon": null}',
        '{"id": "c", "la',
    ]
    path.write_text("\n".join(lines))
    preds = read_predictions(path)
    assert preds.ids == ("1", "b") and preds.skipped == 1 and preds.lat[0] == 1.5
    assert preds.failure[1] == "no coordinates" and preds.kind == "jsonl"


def test_join_by_id_and_extension() -> None:
    assert [strip_extension(i) for i in ("a.JPG", "a.b", ".jpg", "a.jpg.png")] == [
        "a",
        "a.b",
        ".jpg",
        "a.jpg",
    ]
    join = join_ids(["x", "y.png", "z", "w"], ["x", "y.jpg", "z.jpg", "z.png", "q"])
    assert join.truth_of_pred.tolist() == [0, 1, -1, -1]  # "z" is ambiguous: z.jpg or z.png
    assert join.pred_of_truth.tolist() == [0, 1, -1, -1, -1] and join.by_extension == 1
    assert "by_extension=1" in repr(join)


def test_read_truth_formats(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("id,lat,lon\na,1,2\nb,0,0\nc,3,4\n")
    truth = read_truth(path, "generic")
    assert truth.ids == ("a", "c") and truth.rejected == {"zero coordinates (unknown)": 1}
    path.write_text("photo,y,x\na,1,2\n")
    assert read_truth(path, "generic", id_col="photo", lat_col="y", lon_col="x").lat.tolist() == [1.0]
    with pytest.raises(GeoRagError, match="no column 'IMG_ID'"):
        read_truth(path, "im2gps3k")


# ---- per-row failure reasons, the lat/lon swap hint, truth files with only the scoring columns -------------


def test_each_failed_row_says_why(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text("id,lat,lon\na,abc,5\nb,95,5\nc,,3\nd,1,-181\ne,1,2\nf,1,x\n")
    preds = read_predictions(path)
    assert preds.detail == (
        "lat 'abc' is not a number",
        "lat 95 out of range (|lat| <= 90)",
        "lat empty",
        "lon -181 out of range (|lon| <= 180)",
        "",
        "lon 'x' is not a number",
    )
    assert preds.failure_counts() == {"not a number": 2, "out of range": 2, "no coordinates": 1}
    summary = preds.failure_summary()
    assert summary["failed"] == 5 and summary["swap_hint"] is None
    assert summary["rows"][1] == {
        "id": "b",
        "reason": "out of range",
        "detail": "lat 95 out of range (|lat| <= 90)",
    }
    lines = preds.failure_lines(shown=2)
    assert lines[0] == "rows without usable coordinates (5): not a number 2, out of range 2, no coordinates 1"
    assert lines[1:3] == ["  a: lat 'abc' is not a number", "  b: lat 95 out of range (|lat| <= 90)"]
    assert "first 2; --json lists all" in lines[3] and not any(line.startswith("hint") for line in lines)


def test_a_georag_error_is_its_own_reason() -> None:
    preds = Predictions.from_arrays(["a", "b", "c"], [1.0, np.nan, 120.0], [2.0, np.nan, 10.0],
                                    failure=["", "unreadable image", ""])  # fmt: skip
    assert preds.failure_counts() == {"georag error": 1, "out of range": 1}
    assert [r["detail"] for r in preds.failure_rows()] == [
        "unreadable image",
        "lat 120 out of range (|lat| <= 90)",
    ]


def test_hint_when_most_failures_look_like_swapped_lat_lon(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    # Longitude written in the lat column: |value| > 90 fails, and would be valid the other way round.
    path.write_text("id,lat,lon\na,120,40\nb,-150,-30\nc,170,10\nd,10,20\ne,x,1\n")
    preds = read_predictions(path)
    assert preds.swappable == 3
    assert preds.swap_hint.startswith("3 of 4 failed rows would be valid with lat and lon swapped")
    assert preds.failure_lines()[-1].startswith("hint: 3 of 4")
    assert preds.failure_summary()["swap_hint"] == preds.swap_hint
    path.write_text("id,lat,lon\na,120,140\nb,x,1\nc,1,2\n")  # 120, 140 is invalid either way
    assert read_predictions(path).swap_hint == ""


def test_truth_needs_only_the_scoring_columns(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("IMG_ID,LAT,LON\na.jpg,1,2\nb.jpg,3,4\n")
    for fmt in ("im2gps3k", "im2gps", "yfcc4k", "mp16"):
        truth = read_truth(path, fmt)
        assert truth.ids == ("a.jpg", "b.jpg") and truth.lat.tolist() == [1.0, 3.0], fmt
    (tmp_path / "o.csv").write_text("id,latitude,longitude\nx,5,6\n")
    assert read_truth(tmp_path / "o.csv", "osv5m").ids == ("x",)


def test_truth_columns_of_another_format_are_suggested(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("id,latitude,longitude\nx,5,6\n")
    with pytest.raises(EvaluationError, match=r"no column 'IMG_ID'.*fit --truth-format osv5m\."):
        read_truth(path, "im2gps3k")
    path.write_text("id,lat,lon\nx,5,6\n")
    with pytest.raises(EvaluationError, match=r"fit --truth-format generic\."):
        read_truth(path, "im2gps3k")
    path.write_text("IMG_ID,LAT,LON\nx,5,6\n")
    with pytest.raises(EvaluationError, match=r"fit --truth-format im2gps \(or im2gps3k, yfcc4k, mp16\)"):
        read_truth(path, "osv5m")
    path.write_text("photo,y,x\nx,5,6\n")
    with pytest.raises(EvaluationError, match="--truth-id-col, --truth-lat-col and --truth-lon-col"):
        read_truth(path, "im2gps3k")
