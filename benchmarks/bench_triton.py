#!/usr/bin/env python
"""The georag pipeline through a real Triton server on CPU against the same pipeline called in-process.

Setup: a tiny random SigLIP (2 layers, 32 px) exported to ONNX, a store of the shared IM2GPS3k sample
(300 photos, also the queries), and a repository from `georag triton repo` with siglip_python (the ONNX
file in the Python backend), retrieval, georag and the tests' stand-in LLM (tests/triton_models). The
stand-in answers at once, or after a fixed 200 ms when the prompt carries ``[[slow]]`` (sent as the
request's ``test_marker``).

In-process, `georag.serving.pipeline.Pipeline` runs the same code with `LocalSteps`: onnxruntime on the
same file and GeoStore.search in this process, and the LLM either

- ``in-process``: the stand-in model on the same server, reached with georag's Triton client over HTTP
  /generate (its faster path here). This is what an in-process deployment does (the LLM is served by
  vLLM or Triton in any case), so the server's overhead is measured against it: what running georag
  inside Triton adds per request;
- ``in-process, local LLM``: a function in this process with the same answers and delay. No deployment
  looks like this; it is the lower bound, and the difference shows what every model hop costs.

For each LLM latency and concurrency (1, 4, 16 requests in flight; each client thread has its own
connection) it reports requests/s and p50 / p95 / p99 latency over gRPC, HTTP and in-process, and the
server's overhead at p50 against both baselines (target: < 10 ms against ``in-process``). The paths take
turns in rounds, each round started by another path, so that drift of this noisy machine spreads over all
of them; every run warms up on c requests first, and every round holds whole waves of c requests. A
second table splits the pipeline's own step timings (from each result's evidence) at concurrency 1.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from timing import log

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
IMAGES = REPO.parent / "shared" / "data" / "im2gps3k" / "images"
META = REPO.parent / "shared" / "data" / "im2gps3k" / "im2gps3k_places365.csv"
STANDIN = REPO / "tests" / "triton_models" / "mllm_standin"
PARIS = (48.8566, 2.3522)
SLOW_S = 0.2  # the stand-in's [[slow]] delay (tests/triton_models/mllm_standin/1/model.py)
IN_PROCESS = "in-process"
LOCAL_LLM = "in-process, local LLM"


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def build(work: Path) -> tuple[Path, Path]:
    """The store and the ONNX export of a tiny SigLIP; returns (store, export folder)."""
    from georag.encoder import export_onnx, load_encoder
    from georag.encoder.tiny import make_tiny_siglip
    from georag.store.build import BuildRequest, build_source

    model = make_tiny_siglip(work / "model")
    log("building the store")
    request = BuildRequest(
        store=work / "store", dataset="im2gps3k", metadata=META, encoder=str(model), images=(IMAGES,)
    )
    build_source(request, add=False, encoder_factory=lambda: load_encoder(model))
    log("exporting the encoder to ONNX")
    export_onnx(model, work / "onnx")
    return work / "store", work / "onnx"


class StandInLLM:
    """An in-process `LLMClient` with the stand-in's answers and delay, doing the same work per request
    (the image base64-encoded and decoded, hashed; the answers reporting what came)."""

    name = "standin"

    def generate(self, prompt: Any, sampling: Any) -> Any:
        from georag.types import Completion

        start = time.monotonic()
        image = base64.b64decode(base64.b64encode(prompt.image), validate=True)
        if "[[slow]]" in prompt.user:
            time.sleep(SLOW_S)
        received = {
            "sampling_parameters": {"temperature": sampling.temperature, "n": sampling.n},
            "n": sampling.n,
            "exclude_input_in_output": True,
            "stream": False,
            "image_count": 1,
            "image_bytes": len(image),
            "image_sha256": [hashlib.sha256(image).hexdigest()],
            "prompt_chars": len(prompt.system) + len(prompt.user),
            "slow_in_flight": None,
        }
        answers = []
        for i in range(sampling.n):
            lat, lon = round(PARIS[0] + 0.01 * i, 4), round(PARIS[1] + 0.01 * i, 4)
            body = {"latitude": lat, "longitude": lon, "received": {**received, "sample": i}}
            answers.append(json.dumps(body, sort_keys=True))
        return Completion(tuple(answers), time.monotonic() - start)

    def cancel(self) -> None:
        pass

    def close(self) -> None:
        pass


def local_steps(store_dir: Path, onnx_dir: Path, llm: Any) -> Any:
    """The pipeline's steps in this process: onnxruntime on the same file, the store, ``llm``."""
    from georag.encoder.backends.onnx_backend import OnnxBackend
    from georag.serving.local_steps import LocalSteps
    from georag.store.store import GeoStore

    store = GeoStore.open(store_dir)
    store.flat_index()
    return LocalSteps(OnnxBackend(onnx_dir), store, llm)


Run = tuple[float, list[float], list[dict[str, float]]]
"""(wall seconds, per-request latencies, per-request step timings from the results' evidence)."""


def run_in_process(pipeline: Any, photos: list[bytes], params: Any, concurrency: int) -> Run:
    """``photos`` through ``pipeline`` with ``concurrency`` tasks."""

    async def main() -> Run:
        queue = list(enumerate(photos))
        latencies: list[float] = []
        timings: list[dict[str, float]] = []

        async def worker() -> None:
            while queue:
                _, photo = queue.pop()
                t0 = time.perf_counter()
                result = await pipeline.run(photo, params)
                latencies.append(time.perf_counter() - t0)
                timings.append(result["evidence"]["timings"])

        await asyncio.gather(*(pipeline.run(photo, params) for photo in photos[:concurrency]))  # warm-up
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - t0, latencies, timings

    return asyncio.run(main())


def run_server(
    server: Any, protocol: str, photos: list[bytes], params: dict[str, Any], concurrency: int
) -> Run:
    """``photos`` through the server, ``concurrency`` client threads (one connection each)."""
    import tritonclient.grpc as grpc
    import tritonclient.http as http

    module: Any = grpc if protocol == "grpc" else http
    port = server.grpc_port if protocol == "grpc" else server.http_port
    local = threading.local()
    body = json.dumps(params).encode()

    def one(photo: bytes) -> tuple[float, dict[str, float]]:
        if not hasattr(local, "client"):
            local.client = module.InferenceServerClient(f"127.0.0.1:{port}")
        inputs = [
            module.InferInput("image", [1, 1], "BYTES"),
            module.InferInput("parameters", [1, 1], "BYTES"),
        ]
        inputs[0].set_data_from_numpy(np.array([[photo]], dtype=np.object_))
        inputs[1].set_data_from_numpy(np.array([[body]], dtype=np.object_))
        t0 = time.perf_counter()
        result = json.loads(local.client.infer("georag", inputs).as_numpy("result")[0, 0])
        elapsed = time.perf_counter() - t0
        if result["strategy"] != "rag":
            raise RuntimeError(f"unexpected result {result['strategy']}")
        return elapsed, result["evidence"]["timings"]

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, photos[:concurrency]))  # warm-up: connections, first calls
        t0 = time.perf_counter()
        done = list(pool.map(one, photos))
        return time.perf_counter() - t0, [d[0] for d in done], [d[1] for d in done]


def in_rounds(paths: dict[str, Any], photos: list[bytes], rounds: int) -> dict[str, Run]:
    """Each path runs its share of ``photos`` in turn, ``rounds`` times, starting with another path each
    round; each run first warms up on its first photos (untimed). The runs are pooled per path."""
    pooled: dict[str, Run] = {name: (0.0, [], []) for name in paths}
    names = list(paths)
    size = len(photos) // rounds
    for r in range(rounds):
        part = photos[r * size : (r + 1) * size]
        for name in names[r % len(names) :] + names[: r % len(names)]:
            wall, latencies, timings = paths[name](part)
            old = pooled[name]
            pooled[name] = (old[0] + wall, old[1] + latencies, old[2] + timings)
    return pooled


STEPS = ("decode_s", "encode_s", "search_s", "llm_s", "total_s")


def step_medians(latencies: list[float], timings: list[dict[str, float]]) -> dict[str, float]:
    """Median milliseconds of each pipeline step, the pipeline's total and the client's latency."""
    out = {key: 1e3 * float(np.median([t.get(key, np.nan) for t in timings])) for key in STEPS}
    out["client_s"] = 1e3 * pct(latencies, 50)
    return out


def print_tables(rows: list[dict[str, Any]], steps: list[dict[str, Any]]) -> None:
    print("## georag through tritonserver (CPU) vs in-process, tiny SigLIP, stand-in LLM")
    print()
    print(
        "| LLM ms | conc. | path | requests | req/s | p50 ms | p95 ms | p99 ms "
        "| overhead p50 ms | over local LLM p50 ms |"
    )
    print("|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        over = "" if r["overhead_p50_ms"] is None else f"{r['overhead_p50_ms']:.1f}"
        floor = "" if r["over_local_p50_ms"] is None else f"{r['over_local_p50_ms']:.1f}"
        print(
            f"| {r['llm_ms']:.0f} | {r['concurrency']} | {r['mode']} | {r['requests']} | {r['rps']:.1f} | "
            f"{r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {r['p99_ms']:.1f} | {over} | {floor} |"
        )
    print()
    print("### Where the time goes at concurrency 1 (medians, ms; steps as the pipeline timed them)")
    print()
    print("| LLM ms | path | decode | encoder | retrieval | LLM step | pipeline | client |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    for r in steps:
        cells = " | ".join(f"{r[k]:.2f}" for k in (*STEPS, "client_s"))
        print(f"| {r['llm_ms']:.0f} | {r['mode']} | {cells} |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--requests", type=int, default=160, help="requests per cell at concurrency 16 (default 160)"
    )
    ap.add_argument("--concurrency", default="1,4,16", help="comma-separated (default 1,4,16)")
    ap.add_argument("--rounds", type=int, default=4, help="turns each path takes per cell (default 4)")
    ap.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = ap.parse_args()
    if not IMAGES.is_dir():
        raise SystemExit(f"needs the shared IM2GPS3k sample at {IMAGES}")
    from georag.config import Config
    from georag.llm.triton_client import TritonClient
    from georag.serving.params import parse_params
    from georag.serving.pipeline import Pipeline
    from georag.serving.triton_glue import processor_spec
    from georag.triton.inputs import standin_name
    from georag.triton.repository import RepositoryConfig, write_repository
    from triton_server import run_triton_server, triton_unavailable_reason

    reason = triton_unavailable_reason(("georag.serving.triton_glue", "georag._core", "onnxruntime", "PIL"))
    if reason is not None:
        raise SystemExit(reason)
    levels = [int(c) for c in args.concurrency.split(",")]
    paths = sorted(IMAGES.glob("*.jpg"))
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        store, onnx = build(work)
        # One config for both sides: the server's georag model runs with what the in-process pipelines do.
        settings = Config().with_values({"serve.allow_test_markers": True})
        config = RepositoryConfig(
            encoder_onnx=onnx, config=settings, store=store, python_encoder=True, llm_standin=STANDIN
        )
        write_repository(config, work / "repo")
        spec = processor_spec(work / "repo" / "georag" / "1", 32)
        local = Pipeline(settings, spec, local_steps(store, onnx, StandInLLM()))
        photos_all = [p.read_bytes() for p in paths]
        steps: list[dict[str, Any]] = []
        with run_triton_server(work / "repo", startup_timeout_s=120.0) as server:
            log(f"server ready in {server.seconds_to_ready:.1f} s")
            # Over HTTP /generate: the faster of georag's two Triton client paths here (its gRPC path
            # opens a stream per request, ~6 ms more), so the baseline is the better in-process one.
            url = f"triton://127.0.0.1:{server.http_port}/{standin_name(STANDIN)}?protocol=http"
            remote_llm = TritonClient.from_url(url)
            remote = Pipeline(settings, spec, local_steps(store, onnx, remote_llm))
            for latency, marker in ((0.0, None), (SLOW_S, "[[slow]]")):
                params = {"test_marker": marker} if marker else {}
                parsed = parse_params(json.dumps(params), allow_test_markers=True)
                for c in levels:
                    # Whole waves of c requests in every round.
                    wanted = max(4 * c, args.requests * c // 16, 80 if latency == 0 else 40)
                    n = args.rounds * c * -(-wanted // (args.rounds * c))
                    photos = [photos_all[i % len(photos_all)] for i in range(n)]
                    paths_: dict[str, Any] = {
                        IN_PROCESS: lambda ph, c=c, p=parsed: run_in_process(remote, ph, p, c),
                        LOCAL_LLM: lambda ph, c=c, p=parsed: run_in_process(local, ph, p, c),
                        "grpc": lambda ph, c=c, p=params: run_server(server, "grpc", ph, p, c),
                        "http": lambda ph, c=c, p=params: run_server(server, "http", ph, p, c),
                    }
                    cells = in_rounds(paths_, photos, args.rounds)
                    base = pct(cells[IN_PROCESS][1], 50)
                    floor = pct(cells[LOCAL_LLM][1], 50)
                    for mode, (wall, lat, timings) in cells.items():
                        served = mode in ("grpc", "http")
                        row = {
                            "llm_ms": 1e3 * latency,
                            "concurrency": c,
                            "mode": mode,
                            "requests": len(lat),
                            "rps": len(lat) / wall,
                            "p50_ms": 1e3 * pct(lat, 50),
                            "p95_ms": 1e3 * pct(lat, 95),
                            "p99_ms": 1e3 * pct(lat, 99),
                            "overhead_p50_ms": 1e3 * (pct(lat, 50) - base) if served else None,
                            "over_local_p50_ms": 1e3 * (pct(lat, 50) - floor) if served else None,
                        }
                        rows.append(row)
                        log(f"{row}")
                        if c == 1:
                            steps.append(
                                {"llm_ms": 1e3 * latency, "mode": mode, **step_medians(lat, timings)}
                            )
            remote_llm.close()
    print_tables(rows, steps)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
