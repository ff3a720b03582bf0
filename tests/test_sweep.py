"""`georag eval sweep`: one run per grid point, each equal to a plain `georag locate` + `georag eval`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from georag.cli import main
from georag.experiments.sweep import SweepPoint, grid
from openai_standin import StandIn
from store_fixtures import IM2GPS3K_CSV


def test_grid_collapses_what_a_strategy_ignores() -> None:
    points = grid(["knn", "knn-medoid", "rag"], [0, 5], [0, 5])
    assert points == [
        SweepPoint("knn", 1, 0),
        SweepPoint("knn-medoid", 1, 0),
        SweepPoint("knn-medoid", 5, 0),
        SweepPoint("rag", 0, 0),
        SweepPoint("rag", 0, 5),
        SweepPoint("rag", 5, 0),
        SweepPoint("rag", 5, 5),
    ]


def test_sweep_scores_every_run_like_locate_then_eval(locate_env: dict[str, object], tmp_path: Path) -> None:
    photos = [str(p) for p in locate_env["queries"][:12]]  # type: ignore[index]
    common = ["--store", str(locate_env["store"]), "--encoder", str(locate_env["tiny"])]
    truth = str(IM2GPS3K_CSV)
    with StandIn() as server:
        r = CliRunner().invoke(
            main,
            ["eval", "sweep", *photos, *common, "--truth", truth, "--llm", server.url,
             "--strategies", "knn,knn-medoid,rag", "--k-near", "0,5", "--k-far", "0,16", "--samples", "3",
             "--bootstrap", "0", "--out", str(tmp_path / "sweep")],
        )  # fmt: skip
        assert r.exit_code == 0, r.output
        # The same rag point by hand: locate, then eval.
        one = CliRunner().invoke(
            main, ["locate", *photos, *common, "--llm", server.url, "--variants", "rag:5:16",
                   "--samples", "3", "--out", str(tmp_path / "by-hand.csv")],
        )  # fmt: skip
        assert one.exit_code == 0, one.output
    runs = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    assert [(x["strategy"], x["k_near"], x["k_far"]) for x in runs] == [
        ("knn", 1, 0), ("knn-medoid", 1, 0), ("knn-medoid", 5, 0),
        ("rag", 0, 0), ("rag", 0, 16), ("rag", 5, 0), ("rag", 5, 16),
    ]  # fmt: skip
    assert "| strategy | k_near | k_far | 1 km | 25 km | 200 km | 750 km | 2500 km |" in r.output
    scored = CliRunner().invoke(
        main, ["eval", str(tmp_path / "by-hand.csv"), "--truth", truth, "--bootstrap", "0",
               "--json", str(tmp_path / "by-hand.json")],
    )  # fmt: skip
    assert scored.exit_code == 0, scored.output
    by_hand = json.loads((tmp_path / "by-hand.json").read_text())
    rag = next(x for x in runs if (x["strategy"], x["k_near"], x["k_far"]) == ("rag", 5, 16))
    # One rule: the sweep scores each run as `georag eval` scores its CSV against the same truth file.
    assert rag["denominator"] == by_hand["denominator"] == "truth"
    assert rag["counts"] == by_hand["counts"] and by_hand["counts"]["joined"] == 12
    assert rag["accuracy"] == by_hand["accuracy"] and rag["n"] == by_hand["n"]
    assert rag["median_km"] == pytest.approx(by_hand["median_km"])
    assert "| n | scored | missing |" in r.output and "denominator truth: every truth row" in r.output
    assert "denominator truth: every truth row" in scored.output and "12 scored" in scored.output
    assert (tmp_path / "sweep" / "rag_k5-16.csv").read_text() == (tmp_path / "by-hand.csv").read_text()
    # A second run resumes every grid point: nothing is recomputed.
    again = CliRunner().invoke(
        main,
        ["eval", "sweep", *photos, *common, "--truth", truth, "--strategies", "knn", "--k-near", "5",
         "--out", str(tmp_path / "sweep")],
    )  # fmt: skip
    assert again.exit_code == 0 and "knn_k1-0: 12 photos" in again.output
    # --denominator predicted: the same rule in both commands (only the rows with a prediction).
    sub = CliRunner().invoke(
        main,
        ["eval", "sweep", *photos, *common, "--truth", truth, "--strategies", "knn", "--k-near", "5",
         "--denominator", "predicted", "--bootstrap", "0", "--out", str(tmp_path / "sweep")],
    )  # fmt: skip
    assert sub.exit_code == 0, sub.output
    knn_sweep = json.loads((tmp_path / "sweep" / "sweep.json").read_text())[0]
    knn_eval = CliRunner().invoke(
        main, ["eval", str(tmp_path / "sweep" / "knn_k1-0.csv"), "--truth", truth, "--bootstrap", "0",
               "--denominator", "predicted", "--json", str(tmp_path / "knn.json")],
    )  # fmt: skip
    assert knn_eval.exit_code == 0, knn_eval.output
    by_eval = json.loads((tmp_path / "knn.json").read_text())
    assert knn_sweep["n"] == by_eval["n"] == 12 and knn_sweep["accuracy"] == by_eval["accuracy"]
    assert "denominator predicted" in sub.output
