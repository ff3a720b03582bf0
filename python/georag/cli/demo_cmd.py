"""`georag demo`: the whole pipeline offline on an embedded default (tiny random SigLIP, small store)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from georag.cli.options import ENCODER, LLM, RAG, SEARCH, config_from, errors, use


@click.command()
@click.option(
    "--out", default=Path("georag-demo"), show_default=True, type=click.Path(file_okay=False, path_type=Path),
    help="Work folder (replaced on the next demo run).",
)  # fmt: skip
@click.option(
    "--images", type=click.Path(exists=True, file_okay=False, path_type=Path), help="Your photo folder."
)
@click.option(
    "--metadata", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="Their metadata CSV."
)
@click.option(
    "--dataset",
    default="im2gps3k",
    show_default=True,
    help="Format of --metadata (generic: columns id,lat,lon).",
)
@use("config", *ENCODER, *LLM, "llm-max-failures", *SEARCH, *RAG,
     default_text={"encoder": "a tiny random SigLIP built here"})  # fmt: skip
def demo(out: Path, images: Path | None, metadata: Path | None, dataset: str, **kw: Any) -> None:
    """Run the pipeline end to end offline: build a store, locate held-out photos, score them.

    By default a tiny RANDOM-WEIGHT SigLIP is built on the fly (nothing is downloaded) and, unless
    --images and --metadata are given, the IM2GPS3k sample in ../shared/data or generated pictures are
    used. With random weights the accuracy is meaningless: this shows the plumbing. With a network,
    `--encoder google/siglip-so400m-patch14-384` runs the same job with the real model, and --llm URL
    adds the multimodal LLM (the rag route).
    """
    from georag.cli.locate_cmd import UsageClassError
    from georag.demo import run_demo
    from georag.llm.backends import LLMCheckError

    with errors():
        config = config_from(kw)
        try:
            report = run_demo(
                out, images=images, metadata=metadata, dataset=dataset, config=config, progress=True
            )
        except LLMCheckError as exc:  # the --llm given cannot work: a usage error (exit 2), as in locate
            raise UsageClassError(str(exc)) from exc
    click.echo(f"photos: {report.data}")
    click.echo(
        f"store of {report.gallery} photos; located {report.queries} held-out photos with {report.strategy} "
        f"({report.failed} failed, {report.fallbacks} fell back) in {report.seconds:.1f} s; "
        f"wrote {report.predictions}"
    )
    if report.fallbacks:
        click.echo(
            f"WARNING: {report.fallbacks} of {report.queries} photos fell back to retrieval (every LLM "
            "request failed or stated no coordinates); see the fallback column of the predictions",
            err=True,
        )
    click.echo("| " + " | ".join(f"{t:g} km" for t in report.accuracy) + " |")
    click.echo("|" + "---:|" * len(report.accuracy))
    click.echo("| " + " | ".join(f"{100 * a:.1f} %" for a in report.accuracy.values()) + " |")
    click.echo(
        f"(over the {report.queries} located photos; the same with georag eval: --denominator predicted)"
    )
    if not report.random_weights:
        return
    click.echo(
        "NOTE: the encoder has RANDOM weights, so these accuracies mean nothing; "
        "the demo shows the plumbing. Real accuracy needs the real SigLIP "
        "(google/siglip-so400m-patch14-384) and a large store."
    )
