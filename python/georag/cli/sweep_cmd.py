"""`georag eval sweep`: locate a benchmark over a grid of settings and print one table of scores."""

from __future__ import annotations

from pathlib import Path

import click

from georag.errors import GeoRagError


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
@click.option("--store", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--encoder", required=True, help="The store's encoder (hub id or folder).")
@click.option(
    "--backend", type=click.Choice(["torch", "onnxruntime", "tensorrt"]), default="torch", show_default=True
)
@click.option("--truth", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--truth-format", default="im2gps3k", show_default=True, help="Reader of --truth.")
@click.option(
    "--llm", default="none", show_default=True, help="none | triton://... | openai://... (for rag)."
)
@click.option("--strategies", default="knn,knn-medoid", show_default=True, help="Comma-separated strategies.")
@click.option("--k-near", "k_near", default="0,5,10,16", show_default=True, help="Similar references (grid).")
@click.option(
    "--k-far", "k_far", default="0,5,10,16", show_default=True, help="Dissimilar references (grid)."
)
@click.option(
    "--samples", default=5, show_default=True, type=click.IntRange(min=1), help="Answers per prompt."
)
@click.option("--max-in-flight", default=16, show_default=True, type=click.IntRange(min=1))
@click.option("--timeout", default=60.0, show_default=True, type=click.FloatRange(min=0.1))
@click.option("--retries", default=2, show_default=True, type=click.IntRange(min=0))
@click.option("--exclude-same-author", is_flag=True, help="Leakage control (see georag locate).")
@click.option("--exclude-radius-km", type=click.FloatRange(min=0.0), default=None, help="Leakage control.")
@click.option(
    "--distance", type=click.Choice(["haversine", "geodesic"]), default="haversine", show_default=True
)
@click.option("--bootstrap", default=200, show_default=True, type=click.IntRange(min=0), help="CI resamples.")
@click.option(
    "--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Runs and tables."
)
def sweep(
    images: tuple[Path, ...],
    store: Path,
    encoder: str,
    backend: str,
    truth: Path,
    truth_format: str,
    llm: str,
    strategies: str,
    k_near: str,
    k_far: str,
    samples: int,
    max_in_flight: int,
    timeout: float,
    retries: int,
    exclude_same_author: bool,
    exclude_radius_km: float | None,
    distance: str,
    bootstrap: int,
    out: Path,
) -> None:
    """Locate IMAGES (files or folders) at every (strategy, k_near, k_far) and score each run against
    --truth: one table (OUT/sweep.md, OUT/sweep.json). Runs are resumable (OUT/<run>.csv)."""
    from georag.cli.locate_cmd import expand_images
    from georag.config import ExclusionConfig, RagConfig, Sampling
    from georag.encoder import load_encoder
    from georag.experiments.sweep import grid, run_sweep, sweep_json, sweep_table
    from georag.llm.backends import open_llm
    from georag.locate.geolocator import STRATEGIES, LocateConfig
    from georag.locate.truth import load_truth
    from georag.store.store import GeoStore

    names = [s.strip() for s in strategies.split(",") if s.strip()]
    unknown = [s for s in names if s not in STRATEGIES]
    if unknown:
        raise click.BadParameter(
            f"unknown strategies {unknown}; choose from {STRATEGIES}", param_hint="--strategies"
        )
    client = None
    try:
        client = open_llm(llm, timeout_s=timeout, retries=retries, max_in_flight=max_in_flight)
        enc = load_encoder(encoder, backend)
        base = LocateConfig(
            strategy="knn",
            rag=RagConfig(sampling=Sampling(n=samples)),
            max_in_flight=max_in_flight,
            exclusion=ExclusionConfig(same_author=exclude_same_author, radius_km=exclude_radius_km),
        )
        points = grid(names, _ints(k_near), _ints(k_far))
        rows = run_sweep(
            expand_images(images, None),
            load_truth(truth, truth_format),
            store=GeoStore.open(store, encoder=enc.model_id),
            encoder=enc,
            llm=client,
            points=points,
            base=base,
            out=out,
            distance=distance,
            bootstrap=bootstrap,
            on_run=lambda p, n: click.echo(f"  {p.name}: {n} photos", err=True),
        )
    except KeyboardInterrupt:
        raise click.ClickException(
            "interrupted: finished runs and photos are kept; re-run to resume"
        ) from None
    except (GeoRagError, ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        if client is not None:
            client.close()
    table = sweep_table(rows)
    (out / "sweep.md").write_text(table + "\n")
    (out / "sweep.json").write_text(sweep_json(rows) + "\n")
    click.echo(table)
    click.echo(f"wrote {out / 'sweep.md'} and {out / 'sweep.json'}")
