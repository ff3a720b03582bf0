"""The README's Python examples run as written: each ```python block is executed, in a folder where the
README's own first command (`georag demo`) ran, unless an HTML comment right above it says what it needs
that a test cannot have (the real SigLIP, an LLM server); those are only compiled."""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner

from georag.cli import main
from store_fixtures import SHARED

README = Path(__file__).resolve().parents[1] / "README.md"
NOT_RUN = "<!-- not run by tests/test_readme_python.py:"


def _python_blocks() -> list[tuple[str, bool]]:
    """(code, runnable) of every ```python block, in README order."""
    text = README.read_text(encoding="utf-8")
    out = []
    for m in re.finditer(r"^```python\n(.*?)^```$", text, re.S | re.M):
        before = text[: m.start()].rstrip().rsplit("\n", 1)[-1]
        out.append((m.group(1), not before.startswith(NOT_RUN)))
    return out


def _first_command() -> list[str]:
    """The `georag ...` command of the README's first bash block (the set-up line ends with it)."""
    block = re.search(r"```bash\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    assert block is not None
    line = block.group(1).strip().split("&&")[-1]
    args = shlex.split(line)
    assert args[0] == "georag", f"the first command is no georag command: {line!r}"
    return args[1:]


def test_the_first_python_example_uses_the_python_api() -> None:
    code, runnable = _python_blocks()[0]
    assert runnable and "Geolocator.from_store(" in code and ".predict(" in code and ".predict_many(" in code


def test_every_python_block_compiles() -> None:
    blocks = _python_blocks()
    assert len(blocks) >= 6
    for i, (code, _) in enumerate(blocks):
        compile(code, f"README.md python block {i}", "exec")


def test_the_runnable_python_blocks_run_after_the_first_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("torch")
    # A project folder beside a ../shared, as in a checkout next to the shared data (when it is here).
    work = tmp_path / "project"
    work.mkdir()
    if SHARED.is_dir():
        (tmp_path / "shared").mkdir()
        os.symlink(SHARED, tmp_path / "shared" / "data")
    monkeypatch.chdir(work)
    result = CliRunner().invoke(main, _first_command())
    assert result.exit_code == 0, result.output
    assert (work / "georag-demo" / "store" / "manifest.json").is_file()
    ran = 0
    for i, (code, runnable) in enumerate(_python_blocks()):
        if not runnable:
            continue
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            exec(compile(code, f"README.md python block {i}", "exec"), {"__name__": f"readme_{i}"})
        if i == 0:
            lines = printed.getvalue().splitlines()
            assert len(lines) == 9, printed.getvalue()  # one prediction, then 8 streamed
            lat, lon = (float(x) for x in lines[0].split()[:2])
            assert -90 <= lat <= 90 and -180 <= lon <= 180
            assert all(line.endswith(" None") for line in lines[1:]), "no photo failed"
        ran += 1
    assert ran >= 2, "the Python API example and the search core example run"
