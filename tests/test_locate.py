"""`georag locate` end to end on the shared images: retrieval baselines, bad inputs, resuming, the demo."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from encoder_fixtures import SHARED_IMAGES, make_tiny_siglip
from georag.cli import main
from georag.encoder import load_encoder
from georag.store.store import GeoStore
from store_fixtures import IM2GPS3K_CSV, need_shared, unit_rows

pytest.importorskip("torch")


def _locate(locate_env: dict[str, object], paths: list[Path], out: Path, *extra: str) -> tuple[int, str]:
    args = [
        "locate",
        *map(str, paths),
        "--store",
        str(locate_env["store"]),
        "--encoder",
        str(locate_env["tiny"]),
    ]
    result = CliRunner().invoke(main, [*args, "--out", str(out), *extra])
    return result.exit_code, result.output


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_knn_predictions_are_the_nearest_rows_coordinates(
    locate_env: dict[str, object], tmp_path: Path
) -> None:
    queries = locate_env["queries"]
    assert isinstance(queries, list)
    code, output = _locate(locate_env, queries, tmp_path / "preds.csv")
    assert code == 0, output
    assert "located 50 photos" in output and "50 ok" in output
    rows = _rows(tmp_path / "preds.csv")
    assert [r["id"] for r in rows] == [p.name for p in queries]  # input order
    # Independent reference: encode, normalize, brute-force argmax over the store's rows.
    store = GeoStore.open(locate_env["store"])  # type: ignore[arg-type]
    db = unit_rows(store.embeddings(np.arange(store.ntotal)))
    q = unit_rows(load_encoder(locate_env["tiny"]).encode(queries).embeddings)  # type: ignore[arg-type]
    top1 = np.argmax(q @ db.T, axis=1)
    np.testing.assert_allclose([float(r["lat"]) for r in rows], store.lat[top1], atol=1e-6)
    np.testing.assert_allclose([float(r["lon"]) for r in rows], store.lon[top1], atol=1e-6)
    assert {r["strategy"] for r in rows} == {"knn"} and all(r["error"] == "" for r in rows)
    records = [json.loads(x) for x in (tmp_path / "preds.jsonl").read_text().splitlines()]
    assert [rec["evidence"]["neighbors"]["near"][0]["row"] for rec in records] == top1.tolist()
    assert len(records[0]["evidence"]["neighbors"]["far"]) == 16
    assert set(records[0]["evidence"]["timings"]) == {"encode_s", "search_s"}


def test_a_bad_image_is_a_row_with_an_error(locate_env: dict[str, object], tmp_path: Path) -> None:
    queries = locate_env["queries"]
    assert isinstance(queries, list)
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    paths = [queries[0], corrupt, tmp_path / "missing.jpg", queries[1]]
    # A file of paths may name a missing photo: that photo fails alone (a batch is never stopped by one).
    listing = tmp_path / "todo.txt"
    listing.write_text("".join(f"{p}\n" for p in paths), encoding="utf-8")
    code, output = _locate(
        locate_env, [], tmp_path / "p.csv", "--strategy", "knn-medoid", "--list", str(listing)
    )
    assert code == 0, output
    rows = _rows(tmp_path / "p.csv")
    assert [r["id"] for r in rows] == ["" + p.name for p in paths]
    assert rows[1]["error"] and rows[2]["error"] and rows[1]["lat"] == "" and rows[2]["lon"] == ""
    assert rows[0]["strategy"] == "knn-medoid" and rows[0]["lat"] and not rows[0]["error"]
    assert "2 failed" in output
    # A missing path on the command line is a usage error (exit 2), as for every command.
    code, output = _locate(locate_env, [tmp_path / "no" / "such" / "dir"], tmp_path / "q.csv")
    assert code == 2 and "does not exist" in output and not (tmp_path / "q.csv").exists()


def test_an_interrupted_run_resumes_without_redoing_finished_photos(
    locate_env: dict[str, object], tmp_path: Path
) -> None:
    queries = locate_env["queries"]
    assert isinstance(queries, list)
    paths = queries[:20]
    assert _locate(locate_env, paths, tmp_path / "full.csv")[0] == 0
    full = (tmp_path / "full.jsonl").read_text().splitlines(keepends=True)
    # An interrupted run: 8 finished records, then a record cut mid-line by the kill.
    (tmp_path / "cut.jsonl").write_text("".join(full[:8]) + full[8][:40])
    shutil.copyfile(tmp_path / "full.csv", tmp_path / "cut.csv")
    code, output = _locate(locate_env, paths, tmp_path / "cut.csv")
    assert code == 0 and "located 12 photos" in output and "resumed: 8 already done" in output, output
    assert _rows(tmp_path / "cut.csv") == _rows(tmp_path / "full.csv")
    ids = [json.loads(x)["id"] for x in (tmp_path / "cut.jsonl").read_text().splitlines()]
    assert ids == [p.name for p in paths]
    code, output = _locate(locate_env, paths, tmp_path / "cut.csv", "--overwrite")
    assert code == 0 and "located 20 photos" in output


def test_locate_refuses_another_encoder_and_bad_options(
    locate_env: dict[str, object], tmp_path: Path
) -> None:
    queries = locate_env["queries"]
    assert isinstance(queries, list)
    other = make_tiny_siglip(tmp_path / "other", seed=5)
    args = ["locate", str(queries[0]), "--store", str(locate_env["store"]), "--out", str(tmp_path / "x.csv")]
    result = CliRunner().invoke(main, [*args, "--encoder", str(other)])
    assert result.exit_code != 0 and "was built with" in result.output
    result = CliRunner().invoke(main, [*args, "--encoder", str(locate_env["tiny"]), "--strategy", "rag"])
    assert result.exit_code != 0 and "needs an LLM" in result.output
    result = CliRunner().invoke(main, [*args, "--encoder", str(locate_env["tiny"]), "--llm", "ftp://x"])
    assert result.exit_code != 0 and "triton://HOST:PORT/MODEL" in result.output
    result = CliRunner().invoke(
        main, ["locate", "--store", str(locate_env["store"]), "--encoder", "x", "--out", "y.csv"]
    )
    assert result.exit_code != 0 and "no images" in result.output


def test_demo_runs_offline_and_says_its_accuracy_is_meaningless(tmp_path: Path) -> None:
    need_shared()
    result = CliRunner().invoke(main, ["demo", "--out", str(tmp_path / "demo")])
    assert result.exit_code == 0, result.output
    assert "store of 250 photos; located 50 held-out photos with knn (0 failed, 0 fell back)" in result.output
    assert "| 1 km | 25 km | 200 km | 750 km | 2500 km |" in result.output
    assert "RANDOM weights" in result.output
    assert len(_rows(tmp_path / "demo" / "predictions.csv")) == 50
    # The folder is the demo's own: a second run replaces it, another folder is refused.
    assert CliRunner().invoke(main, ["demo", "--out", str(tmp_path / "demo")]).exit_code == 0
    (tmp_path / "mine").mkdir()
    refused = CliRunner().invoke(main, ["demo", "--out", str(tmp_path / "mine")])
    # The demo's store records no authors: a same-author exclusion there is refused, not silently empty.
    photo = sorted(SHARED_IMAGES.iterdir())[0]
    demo_store = tmp_path / "demo" / "store"
    excluded = CliRunner().invoke(
        main,
        ["locate", str(photo), "--store", str(demo_store), "--out", str(tmp_path / "e.csv"),
         "--exclude-same-author", "--truth", str(IM2GPS3K_CSV)],
    )  # fmt: skip
    assert excluded.exit_code != 0 and "records no author for any row" in excluded.output
    assert refused.exit_code != 0 and "not a georag demo folder" in refused.output


def test_demo_without_shared_data_generates_pictures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import georag.demo

    monkeypatch.setattr(georag.demo, "find_shared_data", lambda: None)
    report = georag.demo.run_demo(tmp_path / "d")
    assert (report.gallery, report.queries, report.failed) == (100, 20, 0)
    assert "generated" in report.data and set(report.accuracy) == {1.0, 25.0, 200.0, 750.0, 2500.0}


def test_a_config_file_drives_locate_and_options_override_it(
    locate_env: dict[str, object], tmp_path: Path
) -> None:
    queries = locate_env["queries"][:5]  # type: ignore[index]
    config = tmp_path / "run.toml"
    config.write_text(
        f'store = "{locate_env["store"]}"\n'
        f'[encoder]\nmodel = "{locate_env["tiny"]}"\nbatch_size = 2\n'
        "[search]\nk_near = 8\nk_far = 4\n"
        '[strategy]\nname = "knn-medoid"\nknn_k = 8\n'
    )
    run = CliRunner().invoke(
        main, ["locate", *map(str, queries), "--config", str(config), "--out", str(tmp_path / "a.csv")]
    )
    assert run.exit_code == 0 and "with knn-medoid" in run.output, run.output
    records = [json.loads(x) for x in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert all(r["strategy"] == "knn-medoid" for r in records)
    assert {
        (len(r["evidence"]["neighbors"]["near"]), len(r["evidence"]["neighbors"]["far"])) for r in records
    } == {(8, 4)}
    settings = json.loads((tmp_path / "a.settings.json").read_text())
    assert (settings["search.k_near"], settings["strategy.name"], settings["strategy.knn_k"]) == (
        8,
        "knn-medoid",
        8,
    )
    # An option given on the command line wins over the file; the rest of the file stands.
    run = CliRunner().invoke(
        main,
        ["locate", *map(str, queries), "--config", str(config), "--strategy", "knn", "--k-far", "2",
         "--out", str(tmp_path / "b.csv")],
    )  # fmt: skip
    assert run.exit_code == 0 and "with knn:" in run.output, run.output
    records = [json.loads(x) for x in (tmp_path / "b.jsonl").read_text().splitlines()]
    assert all(r["strategy"] == "knn" for r in records)
    assert {
        (len(r["evidence"]["neighbors"]["near"]), len(r["evidence"]["neighbors"]["far"])) for r in records
    } == {(8, 2)}
    # Resuming with the file edited is refused like any other change of settings.
    config.write_text(config.read_text().replace("k_near = 8", "k_near = 6"))
    run = CliRunner().invoke(
        main, ["locate", *map(str, queries), "--config", str(config), "--out", str(tmp_path / "a.csv")]
    )
    assert run.exit_code != 0 and "search.k_near: was 8, now 6" in run.output, run.output


def test_the_library_call_writes_what_the_command_writes(
    locate_env: dict[str, object], tmp_path: Path
) -> None:
    import georag.locate
    from georag.config import Config, EncoderConfig, StrategyConfig

    queries = locate_env["queries"][:8]  # type: ignore[index]
    code, output = _locate(
        locate_env, queries, tmp_path / "cli.csv", "--strategy", "knn-medoid", "--k-far", "4"
    )
    assert code == 0, output
    config = Config(
        store=str(locate_env["store"]),
        encoder=EncoderConfig(model=str(locate_env["tiny"])),
        strategy=StrategyConfig("knn-medoid"),
    ).with_values({"search.k_far": 4, "strategy.rag.variants": "rag:16:4"})
    summary = georag.locate.run(queries, config, out=tmp_path / "lib.csv", progress=False)
    assert isinstance(summary, georag.locate.LocateSummary)
    assert (summary.located, summary.resumed, summary.ok, summary.error, summary.fallback) == (8, 0, 8, 0, 0)
    assert summary.csv_path == tmp_path / "lib.csv" and summary.jsonl_path == tmp_path / "lib.jsonl"
    assert str(summary).startswith("located 8 photos in ") and "with knn-medoid: 8 ok" in str(summary)
    assert (tmp_path / "lib.csv").read_text() == (tmp_path / "cli.csv").read_text()
    strip = [{**json.loads(x), "evidence": {**json.loads(x)["evidence"], "timings": None}}
             for x in (tmp_path / "lib.jsonl").read_text().splitlines()]  # fmt: skip
    by_cli = [{**json.loads(x), "evidence": {**json.loads(x)["evidence"], "timings": None}}
              for x in (tmp_path / "cli.jsonl").read_text().splitlines()]  # fmt: skip
    assert strip == by_cli
    # The same call again resumes: nothing to do; the settings file is the command's.
    again = georag.locate.run(queries, config, out=tmp_path / "lib.csv", progress=False)
    assert (again.located, again.resumed) == (0, 8) and "(resumed: 8 already done)" in str(again)
    assert json.loads((tmp_path / "lib.settings.json").read_text()) == json.loads(
        (tmp_path / "cli.settings.json").read_text()
    )


def test_demo_with_an_unreachable_llm_stops_before_building_anything(tmp_path: Path) -> None:
    need_shared()
    llm = "openai://127.0.0.1:1/v1?model=m"  # nothing listens on port 1
    args = ["demo", "--out", str(tmp_path / "demo"), "--llm", llm, "--llm-retries", "0"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output  # checked first, as locate does (the same message)
    assert "the LLM cannot be used" in result.output and "is the server up" in result.output
    assert not (tmp_path / "demo" / "store").exists()
