#!/usr/bin/env python
"""Ray on this machine: sharded exact search vs one process, and a Ray Data build vs a local build.

search  N synthetic rows (default 1,000,000) of d=1152 float16 embeddings (`bench_store.make_data`), built
        into a store; the same queries through `GeoStore.search` (one process, every core) and through
        `open_sharded_store` with 1 / 2 / 4 shard actors (the cores split among them), B = 1 and 256, the
        two interleaved run by run (`timing.paired_median_s`); the answers are checked equal.
build   the shared IM2GPS3k photos (default 300) with the tiny random SigLIP: `build_source` in this
        process vs `build_source_ray` on the same machine (decode tasks + one encoder actor); wall time
        of each call, rows/s (the Ray figure includes loading the encoder in a task and in the actor).

Ray runs on a local cluster inside a network namespace of its own, so it binds 127.0.0.1 only: when the
machine has another interface the script re-runs itself under ``unshare -n`` (root). The table goes to
stdout (and --out as JSON + Markdown), progress to stderr.

    python benchmarks/bench_ray.py [--rows 1000000] [--shards 1 2 4] [--images 300] [--out results/ray-2core]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench_store import DIM, make_data
from timing import log, paired_median_s

REPO = Path(__file__).resolve().parents[1]


def loopback_only() -> None:
    """Re-executes this script in a network namespace of its own unless loopback is the only interface."""
    if all(name == "lo" for _, name in socket.if_nameindex()):
        return
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        sys.exit("Ray would bind this machine's network interfaces: run as root (unshare -n), or in a netns")
    script = 'ip link set lo up && exec "$0" "$@"'
    os.execvp("unshare", ["unshare", "-n", "--", "sh", "-c", script, sys.executable, *sys.argv])


def search_phase(
    work: Path, rows: int, shard_counts: list[int], batches: list[int], repeats: int
) -> list[dict]:
    from georag.datasets import ColumnMap
    from georag.distributed.sharded_search import ShardOptions
    from georag.distributed.sharded_store import open_sharded_store
    from georag.store.build import BuildRequest, build_source
    from georag.store.store import GeoStore

    log(f"search: writing {rows} rows of d={DIM} and building the store")
    emb, meta = make_data(work, rows, seed=0)
    columns = ColumnMap(image_id="id", lat="lat", lon="lon")
    req = BuildRequest(work / "store", "generic", meta, "bench/siglip", embeddings=emb, columns=columns)
    build_source(req, add=False)
    emb.unlink()
    single = GeoStore.open(work / "store")
    cpus = os.cpu_count() or 1
    rng = np.random.default_rng(1)
    out = []
    for shards in shard_counts:
        options = ShardOptions(shards=shards, cpus_per_shard=cpus / shards, timeout_s=600)
        t0 = time.perf_counter()
        sharded = open_sharded_store(work / "store", address=None, options=options)
        start_s = time.perf_counter() - t0
        for b in batches:
            q = rng.standard_normal((b, DIM), dtype=np.float32)
            want, got = single.search(q, 16, 16), sharded.search(q, 16, 16)
            same = all(
                np.array_equal(getattr(want, f), getattr(got, f), equal_nan=True)
                for f in ("near_ids", "near_scores", "far_ids", "far_scores")
            )
            log(f"search: {shards} shards, B={b} (answers equal: {same})")
            one, many = paired_median_s(
                [lambda q=q: single.search(q, 16, 16), lambda q=q, s=sharded: s.search(q, 16, 16)],
                repeats if b < 64 else max(2, repeats // 2),
            )
            ms = {"single_ms": one * 1e3, "sharded_ms": many * 1e3}
            out.append({"shards": shards, "B": b, **ms, "start_s": start_s, "equal": same})
        sharded.close()
    return out


def build_phase(work: Path, images: int) -> list[dict]:
    sys.path.insert(0, str(REPO / "tests"))
    from encoder_fixtures import SHARED_IMAGES, make_tiny_siglip
    from georag.distributed.ray_build import RayBuildOptions, build_source_ray
    from georag.encoder import load_encoder
    from georag.store.build import BuildRequest, build_source
    from store_fixtures import rows_with_images, write_csv

    if not SHARED_IMAGES.is_dir():
        log("build: no shared photos here, skipped")
        return []
    tiny = make_tiny_siglip(work / "tiny")
    meta = write_csv(work / "photos.csv", rows_with_images(images))
    out = []
    for how in ("local", "ray"):
        req = BuildRequest(work / f"build-{how}", "im2gps3k", meta, str(tiny), images=(SHARED_IMAGES,))
        log(f"build: {how}")
        t0 = time.perf_counter()
        if how == "local":
            report = build_source(req, add=False, encoder_factory=lambda: load_encoder(tiny))
        else:
            report = build_source_ray(req, add=False, options=RayBuildOptions())
        seconds = time.perf_counter() - t0
        items = report.added_rows + report.failed
        out.append({"build": how, "items": items, "seconds": seconds, "rows_per_s": items / seconds})
    return out


def markdown(search: list[dict], build: list[dict], rows: int) -> str:
    lines = [
        f"Sharded exact search, {rows:,} rows x {DIM} float16, k = 16 + 16, medians "
        f"({os.cpu_count()} cores):",
        "",
        "| shards | B | one process (ms) | sharded (ms) | sharded / one | shards up in (s) | equal |",
        "|---:|---:|---:|---:|---:|---:|:---:|",
    ]
    for r in search:
        lines.append(
            f"| {r['shards']} | {r['B']} | {r['single_ms']:.1f} | {r['sharded_ms']:.1f} | "
            f"{r['sharded_ms'] / r['single_ms']:.2f} | {r['start_s']:.1f} | {'yes' if r['equal'] else 'NO'} |"
        )
    if build:
        lines += ["", "Build, tiny SigLIP on the shared photos:", "", "| build | items | s | rows/s |"]
        lines.append("|---|---:|---:|---:|")
        for r in build:
            lines.append(f"| {r['build']} | {r['items']} | {r['seconds']:.1f} | {r['rows_per_s']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--shards", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 256])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--out", type=Path, default=None, help="Write OUT.json and OUT.md.")
    args = parser.parse_args()
    loopback_only()
    from georag.distributed.cluster import LocalCluster, connect

    session = connect(None, LocalCluster(num_cpus=os.cpu_count(), object_store_mib=512))
    try:
        with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp:
            search = search_phase(Path(tmp), args.rows, args.shards, args.batches, args.repeats)
            build = build_phase(Path(tmp), args.images)
    finally:
        session.close()
    table = markdown(search, build, args.rows)
    print(table)
    if args.out is not None:
        args.out.with_suffix(".json").write_text(json.dumps({"search": search, "build": build}, indent=1))
        args.out.with_suffix(".md").write_text(table + "\n")


if __name__ == "__main__":
    main()
