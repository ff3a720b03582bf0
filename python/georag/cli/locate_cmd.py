"""`georag locate`: predict where photos were taken (options only; the job is `georag.locate.run`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from georag.cli.options import ENCODER, EXCLUSION, LLM, RAG, SEARCH, SHARDED, VPR, config_from, errors, use

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


def expand_images(images: tuple[Path, ...], listing: Path | None) -> list[Path]:
    """Files as given, folders as their image files (sorted), plus the lines of ``--list``."""
    out: list[Path] = []
    for p in images:
        if p.is_dir():
            # Every entry named like a photo, regular file or not: a FIFO or folder among them becomes a
            # failure with its reason (never a hang, never silently dropped).
            out += sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES)
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
@use("config", "store", *ENCODER, *LLM, "llm-max-failures", *SEARCH, *SHARDED, *RAG, *VPR, "calibration",
     *EXCLUSION, "truth", "truth-format", defaults={"truth-format": "im2gps3k"})  # fmt: skip
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="preds.csv (+ preds.jsonl); preds.geojson adds a GeoJSON file (+ preds.csv, preds.jsonl).",
)
@click.option(
    "--format",
    "out_format",
    type=click.Choice(["csv", "geojson"]),
    default=None,
    help="geojson: write OUT.geojson too (default: by the suffix of --out).",
)
@click.option(
    "--geojson-evidence",
    is_flag=True,
    help="The GeoJSON holds each photo's LLM candidates and near / far gallery rows too (property role).",
)
@click.option("--overwrite", is_flag=True, help="Start over instead of resuming an earlier run into --out.")
@click.option(
    "--id-from",
    type=click.Choice(["name", "path"]),
    default="name",
    show_default=True,
    help="A photo's id: its file name (two files of one name are refused), or its path relative to the "
    "common folder of all the photos (cam1/IMG_0001.jpg), so files of one name in different folders are "
    "located in one run.",
)
def locate(images: tuple[Path, ...], listing: Path | None, **kw: Any) -> None:
    """Predict where each photo was taken; re-running the same command resumes an interrupted run.

    Writes OUT.csv (id, lat, lon, confidence, strategy, error, fallback) and OUT.jsonl (the evidence:
    neighbors, prompt variants, raw answers, candidates, fallback reason, timings per stage).
    Settings come from the options, then --config FILE.toml, then the defaults.

    GeoJSON (--out preds.geojson, or --format geojson): an RFC 7946 FeatureCollection, one Point
    [lon, lat] per photo (properties id, confidence, strategy, error, fallback; a failed photo has a null
    geometry). The JSONL stays the resumable record: the .geojson is written from it, atomically, once
    every photo is done (an interrupted run writes it when re-run to the end).

    --strategy vpr-guided: the LLM first names the country and a coordinate guess (--prior-samples vote),
    the search runs only over that submap of the store (--submap-by), and the top --rerank-k candidates
    are re-ranked by distance to the guess (--prior-weight); --hybrid then asks the RAG prompt with them.

    A route that asks an LLM checks it first (exit 2 when the server does not answer or does not serve
    the model); a photo whose every LLM request fails stops the run (exit 1, finished photos kept), unless
    --llm-max-failures allows it to fall back to retrieval.
    """
    from georag.llm.backends import LLMCheckError
    from georag.locate import run

    paths = expand_images(images, listing)
    if not paths:
        raise click.UsageError("no images: pass files or folders, or --list FILE")
    with errors("interrupted: finished photos are kept; re-run the same command to resume"):
        config = config_from(kw, require=("store",))
        try:
            summary = run(paths, config, **kw)
        except LLMCheckError as exc:  # the --llm given cannot work: a usage error
            raise UsageClassError(str(exc)) from exc
    click.echo(str(summary))


class UsageClassError(click.ClickException):
    """An error in what the command line names (exit 2, as click's usage errors), without the usage text."""

    exit_code = 2
