"""The `georag` command line: argument parsing and error mapping only; one module per command group."""

from __future__ import annotations

import logging

import click

from georag._version import __version__
from georag.progress import set_quiet


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="georag")
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
@click.option(
    "-q", "--quiet", is_flag=True, help="No progress output, and warnings only in the log (wins over -v)."
)
@click.pass_context
def main(ctx: click.Context, verbose: int, quiet: bool) -> None:
    """georag: say where on Earth a photo was taken, with retrieval-augmented multimodal LLMs.

    Run `georag COMMAND --help` for the options of a command. Progress shows as a bar on a terminal and as
    a plain line every 10 s otherwise (a log); --quiet or TQDM_DISABLE=1 turn it off.
    """
    level = logging.WARNING if quiet else logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if quiet:
        previous = set_quiet(True)
        ctx.call_on_close(lambda: set_quiet(previous))  # an in-process caller (CliRunner) gets it back


def _register() -> None:
    from georag.cli.demo_cmd import demo
    from georag.cli.encoder_cmd import encoder
    from georag.cli.eval_cmd import eval_command
    from georag.cli.index_cmd import index
    from georag.cli.locate_cmd import locate
    from georag.cli.search_cmd import search
    from georag.cli.serve_cmd import serve
    from georag.cli.triton_cmd import triton

    for command in (demo, search, encoder, index, locate, eval_command, triton, serve):
        main.add_command(command)


_register()
