"""`georag eval sweep`: locate a benchmark over a grid of settings and print one table of scores."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from georag.cli.options import ENCODER, EXCLUSION, LLM, SAMPLING, VPR, config_from, errors, use
from georag.evaluate.scoring import DEFAULT_DENOMINATOR


def _ints(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise click.BadParameter(f"{text!r}: give comma-separated integers, e.g. 0,5,10,16") from exc
    if not values or min(values) < 0:
        raise click.BadParameter(f"{text!r}: give comma-separated integers >= 0")
    return values


@click.command("sweep")
@click.argument("images", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@use("config", "store", *ENCODER, "truth", "truth-format", *LLM, "llm-max-failures", required=("truth",),
     defaults={"truth-format": "im2gps3k"})  # fmt: skip
@click.option("--strategies", default="knn,knn-medoid", show_default=True, help="Comma-separated strategies.")
@click.option("--k-near", "k_near_grid", default="0,5,10,16", show_default=True, help="Similar rows (grid).")
@click.option("--k-far", "k_far_grid", default="0,5,10,16", show_default=True, help="Dissimilar rows (grid).")
@use("index", *SAMPLING, *VPR, *EXCLUSION)
@use("distance", "bootstrap", "denominator",
     defaults={"distance": "haversine", "bootstrap": 200, "denominator": DEFAULT_DENOMINATOR})  # fmt: skip
@click.option(
    "--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Runs and tables."
)
def sweep(
    images: tuple[Path, ...],
    truth: Path,
    truth_format: str,
    strategies: str,
    k_near_grid: str,
    k_far_grid: str,
    distance: str,
    bootstrap: int,
    denominator: str,
    out: Path,
    **kw: Any,
) -> None:
    """Locate IMAGES (files or folders) at every (strategy, k_near, k_far) and score each run against
    --truth: one table (OUT/sweep.md, OUT/sweep.json). Runs are resumable (OUT/<run>.csv). Each run is
    scored as `georag eval` scores its CSV against --truth, with the same --denominator rule. The other
    settings come from the options, then --config FILE.toml, then the defaults."""
    from georag.cli.locate_cmd import expand_images
    from georag.config import STRATEGY_NAMES
    from georag.encoder import load_encoder_from
    from georag.evaluate import read_truth
    from georag.experiments.sweep import grid, run_sweep, sweep_json, sweep_table
    from georag.llm.backends import open_llm_from
    from georag.locate.truth import load_truth
    from georag.store.store import GeoStore

    names = [s.strip() for s in strategies.split(",") if s.strip()]
    unknown = [s for s in names if s not in STRATEGY_NAMES]
    if unknown:
        raise click.BadParameter(
            f"unknown strategies {unknown}; choose from {STRATEGY_NAMES}", param_hint="--strategies"
        )
    points = grid(names, _ints(k_near_grid), _ints(k_far_grid))
    client = None
    with errors("interrupted: finished runs and photos are kept; re-run to resume"):
        base = config_from(kw, require=("store",), auto_strategy=False)
        try:
            client = open_llm_from(base.llm)
            store = GeoStore.open(base.store, index=base.search.index)
            enc = load_encoder_from(base.encoder, store.encoder)
            rows = run_sweep(
                expand_images(images, None),
                load_truth(truth, truth_format),
                store=store,
                encoder=enc,
                llm=client,
                points=points,
                base=base,
                out=out,
                distance=distance,
                bootstrap=bootstrap,
                denominator=denominator,
                score_truth=read_truth(truth, truth_format),
                on_run=lambda p, n: click.echo(f"  {p.name}: {n} photos", err=True),
            )
        finally:
            if client is not None:
                client.close()
    table = sweep_table(rows)
    (out / "sweep.md").write_text(table + "\n")
    (out / "sweep.json").write_text(sweep_json(rows) + "\n")
    click.echo(table)
    click.echo(f"wrote {out / 'sweep.md'} and {out / 'sweep.json'}")
