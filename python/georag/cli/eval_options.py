"""Options that `georag eval` (score) and `georag eval calibrate` share: the truth file and both files'
columns."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from georag.cli.options import use

EXISTING_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)
"""A file argument that must exist."""

F = TypeVar("F", bound=Callable[..., Any])


def file_columns(fn: F) -> F:
    """The truth file and the columns of both files: `score`'s and `calibrate`'s shared options."""
    for option in reversed(
        (
            use("truth", "truth-format", required=("truth",), defaults={"truth-format": "im2gps3k"}),
            click.option("--truth-id-col", default=None, help="Truth id column [default: the format's]."),
            click.option(
                "--truth-lat-col", default=None, help="Truth latitude column [default: the format's]."
            ),
            click.option(
                "--truth-lon-col", default=None, help="Truth longitude column [default: the format's]."
            ),
            click.option(
                "--id-col", default="id", show_default=True, help="Predictions' id column (JSONL key)."
            ),
            click.option("--lat-col", default="lat", show_default=True, help="Predictions' latitude column."),
            click.option(
                "--lon-col", default="lon", show_default=True, help="Predictions' longitude column."
            ),
        )
    ):
        fn = option(fn)
    return fn

