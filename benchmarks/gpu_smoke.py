#!/usr/bin/env python
"""The GPU paths on first contact: one run, one table, each part skipped with its reason where its software
or hardware is missing (so it runs to the end on a CPU-only machine too). Run it through gpu_smoke.sh.

Parts: driver and CUDA versions; georag._core's CUDA build and the device it finds; FIRST, the measured
error of the tensor-core GEMM against the certified bound (the one assumption of the GEMM path no CPU test
can check: if it fails, the GEMM path must not be trusted on this GPU); the GPU tests
(`pytest -m gpu`); compute-sanitizer memcheck and racecheck on a small CudaFlatIndex search; CudaFlatIndex
against torch matmul + topk on the same card at N = 1M, d = 1152, B = 1 and 256 (ids equal, time ratio); a
TensorRT engine built from a SigLIP-shaped ONNX (the tiny random SigLIP) with parity against
onnxruntime; one request through a tritonserver with the TensorRT backend (NOT AUTOMATED yet: the
part only says so).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
Row = tuple[str, str, str]  # part, status (ok / FAILED / skipped), detail


class Skip(Exception):
    """The part cannot run here; the message says why."""


class NotAutomated(Exception):
    """The part could run here, but the script does not do it yet; the message says what to do."""


def run(cmd: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False, cwd=ROOT)


def versions() -> str:
    smi = shutil.which("nvidia-smi")
    if not smi:
        raise Skip("no nvidia-smi: no NVIDIA driver on this machine")
    out = run([smi, "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"], 30)
    nvcc = shutil.which("nvcc")
    cuda = run([nvcc, "--version"], 30).stdout.strip().splitlines()[-1] if nvcc else "no nvcc"
    return f"{out.stdout.strip() or out.stderr.strip()}; {cuda}"


def core_device() -> str:
    from georag import _core

    if not getattr(_core, "has_cuda", False):
        raise Skip(f"georag._core has no CUDA build ({getattr(_core, 'cuda_build_note', '')})")
    ok, why = _core.cuda_device_available()
    if not ok:
        raise Skip(f"CUDA build, but no usable device: {why}")
    return f"CUDA build, device: {why}"


BOUND_LIMIT = 1 / 1.0625


def gemm_bound() -> str:
    """The bound check (cpp/src/cuda/certified.hpp): the GEMM tile against the exact tile, as the largest
    |approx - exact| / e, on the stress set (random, nearly orthogonal and cancellation-heavy pairs and the
    query-rounding adversary) and on random rows, at several widths, with and without per-row scales; and
    the self-check an index runs before its first GEMM search."""
    core_device()
    import numpy as np

    from georag import _core
    from georag.search.cuda import CudaFlatIndex

    worst: tuple[float, str] = (0.0, "")
    parts = []
    for d in (1152, 768, 96, 32):
        rows, q = _core._cuda_bound_stress_set(d)
        ratios = []
        for normalize in (False, True):
            index = CudaFlatIndex(rows, normalize=normalize)
            for queries, start in ((q[:128], 0), (q[128:], 0), (q[128:], 384)):
                got = index._bound_check(queries, row_start=start)
                ratios.append(got["ratio"])
                if got["ratio"] >= worst[0]:
                    worst = (got["ratio"], f"d={d} normalize={normalize} {got}")
        rng = np.random.default_rng(d)
        db = rng.standard_normal((20000, d), dtype=np.float32)
        got = CudaFlatIndex(db)._bound_check(rng.standard_normal((512, d), dtype=np.float32))
        if got["ratio"] >= worst[0]:
            worst = (got["ratio"], f"d={d} random rows {got}")
        parts.append(f"d={d}: stress {max(ratios):.3f}, random {got['ratio']:.3f}")
    index = CudaFlatIndex(_core._cuda_bound_stress_set(1152)[0])
    index.search(np.ones((8, 1152), np.float32), 4, 4, gemm_min_batch=1)
    self_check = index.gemm_self_check or {}
    parts.append(f"self-check {self_check.get('ratio', float('nan')):.3f}")
    summary = f"max |GEMM - exact| / e (limit {BOUND_LIMIT:.3f}): " + "; ".join(parts)
    if worst[0] >= BOUND_LIMIT or not self_check.get("ok", False):
        raise RuntimeError(
            f"{summary}. THE GEMM PATH MUST NOT BE TRUSTED ON THIS GPU: its error breaks the certified "
            f"bound's assumption (CudaFlatIndex refuses it and streams exactly); worst pair: {worst[1]}"
        )
    return summary


def gpu_tests() -> str:
    core_device()
    out = run([sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", "tests"], 600)
    last = (out.stdout.strip().splitlines() or ["no output"])[-1]
    if out.returncode != 0:
        raise RuntimeError(last)
    return last


SANITIZED = (
    "import numpy as np; from georag.search.cuda import CudaFlatIndex; "
    "rng = np.random.default_rng(0); x = rng.standard_normal((5000, 64), dtype=np.float32); "
    "CudaFlatIndex(x).search(x[:7], 16, 16)"
)


def sanitizer(tool: str) -> Callable[[], str]:
    def part() -> str:
        core_device()
        exe = shutil.which("compute-sanitizer")
        if not exe:
            raise Skip("no compute-sanitizer on PATH (CUDA toolkit)")
        out = run([exe, f"--tool={tool}", "--error-exitcode=9", sys.executable, "-c", SANITIZED], 600)
        summary = [ln for ln in out.stdout.splitlines() + out.stderr.splitlines() if "ERROR SUMMARY" in ln]
        if out.returncode != 0:
            raise RuntimeError(summary[-1] if summary else out.stderr[-300:])
        return summary[-1] if summary else "no errors"

    return part


def against_torch() -> str:
    core_device()
    try:
        import torch
    except ImportError as exc:
        raise Skip("torch is not installed") from exc
    if not torch.cuda.is_available():
        raise Skip("torch sees no CUDA device (a CPU build of torch?)")
    import numpy as np

    from georag.search.cuda import CudaFlatIndex

    n, d = 1_000_000, 1152
    bandwidth = 3.35e12  # H100 SXM HBM3 bytes/s; the floor is one read of the float16 rows
    floor_s = n * d * 2 / bandwidth
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, d), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    x16 = x.astype(np.float16)  # the device keeps float16 rows; torch gets the same values
    del x
    index = CudaFlatIndex(x16, normalize=False)
    xt = torch.from_numpy(x16).cuda()
    parts = [f"floor {floor_s * 1e3:.2f} ms (N*d*2 bytes at 3.35 TB/s)"]
    for b in (1, 256):
        q = rng.standard_normal((b, d), dtype=np.float32)
        q /= np.linalg.norm(q, axis=1, keepdims=True)
        qt = torch.from_numpy(q).cuda().half()

        def ours(q: np.ndarray = q) -> object:
            return index.search(q, 16, 16)

        def theirs(qt: torch.Tensor = qt) -> tuple[torch.Tensor, torch.Tensor]:
            s = (qt @ xt.T).float()
            near, far = s.topk(16, dim=1).indices, s.topk(16, dim=1, largest=False).indices
            torch.cuda.synchronize()
            return near, far

        res, (near, _far) = ours(), theirs()
        same = float((res.near_ids == near.cpu().numpy()).mean())
        t_ours = min(_timed(ours) for _ in range(5))
        t_theirs = min(_timed(theirs) for _ in range(5))
        parts.append(
            f"B={b}: georag {t_ours * 1e3:.1f} ms ({t_ours / floor_s:.1f}x floor), torch fp16 "
            f"{t_theirs * 1e3:.1f} ms ({t_theirs / floor_s:.1f}x), near ids equal {same:.3f}"
        )
    return "; ".join(parts)


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def tensorrt_engine() -> str:
    try:
        import tensorrt  # noqa: F401
    except ImportError as exc:
        raise Skip("tensorrt is not installed (pip install tensorrt on a GPU machine)") from exc
    from georag.encoder import load_encoder
    from georag.encoder.export import export_onnx
    from georag.encoder.parity import parity_check, parity_pixels
    from georag.encoder.tensorrt_build import build_tensorrt_engine
    from georag.encoder.tiny import make_tiny_siglip

    with tempfile.TemporaryDirectory() as tmp:
        tiny = make_tiny_siglip(Path(tmp) / "tiny")
        onnx_dir = Path(tmp) / "onnx"
        export_onnx(tiny, onnx_dir)
        engine = build_tensorrt_engine(next(onnx_dir.glob("*.onnx")), Path(tmp) / "trt" / "model.plan")
        ref = load_encoder(onnx_dir, backend="onnxruntime")
        trt = load_encoder(engine, backend="tensorrt", spec=ref.spec)
        report = parity_check(ref.backend, trt.backend, parity_pixels(ref.spec))
        return str(report)


def triton_trt() -> str:
    if not shutil.which("tritonserver"):
        raise Skip("no tritonserver on PATH (the NGC Triton container has it)")
    backends = Path("/opt/tritonserver/backends")
    if not (backends / "tensorrt").is_dir():
        raise Skip(f"no TensorRT backend in {backends}")
    raise NotAutomated(
        "a tritonserver with the TensorRT backend is here, but this script does not yet build a siglip_trt "
        "repository and send a request: do it by hand (README, Serving with Triton)"
    )


PARTS: list[tuple[str, Callable[[], str]]] = [
    ("driver and CUDA", versions),
    ("georag._core CUDA build and device", core_device),
    ("GEMM error vs certified bound (first: else the GEMM path is untrusted)", gemm_bound),
    ("pytest -m gpu", gpu_tests),
    ("compute-sanitizer memcheck", sanitizer("memcheck")),
    ("compute-sanitizer racecheck", sanitizer("racecheck")),
    ("CudaFlatIndex vs torch matmul+topk, N=1M d=1152", against_torch),
    ("TensorRT engine + parity vs onnxruntime", tensorrt_engine),
    ("tritonserver with siglip_trt", triton_trt),
]


def main() -> int:
    rows: list[Row] = []
    for name, part in PARTS:
        t0 = time.perf_counter()
        try:
            status, detail = "ok", part()
        except Skip as why:
            status, detail = "skipped", str(why)
        except NotAutomated as why:
            status, detail = "NOT AUTOMATED", str(why)
        except Exception as exc:
            status, detail = "FAILED", f"{type(exc).__name__}: {exc}"
        rows.append((name, status, f"{detail} ({time.perf_counter() - t0:.1f} s)"))
        print(f"{name}: {status}", file=sys.stderr, flush=True)
    print("| part | status | detail |")
    print("|---|---|---|")
    for name, status, detail in rows:
        print(f"| {name} | {status} | {detail.replace('|', '/')} |")
    return 1 if any(s == "FAILED" for _, s, _ in rows) else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
