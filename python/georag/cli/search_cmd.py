"""`georag search`: exact nearest + farthest search over an .npy database or the seeded demo."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click
import numpy as np

from georag.errors import GeoRagError

_NPY = click.Path(exists=True, dir_okay=False, path_type=Path)
_COUNT, _ONE = click.IntRange(min=0), click.IntRange(min=1)


@click.command()
@click.option("--database", type=_NPY, help="(N, d) float32 .npy embeddings [default: a seeded demo].")
@click.option("--queries", type=_NPY, help="(B, d) float32 .npy queries (raw; the search normalizes).")
@click.option("--k-near", default=16, show_default=True, type=_COUNT, help="Similar rows per query.")
@click.option("--k-far", default=16, show_default=True, type=_COUNT, help="Dissimilar rows per query.")
@click.option("--threads", default=0, show_default=True, type=_COUNT, help="Worker threads (0 = all cores).")
@click.option("--demo-rows", default=100_000, show_default=True, type=_ONE, help="Rows of the demo database.")
@click.option("--demo-dim", default=768, show_default=True, type=_ONE, help="Its dimension (768 = SigLIP).")
@click.option("--demo-queries", default=8, show_default=True, type=_ONE, help="Queries near known demo rows.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Write results: .npz or .json.")
def search(
    database: Path | None,
    queries: Path | None,
    k_near: int,
    k_far: int,
    threads: int,
    demo_rows: int,
    demo_dim: int,
    demo_queries: int,
    out: Path | None,
) -> None:
    """Exact k nearest AND k farthest neighbors by cosine similarity, in one pass (C++ core).

    Without --database it runs on a seeded demo database whose queries are perturbed copies of known
    rows, and reports whether each query found its source row first.
    """
    from georag.search import FlatIndex
    from georag.search.arrays import demo_vectors, load_vectors

    try:
        if database is None:
            if queries is not None:
                raise click.UsageError("--queries needs --database")
            db, q, expected = demo_vectors(demo_rows, demo_dim, demo_queries)
            source = f"demo database ({demo_rows} x {demo_dim}, seed 0)"
        else:
            if queries is None:
                raise click.UsageError("--database needs --queries")
            db, q = load_vectors(database, "database"), load_vectors(queries, "queries")
            expected = None
            source = str(database)
        t0 = time.perf_counter()
        index = FlatIndex(db, num_threads=threads)
        t1 = time.perf_counter()
        res = index.search(q, k_near, k_far)
        t2 = time.perf_counter()
    except (GeoRagError, ValueError, TypeError) as exc:
        raise click.ClickException(str(exc)) from exc

    click.echo(
        f"{source}: built in {t1 - t0:.2f} s; searched {len(q)} queries in {1e3 * (t2 - t1):.1f} ms "
        f"({index.num_threads} threads)"
    )
    click.echo(
        f"{'query':>5}  {'nearest id':>10} {'cos':>7}   {'farthest id':>11} {'cos':>7}"
        + ("   source row" if expected is not None else "")
    )
    for i in range(min(len(q), 10)):
        near = f"{res.near_ids[i, 0]:>10} {res.near_scores[i, 0]:>7.4f}" if k_near else f"{'-':>18}"
        far = f"{res.far_ids[i, 0]:>11} {res.far_scores[i, 0]:>7.4f}" if k_far else f"{'-':>19}"
        src = ""
        if expected is not None:
            src = f"   {expected[i]:>10} " + (
                "found" if k_near and res.near_ids[i, 0] == expected[i] else "MISSED"
            )
        click.echo(f"{i:>5}  {near}   {far}{src}")
    if expected is not None and k_near:
        hits = int(np.sum(res.near_ids[:, 0] == expected))
        click.echo(f"{hits}/{len(q)} queries found their source row first")
    if out is not None:
        _write_results(out, res)
        click.echo(f"wrote {out}")


def _write_results(out: Path, res: object) -> None:
    arrays = {name: getattr(res, name) for name in ("near_ids", "near_scores", "far_ids", "far_scores")}
    if out.suffix == ".npz":
        np.savez(out, **arrays)
    elif out.suffix == ".json":
        payload = {
            k: np.where(np.isnan(v), None, v).tolist() if v.dtype.kind == "f" else v.tolist()
            for k, v in arrays.items()
        }
        out.write_text(json.dumps(payload))
    else:
        raise click.ClickException(f"--out {out}: use a .npz or .json file name")
