"""Talking to a tritonserver of tests/triton_server.py that serves a georag repository: one request to the
`georag` model, the repository API, the Python-backend processes of one model and their memory. Shared by
tests/test_triton_faults.py and benchmarks/bench_triton_faults.py."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

from triton_server import TritonServer

Outcome = tuple[str, Any, float]
"""("ok", the result, seconds) or (the error's status, its message, seconds); a request whose
connection closed without an answer gives the exception's type name as its status."""


def infer(server: TritonServer, image: bytes, params: dict[str, Any] | None = None) -> Outcome:
    """One request to the georag model over HTTP (a client of its own, so callers may run at once)."""
    import tritonclient.http as http
    from tritonclient.utils import InferenceServerException

    client = http.InferenceServerClient(f"127.0.0.1:{server.http_port}", network_timeout=120.0)
    inputs = [http.InferInput("image", [1, 1], "BYTES")]
    inputs[0].set_data_from_numpy(np.array([[image]], dtype=np.object_))
    if params is not None:
        inputs.append(http.InferInput("parameters", [1, 1], "BYTES"))
        inputs[1].set_data_from_numpy(np.array([[json.dumps(params).encode()]], dtype=np.object_))
    start = time.monotonic()
    try:
        answer = client.infer("georag", inputs)
        return "ok", json.loads(answer.as_numpy("result")[0, 0]), time.monotonic() - start
    except InferenceServerException as exc:
        return str(exc.status()), str(exc.message()), time.monotonic() - start
    except Exception as exc:  # the connection closed (a dead instance had the request): no answer
        return type(exc).__name__, str(exc), time.monotonic() - start
    finally:
        client.close()


def unavailable(status: str) -> bool:
    """Whether ``status`` is UNAVAILABLE (HTTP 503 or the gRPC code)."""
    return status in ("503", "StatusCode.UNAVAILABLE")


def repository(server: TritonServer, model: str, action: str) -> tuple[int, str]:
    """POST /v2/repository/models/MODEL/ACTION (load or unload, explicit model control); status, body."""
    url = f"http://127.0.0.1:{server.http_port}/v2/repository/models/{model}/{action}"
    request = urllib.request.Request(url, data=b"{}", method="POST")
    try:
        with urllib.request.urlopen(request, timeout=120) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def stub_pids(server: TritonServer, model: str) -> list[int]:
    """The process ids of ``model``'s Python-backend stubs of THIS server (its models folder)."""
    models = server.log_path.parent / "models"
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "triton_python_backend_stub" in cmdline and f"{models}/{model}/" in cmdline:
            found.append(int(entry.name))
    return sorted(found)


def memory_mb(pid: int) -> dict[str, int]:
    """A process's resident memory now (VmRSS) and at its peak (VmHWM), MiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) // 1024
    return out
