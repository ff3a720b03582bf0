#!/usr/bin/env python
"""Exact nearest+farthest search: georag FlatIndex against faiss IndexFlatIP and a one-pass floor.

For each (N, d) the seeded float32 standard-normal database is generated in chunks and both exact
indexes are built once. For each batch size B the script times (median after one warm-up):

  (a) faiss IndexFlatIP, two calls: search(q) then search(-q), k=16 each;
  (b) faiss IndexFlatIP, one call on vstack([q, -q]), k=16;
      (a) and (b) with faiss's default ``distance_compute_blas_threshold`` and with it set to 1
      (BLAS path forced), the default restored afterwards;
  (c) georag FlatIndex.search(q, 16, 16);
  (d) the one-pass floor max(database bytes / read bandwidth, 2 B N d / SGEMM rate), both rates
      measured in this run: a numpy GEMV over the database; the faster of numpy and the
      scipy-openblas32 library georag links (all cores) on a 256 x d by d x 65536 SGEMM;
  (e) the peak extra memory of one FlatIndex search: VmHWM after the search minus VmRSS before it,
      the peak reset through /proc/self/clear_refs; plus the scratch bytes the core reports.

Then (f) recall@16 of faiss's approximate near and far sets (IVF with nprobe 16; HNSW32 unless
N > 200k without --hnsw) against the exact FlatIndex, for B=256 queries.

Memory: the database is held once by FlatIndex (its normalized copy; the generated array is freed)
and once by the faiss index being measured; each index is freed before the next is built.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from georag.search import FaissIndex, FlatIndex
from timing import log, median_s

K = 16
RECALL_B = 256
HNSW_MAX_N = 200_000
MIB = 1 << 20


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``fn`` in milliseconds (see timing.median_s)."""
    return 1e3 * median_s(fn, repeats)


def random_matrix(rows: int, d: int, seed: int, chunk: int = 1 << 15) -> npt.NDArray[np.float32]:
    """Seeded float32 standard normal, generated in place chunk by chunk (no float64 temporary)."""
    rng = np.random.default_rng(seed)
    out = np.empty((rows, d), dtype=np.float32)
    for start in range(0, rows, chunk):
        rng.standard_normal(out=out[start : start + chunk], dtype=np.float32)
    return out


def unit_rows(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


# ---------------------------------------------------------------------------- memory measurement


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _trim_heap() -> None:
    """Returns freed heap pages to the OS so a later allocation shows up in the RSS again."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def peak_extra_mib(fn: Callable[[], object]) -> float | None:
    """Peak RSS growth of one call of ``fn`` (MiB), or None where the peak cannot be reset."""
    gc.collect()
    _trim_heap()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS
        before = _status_kib("VmRSS")
        fn()
        return (_status_kib("VmHWM") - before) / 1024
    except (OSError, RuntimeError):
        return None


# ---------------------------------------------------------------------------- floor inputs


def read_bandwidth_gbs(db: npt.NDArray[np.float32], repeats: int) -> float:
    """Database bytes / median time of a numpy GEMV over it (GB/s)."""
    v = unit_rows(random_matrix(1, db.shape[1], seed=99))[0]
    return db.nbytes / (median_ms(lambda: db @ v, repeats) * 1e-3) / 1e9


def _openblas32_sgemm() -> Callable[[npt.NDArray[np.float32], npt.NDArray[np.float32]], object] | None:
    """C = A @ B.T through the scipy-openblas32 library georag links, on all cores; None if unavailable."""
    try:
        import scipy_openblas32

        lib = ctypes.CDLL(str(Path(scipy_openblas32.get_lib_dir()) / "libscipy_openblas.so"))
    except (ImportError, OSError):
        return None
    f = lib.scipy_cblas_sgemm
    ptr = ctypes.POINTER(ctypes.c_float)
    i, fl = ctypes.c_int, ctypes.c_float
    f.argtypes = [i, i, i, i, i, i, fl, ptr, i, ptr, i, fl, ptr, i]

    def run(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]) -> object:
        c = np.empty((a.shape[0], b.shape[0]), np.float32)
        m, n, k = a.shape[0], b.shape[0], a.shape[1]
        # 101 = row-major, 111 = no transpose, 112 = transpose
        f(
            101,
            111,
            112,
            m,
            n,
            k,
            1.0,
            a.ctypes.data_as(ptr),
            k,
            b.ctypes.data_as(ptr),
            k,
            0.0,
            c.ctypes.data_as(ptr),
            n,
        )
        return c

    run.set_threads = lib.scipy_openblas_set_num_threads  # type: ignore[attr-defined]
    return run


def sgemm_gflops(d: int, repeats: int) -> dict[str, float]:
    """GFLOP/s of a (256 x d) @ (d x 65536) float32 product (median): numpy's BLAS and the scipy-openblas32
    library georag links (all cores). The floor uses the faster, so it is never flattering to georag."""
    a = random_matrix(256, d, seed=97)
    b = random_matrix(65536, d, seed=98)  # used as b.T: BLAS reads it transposed, no copy
    flops = 2 * 256 * d * 65536
    rates = {"numpy": flops / (median_ms(lambda: a @ b.T, repeats) * 1e-3) / 1e9}
    sgemm = _openblas32_sgemm()
    if sgemm is not None:
        sgemm.set_threads(os.cpu_count() or 1)  # type: ignore[attr-defined]
        try:
            rates["openblas32"] = flops / (median_ms(lambda: sgemm(a, b), repeats) * 1e-3) / 1e9
        finally:
            sgemm.set_threads(1)  # type: ignore[attr-defined]  # georag runs it single-threaded per worker
    return rates


# ---------------------------------------------------------------------------- benchmark parts


def time_faiss_flat(
    faiss: Any, index: Any, q: npt.NDArray[np.float32], repeats: int, blas_threshold: int
) -> dict[str, float]:
    """(a) two calls and (b) one stacked call, with the given BLAS threshold (restored after)."""
    default = faiss.cvar.distance_compute_blas_threshold
    neg = np.ascontiguousarray(-q)
    stacked = np.vstack([q, neg])
    try:
        faiss.cvar.distance_compute_blas_threshold = blas_threshold
        two = median_ms(lambda: (index.search(q, K), index.search(neg, K)), repeats)
        one = median_ms(lambda: index.search(stacked, K), repeats)
    finally:
        faiss.cvar.distance_compute_blas_threshold = default
    return {"two_calls_ms": two, "stacked_ms": one}


def recall(got: npt.NDArray[np.int64], want: npt.NDArray[np.int64]) -> float:
    hits = sum(len(set(g.tolist()) & set(w.tolist())) for g, w in zip(got, want, strict=True))
    return hits / max(want.size, 1)


def ivf_nlist(n: int) -> int:
    """1024 lists from N = 65536 on; for smaller N a power of two near N / 64 (at least 16)."""
    return min(1024, 2 ** int(math.log2(max(n // 64, 16))))


def measure_recall(fi: FlatIndex, n: int, d: int, args: argparse.Namespace) -> list[dict[str, Any]]:
    db = fi.vectors()
    q = random_matrix(RECALL_B, d, seed=2000 + d)
    exact = fi.search(q, K, K)
    nlist = ivf_nlist(n)
    specs: list[tuple[str, dict[str, Any]]] = [(f"IVF{nlist},Flat", {"nprobe": min(16, nlist)})]
    if n <= HNSW_MAX_N or args.hnsw:
        specs.append(("HNSW32", {"efSearch": args.ef_search}))
    else:
        log(f"  recall: HNSW32 skipped for N={n} > {HNSW_MAX_N} (pass --hnsw to build it)")
    rows = []
    for factory, params in specs:
        log(f"  recall: building {factory} {params} ...")
        t0 = time.perf_counter()
        approx = FaissIndex(db, factory, **params)
        build_s = time.perf_counter() - t0
        search_ms = median_ms(lambda a=approx: a.search(q, K, K), max(1, args.repeats // 2))
        got = approx.search(q, K, K)
        rows.append(
            {
                "N": n,
                "d": d,
                "B": RECALL_B,
                "index": factory,
                "params": params,
                "build_s": build_s,
                "search_ms": search_ms,
                "recall_near": recall(got.near_ids, exact.near_ids),
                "recall_far": recall(got.far_ids, exact.far_ids),
            }
        )
        del approx
        gc.collect()
    return rows


def time_exact(
    faiss: Any, fi: FlatIndex, n: int, d: int, floor: dict[str, Any], args: argparse.Namespace
) -> list[dict[str, Any]]:
    """(a)-(e) for every B; the faiss IndexFlatIP lives only inside this call."""
    db = fi.vectors()
    index = faiss.IndexFlatIP(d)
    index.add(db)  # one add: faiss sizes its copy exactly
    bw, gemm = floor["read_gbs"], floor["sgemm_gflops"]
    rows = []
    for b in args.b:
        q = unit_rows(random_matrix(b, d, seed=1000 + b))
        stacked = np.vstack([q, -q])
        log(f"N={n} d={d} B={b}: faiss ...")
        default = time_faiss_flat(faiss, index, q, args.repeats, args.faiss_default_threshold)
        forced = time_faiss_flat(faiss, index, q, args.repeats, 1)
        log(f"N={n} d={d} B={b}: georag ...")
        georag_ms = median_ms(lambda q=q: fi.search(q, K, K), args.repeats)
        scratch = int(fi.search_raw(q, K, K)[4])
        extra = peak_extra_mib(lambda q=q: fi.search(q, K, K))
        faiss_extra = peak_extra_mib(lambda s=stacked: index.search(s, K))
        best = min(*default.values(), *forced.values())
        floor_ms = 1e3 * max(db.nbytes / (bw * 1e9), 2 * b * n * d / (gemm * 1e9))
        rows.append(
            {
                "N": n,
                "d": d,
                "B": b,
                "faiss_two_calls_ms": default["two_calls_ms"],
                "faiss_stacked_ms": default["stacked_ms"],
                "faiss_blas_two_calls_ms": forced["two_calls_ms"],
                "faiss_blas_stacked_ms": forced["stacked_ms"],
                "best_faiss_ms": best,
                "georag_ms": georag_ms,
                "speedup_vs_best_faiss": best / georag_ms,
                "floor_ms": floor_ms,
                "georag_over_floor": georag_ms / floor_ms,
                "extra_mib_measured": extra,
                "scratch_bytes_reported": scratch,
                "scratch_mib_reported": scratch / MIB,
                "faiss_stacked_extra_mib_measured": faiss_extra,
            }
        )
        log(f"  georag {georag_ms:.2f} ms, best faiss {best:.2f} ms, floor {floor_ms:.2f} ms")
    return rows


def bench_shape(faiss: Any, n: int, d: int, args: argparse.Namespace) -> dict[str, Any]:
    """Everything for one (N, d); the database and every index are freed on return."""
    log(f"N={n} d={d}: generating {n * d * 4 / 1e9:.2f} GB ...")
    fi = FlatIndex(random_matrix(n, d, seed=n * 7919 + d), num_threads=args.threads)
    gc.collect()  # the generated array is gone: FlatIndex keeps its own normalized copy
    log(f"N={n} d={d}: measuring read bandwidth and SGEMM rate ...")
    floor = {
        "N": n,
        "d": d,
        "read_gbs": read_bandwidth_gbs(fi.vectors(), args.repeats),
        "sgemm_by_blas": (rates := sgemm_gflops(d, args.repeats)),
        "sgemm_gflops": max(rates.values()),
    }
    log(f"  GEMV read {floor['read_gbs']:.1f} GB/s, SGEMM {floor['sgemm_by_blas']} GFLOP/s")
    rows = time_exact(faiss, fi, n, d, floor, args)
    gc.collect()
    _trim_heap()
    recall_rows = [] if args.no_recall else measure_recall(fi, n, d, args)
    return {"floor": floor, "rows": rows, "recall": recall_rows}


# ---------------------------------------------------------------------------- output


def _fmt(v: float | None, digits: int = 2) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def markdown(results: list[dict[str, Any]], threshold: int) -> str:
    head = [
        "N", "d", "B",
        "faiss two calls (ms)", "faiss stacked (ms)",
        "faiss BLAS two calls (ms)", "faiss BLAS stacked (ms)",
        "best faiss (ms)", "georag (ms)", "speed-up vs best faiss (x)",
        "floor (ms)", "georag/floor (x)", "extra MiB (measured)", "scratch MiB (reported)",
    ]  # fmt: skip
    lines = [
        f"faiss default distance_compute_blas_threshold = {threshold}; 'BLAS' columns set it to 1.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---:|" * len(head),
    ]
    for r in (row for res in results for row in res["rows"]):
        cells = [
            str(r["N"]), str(r["d"]), str(r["B"]),
            _fmt(r["faiss_two_calls_ms"]), _fmt(r["faiss_stacked_ms"]),
            _fmt(r["faiss_blas_two_calls_ms"]), _fmt(r["faiss_blas_stacked_ms"]),
            _fmt(r["best_faiss_ms"]), _fmt(r["georag_ms"]), _fmt(r["speedup_vs_best_faiss"]),
            _fmt(r["floor_ms"]), _fmt(r["georag_over_floor"]),
            _fmt(r["extra_mib_measured"], 1), _fmt(r["scratch_mib_reported"], 1),
        ]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "| N | d | GEMV read (GB/s) | SGEMM numpy (GFLOP/s) | SGEMM openblas32 (GFLOP/s) |",
        "|---:|---:|---:|---:|---:|",
    ]
    for res in results:
        f = res["floor"]
        by = f["sgemm_by_blas"]
        lines.append(
            f"| {f['N']} | {f['d']} | {f['read_gbs']:.1f} | {by['numpy']:.1f} | "
            f"{_fmt(by.get('openblas32'), 1)} |"
        )
    recall_rows = [row for res in results for row in res["recall"]]
    if recall_rows:
        lines += [
            "",
            f"| N | d | faiss index (B={RECALL_B}) | params | build (s) | search (ms) "
            "| recall@16 near | recall@16 far |",
            "|---:|---:|---|---|---:|---:|---:|---:|",
        ]
        for r in recall_rows:
            params = ", ".join(f"{k}={v}" for k, v in r["params"].items())
            lines.append(
                f"| {r['N']} | {r['d']} | {r['index']} | {params} | {r['build_s']:.1f} "
                f"| {r['search_ms']:.1f} | {r['recall_near']:.3f} | {r['recall_far']:.3f} |"
            )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--n", type=int, nargs="+", help="database sizes (default 100000 1000000)")
    p.add_argument("--d", type=int, nargs="+", help="dimensions (default 768 1152)")
    p.add_argument("--b", type=int, nargs="+", help="query batch sizes (default 1 16 256)")
    p.add_argument("--repeats", type=int, help="timed runs per measurement (default 5)")
    p.add_argument("--threads", type=int, default=0, help="faiss and georag threads; 0 = all")
    p.add_argument("--json", metavar="PATH", help="write every measurement to this JSON file")
    p.add_argument("--quick", action="store_true", help="smoke run: N=20000, d=768, 3 repeats")
    p.add_argument("--hnsw", action="store_true", help=f"build HNSW32 also for N > {HNSW_MAX_N}")
    p.add_argument("--ef-search", type=int, default=128, help="HNSW efSearch (default 128)")
    p.add_argument("--no-recall", action="store_true", help="skip the approximate-recall part")
    args = p.parse_args(argv)
    defaults = (
        {"n": [20_000], "d": [768], "b": [1, 16, 256], "repeats": 3}
        if args.quick
        else {"n": [100_000, 1_000_000], "d": [768, 1152], "b": [1, 16, 256], "repeats": 5}
    )
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if min(args.n + args.d + args.b) < 1 or args.repeats < 1 or args.threads < 0:
        p.error("sizes and --repeats must be >= 1 and --threads >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import faiss

    if args.threads:
        faiss.omp_set_num_threads(args.threads)
    args.faiss_default_threshold = int(faiss.cvar.distance_compute_blas_threshold)
    machine = {
        "cpu_count": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "faiss_threads": faiss.omp_get_max_threads(),
        "faiss": faiss.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE"),
    }
    log(f"machine: {machine}")
    results = []
    for n in args.n:
        for d in args.d:
            results.append(bench_shape(faiss, n, d, args))
            gc.collect()
            _trim_heap()
    print(markdown(results, args.faiss_default_threshold))
    if args.json:
        report = {
            "config": {k: v for k, v in vars(args).items() if k != "json"},
            "machine": machine,
            "k": K,
            "faiss_default_blas_threshold": args.faiss_default_threshold,
            "results": results,
        }
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
        log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
