"""georag.progress: a tqdm bar on a terminal, a plain line every 10 s in a log, nothing when quiet."""

from __future__ import annotations

import ast
import io
import itertools
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import georag.progress
from georag.cli import main
from georag.errors import InputError
from georag.progress import LineProgress, NullProgress, format_duration, progress, set_quiet
from store_fixtures import need_shared, write_csv

LINE = re.compile(
    r"^(?P<desc>[\w.-]+): (?P<n>\d+)/(?P<total>\d+) (?P<noun>\w+) \((?P<pct>\d+\.\d)%\), "
    r"(?P<rate>\d+\.\d)/s(?P<fields>(?:, \d+ [a-z ]+?)*)(?:, ETA (?P<eta>\w+)|, elapsed (?P<elapsed>\w+))?$"
)


def _parse(line: str) -> dict[str, object]:
    m = LINE.match(line)
    assert m, f"not a progress line: {line!r}"
    fields = {}
    for part in filter(None, m["fields"].split(", ")):
        value, name = part.split(" ", 1)
        fields[name] = int(value)
    return {**m.groupdict(), "n": int(m["n"]), "total": int(m["total"]), "fields": fields}


def _seconds(duration: str) -> int:
    parts = dict((unit, int(v)) for v, unit in re.findall(r"(\d+)([hms])", duration))
    assert re.fullmatch(r"(\d+[hms])+", duration), duration
    return 3600 * parts.get("h", 0) + 60 * parts.get("m", 0) + parts.get("s", 0)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class TtyStream(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _progress_on(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test starts with progress on, whatever the environment says; quiet is put back after."""
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    previous = set_quiet(False)
    yield
    set_quiet(previous)


def test_a_log_gets_the_first_line_one_every_10_s_and_the_final_one() -> None:
    clock, out = FakeClock(), io.StringIO()
    bar = progress(1000, desc="locate", noun="photos", stream=out, clock=clock)
    assert isinstance(bar, LineProgress)
    with bar:
        for i in range(1, 1001):  # 1000 updates over 35 fake seconds
            clock.now = i * 35 / 1000
            bar.set_postfix(failed=i // 7, fallbacks=i // 50)
            bar.update(1)
    lines = [_parse(line) for line in out.getvalue().splitlines()]
    # The first at once, then the first update 10 s after the last line (286 * 0.035 s = 10.01 s), the final.
    assert [p["n"] for p in lines] == [0, 286, 572, 858, 1000]
    times = [n * 35 / 1000 for n in (0, 286, 572, 858, 1000)]
    assert all(b - a >= 10 for a, b in itertools.pairwise(times[:-1]))
    for p, t in zip(lines, times, strict=True):
        n = p["n"]
        assert p["desc"] == "locate" and p["total"] == 1000 and p["noun"] == "photos"
        assert p["pct"] == f"{n / 10:.1f}"
        assert float(p["rate"]) == pytest.approx(n / t if t else 0.0, abs=0.05)
        assert p["fields"] == ({} if n == 0 else {"failed": n // 7, "fallbacks": n // 50})
    assert [p["eta"] is not None for p in lines] == [False, True, True, True, False]  # no rate yet at 0
    for p, t in zip(lines[1:4], times[1:4], strict=True):
        assert _seconds(str(p["eta"])) == pytest.approx((1000 - p["n"]) / (p["n"] / t), abs=1)
    assert lines[-1]["elapsed"] == "35s" and lines[-1]["eta"] is None
    assert all(p["elapsed"] is None for p in lines[:-1])
    bar.close()  # closing again writes nothing more
    assert len(out.getvalue().splitlines()) == 5


def test_a_resumed_run_counts_its_rate_from_where_it_started() -> None:
    clock, out = FakeClock(), io.StringIO()
    with progress(860, desc="locate", noun="photos", initial=400, stream=out, clock=clock) as bar:
        clock.now = 4.0
        bar.update(40)
    first, final = (_parse(line) for line in out.getvalue().splitlines())
    assert (first["n"], first["pct"], final["n"], final["rate"]) == (400, "46.5", 440, "10.0")


def test_unknown_totals_and_byte_counts_read_plainly() -> None:
    clock, out = FakeClock(), io.StringIO()
    with progress(None, desc="encode", noun="images", stream=out, clock=clock) as bar:
        clock.now = 2.0
        bar.update(64)
    assert out.getvalue().splitlines() == ["encode: 0 images, 0.0/s", "encode: 64 images, 32.0/s, elapsed 2s"]
    out = io.StringIO()
    with progress(3_000_000, desc="verify", unit="B", unit_scale=True, stream=out, clock=clock) as bar:
        clock.now = 4.0
        bar.update(1_500_000)
    assert out.getvalue().splitlines()[-1] == "verify: 1.50MB/3.00MB (50.0%), 750kB/s, elapsed 2s"


def test_durations() -> None:
    assert [format_duration(s) for s in (0, 4.4, 59.6, 90, 3599, 3600, 7530)] == [
        "0s",
        "4s",
        "1m00s",
        "1m30s",
        "59m59s",
        "1h00m",
        "2h05m",
    ]


@pytest.mark.parametrize("value", ["1", "True", "yes"])
def test_tqdm_disable_turns_every_kind_off(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("TQDM_DISABLE", value)
    for out in (io.StringIO(), TtyStream()):
        with progress(10, desc="locate", stream=out) as bar:
            bar.update(10)
        assert isinstance(bar, NullProgress) and out.getvalue() == ""


def test_tqdm_disable_0_leaves_progress_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TQDM_DISABLE", "0")
    assert isinstance(progress(10, desc="locate", stream=io.StringIO()), LineProgress)


def test_quiet_and_enabled_false_turn_it_off() -> None:
    assert set_quiet(True) is False
    for out in (io.StringIO(), TtyStream()):
        with progress(10, desc="locate", stream=out) as bar:
            bar.update(10)
        assert isinstance(bar, NullProgress) and out.getvalue() == ""
    assert set_quiet(False) is True
    assert isinstance(progress(10, desc="locate", enabled=False, stream=TtyStream()), NullProgress)


def test_a_terminal_gets_the_tqdm_bar() -> None:
    from tqdm.std import tqdm

    out = TtyStream()
    bar = progress(10, desc="locate", stream=out)
    assert isinstance(bar, tqdm)
    bar.close()


def test_stderr_is_looked_up_when_the_display_is_made(monkeypatch: pytest.MonkeyPatch) -> None:
    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    with progress(2, desc="x") as bar:
        bar.update(2)
    assert [_parse(line)["n"] for line in log.getvalue().splitlines()] == [0, 2]


def test_a_negative_interval_is_refused() -> None:
    with pytest.raises(InputError, match="interval_s"):
        progress(10, desc="x", interval_s=-1, stream=io.StringIO())


def test_the_module_is_ground_floor() -> None:
    """It imports only the standard library, tqdm and georag.errors / georag._version."""
    tree = ast.parse(Path(georag.progress.__file__).read_text(encoding="utf-8"))
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    allowed = {"georag.errors", "georag._version"}
    for name in names:
        top = name.split(".")[0]
        assert top in sys.stdlib_module_names or top == "tqdm" or name in allowed, name


class _MeanBackend:
    name = "mean"
    height = width = 32
    dim = 2

    def embed(self, pixels: np.ndarray) -> np.ndarray:
        m = pixels.reshape(len(pixels), -1).mean(axis=1)
        return np.stack([m, -m], axis=1).astype(np.float32)


def test_the_encoder_reports_through_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from encoder_fixtures import png_bytes
    from georag.encoder import Encoder
    from georag.encoder.preprocess import ProcessorSpec

    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    enc = Encoder(_MeanBackend(), ProcessorSpec.for_siglip(32), model_id="m", batch_size=4)
    images = [png_bytes(i) for i in range(9)] + [b"not an image"]
    enc.encode(images)  # progress off by default
    assert log.getvalue() == ""
    enc.encode(images, progress=True)
    lines = [_parse(line) for line in log.getvalue().splitlines()]
    assert [(p["desc"], p["n"], p["total"], p["fields"]) for p in lines] == [
        ("encode", 0, 10, {}),
        ("encode", 10, 10, {"failed": 1}),
    ]


def test_store_build_and_verify_report_through_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from georag.store.build import BuildRequest, build_source
    from georag.store.inspect import verify_store

    rng = np.random.default_rng(0)
    rows = [{"IMG_ID": f"img{i}.jpg", "LAT": f"{i % 80}.5", "LON": f"{i % 170}.25"} for i in range(300)]
    meta = write_csv(tmp_path / "meta.csv", rows)
    np.save(tmp_path / "emb.npy", rng.standard_normal((300, 8)).astype(np.float32))
    req = BuildRequest(
        store=tmp_path / "store",
        dataset="im2gps3k",
        metadata=meta,
        encoder="toy/siglip",
        embeddings=tmp_path / "emb.npy",
        shard_rows=100,
    )
    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    build_source(req, add=False, progress=True)
    assert verify_store(tmp_path / "store", progress=True).ok
    lines = log.getvalue().splitlines()
    assert [(p["desc"], p["n"], p["total"], p["fields"]) for p in map(_parse, lines[:2])] == [
        ("im2gps3k", 0, 300, {}),
        ("im2gps3k", 300, 300, {"failed": 0}),
    ]
    assert len(lines) == 4 and lines[2].startswith("verify: 0.00B/")
    assert re.match(r"verify: (\S+)B/\1B \(100\.0%\), \S+B/s, elapsed \w+$", lines[3]), lines[3]


def _progress_lines(stderr: str) -> list[str]:
    """Lines of stderr that are progress: ours (`DESC: N/TOTAL ...`) or any tqdm bar (`NN%|`)."""
    lines = stderr.replace("\r", "\n").splitlines()
    return [line for line in lines if LINE.match(line) or re.search(r"\d+%\|", line)]


def test_the_demo_prints_a_few_progress_lines_and_none_when_quiet(tmp_path: Path) -> None:
    need_shared()
    runner = CliRunner()  # its stderr is not a terminal: plain lines
    loud = runner.invoke(main, ["demo", "--out", str(tmp_path / "loud")])
    assert loud.exit_code == 0, loud.output
    ours = [_parse(line) for line in loud.stderr.splitlines() if LINE.match(line)]
    # The store build and the locate step: the first line and the final one each, one more per 10 s
    # (bounded by the elapsed time each final line states, not by a guess at this machine's speed).
    assert {p["desc"] for p in ours} == {"generic", "locate"}
    finals = {p["desc"]: p for p in ours if p["elapsed"] is not None}
    for desc, final in finals.items():
        count = sum(p["desc"] == desc for p in ours)
        assert 2 <= count <= 2 + (_seconds(str(final["elapsed"])) + 1) // 10, (desc, count)
    assert (finals["generic"]["n"], finals["generic"]["total"]) == (250, 250)
    assert (finals["locate"]["n"], finals["locate"]["fields"]) == (50, {"failed": 0, "fallbacks": 0})
    quiet = runner.invoke(main, ["--quiet", "demo", "--out", str(tmp_path / "quiet")])
    assert quiet.exit_code == 0, quiet.output
    assert "located 50 held-out photos" in quiet.stdout
    assert _progress_lines(quiet.stderr) == []
    assert not georag.progress.disabled()  # --quiet lasts for its own invocation only
    short = runner.invoke(main, ["-q", "demo", "--out", str(tmp_path / "quiet")])
    assert short.exit_code == 0 and _progress_lines(short.stderr) == []
