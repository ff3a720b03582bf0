"""Tests of `georag eval`: the published GeoEstimation tables through the command, the table, --json,
--markdown, missing ids, the denominator, georag outputs with failures and fallbacks, --compare, --plot."""

from __future__ import annotations

import csv
import json
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

import georag.evaluate
from georag.cli import main

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
GEOEST = SHARED / "geoestimation"
RESULT_COLS = ["--id-col", "img_id", "--lat-col", "predicted_lat", "--lon-col", "predicted_long"]
MODELS = ("ISNs_M-fstar-S3", "base-vgg-c_L-m", "base-vgg_L-m", "base_L-m", "base_M-fstar", "base_M-m")


def run(*args: object) -> tuple[int, str]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.output


def need_geoest() -> None:
    if not GEOEST.is_dir():
        pytest.skip(f"needs the shared reference data (../shared/data): missing {GEOEST}")


def geoest_args(bench: str, model: str) -> list[object]:
    return [
        GEOEST / "results" / bench / f"{model}.csv",
        "--truth",
        GEOEST / "meta" / f"{bench}_places365.csv",
        "--truth-format",
        "im2gps",
        *RESULT_COLS,
    ]


def summary_row(path: Path) -> dict[str, str]:
    """The printed summary of a result file (csv module; the two rows after the blank line)."""
    with open(path, newline="") as f:
        lines = list(csv.reader(f))
    blank = next(i for i, r in enumerate(lines) if not any(c.strip() for c in r))
    return dict(zip(lines[blank + 1], lines[blank + 2], strict=True))


@pytest.mark.parametrize("bench", ["im2gps3k", "im2gps"])
@pytest.mark.parametrize("model", MODELS)
def test_eval_reproduces_each_summary_row(bench: str, model: str, tmp_path: Path) -> None:
    need_geoest()
    out = tmp_path / "r.json"
    code, text = run("eval", *geoest_args(bench, model), "--json", out, "--bootstrap", "0")
    assert code == 0, text
    doc = json.loads(out.read_text())
    printed = summary_row(GEOEST / "results" / bench / f"{model}.csv")
    names = [k for k in printed if "acc (" in k]
    for key, name in zip(["1", "25", "200", "750", "2500"], names, strict=True):
        digits = len(printed[name].partition(".")[2])
        assert f"{doc['accuracy'][key]:.{digits}f}" == printed[name], (name, doc["accuracy"][key])
    mean = printed["mean deviation (km)"]
    assert f"{doc['mean_km']:.{len(mean.partition('.')[2])}f}" == mean
    assert doc["n"] == (2997 if bench == "im2gps3k" else 237) and doc["missing"] == 0


def test_eval_table_prints_the_paper_row() -> None:
    need_geoest()
    code, text = run("eval", *geoest_args("im2gps3k", "ISNs_M-fstar-S3"))
    assert code == 0, text
    values = {line.split()[2]: line.split()[4] for line in text.splitlines() if line.startswith("acc @")}
    assert values == {"1": "10.5", "25": "28.0", "200": "36.6", "750": "49.7", "2500": "66.0"}
    assert "95% CI" in text and "median error" in text and "missing 0" in text and "n = 2997" in text
    assert "im2gps3k_places365.csv" in text and "haversine" in text


@pytest.mark.parametrize(("distance", "value"), [("haversine", "65.966"), ("geodesic", "65.999")])
def test_eval_geodesic_moves_2500_km_by_one_image(distance: str, value: str) -> None:
    need_geoest()
    code, text = run("eval", *geoest_args("im2gps3k", "ISNs_M-fstar-S3"), "--distance", distance,
                     "--digits", "3", "--bootstrap", "0")  # fmt: skip
    assert code == 0, text
    row = next(line for line in text.splitlines() if line.startswith("acc @ 2500 km"))
    assert row.split()[4] == value


# ---- small files ---------------------------------------------------------------------------------------


def write_truth(path: Path, n: int = 30) -> tuple[list[str], np.ndarray, np.ndarray]:
    ids = [f"img{i:03d}.jpg" for i in range(n)]
    lat = np.linspace(-50.0, 60.0, n)
    lon = np.linspace(-170.0, 170.0, n)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["IMG_ID", "AUTHOR", "LAT", "LON"])
        for i, la, lo in zip(ids, lat, lon, strict=True):
            w.writerow([i, "someone", f"{la:.6f}", f"{lo:.6f}"])
    return ids, lat, lon


def write_preds(path: Path, rows: list[tuple[str, float, float]]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "lat", "lon"])
        for r in rows:
            w.writerow(r)
    return path


@pytest.fixture
def small(tmp_path: Path) -> dict[str, Any]:
    """30 truth rows; predictions for the first 24: 12 exact, 12 shifted 3 degrees of latitude (~334 km)."""
    ids, lat, lon = write_truth(tmp_path / "truth.csv")
    shift = np.where(np.arange(30) < 12, 0.0, 3.0)
    rows = list(zip(ids[:24], (lat + shift)[:24], lon[:24], strict=True))
    return {
        "truth": tmp_path / "truth.csv",
        "preds": write_preds(tmp_path / "preds.csv", rows),
        "ids": ids,
        "dir": tmp_path,
    }


def test_json_schema_and_missing_ids(small: dict[str, Any]) -> None:
    out = small["dir"] / "out" / "r.json"
    code, text = run("eval", small["preds"], "--truth", small["truth"], "--json", out, "--seed", "3")
    assert code == 0, text
    doc = json.loads(out.read_text())
    assert doc["n"] == 30 and doc["missing"] == 6
    assert list(doc["accuracy"]) == ["1", "25", "200", "750", "2500"]
    assert doc["accuracy"]["1"] == pytest.approx(12 / 30) and doc["accuracy"]["750"] == pytest.approx(24 / 30)
    assert doc["median_km"] == pytest.approx(np.median([0.0] * 12 + [333.58] * 12), abs=0.01)
    assert doc["mean_km"] == pytest.approx(333.58 / 2, abs=0.01)
    assert isinstance(doc["geoscore"], float) and doc["ci"]["seed"] == 3 and doc["ci"]["resamples"] == 1000
    assert set(doc["ci"]["accuracy"]) == set(doc["accuracy"]) and len(doc["ci"]["median_km"]) == 2
    assert doc["counts"] | {"n": 30} == doc["counts"] and doc["counts"]["scored"] == 24
    assert doc["missing_ids"] == small["ids"][24:]
    assert doc["predictions"].endswith("preds.csv") and doc["truth"].endswith("truth.csv")
    assert "missing predictions (6): img024.jpg, img025.jpg" in text and f"wrote {out}" in text


def test_missing_ids_listing_is_cut_at_20(small: dict[str, Any]) -> None:
    preds = write_preds(small["dir"] / "few.csv", [("img000.jpg", -50.0, -170.0)])
    out = small["dir"] / "few.json"
    code, text = run("eval", preds, "--truth", small["truth"], "--json", out, "--bootstrap", "0")
    assert code == 0, text
    line = next(x for x in text.splitlines() if x.startswith("missing predictions (29)"))
    assert "img020.jpg" in line and "img021.jpg" not in line and "--json lists all" in line
    assert len(json.loads(out.read_text())["missing_ids"]) == 29


def test_denominator_switch(small: dict[str, Any]) -> None:
    docs = {}
    for denominator in ("truth", "predicted"):
        out = small["dir"] / f"{denominator}.json"
        code, text = run("eval", small["preds"], "--truth", small["truth"], "--denominator", denominator,
                         "--json", out, "--bootstrap", "0")  # fmt: skip
        assert code == 0, text
        docs[denominator] = json.loads(out.read_text())
    truth, predicted = docs["truth"], docs["predicted"]
    assert truth["n"] == 30 and predicted["n"] == 24
    for key in truth["accuracy"]:
        assert predicted["accuracy"][key] == pytest.approx(truth["accuracy"][key] * 30 / 24)
    assert predicted["median_km"] == truth["median_km"] and predicted["missing"] == truth["missing"] == 6
    assert predicted["geoscore"] == pytest.approx(truth["geoscore"] * 30 / 24)


def test_markdown(small: dict[str, Any]) -> None:
    code, text = run("eval", small["preds"], "--truth", small["truth"], "--markdown", "--bootstrap", "0")
    assert code == 0, text
    lines = text.splitlines()
    assert "| metric | value | 95% CI |" in lines and "|---|---:|---:|" in lines
    assert "| acc @ 1 km | 40.0 % |  |" in lines


def test_georag_output_with_a_failure_and_a_fallback(small: dict[str, Any]) -> None:
    from georag.locate.output import PredictionWriter
    from georag.types import Prediction

    ids = small["ids"]
    out = small["dir"] / "run" / "preds.csv"
    with PredictionWriter(out, [], 0) as w:
        for k, i in enumerate(ids):
            lat, lon = -50.0 + k * 110.0 / 29, -170.0 + k * 340.0 / 29
            if k == 3:
                w.write(Prediction(i, error="image could not be decoded"))
            elif k == 5:
                w.write(Prediction(i, lat, lon, 0.0, "rag>knn", fallback="no answer parsed"))
            else:
                w.write(Prediction(i, lat, lon, 0.9, "rag"))
    for name in ("preds.csv", "preds.jsonl"):
        report = small["dir"] / f"{name}.json"
        code, text = run("eval", out.with_name(name), "--truth", small["truth"], "--json", report,
                         "--bootstrap", "0")  # fmt: skip
        assert code == 0, text
        doc = json.loads(report.read_text())
        assert doc["counts"]["failures"] == 1 and doc["counts"]["fallbacks"] == 1
        assert doc["counts"]["scored"] == 29 and doc["failed_ids"] == [ids[3]]
        assert doc["accuracy"]["1"] == pytest.approx(29 / 30)  # the fallback still scores, the failure not
        assert "failures 1, fallbacks 1" in text and f"failed predictions (1): {ids[3]}" in text


def test_ids_without_extension_join(small: dict[str, Any]) -> None:
    preds = write_preds(small["dir"] / "stems.csv", [("img000", -50.0, -170.0), ("img001.JPG", 0.0, 0.0)])
    code, text = run("eval", preds, "--truth", small["truth"], "--bootstrap", "0")
    assert code == 0, text
    assert "matched without image extension 2" in text and "missing 28" in text


def test_bad_column_names_are_named(small: dict[str, Any]) -> None:
    code, text = run("eval", small["preds"], "--truth", small["truth"], "--lat-col", "latitude")
    assert code != 0
    assert "no column 'latitude' (--lat-col)" in text and "the file has columns: 'id', 'lat', 'lon'" in text
    code, text = run("eval", small["preds"], "--truth", small["truth"], "--truth-format", "osv5m")
    assert code != 0 and "no column 'id'" in text and "'IMG_ID', 'AUTHOR', 'LAT', 'LON'" in text
    code, text = run("eval", small["preds"], "--truth", small["truth"], "--thresholds", "1,a")
    assert code != 0 and "comma-separated km" in text


def test_generic_truth_and_custom_thresholds(small: dict[str, Any]) -> None:
    truth = small["dir"] / "generic.csv"
    truth.write_text("photo,y,x\nimg000.jpg,-50,-170\nimg001.jpg,10,10\n")
    out = small["dir"] / "g.json"
    code, text = run("eval", small["preds"], "--truth", truth, "--truth-format", "generic", "--truth-id-col",
                     "photo", "--truth-lat-col", "y", "--truth-lon-col", "x", "--thresholds", "0.5,2500",
                     "--json", out, "--denominator", "predicted")  # fmt: skip
    assert code == 0, text
    doc = json.loads(out.read_text())
    assert list(doc["accuracy"]) == ["0.5", "2500"] and doc["n"] == 2 and doc["counts"]["extra"] == 22
    assert "acc @ 0.5 km" in text


def test_compare_with_paired_interval(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    n = 3000
    ids, lat, lon = write_truth(tmp_path / "truth.csv", n)
    hit_a = rng.random(n) < 0.5
    hit_b = hit_a & (rng.random(n) >= 0.2)  # true difference 0.5 * 0.2 = 0.10 at every threshold
    far = np.where(lat > 0, lat - 70.0, lat + 70.0)
    a = write_preds(tmp_path / "a.csv", list(zip(ids, np.where(hit_a, lat, far), lon, strict=True)))
    b = write_preds(tmp_path / "b.csv", list(zip(ids, np.where(hit_b, lat, far), lon, strict=True)))
    out = tmp_path / "ab.json"
    code, text = run("eval", a, "--compare", b, "--truth", tmp_path / "truth.csv", "--json", out)
    assert code == 0, text
    doc = json.loads(out.read_text())
    diff = doc["difference"]
    assert doc["n"] == doc["a"]["n"] == doc["b"]["n"] == n
    assert diff["method"] == "paired percentile bootstrap"
    for key in ("1", "25", "200", "750", "2500"):
        lo, hi = diff["ci"][key]
        assert lo < 0.10 < hi and lo > 0
        assert diff["accuracy"][key] == pytest.approx(doc["a"]["accuracy"][key] - doc["b"]["accuracy"][key])
    assert "A = a.csv, B = b.csv" in text and "95% CI (paired)" in text
    row = next(line for line in text.splitlines() if line.startswith("acc @ 25 km"))
    assert row.split()[8] == f"{100 * diff['accuracy']['25']:+.1f}" and row.split()[9] == "pp"
    code, text = run("eval", a, "--compare", b, "--truth", tmp_path / "truth.csv", "--markdown")
    assert code == 0 and "| metric | A | B | A - B | 95% CI (paired) |" in text


def test_compare_the_published_models() -> None:
    need_geoest()
    code, text = run("eval", *geoest_args("im2gps3k", "ISNs_M-fstar-S3"), "--compare",
                     GEOEST / "results" / "im2gps3k" / "base_M-m.csv", "--digits", "3")  # fmt: skip
    assert code == 0, text
    rows = {line.split()[2]: line.split() for line in text.splitlines() if line.startswith("acc @")}
    assert rows["1"][4] == "10.544" and rows["1"][6] == "8.175" and rows["1"][8] == "+2.369"


# ---- --plot ----------------------------------------------------------------------------------------------


def test_plot_calls_the_plots_module(small: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
    fake = types.ModuleType("georag.evaluate.plots")
    fake.plot_error_cdf = lambda *a, **k: calls.append(("cdf", a, k))  # type: ignore[attr-defined]
    fake.plot_world_map = lambda *a, **k: calls.append(("map", a, k))  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "georag.evaluate.plots", fake)
    monkeypatch.setattr(georag.evaluate, "plots", fake, raising=False)
    code, text = run("eval", small["preds"], "--truth", small["truth"], "--plot", small["dir"] / "plots",
                     "--bootstrap", "0")  # fmt: skip
    assert code == 0, text
    (cdf, a, k), (world, b, j) = calls
    assert cdf == "cdf" and a[0].shape == (30,) and np.isnan(a[0][24:]).all()  # missing rows: NaN
    assert a[1] == (1.0, 25.0, 200.0, 750.0, 2500.0)
    assert a[2] == small["dir"] / "plots" / "error_cdf.png" and "title" in k
    assert world == "map" and all(x.shape == (30,) for x in b[:4]) and b[4].name == "world_map.png"
    assert np.isfinite(b[0]).all() and np.isnan(b[2][24:]).all()
    assert "title" in j and "wrote the plots" in text


def test_plot_without_the_module_says_what_to_install(
    small: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "georag.evaluate.plots", None)  # makes the import fail
    monkeypatch.delattr(georag.evaluate, "plots", raising=False)
    code, text = run("eval", small["preds"], "--truth", small["truth"], "--plot", small["dir"] / "p")
    assert code != 0 and "pip install matplotlib countryinfo" in text


def test_plot_writes_pngs(small: dict[str, Any]) -> None:
    pytest.importorskip("matplotlib")
    pytest.importorskip("georag.evaluate.plots")
    out = small["dir"] / "png"
    code, text = run("eval", small["preds"], "--truth", small["truth"], "--plot", out, "--bootstrap", "0")
    assert code == 0, text
    for name in ("error_cdf.png", "world_map.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_eval_prints_n_scored_missing_and_the_denominator(small: dict[str, Any]) -> None:
    code, text = run("eval", small["preds"], "--truth", small["truth"], "--bootstrap", "0")
    assert code == 0, text
    assert "n = 30: 24 scored, 6 missing, 0 failed (denominator truth: every truth row;" in text
    code, text = run("eval", small["preds"], "--truth", small["truth"], "--bootstrap", "0",
                     "--denominator", "predicted")  # fmt: skip
    assert code == 0, text
    assert "n = 24: 24 scored, 6 missing, 0 failed (denominator predicted: only rows with a scored" in text


def test_eval_lists_failure_reasons_and_the_swap_hint(small: dict[str, Any]) -> None:
    ids = small["ids"]
    path = small["dir"] / "bad.csv"
    # lon written in the lat column for three rows, one unreadable lat, the rest fine.
    path.write_text(
        "id,lat,lon\n"
        f"{ids[0]},120,40\n{ids[1]},-150,-30\n{ids[2]},170,10\n{ids[3]},abc,5\n"
        + "".join(f"{i},1,2\n" for i in ids[4:10])
    )
    out = small["dir"] / "bad.json"
    code, text = run("eval", path, "--truth", small["truth"], "--bootstrap", "0", "--json", out)
    assert code == 0, text
    assert "rows without usable coordinates (4): out of range 3, not a number 1" in text
    assert (
        f"{ids[0]}: lat 120 out of range (|lat| <= 90)" in text
        and f"{ids[3]}: lat 'abc' is not a number" in text
    )
    assert "hint: 3 of 4 failed rows would be valid with lat and lon swapped" in text
    doc = json.loads(out.read_text())["prediction_failures"]
    assert doc["failed"] == 4 and doc["by_reason"] == {"out of range": 3, "not a number": 1}
    assert doc["swap_hint"].startswith("3 of 4") and len(doc["rows"]) == 4
    assert doc["rows"][3] == {"id": ids[3], "reason": "not a number", "detail": "lat 'abc' is not a number"}


def test_eval_truth_with_only_id_lat_lon(small: dict[str, Any]) -> None:
    ids = small["ids"]
    truth = small["dir"] / "only.csv"
    with open(small["truth"], newline="") as f:
        full = list(csv.reader(f))
    with open(truth, "w", newline="") as f:
        csv.writer(f).writerows([[r[0], r[2], r[3]] for r in full])  # IMG_ID,LAT,LON
    code, text = run("eval", small["preds"], "--truth", truth, "--bootstrap", "0")
    assert code == 0, text
    _, with_author = run("eval", small["preds"], "--truth", small["truth"], "--bootstrap", "0")
    table = [line for line in text.splitlines() if line.startswith("acc @")]
    assert table == [line for line in with_author.splitlines() if line.startswith("acc @")]
    osv = small["dir"] / "osv.csv"
    osv.write_text("id,latitude,longitude\n" + "".join(f"{i},1,2\n" for i in ids))
    code, text = run("eval", small["preds"], "--truth", osv)
    assert code != 0 and "fit --truth-format osv5m" in text
