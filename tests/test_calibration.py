"""Calibrated confidence and the reports `georag eval` adds: fits checked against hand-computed cases (and
SciPy's isotonic regression where installed), ECE and Brier by hand, the CLI end to end on a written
JSONL, headroom, EXIF leaks, G3's convention, and the cross-validated gain on the real sample sets."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from georag.cli import main
from georag.errors import ConfigError, EvaluationError, InputError
from georag.evaluate import ScoreOptions, evaluate_predictions
from georag.evaluate.calibration import brier, calibration_report, ece, reliability_bins
from georag.evaluate.predictions import Predictions
from georag.evaluate.sample_sets import read_sample_sets
from georag.evaluate.truth import Truth
from georag.geo.calibration import Calibration, fit_calibration, load_calibration, sample_features
from georag.geo.exif import exif_gps
from georag.geo.fits import isotonic_apply, isotonic_fit, platt_apply, platt_fit
from georag.geo.select import agreement_at
from georag.geo.selection import Candidates, choose
from georag.types import Prediction

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
ANSWERS = DATA / "llm_answers" / "answers.jsonl"
R = 6371.0


def _hav(a: tuple[float, float], b: tuple[float, float]) -> float:
    la1, lo1, la2, lo2 = map(math.radians, (*a, *b))
    h = math.sin((la2 - la1) / 2) ** 2 + math.cos(la1) * math.cos(la2) * math.sin((lo2 - lo1) / 2) ** 2
    return 2 * R * math.asin(min(1.0, math.sqrt(h)))


def test_isotonic_fit_pools_adjacent_violators_by_hand() -> None:
    assert isotonic_fit([1, 2, 3, 4], [1, 0, 1, 1]) == ([1.0, 2.0, 3.0, 4.0], [0.5, 0.5, 1.0, 1.0])
    # equal scores are pooled first: x=1 -> 1/2 (weight 2), then x=2 -> 0 violates: (1 + 0) / 3
    xs, ys = isotonic_fit([1, 1, 2], [0, 1, 0])
    assert xs == [1.0, 2.0] and ys == pytest.approx([1 / 3, 1 / 3])
    assert isotonic_fit([0.3, 0.1, 0.2], [1, 0, 0]) == ([0.1, 0.2, 0.3], [0.0, 0.0, 1.0])
    x, y = [1.0, 2.0, 3.0, 4.0], [0.5, 0.5, 1.0, 1.0]
    assert isotonic_apply(x, y, [0.0, 1.5, 2.5, 9.0]).tolist() == [0.5, 0.5, 0.75, 1.0]
    with pytest.raises(InputError):
        isotonic_fit([0.1, 0.2], [0, 2])


def test_isotonic_fit_equals_scipys_on_random_data() -> None:
    optimize = pytest.importorskip("scipy.optimize")
    if not hasattr(optimize, "isotonic_regression"):
        pytest.skip("scipy < 1.12 has no isotonic_regression")
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, 60)  # distinct scores: no pooling of ties needed
    y = (rng.uniform(0, 1, 60) < x).astype(float)
    order = np.argsort(x)
    ref = optimize.isotonic_regression(y[order]).x
    xs, ys = isotonic_fit(x, y)
    np.testing.assert_allclose(isotonic_apply(xs, ys, x[order]), ref, atol=1e-12)


def test_platt_fit_solves_a_hand_computed_case() -> None:
    # Targets (1+1)/(1+2) = 2/3 and 1/(1+2) = 1/3 at z = +1 and -1: sigmoid(w + b) = 2/3 gives w = ln 2,
    # b = 0.
    w, b = platt_fit([[-1.0], [1.0]], [0, 1], ridge=0.0)
    assert w[0] == pytest.approx(math.log(2.0), abs=1e-10) and b == pytest.approx(0.0, abs=1e-10)
    assert platt_apply(w, b, [[1.0], [-1.0]]).tolist() == pytest.approx([2 / 3, 1 / 3])
    # a separable set stays finite (Platt's targets), and monotone in the score
    w2, _ = platt_fit([[-2.0], [-1.0], [1.0], [2.0]], [0, 0, 1, 1])
    assert math.isfinite(w2[0]) and w2[0] > 0


def test_ece_brier_and_bins_by_hand() -> None:
    p, y = [0.1, 0.9, 0.8, 0.3], [0, 1, 0, 1]
    assert brier(p, y) == pytest.approx((0.01 + 0.01 + 0.64 + 0.49) / 4)
    assert ece(p, y) == pytest.approx((0.1 + 0.1 + 0.8 + 0.7) / 4)  # one prediction per bin
    # two bins: {0.1, 0.3} mean 0.2 vs 0.5, {0.9, 0.8} mean 0.85 vs 0.5
    assert ece(p, y, bins=2) == pytest.approx(0.5 * 0.3 + 0.5 * 0.35)
    bins = reliability_bins([1.0, 0.95, 0.0], [1, 0, 0], bins=10)
    assert bins[9].n == 2 and bins[9].confidence == pytest.approx(0.975) and bins[9].accuracy == 0.5
    assert bins[0].n == 1 and bins[5].n == 0 and math.isnan(bins[5].accuracy)
    rep = calibration_report(p, y, 25.0, resamples=500, seed=1, source="calibrated")
    assert rep.ece_ci is not None and rep.ece_ci[0] <= rep.ece + 1e-12
    assert rep.brier_ci is not None and rep.brier_ci[0] <= rep.brier <= rep.brier_ci[1]
    js = rep.to_json()
    assert set(js) >= {"ece", "brier", "bins", "within_km", "base_rate"} and len(js["bins"]) == 10
    with pytest.raises(EvaluationError):
        brier([1.2], [1])


def _pred(conf: float, cands: list[list[float]], asked: int = 5, strategy: str = "rag") -> Prediction:
    lat, lon = cands[0]
    return Prediction("a.jpg", lat, lon, conf, strategy, evidence={"candidates": cands, "asked": asked})


def test_a_calibration_round_trips_and_applies_to_predictions_only_when_it_may(tmp_path: Path) -> None:
    cal = fit_calibration(
        [{"agreement": a} for a in (0.2, 0.4, 0.6, 0.8)], [0, 0, 1, 1], within_km=25.0, strategy="rag"
    )
    assert cal.params == {"x": [0.2, 0.4, 0.6, 0.8], "y": [0.0, 0.0, 1.0, 1.0]}
    path = cal.save(tmp_path / "c.json")
    back = Calibration.load(path)
    assert back == cal
    pred = back.apply(_pred(0.5, [[48.85, 2.35], [48.86, 2.34]]))
    assert pred.confidence == pytest.approx(0.5) and pred.evidence["raw_confidence"] == 0.5
    assert pred.evidence["calibration"] == {"probability_within_km": 25.0, "method": "isotonic"}
    again = back.apply(pred)  # applying twice changes nothing
    assert again.confidence == pytest.approx(0.5)
    fb = _pred(0.0, [[1.0, 1.0]])
    fb.fallback = "no answer parsed"
    assert back.apply(fb).confidence == 0.0 and "raw_confidence" not in fb.evidence
    with pytest.raises(ConfigError, match="fitted on rag"):
        load_calibration(path, "knn")
    assert load_calibration(path, "rag") == cal and load_calibration("", "rag") is None
    (tmp_path / "bad.json").write_text('{"format": "other"}')
    with pytest.raises(ConfigError, match="not a georag calibration"):
        Calibration.load(tmp_path / "bad.json")


def test_platt_features_come_from_the_evidence() -> None:
    cands = [[48.85, 2.35], [48.86, 2.34], [45.76, 4.83]]
    f = sample_features([c[0] for c in cands], [c[1] for c in cands], 48.85, 2.35, 5, 0.4)
    d = sorted(_hav((48.85, 2.35), tuple(c)) for c in cands)
    assert f == pytest.approx({"agreement": 0.4, "answered": 0.6, "spread": math.log10(1 + d[1])})
    rows = [dict(f, agreement=a) for a in (0.1, 0.3, 0.6, 0.9)]
    cal = fit_calibration(rows, [0, 0, 1, 1], method="platt")
    assert cal.features == ("agreement", "answered", "spread")
    p = cal.probability(rows)
    assert np.all(np.diff(p) > 0) and np.all((p > 0) & (p < 1))


# ---- the command line on a written run ----------------------------------------------------------------

TRUTH = [("p0", 48.8566, 2.3522), ("p1", 40.4168, -3.7038), ("p2", 35.6762, 139.6503),
         ("p3", -33.8688, 151.2093), ("p4", 52.52, 13.405), ("p5", 41.9028, 12.4964),
         ("p6", 55.7558, 37.6173), ("p7", 19.4326, -99.1332)]  # fmt: skip
# km north of the truth: the pick; its confidence; the best candidate; the best neighbour
RUN = [(2, 0.9, 2, 0.5), (10, 0.8, 1, 30), (40, 0.7, 5, 0.2), (300, 0.6, 20, 5),
       (5, 0.5, 5, 500), (800, 0.4, 100, 50), (60, 0.2, 60, 60), (3000, 0.1, 900, 2000)]  # fmt: skip


def _north(lat: float, km: float) -> float:
    return lat + math.degrees(km / R)


def _write_run(tmp: Path, exif_on: tuple[str, ...] = ()) -> tuple[Path, Path]:
    truth = tmp / "truth.csv"
    truth.write_text("id,lat,lon\n" + "".join(f"{i},{a},{b}\n" for i, a, b in TRUTH))
    lines = []
    for (pid, la, lo), (off, conf, cand, near) in zip(TRUTH, RUN, strict=True):
        ev = {
            "candidates": [[_north(la, off), lo], [_north(la, cand), lo]],
            "asked": 4,
            "neighbors": {"near": [{"row": 1, "score": 0.9, "lat": _north(la, near), "lon": lo}], "far": []},
            "prior": {"lat": _north(la, 2 * off), "lon": lo},
        }
        if pid in exif_on:
            ev["exif_gps"] = {"lat": la, "lon": lo}
        rec = {"id": pid, "lat": _north(la, off), "lon": lo, "confidence": conf, "strategy": "rag",
               "error": None, "fallback": None, "evidence": ev}  # fmt: skip
        lines.append(json.dumps(rec))
    run = tmp / "run.jsonl"
    run.write_text("\n".join(lines) + "\n")
    return run, truth


def test_eval_calibrate_then_eval_reports_calibration_headroom_and_leaks(tmp_path: Path) -> None:
    run, truth = _write_run(tmp_path, exif_on=("p2",))
    out = tmp_path / "calib.json"
    r = CliRunner().invoke(
        main,
        [
            "eval",
            "calibrate",
            str(run),
            "--truth",
            str(truth),
            "--truth-format",
            "generic",
            "--out",
            str(out),
        ],
    )
    assert r.exit_code == 0, r.output
    cal = json.loads(out.read_text())
    within = [float(off <= 25) for off, *_ in RUN]  # outcome at 25 km, by confidence order 0.1 .. 0.9
    xs, ys = isotonic_fit([c for _, c, *_ in RUN], within)
    assert cal["isotonic"] == {"x": xs, "y": ys} and cal["strategy"] == "rag" and cal["within_km"] == 25.0
    assert cal["fitted_on"]["n"] == 8 and cal["fitted_on"]["within"] == 3

    js = tmp_path / "r.json"
    args = ["eval", str(run), "--truth", str(truth), "--truth-format", "generic", "--json", str(js)]
    r = CliRunner().invoke(main, [*args, "--plot", str(tmp_path / "plots")])
    assert r.exit_code == 0, r.output
    rep = json.loads(js.read_text())
    conf = np.array([c for _, c, *_ in RUN])
    assert rep["calibration"]["ece"] == pytest.approx(ece(conf, within))
    assert rep["calibration"]["brier"] == pytest.approx(np.mean((conf - np.array(within)) ** 2))
    assert rep["calibration"]["within_km"] == 25.0 and rep["calibration"]["confidence"] == "raw agreement"
    assert len(rep["calibration"]["bins"]) == 10 and "ECE of confidence as P(error <= 25 km)" in r.output
    assert (tmp_path / "plots" / "reliability.png").stat().st_size > 10_000
    # headroom: the oracles are the nearest candidate / neighbour, the prior is twice as far as the pick
    head = rep["headroom"]
    assert head["best LLM candidate (oracle)"]["accuracy"]["25"] == np.mean([c <= 25 for *_, c, _ in RUN])
    assert head["best neighbour (oracle)"]["accuracy"]["1"] == np.mean([n <= 1 for *_, n in RUN])
    assert head["vpr-guided prior alone"]["accuracy"]["25"] == np.mean([2 * o <= 25 for o, *_ in RUN])
    assert "headroom: what the evidence held" in r.output
    assert rep["exif_gps"] == {"count": 1, "excluded": 0, "ids": ["p2"]}
    r = CliRunner().invoke(main, [*args, "--exclude-exif-gps"])
    rep = json.loads(js.read_text())
    assert r.exit_code == 0 and rep["n"] == 7 and rep["exif_gps"]["excluded"] == 1, r.output

    # a calibrated run states its distance, and eval checks against it
    cal_obj = Calibration.load(out)
    calibrated = tmp_path / "calibrated.jsonl"
    recs = [json.loads(line) for line in run.read_text().splitlines()]
    for rec in recs:
        p = cal_obj.apply(Prediction.from_record(rec))
        rec["confidence"], rec["evidence"] = p.confidence, p.evidence
    calibrated.write_text("".join(json.dumps(x) + "\n" for x in recs))
    r = CliRunner().invoke(main, ["eval", str(calibrated), "--truth", str(truth), "--truth-format", "generic",
                                  "--json", str(js), "--calibration-km", "200"])  # fmt: skip
    assert r.exit_code != 0 and "calibrated as P(error <= 25 km)" in r.output
    r = CliRunner().invoke(main, ["eval", str(calibrated), "--truth", str(truth), "--truth-format", "generic",
                                  "--json", str(js)])  # fmt: skip
    rep = json.loads(js.read_text())
    assert rep["calibration"]["confidence"] == "calibrated"
    assert rep["calibration"]["brier"] == pytest.approx(np.mean((np.interp(conf, xs, ys) - within) ** 2))


def test_calibrate_refuses_what_cannot_be_fitted(tmp_path: Path) -> None:
    truth = tmp_path / "t.csv"
    truth.write_text("id,lat,lon\na,1,1\nb,2,2\n")
    preds = tmp_path / "p.csv"
    preds.write_text("id,lat,lon\na,1,1\nb,2,2\n")
    base = ["eval", "calibrate", str(preds), "--truth", str(truth), "--truth-format", "generic", "--out",
            str(tmp_path / "c.json")]  # fmt: skip
    r = CliRunner().invoke(main, base)
    assert r.exit_code != 0 and "no confidence column" in r.output
    preds.write_text("id,lat,lon,confidence\na,1,1,0.2\nb,2,2,0.9\n")
    r = CliRunner().invoke(main, base)
    assert r.exit_code != 0 and "both within and farther" in r.output


def test_the_g3_convention_is_geodesic_and_strict() -> None:
    truth = Truth.from_arrays(["a", "b"], [0.0, 10.0], [0.0, 10.0])
    d = 100.0
    preds = Predictions.from_arrays(["a", "b"], [math.degrees(d / R), 10.0], [0.0, 10.0])
    loose = evaluate_predictions(preds, truth, ScoreOptions(thresholds=(d,), bootstrap=50))
    # the same distance, counted with d < t: the row exactly at 100 km is a miss
    tight = evaluate_predictions(preds, truth, ScoreOptions(thresholds=(d,), bootstrap=50, strict=True))
    assert loose.accuracy[d] == 1.0 and tight.accuracy[d] == 0.5
    assert tight.accuracy_ci is not None and tight.accuracy_ci[d][1] <= 1.0
    g3 = ScoreOptions.for_convention("g3", bootstrap=0)
    assert (g3.distance, g3.strict, g3.rule) == ("geodesic", True, "d < t")
    with pytest.raises(EvaluationError, match="geodesic"):
        ScoreOptions.for_convention("g3", distance="haversine")


@pytest.mark.skipif(not (DATA / "geoestimation").is_dir(), reason="../shared/data/geoestimation is absent")
def test_g3_convention_on_the_published_predictions(tmp_path: Path) -> None:
    res = DATA / "geoestimation" / "results" / "im2gps3k" / "ISNs_M-fstar-S3.csv"
    meta = DATA / "geoestimation" / "meta" / "im2gps3k_places365.csv"
    args = ["eval", str(res), "--truth", str(meta), "--truth-format", "im2gps", "--id-col", "img_id",
            "--lat-col", "predicted_lat", "--lon-col", "predicted_long", "--bootstrap", "0", "--digits", "3",
            "--json", str(tmp_path / "g3.json"), "--convention", "g3"]  # fmt: skip
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert "G3 convention: geodesic, d < t" in r.output
    rep = json.loads((tmp_path / "g3.json").read_text())
    # the README's geodesic number: one image crosses 2500 km (65.999 % instead of 65.966 %)
    assert round(100 * rep["accuracy"]["2500"], 3) == 65.999 and rep["accuracy_counts"] == "d < t"
    r = CliRunner().invoke(main, [*args, "--distance", "haversine"])
    assert r.exit_code != 0 and "geodesic" in r.output


def test_exif_gps_is_read_from_the_file_and_zero_is_no_fix() -> None:
    image = pytest.importorskip("PIL.Image")

    def jpeg(ref_lat: str, lat: tuple[float, ...], ref_lon: str, lon: tuple[float, ...]) -> bytes:
        ex = image.Exif()
        gps = ex.get_ifd(0x8825)
        gps[1], gps[2], gps[3], gps[4] = ref_lat, lat, ref_lon, lon
        out = io.BytesIO()
        image.new("RGB", (16, 16)).save(out, "JPEG", exif=ex.tobytes())
        return out.getvalue()

    lat, lon = exif_gps(jpeg("S", (33.0, 52.0, 4.0), "W", (70.0, 30.0, 0.0)))  # type: ignore[misc]
    assert lat == pytest.approx(-(33 + 52 / 60 + 4 / 3600)) and lon == pytest.approx(-70.5)
    assert exif_gps(jpeg("N", (0.0, 0.0, 0.0), "E", (0.0, 0.0, 0.0))) is None
    assert exif_gps(b"not an image") is None
    images = DATA / "im2gps3k" / "images"
    if images.is_dir():  # the shared Flickr photos were published without GPS tags
        assert not any(exif_gps(p) for p in sorted(images.iterdir())[:50])


@pytest.mark.skipif(not ANSWERS.is_file(), reason="../shared/data/llm_answers is absent")
def test_cross_validated_calibration_beats_the_raw_agreement_on_the_real_sets() -> None:
    sets = [s for s in read_sample_sets(ANSWERS, source_contains="result-mp-16-images-20-new") if s.lat.size]
    feats, within, photos = [], [], []
    for s in sets:
        c = choose("medoid", Candidates.of(s.lat, s.lon))
        conf = agreement_at(s.lat, s.lon, c.lat, c.lon, s.asked)
        feats.append(sample_features(s.lat, s.lon, c.lat, c.lon, s.asked, conf))
        within.append(float(_hav((c.lat, c.lon), (s.true_lat, s.true_lon)) <= 25.0))
        photos.append(s.photo)
    y = np.asarray(within)
    unique = sorted(set(photos))
    fold = np.asarray([unique.index(p) % 5 for p in photos])
    cv = np.empty(y.size)
    for f in range(5):
        cal = fit_calibration([feats[i] for i in np.flatnonzero(fold != f)], y[fold != f])
        cv[fold == f] = cal.probability([feats[i] for i in np.flatnonzero(fold == f)])
    raw = np.asarray([f["agreement"] for f in feats])
    assert brier(cv, y) < 0.75 * brier(raw, y) and ece(cv, y) < 0.5 * ece(raw, y)


def test_locate_calibrates_flags_exif_gps_and_reports_regions(
    locate_env: dict[str, object], tmp_path: Path
) -> None:
    """End to end: a stand-in LLM, --select, --calibration and a query photo that carries GPS."""
    image = pytest.importorskip("PIL.Image")
    from openai_standin import StandIn

    queries: list[Path] = locate_env["queries"][:3]  # type: ignore[index]
    leak = tmp_path / "leak.jpg"
    with image.open(queries[0]) as img:
        ex = image.Exif()
        gps = ex.get_ifd(0x8825)
        gps[1], gps[2], gps[3], gps[4] = "N", (40.0, 30.0, 0.0), "E", (3.0, 0.0, 0.0)
        img.save(leak, "JPEG", exif=ex.tobytes())
    cal = fit_calibration(
        [{"agreement": a} for a in (0.5, 0.5, 1.0, 1.0, 1.0, 1.0)], [0, 0, 1, 1, 1, 0], strategy="rag"
    )
    cal_path = cal.save(tmp_path / "calib.json")
    out = tmp_path / "p.geojson"
    args = ["locate", str(leak), *map(str, queries[1:]), "--store", str(locate_env["store"]),
            "--encoder", str(locate_env["tiny"]), "--samples", "3", "--select", "geomedian",
            "--calibration", str(cal_path), "--out", str(out)]  # fmt: skip
    with StandIn() as server:
        r = CliRunner().invoke(main, [*args, "--llm", server.url])
    assert r.exit_code == 0, r.output
    records = [json.loads(x) for x in out.with_suffix(".jsonl").read_text().splitlines()]
    assert len(records) == 3
    for rec in records:
        ev = rec["evidence"]
        assert ev["select"]["rule"] == "geomedian" and ev["chosen"] is None
        raw = ev["raw_confidence"]
        assert rec["confidence"] == pytest.approx(float(cal.probability([{"agreement": raw}])[0]))
        assert ev["calibration"] == {"probability_within_km": 25.0, "method": "isotonic"}
        assert sum(r["count"] for r in ev["regions"]) == 3
    assert records[0]["evidence"]["exif_gps"] == {"lat": 40.5, "lon": 3.0}
    assert all("exif_gps" not in rec["evidence"] for rec in records[1:])
    # a calibration fitted on another route is refused before any photo (without an LLM the route is knn)
    r = CliRunner().invoke(main, [*args[:-2], "--out", str(tmp_path / "q.csv")])
    assert r.exit_code != 0 and "fitted on rag predictions; this run's strategy is knn" in r.output
