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
    # The sweep scores only the photos it located; the file-based eval divides by the whole truth file.
    assert rag["counts"]["n"] == 12 and by_hand["counts"]["joined"] == 12
    assert rag["median_km"] == pytest.approx(by_hand["median_km"])
    assert (tmp_path / "sweep" / "rag_k5-16.csv").read_text() == (tmp_path / "by-hand.csv").read_text()
    # A second run resumes every grid point: nothing is recomputed.
    again = CliRunner().invoke(
        main,
        ["eval", "sweep", *photos, *common, "--truth", truth, "--strategies", "knn", "--k-near", "5",
         "--out", str(tmp_path / "sweep")],
    )  # fmt: skip
    assert again.exit_code == 0 and "knn_k1-0: 12 photos" in again.output
