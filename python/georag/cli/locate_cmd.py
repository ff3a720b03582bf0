"""`georag locate`: predict where photos were taken (options only; the job is `georag.locate.run`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from georag.cli.options import ENCODER, EXCLUSION, LLM, RAG, SEARCH, VPR, config_from, errors, use

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


def expand_images(images: tuple[Path, ...], listing: Path | None) -> list[Path]:
    """Files as given, folders as their image files (sorted), plus the lines of ``--list``."""
    out: list[Path] = []
    for p in images:
        if p.is_dir():
            out += sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES and q.is_file())
        else:
            out.append(p)
    if listing is not None:
        for line in listing.read_text(encoding="utf-8").splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                out.append(Path(line.strip()))
    return out


@click.command()
@click.argument("images", nargs=-1, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--list",
    "listing",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="File of image paths.",
)
@use("config", "store", *ENCODER, *LLM, *SEARCH, *RAG, *VPR, *EXCLUSION, "truth", "truth-format",
     defaults={"truth-format": "im2gps3k"})  # fmt: skip
@click.option(
    "--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="preds.csv (+ preds.jsonl)."
)
@click.option("--overwrite", is_flag=True, help="Start over instead of resuming an earlier run into --out.")
def locate(images: tuple[Path, ...], listing: Path | None, **kw: Any) -> None:
    """Predict where each photo was taken; re-running the same command resumes an interrupted run.

    Writes OUT.csv (id, lat, lon, confidence, strategy, error, fallback) and OUT.jsonl (the evidence:
    neighbors, prompt variants, raw answers, candidates, fallback reason, timings per stage).
    Settings come from the options, then --config FILE.toml, then the defaults.

    --strategy vpr-guided: the LLM first names the country and a coordinate guess (--prior-samples vote),
    the search runs only over that submap of the store (--submap-by), and the top --rerank-k candidates
    are re-ranked by distance to the guess (--prior-weight); --hybrid then asks the RAG prompt with them.
    """
    from georag.locate import run

    paths = expand_images(images, listing)
    if not paths:
        raise click.UsageError("no images: pass files or folders, or --list FILE")
    with errors("interrupted: finished photos are kept; re-run the same command to resume"):
        config = config_from(kw, require=("store",))
        summary = run(paths, config, **kw)
    click.echo(str(summary))
