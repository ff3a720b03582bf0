"""kill -9 of `georag locate` while it writes its predictions, then the same command again: what the kill
left is complete rows of the uninterrupted run only, and the re-run ends with every photo once, as the
uninterrupted run has it (knn, and rag against a stand-in LLM). benchmarks/bench_store_damage.py runs ten
kills of each."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import damage_campaign as dc
from openai_standin import StandIn

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

KILLS = 1


@pytest.fixture(scope="module")
def locate_args(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    return dc.locate_setup(tmp_path_factory.mktemp("locate-kill"), photos=80, rows=300)


@pytest.mark.parametrize("route", ["knn", "rag"])
def test_kill_9_mid_write_leaves_only_correct_rows_and_the_rerun_completes_them(
    locate_args: list[str], tmp_path: Path, route: str
) -> None:
    rng = np.random.default_rng(5)
    with StandIn() as server:
        job = dc.LocateKill.of(dc.route_args(locate_args, route, server.url), tmp_path / "whole")
        kills = 0
        for _ in range(3 * KILLS):
            was_killed, problem = job.trial(tmp_path / "killed", rng)
            assert not problem
            kills += was_killed
            if kills == KILLS:
                break
    assert kills == KILLS, "every run finished before its kill"
