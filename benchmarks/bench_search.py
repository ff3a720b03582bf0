#!/usr/bin/env python
"""Exact nearest+farthest search: georag float16-in-place and float32 FlatIndex against faiss and torch.

For each (N, d) a seeded standard-normal database is generated chunk by chunk, L2-normalized and kept as
float16 (what a store holds). For each batch size B the script times (median after one warm-up, k=16):

  (a) georag float16 in place: FlatIndex.from_normalized(rows) (no copy; AMX tiles for B >= 16 where the
      CPU has them, the streaming float16 kernel below; exact either way);
  (b) georag float32: FlatIndex.from_chunks(rows) (the float32 copy every release before this one used);
  (c) faiss IndexFlatIP over the float32 rows, the best of: two calls search(q), search(-q) or one call on
      vstack([q, -q]), each with faiss's default ``distance_compute_blas_threshold`` and with it set to 1;
  (d) faiss IndexScalarQuantizer fp16 (half the memory, like (a)), one stacked call;
  (e) torch bf16 ``q @ X.T`` + topk(largest) + topk(smallest) (oneDNN, AMX where present): approximate;
  (f) the one-pass floor max(float32 bytes / read bandwidth, 2 B N d / SGEMM rate), both measured here;
  (g) the peak extra memory of one float16 search (VmHWM after minus VmRSS before, peak reset).

Then (h) recall@16 of faiss's approximate near and far sets (IVF with nprobe 16; HNSW32 unless
N > 200k without --hnsw) against the exact FlatIndex, for B=256 queries.

Each competitor's index lives only while it is measured, so the peak memory is the float16 rows, the
float32 FlatIndex and one other index.

``--f16-paths`` measures instead georag's own float16 batch paths against each other, run interleaved
(paired medians): certified SGEMM (``use_amx=False, blas_min_batch=1``: what a CPU without AMX runs from
``blas_min_batch`` queries), the streaming float16 kernel, AMX (where the CPU has it), and the float32
index (default dispatch); after checking that the three float16 paths return the same ids and scores.
Run it with GEORAG_KERNEL=avx2 OPENBLAS_CORETYPE=Haswell to approximate an AVX2-only CPU on an AVX-512 one.
"""

from __future__ import annotations

import os

# torch and faiss run on OpenMP, whose idle threads spin for a while after each parallel region; timed
# interleaved with georag (paired ratios), those spinning threads would steal the cores georag's next
# search needs. Passive waiting stops that (set before any OpenMP runtime loads; costs them microseconds).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

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
from timing import log, median_s, paired_median_s

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


Search = Callable[[], object]


def paired(ours: Search, theirs: Search, repeats: int) -> tuple[float, float]:
    """(ours ms, theirs ms): medians of the two run interleaved, so machine noise hits both alike. A
    competitor slower than 10 s a call is timed once after its warm-up (the ratio is still paired)."""
    t0 = time.perf_counter()
    theirs()
    reps = 1 if time.perf_counter() - t0 > 10 else repeats
    a, b = paired_median_s([ours, theirs], reps)
    return 1e3 * a, 1e3 * b


def time_faiss_flat(
    faiss: Any, index: Any, q: npt.NDArray[np.float32], ours: Search, args: argparse.Namespace
) -> dict[str, tuple[float, float]]:
    """(c): two calls and one stacked call, with faiss's default BLAS threshold and with 1 (restored after),
    each paired with ``ours``."""
    default = faiss.cvar.distance_compute_blas_threshold
    neg = np.ascontiguousarray(-q)
    stacked = np.vstack([q, neg])
    out = {}
    try:
        for name, threshold in (("default", args.faiss_default_threshold), ("blas", 1)):
            faiss.cvar.distance_compute_blas_threshold = threshold
            out[f"two_calls_{name}"] = paired(
                ours, lambda: (index.search(q, K), index.search(neg, K)), args.repeats
            )
            out[f"stacked_{name}"] = paired(ours, lambda: index.search(stacked, K), args.repeats)
    finally:
        faiss.cvar.distance_compute_blas_threshold = default
    return out


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


def time_torch_bf16(
    half: npt.NDArray[np.float16], queries: dict[int, Any], ours: dict[int, Search], repeats: int
) -> dict[int, tuple[float, float]]:
    """(e) for every B, paired with georag: torch bf16 matmul + two topk; {} when torch is missing."""
    try:
        import torch
    except ImportError:
        log("  torch is not installed: its column is n/a")
        return {}
    x = torch.from_numpy(half).to(torch.bfloat16)
    out = {}
    for b, q in queries.items():
        qt = torch.from_numpy(q).to(torch.bfloat16)

        def run(qt: Any = qt, x: Any = x) -> None:
            with torch.inference_mode():
                s = qt @ x.T
                s.topk(K, dim=1, largest=True)
                s.topk(K, dim=1, largest=False)

        out[b] = paired(ours[b], run, repeats)
    del x
    return out


def time_faiss_sq_fp16(
    faiss: Any, half: npt.NDArray[np.float16], queries: dict[int, Any], ours: dict[int, Search], repeats: int
) -> dict[int, tuple[float, float]]:
    """(d) for every B, paired with georag: faiss IndexScalarQuantizer fp16, one stacked call."""
    sq = faiss.IndexScalarQuantizer(half.shape[1], faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
    for i in range(0, half.shape[0], 1 << 16):
        sq.add(np.ascontiguousarray(half[i : i + (1 << 16)], dtype=np.float32))
    out = {}
    for b, q in queries.items():
        stacked = np.vstack([q, -q])
        out[b] = paired(ours[b], lambda stacked=stacked: sq.search(stacked, K), repeats)
    return out


def time_exact(
    faiss: Any,
    half: npt.NDArray[np.float16],
    fi: FlatIndex,
    n: int,
    d: int,
    floor: dict[str, Any],
    args: argparse.Namespace,
) -> list[dict[str, Any]]:
    """(a)-(g) for every B, every competitor timed interleaved with georag float16 (paired ratios); each
    competitor's index lives only inside this call."""
    queries = {b: unit_rows(random_matrix(b, d, seed=1000 + b)) for b in args.b}
    fh = FlatIndex.from_normalized(half, num_threads=args.threads)
    ours: dict[int, Search] = {b: (lambda q=q: fh.search(q, K, K)) for b, q in queries.items()}
    own: dict[int, dict[str, Any]] = {}
    for b, q in queries.items():
        log(f"N={n} d={d} B={b}: georag float16 in place and float32 ...")
        f16_ms, f32_ms = paired(ours[b], lambda q=q: fi.search(q, K, K), args.repeats)
        own[b] = {
            "georag_f16_ms": f16_ms,
            "georag_f32_ms": f32_ms,
            "scratch_mib_reported": int(fh.search_raw(q, K, K)[4]) / MIB,
            "extra_mib_measured": peak_extra_mib(ours[b]),
        }
        log(f"  float16 {f16_ms:.1f} ms, float32 {f32_ms:.1f} ms")
    log(f"N={n} d={d}: faiss IndexFlatIP ...")
    flat = faiss.IndexFlatIP(d)
    for i in range(0, n, 1 << 16):
        flat.add(np.ascontiguousarray(half[i : i + (1 << 16)], dtype=np.float32))
    faiss_flat = {b: time_faiss_flat(faiss, flat, q, ours[b], args) for b, q in queries.items()}
    del flat
    gc.collect()
    log(f"N={n} d={d}: faiss SQfp16 ...")
    faiss_sq = time_faiss_sq_fp16(faiss, half, queries, ours, args.repeats)
    gc.collect()
    log(f"N={n} d={d}: torch bf16 ...")
    torch_pairs = time_torch_bf16(half, queries, ours, args.repeats)
    gc.collect()
    _trim_heap()
    bw, gemm = floor["read_gbs"], floor["sgemm_gflops"]
    rows = []
    for b in args.b:
        r = own[b]
        flat_best = min(faiss_flat[b].values(), key=lambda p: p[1] / p[0])
        best = min([flat_best, faiss_sq[b]], key=lambda p: p[1] / p[0])
        t = torch_pairs.get(b)
        rows.append(
            {
                "N": n,
                "d": d,
                "B": b,
                **r,
                "faiss_flat_best_ms": flat_best[1],
                "faiss_flat_variants_ms": {k: v[1] for k, v in faiss_flat[b].items()},
                "faiss_sq_fp16_ms": faiss_sq[b][1],
                "torch_bf16_ms": None if t is None else t[1],
                "f16_speedup_vs_f32": r["georag_f32_ms"] / r["georag_f16_ms"],
                "f16_speedup_vs_best_faiss": best[1] / best[0],
                "f16_speedup_vs_torch": None if t is None else t[1] / t[0],
                "floor_ms": 1e3 * max(n * d * 4 / (bw * 1e9), 2 * b * n * d / (gemm * 1e9)),
            }
        )
    return rows


def normalized_half(n: int, d: int) -> npt.NDArray[np.float16]:
    """The seeded (n, d) database of normalized float16 rows, generated chunk by chunk."""
    log(f"N={n} d={d}: generating {n * d * 2 / 1e9:.2f} GB of normalized float16 rows ...")
    half = np.empty((n, d), dtype=np.float16)
    for i in range(0, n, 1 << 15):
        m = min(1 << 15, n - i)
        half[i : i + m] = unit_rows(random_matrix(m, d, seed=n * 7919 + d + i))
    return half


def bench_shape(faiss: Any, n: int, d: int, args: argparse.Namespace) -> dict[str, Any]:
    """Everything for one (N, d); the database and every index are freed on return."""
    half = normalized_half(n, d)
    chunks = (half[i : i + (1 << 16)] for i in range(0, n, 1 << 16))
    fi = FlatIndex.from_chunks(chunks, n, d, normalize=False, num_threads=args.threads)
    log(f"N={n} d={d}: measuring read bandwidth and SGEMM rate ...")
    floor = {
        "N": n,
        "d": d,
        "read_gbs": read_bandwidth_gbs(fi.vectors(), args.repeats),
        "sgemm_by_blas": (rates := sgemm_gflops(d, args.repeats)),
        "sgemm_gflops": max(rates.values()),
    }
    log(f"  GEMV read {floor['read_gbs']:.1f} GB/s, SGEMM {floor['sgemm_by_blas']} GFLOP/s")
    rows = time_exact(faiss, half, fi, n, d, floor, args)
    del half
    gc.collect()
    _trim_heap()
    recall_rows = [] if args.no_recall else measure_recall(fi, n, d, args)
    return {"floor": floor, "rows": rows, "recall": recall_rows}


# The float16 batch paths, forced (see FlatIndex's docstring).
F16_PATHS: dict[str, dict[str, int]] = {
    "sgemm": {"use_amx": False, "blas_min_batch": 1},
    "stream": {"amx_min_batch": 10**9, "blas_min_batch": 10**9},
    "amx": {"amx_min_batch": 1},
}


def bench_f16_paths(n: int, d: int, args: argparse.Namespace) -> list[dict[str, Any]]:
    """--f16-paths for one (N, d): the float16 paths and the float32 index, timed interleaved per B."""
    from georag import _core

    half = normalized_half(n, d)
    fh = FlatIndex.from_normalized(half, num_threads=args.threads)
    chunks = (half[i : i + (1 << 16)] for i in range(0, n, 1 << 16))
    fi = FlatIndex.from_chunks(chunks, n, d, normalize=False, num_threads=args.threads)
    paths = {k: v for k, v in F16_PATHS.items() if k != "amx" or _core.amx_status() == "available"}
    rows = []
    for b in args.b:
        q = unit_rows(random_matrix(b, d, seed=1000 + b))
        results = {name: fh.search_raw(q, K, K, **p) for name, p in paths.items()}
        for name, got in results.items():  # the paths are exact: the same ids and scores, bit for bit
            if not all(np.array_equal(x, y) for x, y in zip(got[:4], results["stream"][:4], strict=True)):
                raise AssertionError(f"B={b}: the {name} path differs from the streaming kernel")
        fns: list[Search] = [lambda p=p, q=q: fh.search(q, K, K, **p) for p in paths.values()]
        log(f"N={n} d={d} B={b}: float16 {', '.join(paths)} and float32, interleaved ...")
        times = paired_median_s([*fns, lambda q=q: fi.search(q, K, K)], args.repeats)
        ms = {f"f16_{name}_ms": 1e3 * t for name, t in zip(paths, times, strict=False)}
        row = {"N": n, "d": d, "B": b, **ms, "f32_ms": 1e3 * times[-1]}
        row["stream_over_sgemm"] = row["f16_stream_ms"] / row["f16_sgemm_ms"]
        log("  " + ", ".join(f"{k} {v:.1f}" for k, v in row.items() if k.endswith("_ms")))
        rows.append(row)
    return rows


def f16_paths_markdown(rows: list[dict[str, Any]], machine: dict[str, Any]) -> str:
    forced = ("GEORAG_KERNEL", "OPENBLAS_CORETYPE")
    env = " ".join(f"{k}={os.environ[k]}" for k in forced if os.environ.get(k))
    lines = [
        f"Command: `{' '.join([env, 'python', *sys.argv]).strip()}`",
        "",
        f"Machine: {machine['platform']}, {machine['affinity']} cores available, georag kernel "
        f"{machine['georag_kernel']}, AMX: {machine['amx']}. k = {K} near and {K} far; medians of the "
        "four searches run interleaved (paired). The float16 paths were checked equal, ids and scores.",
        "",
        "| N | d | B | f16 SGEMM-certified (ms) | f16 streaming (ms) | f16 AMX (ms) | f32 (ms) "
        "| streaming / SGEMM (x) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['N']} | {r['d']} | {r['B']} | {r['f16_sgemm_ms']:.1f} | {r['f16_stream_ms']:.1f} "
            f"| {_fmt(r.get('f16_amx_ms'), 1)} | {r['f32_ms']:.1f} | {r['stream_over_sgemm']:.2f} |"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------- output


def _fmt(v: float | None, digits: int = 2) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def markdown(results: list[dict[str, Any]], threshold: int) -> str:
    head = [
        "N", "d", "B", "georag f16 in place (ms)", "georag f32 (ms)",
        "faiss FlatIP best (ms)", "faiss SQfp16 (ms)", "torch bf16 (ms)",
        "f16 vs f32 (x)", "f16 vs best faiss (x)",
        "f16 vs torch (x)", "floor (ms)", "extra MiB (measured)", "scratch MiB (reported)",
    ]  # fmt: skip
    lines = [
        "faiss FlatIP best: two calls or stacked, with the default distance_compute_blas_threshold "
        f"({threshold}) and with 1. Ratios > 1: georag float16 in place is faster; each ratio comes from the "
        "competitor and georag timed interleaved in the same minutes (paired medians), the absolute times "
        "from those windows.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---:|" * len(head),
    ]
    for r in (row for res in results for row in res["rows"]):
        cells = [
            str(r["N"]), str(r["d"]), str(r["B"]),
            _fmt(r["georag_f16_ms"], 1), _fmt(r["georag_f32_ms"], 1),
            _fmt(r["faiss_flat_best_ms"], 1), _fmt(r["faiss_sq_fp16_ms"], 1), _fmt(r["torch_bf16_ms"], 1),
            _fmt(r["f16_speedup_vs_f32"]), _fmt(r["f16_speedup_vs_best_faiss"]),
            _fmt(r["f16_speedup_vs_torch"]), _fmt(r["floor_ms"], 1),
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
    p.add_argument("--n", type=int, nargs="+", help="database sizes (default 1000000)")
    p.add_argument("--d", type=int, nargs="+", help="dimensions (default 768 1152)")
    p.add_argument("--b", type=int, nargs="+", help="query batch sizes (default 1 16 256)")
    p.add_argument("--repeats", type=int, help="timed runs per measurement (default 5)")
    p.add_argument("--threads", type=int, default=0, help="faiss and georag threads; 0 = all")
    p.add_argument("--json", metavar="PATH", help="write every measurement to this JSON file")
    p.add_argument("--quick", action="store_true", help="smoke run: N=20000, d=768, 3 repeats")
    p.add_argument("--hnsw", action="store_true", help=f"build HNSW32 also for N > {HNSW_MAX_N}")
    p.add_argument("--ef-search", type=int, default=128, help="HNSW efSearch (default 128)")
    p.add_argument("--no-recall", action="store_true", help="skip the approximate-recall part")
    p.add_argument(
        "--f16-paths",
        action="store_true",
        help="only georag's float16 paths (certified SGEMM, streaming, AMX) and float32, paired",
    )
    args = p.parse_args(argv)
    defaults = (
        {"n": [20_000], "d": [768], "b": [1, 16, 256], "repeats": 3}
        if args.quick
        else {"n": [1_000_000], "d": [768, 1152], "b": [1, 16, 256], "repeats": 5}
    )
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if min(args.n + args.d + args.b) < 1 or args.repeats < 1 or args.threads < 0:
        p.error("sizes and --repeats must be >= 1 and --threads >= 0")
    return args


def main_f16_paths(args: argparse.Namespace) -> int:
    from georag import _core

    machine = {
        "platform": platform.platform(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "georag_kernel": _core.kernel_name(),
        "amx": _core.amx_status(),
        "blas": _core.blas_info(),
    }
    log(f"machine: {machine}")
    rows = [row for n in args.n for d in args.d for row in bench_f16_paths(n, d, args)]
    print(f16_paths_markdown(rows, machine))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"config": vars(args), "machine": machine, "k": K, "rows": rows}, f, indent=2)
        log(f"wrote {args.json}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.f16_paths:
        return main_f16_paths(args)
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
