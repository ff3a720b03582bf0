"""How the command line ends on errors: a clear message and the exit code a shell expects."""

from __future__ import annotations

import pytest

from georag.cli.options import errors
from georag.errors import ConfigError


def test_ctrl_c_exits_130_with_the_commands_message(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info, errors("interrupted: finished photos are kept"):
        raise KeyboardInterrupt
    assert info.value.code == 130
    assert "interrupted: finished photos are kept" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info, errors():
        raise KeyboardInterrupt
    assert info.value.code == 130 and "Aborted." in capsys.readouterr().err


def test_library_errors_become_the_command_lines(capsys: pytest.CaptureFixture[str]) -> None:
    import click

    with pytest.raises(click.ClickException, match="no store"), errors():
        raise ConfigError("no store: give one")
