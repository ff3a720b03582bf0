#!/usr/bin/env python
"""GeoStore at scale: build, open and index time, memory, and search latency through the store.

Synthetic data: N rows (default 1,000,000) of d=1152 (SigLIP so400m) float16 embeddings written to a .npy
chunk by chunk, and a generic metadata CSV with random coordinates. Each phase runs in its own child
process so its memory is its own:

  build   `build_source --from-embeddings` into a float16 store (4096-row shards, checksums, manifest)
  open    GeoStore.open (quick verification: sizes, 16-block fingerprints, full SHA-256 of the metadata)
  verify  the full SHA-256 pass of `georag index verify`
  first   open + GeoStore.flat_index() + the first B=1 query, as a restarted server does it (with --cold the
          page cache is dropped first: root only); the private memory of the open store before that query,
          and how much of it is the metadata table
  index   GeoStore.flat_index(): the exact index over the memory-mapped shards, searched in place (no copy)
  search  median latency of store.search (ids + coordinates) vs FlatIndex.search on one index, B=1/16/256,
          the two interleaved run by run so that machine noise hits both alike

Memory: "peak anon" is the peak of private (anonymous) resident memory, sampled every 20 ms: what the
phase allocated. Pages of memory-mapped store files are page cache, counted in RSS but reclaimable; they
are reported separately as "peak RSS". The embedding matrix is N x d x 2 bytes on disk; an index needs
no copy: the search reads the float16 shard files through the page cache.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from timing import log, paired_median_s

DIM = 1152


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


class PeakMemory:
    """Samples private resident memory every 20 ms in a thread; reports the peak and VmHWM in MiB."""

    def __init__(self) -> None:
        self.peak_anon = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_anon = max(self.peak_anon, _status_kib("RssAnon"))
            self._stop.wait(0.02)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_anon = max(self.peak_anon, _status_kib("RssAnon"))

    def report(self, base_anon: int) -> dict[str, float]:
        return {
            "peak_anon_mib": (self.peak_anon - base_anon) / 1024,
            "peak_rss_mib": _status_kib("VmHWM") / 1024,
        }


def make_data(folder: Path, n: int, seed: int) -> tuple[Path, Path]:
    """Writes (n, DIM) float16 embeddings chunk by chunk and a metadata CSV; returns their paths."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    emb = folder / "emb.npy"
    rng = np.random.default_rng(seed)
    out = np.lib.format.open_memmap(emb, mode="w+", dtype=np.float16, shape=(n, DIM))
    for start in range(0, n, 65536):
        m = min(65536, n - start)
        out[start : start + m] = rng.standard_normal((m, DIM), dtype=np.float32)
    out.flush()
    del out
    meta = folder / "meta.csv"
    table = pa.table(
        {
            "id": pa.array([f"img{i:08d}" for i in range(n)]),
            "lat": rng.uniform(-60, 70, n),
            "lon": rng.uniform(-180, 180, n),
        }
    )
    pacsv.write_csv(table, meta)
    return emb, meta


def child(phase: str, store: str, emb: str, meta: str, repeats: int) -> dict[str, Any]:
    """One phase, in this (child) process; returns its measurements."""
    from georag.datasets import ColumnMap
    from georag.store.build import BuildRequest, build_source
    from georag.store.inspect import verify_store
    from georag.store.store import GeoStore

    base = _status_kib("RssAnon")
    out: dict[str, Any] = {"phase": phase}
    with PeakMemory() as mem:
        t0 = time.perf_counter()
        if phase == "build":
            req = BuildRequest(
                store=Path(store),
                dataset="generic",
                metadata=Path(meta),
                encoder="google/siglip-so400m-patch14-384",
                embeddings=Path(emb),
                columns=ColumnMap(image_id="id", lat="lat", lon="lon"),
            )
            report = build_source(req, add=False)
            out["rows"] = report.store_rows
        elif phase == "open":
            s = GeoStore.open(store)
            out["rows"] = s.ntotal
        elif phase == "verify":
            out["ok"] = verify_store(store).ok
        elif phase == "first":
            s = GeoStore.open(store)
            out["open_s"] = time.perf_counter() - t0
            s.flat_index()
            out["anon_before_search_mib"] = (_status_kib("RssAnon") - base) / 1024
            out["metadata_mib"] = s.metadata.nbytes / 2**20
            s.search(np.random.default_rng(2).standard_normal((1, DIM), dtype=np.float32), 16, 16)
        elif phase in ("index", "search"):
            s = GeoStore.open(store)
            t0 = time.perf_counter()
            index = s.flat_index()
            out["index_s"] = time.perf_counter() - t0
            if phase == "search":
                rng = np.random.default_rng(1)
                for b in (1, 16, 256):
                    # new queries every call (the same ones for both): the store checks each row it
                    # serves once, so repeating one batch would time that check only the first time
                    batches = rng.standard_normal((repeats + 1, b, DIM), dtype=np.float32)
                    a, c = iter(batches), iter(batches)
                    direct, via = paired_median_s(
                        [lambda a=a: index.search(next(a), 16, 16), lambda c=c: s.search(next(c), 16, 16)],
                        repeats,
                    )
                    out[f"B{b}"] = {"flat_ms": 1e3 * direct, "store_ms": 1e3 * via, "ratio": via / direct}
        out["seconds"] = time.perf_counter() - t0
    out.update(mem.report(base))
    return out


def drop_page_cache() -> bool:
    """Empties the page cache (root only), so the next phase reads the store from disk."""
    try:
        subprocess.run(["sync"], check=True)
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except (OSError, subprocess.CalledProcessError):
        return False
    return True


def run_child(phase: str, store: Path, emb: Path, meta: Path, repeats: int) -> dict[str, Any]:
    log(f"== {phase}")
    cmd = [sys.executable, __file__, "--child", phase, str(store), str(emb), str(meta), str(repeats)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{phase} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000, help="synthetic rows (default 1,000,000)")
    ap.add_argument(
        "--repeats", type=int, default=5, help="timed search repeats, median reported (default 5)"
    )
    ap.add_argument("--dir", type=Path, help="work folder (default: a temporary one, deleted afterwards)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 20,000 rows, 2 repeats")
    ap.add_argument("--json", type=Path, help="also write the results as JSON here")
    ap.add_argument("--cold", action="store_true", help="drop the page cache before 'first' (root only)")
    ap.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        phase, store, emb, meta, repeats = args.child
        print(json.dumps(child(phase, store, emb, meta, int(repeats))))
        return 0
    rows = 20_000 if args.quick else args.rows
    repeats = 2 if args.quick else args.repeats
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        work = Path(tmp)
        log(f"writing {rows} x {DIM} float16 embeddings and metadata to {work}")
        emb, meta = make_data(work, rows, seed=0)
        store = work / "store"
        results = {p: run_child(p, store, emb, meta, repeats) for p in ("build", "open", "verify")}
        cold = args.cold and drop_page_cache()
        if args.cold and not cold:
            log("could not drop the page cache (root only): 'first' runs warm")
        results["first"] = run_child("first", store, emb, meta, repeats)
        results["search"] = run_child("search", store, emb, meta, repeats)
        disk = sum(f.stat().st_size for f in store.rglob("*") if f.is_file())
    gib = rows * DIM * 2 / 2**30
    print(
        f"## GeoStore, {rows:,} rows x d={DIM}, float16 "
        f"({gib:.2f} GiB of embeddings; store {disk / 2**30:.2f} GiB)"
    )
    print()
    print("| phase | time (s) | peak anon (MiB) | peak RSS incl. page cache (MiB) |")
    print("|---|---:|---:|---:|")
    for phase, r in results.items():
        secs = r["index_s"] if phase == "search" else r["seconds"]
        name = {"search": "index (the shards in place)", "first": "open + first query"}.get(phase, phase)
        print(f"| {name} | {secs:.2f} | {r['peak_anon_mib']:.0f} | {r['peak_rss_mib']:.0f} |")
    first = results["first"]
    print()
    print(
        f"Open store before its first search ({'cold' if cold else 'warm'} page cache): open "
        f"{first['open_s']:.2f} s; private memory {first['anon_before_search_mib']:.0f} MiB, of which the "
        f"metadata table {first['metadata_mib']:.0f} MiB "
        f"({first['anon_before_search_mib'] - first['metadata_mib']:.0f} MiB beyond it)."
    )
    print()
    print("| B | FlatIndex.search (ms) | GeoStore.search (ms) | store / flat |")
    print("|---:|---:|---:|---:|")
    for b in (1, 16, 256):
        r = results["search"][f"B{b}"]
        print(f"| {b} | {r['flat_ms']:.1f} | {r['store_ms']:.1f} | {r['ratio']:.2f} |")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "dim": DIM, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
