"""The `georag` command line: version, help, the demo search, .npy inputs and their errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from georag import __version__
from georag.cli import main
from reference import check_neighbors


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def test_version_and_help() -> None:
    code, out = run("--version")
    assert code == 0 and out.strip() == f"georag, version {__version__}"
    code, out = run("--help")
    assert code == 0 and "search" in out
    code, out = run("search", "--help")
    assert code == 0 and "--k-near" in out and "nearest AND" in out


def test_demo_finds_every_source_row(tmp_path: Path) -> None:
    out_file = tmp_path / "r.npz"
    code, out = run(
        "search",
        "--demo-rows",
        "3000",
        "--demo-dim",
        "40",
        "--demo-queries",
        "5",
        "--out",
        str(out_file),
    )
    assert code == 0, out
    assert "5/5 queries found their source row first" in out
    with np.load(out_file, allow_pickle=False) as z:
        assert z["near_ids"].shape == (5, 16) and z["far_scores"].shape == (5, 16)


def test_npy_inputs_and_json_output(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    db = rng.standard_normal((500, 12), dtype=np.float32)
    q = rng.standard_normal((3, 12), dtype=np.float32)
    np.save(tmp_path / "db.npy", db)
    np.save(tmp_path / "q.npy", q.astype(np.float16))  # float16 is widened
    code, out = run(
        "search",
        "--database",
        str(tmp_path / "db.npy"),
        "--queries",
        str(tmp_path / "q.npy"),
        "--k-near",
        "4",
        "--k-far",
        "3",
        "--out",
        str(tmp_path / "r.json"),
    )
    assert code == 0, out
    got = json.loads((tmp_path / "r.json").read_text())

    class R:
        near_ids = np.array(got["near_ids"], dtype=np.int64)
        near_scores = np.array(got["near_scores"], dtype=np.float32)
        far_ids = np.array(got["far_ids"], dtype=np.int64)
        far_scores = np.array(got["far_scores"], dtype=np.float32)

    check_neighbors(R(), db, q.astype(np.float16).astype(np.float32), 4, 3)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: np.save(p / "q.npy", np.ones((2, 12))), "holds float64; expected float32"),
        (lambda p: np.save(p / "q.npy", np.ones(12, np.float32)), "expected a 2-D"),
        (
            lambda p: np.save(p / "q.npy", np.ones((2, 7), np.float32)),
            "dimension 7 but the index has dimension 12",
        ),
        (lambda p: np.save(p / "q.npy", np.array([{"a": 1}], dtype=object)), "cannot read"),
        (lambda p: (p / "q.npy").write_bytes(b"not a numpy file"), "cannot read"),
        (lambda p: np.save(p / "q.npy", np.zeros((1, 12), np.float32)), "query 0 has zero norm"),
    ],
)
def test_bad_inputs_are_clear_errors(tmp_path: Path, make: object, message: str) -> None:
    np.save(tmp_path / "db.npy", np.ones((10, 12), np.float32))
    make(tmp_path)  # type: ignore[operator]
    code, out = run("search", "--database", str(tmp_path / "db.npy"), "--queries", str(tmp_path / "q.npy"))
    assert code == 1, out
    assert message in out and "Traceback" not in out


def test_usage_errors(tmp_path: Path) -> None:
    np.save(tmp_path / "db.npy", np.ones((10, 12), np.float32))
    code, out = run("search", "--queries", str(tmp_path / "db.npy"))
    assert code == 2 and "--queries needs --database" in out
    code, out = run("search", "--k-near", "-1")
    assert code == 2 and "-1" in out
    (tmp_path / "db.txt").write_text("x")
    code, out = run("search", "--database", str(tmp_path / "db.txt"), "--queries", str(tmp_path / "db.txt"))
    assert code == 1 and "not a .npy file" in out
