"""`georag locate` on the RAG route against a stand-in OpenAI-compatible server: fallbacks, kill -9."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from georag.cli import main
from georag.llm.prompts import format_coordinates
from openai_standin import StandIn, answer

pytest.importorskip("torch")


def _args(locate_env: dict[str, object], paths: list[Path], out: Path, llm: str, *extra: str) -> list[str]:
    return [
        "locate", *map(str, paths), "--store", str(locate_env["store"]), "--encoder", str(locate_env["tiny"]),
        "--llm", llm, "--out", str(out), *extra,
    ]  # fmt: skip


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_rag_picks_the_medoid_of_the_answers_and_shows_the_neighbors(
    locate_env: dict[str, object], tmp_path: Path
) -> None:
    queries = locate_env["queries"][:6]  # type: ignore[index]
    with StandIn() as server:
        r = CliRunner().invoke(
            main, _args(locate_env, queries, tmp_path / "p.csv", server.url, "--samples", "3")
        )
        seen = [s for s in server.seen if s.body.get("max_tokens") != 1]  # not the LLM check's request
    assert r.exit_code == 0, r.output
    rows = _rows(tmp_path / "p.csv")
    middle = answer(1)
    assert all(
        (float(x["lat"]), float(x["lon"]), x["strategy"], x["confidence"])
        == (middle["latitude"], middle["longitude"], "rag", "1.000")
        for x in rows
    )
    assert len(seen) == 6 and all(s.body["n"] == 3 for s in seen)
    records = [json.loads(x) for x in (tmp_path / "p.jsonl").read_text().splitlines()]
    prompts = {s.body["messages"][1]["content"][1]["text"] for s in seen}
    for rec in records:
        near = rec["evidence"]["neighbors"]["near"]
        shown = format_coordinates([n["lat"] for n in near], [n["lon"] for n in near])
        assert any(shown in p for p in prompts), "the prompt shows the 16 similar rows' coordinates"
        assert len(rec["evidence"]["answers"]) == 3 and rec["evidence"]["candidates"][1] == [
            middle["latitude"],
            middle["longitude"],
        ]
        assert set(rec["evidence"]["timings"]) == {"encode_s", "search_s", "llm_s"}


def test_refusals_and_a_dead_server_fall_back_to_retrieval_and_say_so(
    locate_env: dict[str, object], tmp_path: Path
) -> None:
    queries = locate_env["queries"][:3]  # type: ignore[index]
    assert CliRunner().invoke(main, _args(locate_env, queries, tmp_path / "knn.csv", "none")).exit_code == 0
    knn = _rows(tmp_path / "knn.csv")
    with StandIn(mode="refuse") as server:
        r = CliRunner().invoke(
            main, _args(locate_env, queries, tmp_path / "refused.csv", server.url, "--samples", "2")
        )
    assert r.exit_code == 0 and "3 fell back to retrieval" in r.output, r.output
    refused = _rows(tmp_path / "refused.csv")
    with StandIn() as server:
        # Answers the LLM check, then refuses every request: with a budget of -1 every photo falls back.
        server.script = lambda body: _then(server, body, "bad_request")
        r = CliRunner().invoke(
            main,
            _args(locate_env, queries, tmp_path / "dead.csv", server.url, "--llm-retries", "0",
                  "--llm-max-failures", "-1"),
        )  # fmt: skip
    assert r.exit_code == 0 and "3 fell back to retrieval" in r.output, r.output
    for rows, reason in (
        (refused, "none of the 2 LLM answers stated coordinates"),
        (_rows(tmp_path / "dead.csv"), "every LLM request failed"),
    ):
        for row, base in zip(rows, knn, strict=True):
            assert (row["lat"], row["lon"]) == (base["lat"], base["lon"])
            assert row["strategy"] == "rag>knn" and row["confidence"] == "0.000" and reason in row["fallback"]


def _then(server: StandIn, body: dict[str, object], mode: str) -> str:
    """A stand-in script: answers, and switches ``server`` to ``mode`` once the LLM check's one-token
    request came."""
    if body.get("max_tokens") == 1:
        server.mode = mode
    return json.dumps(answer(0))


def test_kill_9_mid_run_then_resume_gives_the_uninterrupted_result(
    locate_env: dict[str, object], tmp_path: Path
) -> None:
    queries = locate_env["queries"][:16]  # type: ignore[index]
    cli = [sys.executable, "-c", "from georag.cli import main; main()"]
    with StandIn(delay_s=0.25) as server:
        flags = ("--samples", "2", "--llm-concurrency", "2")
        whole = subprocess.run(
            [*cli, *_args(locate_env, queries, tmp_path / "whole.csv", server.url, *flags)],
            capture_output=True,
            text=True,
        )
        assert whole.returncode == 0, whole.stderr
        proc = subprocess.Popen(
            [*cli, *_args(locate_env, queries, tmp_path / "killed.csv", server.url, *flags)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        jsonl = tmp_path / "killed.jsonl"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if jsonl.exists() and jsonl.read_text().count("\n") >= 4:
                break
            time.sleep(0.02)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
        done_before = jsonl.read_text().count("\n")
        assert 4 <= done_before < 16
        again = subprocess.run(
            [*cli, *_args(locate_env, queries, tmp_path / "killed.csv", server.url, *flags)],
            capture_output=True,
            text=True,
        )
    assert again.returncode == 0, again.stderr
    assert f"resumed: {done_before} already done" in again.stdout
    assert _rows(tmp_path / "killed.csv") == _rows(tmp_path / "whole.csv")


def test_rag_through_a_real_triton_server(locate_env: dict[str, object], tmp_path: Path) -> None:
    from triton_server import run_triton_server, triton_unavailable_reason

    reason = triton_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    pytest.importorskip("tritonclient.grpc")
    queries = locate_env["queries"][:4]  # type: ignore[index]
    with run_triton_server() as server:
        for protocol in ("grpc", "http"):
            out = tmp_path / f"{protocol}.csv"
            args = _args(locate_env, queries, out, server.url("mllm_standin", protocol), "--samples", "3")
            r = CliRunner().invoke(main, args)
            assert r.exit_code == 0, r.output
            rows = _rows(out)
            # The stand-in answers Paris + 0.01 * i for sample i: the medoid of three is sample 1.
            assert [(x["lat"], x["lon"], x["strategy"]) for x in rows] == [
                ("48.866600", "2.362200", "rag")
            ] * 4
