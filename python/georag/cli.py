"""The `georag` command line: argument parsing and error mapping only."""

from __future__ import annotations

import click

from georag._version import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="georag")
def main() -> None:
    """georag: say where on Earth a photo was taken, with retrieval-augmented multimodal LLMs."""
