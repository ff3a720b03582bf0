#!/usr/bin/env python
"""A bounded load-and-fault campaign against the georag Triton deployment; prints a markdown table.

Setup (as benchmarks/bench_triton.py): a tiny random SigLIP exported to ONNX and run by siglip_python, a
store of the shared IM2GPS3k sample, the `georag` pipeline (2 instances), retrieval, and the tests'
stand-in LLM (tests/triton_models/mllm_standin: ``[[stall]]`` never answers within the run, ``[[hold]]``
holds requests until 64 wait at once and reports the most it saw). A real CPU tritonserver on 127.0.0.1
only, explicit model control (models are unloaded and killed along the way), and the Python backend's
thread pool of ``--backend-threads`` per instance.

Each scenario is one row: requests sent, how they ended, latencies, and the promise it checks (issue 21):
knn unaffected by a stalled LLM (p99 < 1 s), rag failing by the LLM limit, every request answered by its
deadline + 1 s, 64 requests at the LLM at once, bounded memory for a burst of large-pixel PNGs, clean 400s
for nested parameters and a near-zero embedding, fast UNAVAILABLE for an unloaded or killed model, and
`georag triton probe` failing when the pipeline cannot answer. The run takes about 2 minutes on 2 cores;
``--scale`` multiplies the request counts.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from timing import log

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
IMAGES = REPO.parent / "shared" / "data" / "im2gps3k" / "images"
STANDIN = REPO / "tests" / "triton_models" / "mllm_standin"
MODELS = ("georag", "retrieval", "siglip_python", "mllm_standin")


@dataclass
class Row:
    """One scenario's outcome."""

    scenario: str
    outcomes: list[Any] = field(default_factory=list)
    """(status, message or result, seconds) per request."""
    promise: str = ""
    held: bool = True
    note: str = ""

    def cells(self) -> list[str]:
        seconds = sorted(t for _, _, t in self.outcomes)
        counts = Counter("ok" if s == "ok" else _short(s) for s, _, _ in self.outcomes)
        ended = ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "-"

        def q(p: float) -> str:
            return f"{np.percentile(seconds, p):.2f}" if seconds else "-"

        verdict = "yes" if self.held else "**NO**"
        return [self.scenario, str(len(self.outcomes)), ended, q(50), q(99), q(100), self.promise,
                verdict, self.note]  # fmt: skip


def _short(status: str) -> str:
    return {"503": "503", "400": "400", "500": "500"}.get(status, status.rsplit(".", 1)[-1])


def burst(n: int, call: Callable[[int], Any], at_once: int | None = None) -> list[Any]:
    """``call(i)`` for i < n, ``at_once`` at a time (default all n)."""
    with ThreadPoolExecutor(max(1, at_once or n)) as pool:
        return list(pool.map(call, range(n)))


def probe_exit(server: Any, *options: str) -> int:
    """The exit status of `georag triton probe` against ``server``."""
    from click.testing import CliRunner

    from georag.cli import main

    url = f"http://127.0.0.1:{server.http_port}"
    return CliRunner().invoke(main, ["triton", "probe", url, "--timeout-s", "8", *options]).exit_code


def llm_up(server: Any, photo: bytes, wait_s: float) -> None:
    from georag_client import infer

    end = time.monotonic() + wait_s
    while infer(server, photo, {"samples": 1})[0] != "ok" and time.monotonic() < end:
        time.sleep(0.5)


def png(width: int, height: int) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (width, height), (40, 90, 160)).save(out, "PNG")
    return out.getvalue()


def campaign(server: Any, photos: list[bytes], args: argparse.Namespace) -> list[Row]:
    from georag.serving.health import COOLDOWN_S
    from georag_client import infer, memory_mb, repository, stub_pids, unavailable
    from test_image_budget import big_png

    n = args.scale
    t_llm, deadline = args.llm_timeout_s, args.deadline_s
    photo = photos[0]
    rows: list[Row] = []

    def knn(i: int) -> Any:
        return infer(server, photos[i % len(photos)], {"strategy": "knn"})

    def rag(i: int, params: dict[str, Any]) -> Any:
        return infer(server, photos[i % len(photos)], params)

    log("normal load")
    for name, call in (("knn", knn), ("rag (LLM answers at once)", lambda i: rag(i, {"samples": 1}))):
        out = burst(64 * n, call, at_once=16)
        rows.append(Row(f"{name}, 16 at once", out, "all answered", all(s == "ok" for s, _, _ in out)))

    log("64 rag requests at the LLM at once")
    start = time.monotonic()
    out = burst(64, lambda i: rag(i, {"test_marker": "[[hold]]", "samples": 1}))
    wall = time.monotonic() - start
    peak = max((json.loads(r["evidence"]["answers"][0]["text"])["received"]["hold_peak"] for s, r, _ in out
                if s == "ok"), default=0)  # fmt: skip
    rows.append(Row("rag burst of 64, LLM holds until 64 wait", out, "64 at the LLM at once",
                    peak == 64, f"LLM saw {peak} at once; wall {wall:.1f} s"))  # fmt: skip

    log("large-pixel PNG bursts")
    pids = stub_pids(server, "georag")
    before = {pid: memory_mb(pid)["VmRSS"] for pid in pids}
    huge = big_png(9000, 9000)
    out = burst(16 * n, lambda _: infer(server, huge, {"strategy": "knn"}))
    rows.append(Row("PNG 9000x9000 (81 MP, 130 KiB) x16 at once", out, "400 from the header",
                    all(s == "400" for s, _, _ in out)))  # fmt: skip
    large = png(4000, 4000)
    out = burst(16 * n, lambda _: infer(server, large, {"strategy": "knn"}))
    time.sleep(0.5)
    grown = max(memory_mb(pid)["VmHWM"] - before[pid] for pid in pids)
    kept = max(memory_mb(pid)["VmRSS"] - before[pid] for pid in pids)
    rows.append(Row("PNG 4000x4000 (16 MP) x16 at once", out, "bounded memory, returned",
                    all(s == "ok" for s, _, _ in out) and grown < 700 and kept < 150,
                    f"georag process: peak {grown:+d} MB, after {kept:+d} MB"))  # fmt: skip

    log("malformed requests")
    nested = "[" * 2000 + "]" * 2000
    out = burst(8, lambda _: _raw_params(server, photo, nested))
    rows.append(Row("nested JSON parameters x8", out, "400", all(s == "400" for s, _, _ in out)))
    out = [_tiny_embedding(server)]
    rows.append(Row("retrieval, a 1e-45 embedding", out, "400", out[0][0] == "400", _short_message(out[0])))

    log("a stalled LLM with knn interleaved")
    stall = {"test_marker": "[[stall]]"}
    with ThreadPoolExecutor(32 * n) as pool:
        waiting = [pool.submit(infer, server, photo, stall) for _ in range(32 * n)]
        time.sleep(0.2)
        interleaved = [knn(i) for i in range(40 * n)]
        stalled = [f.result() for f in waiting]
    p99 = float(np.percentile([t for _, _, t in interleaved], 99))
    rows.append(Row("knn while 32 rag wait on a stalled LLM", interleaved, "p99 < 1 s",
                    all(s == "ok" for s, _, _ in interleaved) and p99 < 1.0))  # fmt: skip
    rows.append(Row("rag on a stalled LLM", stalled, f"UNAVAILABLE by the {t_llm:g} s LLM limit",
                    all(unavailable(s) and t < t_llm + 1.5 for s, _, t in stalled),
                    "then at once while the LLM is marked down"))  # fmt: skip

    log("a never-answering LLM, a burst past every limit")
    llm_up(server, photo, COOLDOWN_S + 10)
    mixed = burst(128 * n, lambda i: knn(i) if i % 4 == 0 else rag(i, stall))
    by_deadline = all(t < deadline + 1.0 for _, _, t in mixed)
    promise = f"each by the {deadline:g} s deadline + 1 s"
    rows.append(Row("96 rag (stalled LLM) + 32 knn at once", mixed, promise, by_deadline))

    log("an unloaded LLM")
    repository(server, "mllm_standin", "unload")
    out = [infer(server, photo) for _ in range(8)]
    code = probe_exit(server, "--rag")
    rows.append(Row("rag, LLM unloaded", out, "UNAVAILABLE at once",
                    all(unavailable(s) and t < 1.0 for s, _, t in out) and code == 1,
                    f"probe --rag: exit {code}"))  # fmt: skip
    out = [knn(i) for i in range(8)]
    code = probe_exit(server)
    rows.append(Row("knn, LLM unloaded", out, "answered; probe passes",
                    all(s == "ok" for s, _, _ in out) and code == 0, f"probe: exit {code}"))  # fmt: skip
    repository(server, "mllm_standin", "load")
    llm_up(server, photo, COOLDOWN_S + 10)

    log("killed processes")
    for pid in stub_pids(server, "mllm_standin"):
        os.kill(pid, signal.SIGKILL)
    out = [infer(server, photo) for _ in range(8)]
    rows.append(Row("rag, LLM process killed", out, "UNAVAILABLE fast (not the LLM limit)",
                    all(unavailable(s) and t < 2.0 for s, _, t in out), _short_message(out[-1])))  # fmt: skip
    for pid in stub_pids(server, "retrieval"):
        os.kill(pid, signal.SIGKILL)
    out = [knn(i) for i in range(8)]
    code = probe_exit(server, "--requests", "4")
    rows.append(Row("knn, retrieval process killed", out, "UNAVAILABLE fast; probe fails",
                    all(unavailable(s) and t < 2.0 for s, _, t in out) and code == 1,
                    f"probe: exit {code}"))  # fmt: skip
    os.kill(stub_pids(server, "georag")[0], signal.SIGKILL)
    out = [knn(i) for i in range(8)]
    code = probe_exit(server, "--requests", "4")
    rows.append(Row("knn, a georag process killed too", out, "no hang; probe fails",
                    all(t < 3.0 for _, _, t in out) and code == 1, f"probe: exit {code}"))  # fmt: skip
    return rows


def _short_message(outcome: Any) -> str:
    status, message, _ = outcome
    return "" if status == "ok" else " ".join(str(message).split())[:90]


def _raw_params(server: Any, photo: bytes, raw: str) -> Any:
    import tritonclient.http as http
    from tritonclient.utils import InferenceServerException

    client = http.InferenceServerClient(f"127.0.0.1:{server.http_port}")
    inputs = [http.InferInput("image", [1, 1], "BYTES"), http.InferInput("parameters", [1, 1], "BYTES")]
    inputs[0].set_data_from_numpy(np.array([[photo]], dtype=np.object_))
    inputs[1].set_data_from_numpy(np.array([[raw.encode()]], dtype=np.object_))
    start = time.monotonic()
    try:
        client.infer("georag", inputs)
        return "ok", None, time.monotonic() - start
    except InferenceServerException as exc:
        return str(exc.status()), str(exc.message()), time.monotonic() - start
    finally:
        client.close()


def _tiny_embedding(server: Any) -> Any:
    import tritonclient.http as http
    from tritonclient.utils import InferenceServerException

    client = http.InferenceServerClient(f"127.0.0.1:{server.http_port}")
    meta = client.get_model_metadata("retrieval")
    dim = int(meta["inputs"][0]["shape"][-1])
    tiny = http.InferInput("embeddings", [1, dim], "FP32")
    tiny.set_data_from_numpy(np.full((1, dim), 1e-45, dtype=np.float32))
    start = time.monotonic()
    try:
        client.infer("retrieval", [tiny])
        return "ok", None, time.monotonic() - start
    except InferenceServerException as exc:
        return str(exc.status()), str(exc.message()), time.monotonic() - start
    finally:
        client.close()


def print_table(rows: list[Row], args: argparse.Namespace) -> None:
    print(f"LLM limit {args.llm_timeout_s:g} s, deadline {args.deadline_s:g} s, 2 georag instances, "
          f"--backend-config=python,thread-pool-size={args.backend_threads}\n")  # fmt: skip
    head = ["scenario", "requests", "ended", "p50 s", "p99 s", "max s", "promise", "held", "note"]
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" for _ in head) + "|")
    for row in rows:
        print("| " + " | ".join(row.cells()) + " |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=int, default=1, help="multiplies the request counts (default 1)")
    ap.add_argument("--llm-timeout-s", type=float, default=5.0, help="the LLM step's limit (default 5)")
    ap.add_argument("--deadline-s", type=float, default=8.0, help="the request deadline (default 8)")
    ap.add_argument("--backend-threads", type=int, default=96, help="Python backend pool (default 96)")
    args = ap.parse_args()
    if not IMAGES.is_dir():
        raise SystemExit(f"needs the shared IM2GPS3k sample at {IMAGES}")
    from bench_triton import build
    from georag.config import Config
    from georag.triton.repository import RepositoryConfig, write_repository
    from triton_server import run_triton_server, triton_unavailable_reason

    reason = triton_unavailable_reason(("georag.serving.triton_glue", "georag._core", "onnxruntime", "PIL"))
    if reason is not None:
        raise SystemExit(reason)
    photos = [p.read_bytes() for p in sorted(IMAGES.glob("*.jpg"))[:16]]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        store, onnx = build(work)
        values = {"serve.allow_test_markers": True, "serve.llm_timeout_s": args.llm_timeout_s,
                  "serve.deadline_s": args.deadline_s, "serve.max_image_mb": 2.0}  # fmt: skip
        config = RepositoryConfig(encoder_onnx=onnx, config=Config().with_values(values), store=store,
                                  python_encoder=True, llm_standin=STANDIN)  # fmt: skip
        write_repository(config, work / "repo")
        extra = ("--model-control-mode=explicit", *(f"--load-model={m}" for m in MODELS),
                 f"--backend-config=python,thread-pool-size={args.backend_threads}")  # fmt: skip
        with run_triton_server(work / "repo", startup_timeout_s=180.0, extra_args=extra) as server:
            log(f"server ready in {server.seconds_to_ready:.1f} s")
            start = time.monotonic()
            rows = campaign(server, photos, args)
            log(f"campaign took {time.monotonic() - start:.0f} s")
    print_table(rows, args)
    return 0 if all(r.held for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
