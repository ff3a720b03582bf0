"""`georag triton probe URL`: a liveness probe that sends the served pipeline a tiny request.

Triton's own health endpoints say that the server runs and its models are loaded, not that they answer:
a Python-backend model whose process died stays READY, and so does every model after a stalled LLM took
the pipeline's threads. The probe asks the `georag` model to locate a small generated photo (strategy
knn by default: decode, SigLIP, retrieval, without spending an LLM call) over Triton's HTTP API, and
passes only when every one of its requests is answered within its time limit. Several requests go at once,
so that each instance of the model is likely to get one (a dead instance fails the ones it gets).

Only the standard library is used (the HTTP/REST protocol with its binary tensor extension), so the probe
runs wherever georag is installed, in the server's container included.
"""

from __future__ import annotations

import http.client
import io
import json
import struct
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from georag.errors import ConfigError

DEFAULT_PORT = 8000
"""Triton's HTTP port, when the URL names none."""
PHOTO_SIDE = 64
"""Side of the probe's generated photo, in pixels (default 64)."""
_STATUS_CODES = {400: "INVALID_ARG", 404: "NOT_FOUND", 500: "INTERNAL", 503: "UNAVAILABLE"}


@dataclass(frozen=True)
class ProbeResult:
    """One probe request: whether it was answered, in how long, and what was said."""

    ok: bool
    seconds: float
    message: str
    """The answer's strategy when ``ok``, else why it failed."""


def probe_photo() -> bytes:
    """A small JPEG (a colour gradient) that every encoder and store can answer for."""
    import numpy as np
    from PIL import Image

    ramp = np.linspace(0, 255, PHOTO_SIDE, dtype=np.uint8)
    pixels = np.stack(np.broadcast_arrays(ramp[None, :], ramp[:, None], ramp[::-1, None]), axis=-1)
    out = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(out, "JPEG", quality=90)
    return out.getvalue()


def parse_url(url: str) -> tuple[str, int]:
    """(host, port) of ``http://HOST[:PORT]`` or ``HOST[:PORT]`` (Triton's HTTP endpoint); ConfigError
    for anything else."""
    text = url.strip()
    parts = urlsplit(text if "://" in text else f"http://{text}")
    if parts.scheme != "http" or not parts.hostname or parts.path not in ("", "/") or parts.query:
        raise ConfigError(f"the probe needs Triton's HTTP address, http://HOST[:PORT], got {url!r}")
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError as exc:
        raise ConfigError(f"bad port in {url!r}: {exc}") from None
    return parts.hostname, port


def probe(
    url: str, *, model: str = "georag", strategy: str = "knn", requests: int = 2, timeout_s: float = 10.0
) -> list[ProbeResult]:
    """Sends ``requests`` requests for ``strategy`` at once to ``model`` at ``url``; their results."""
    host, port = parse_url(url)
    if requests < 1:
        raise ConfigError(f"requests must be >= 1, got {requests}")
    body, header_length = _infer_body(probe_photo(), {"id": "probe", "strategy": strategy})
    path = f"/v2/models/{quote(model, safe='')}/infer"

    def one(_: int) -> ProbeResult:
        return _send(host, port, path, body, header_length, timeout_s)

    with ThreadPoolExecutor(requests) as pool:
        return list(pool.map(one, range(requests)))


def _infer_body(image: bytes, params: dict[str, str]) -> tuple[bytes, int]:
    """A KServe v2 infer request with two BYTES inputs sent as binary data; (body, JSON header length)."""
    tensors = [("image", image), ("parameters", json.dumps(params).encode("utf-8"))]
    blobs = [struct.pack("<I", len(data)) + data for _, data in tensors]
    header = {
        "inputs": [
            {
                "name": name,
                "shape": [1, 1],
                "datatype": "BYTES",
                "parameters": {"binary_data_size": len(blob)},
            }
            for (name, _), blob in zip(tensors, blobs, strict=True)
        ],
        "outputs": [{"name": "result", "parameters": {"binary_data": False}}],
    }
    head = json.dumps(header).encode("utf-8")
    return head + b"".join(blobs), len(head)


def _send(host: str, port: int, path: str, body: bytes, header_length: int, timeout_s: float) -> ProbeResult:
    start = time.monotonic()
    conn = http.client.HTTPConnection(host, port, timeout=timeout_s)
    try:
        conn.request(
            "POST",
            path,
            body=body,
            headers={
                "Content-Type": "application/octet-stream",
                "Inference-Header-Content-Length": str(header_length),
            },
        )
        response = conn.getresponse()
        data = response.read(1 << 20)
        status = response.status
    except (OSError, http.client.HTTPException) as exc:
        return ProbeResult(False, time.monotonic() - start, f"no answer: {type(exc).__name__}: {exc}")
    finally:
        conn.close()
    seconds = time.monotonic() - start
    if seconds > timeout_s:
        return ProbeResult(False, seconds, f"answered after {seconds:.1f} s, past the {timeout_s:g} s limit")
    return _read_answer(status, data, seconds)


def _read_answer(status: int, data: bytes, seconds: float) -> ProbeResult:
    try:
        doc = json.loads(data)
    except ValueError:
        doc = None
    if status != 200:
        error = doc.get("error") if isinstance(doc, dict) else None
        code = _STATUS_CODES.get(status, "ERROR")
        return ProbeResult(False, seconds, f"{code} (HTTP {status}): {error or data[:200]!r}")
    try:
        result = json.loads(doc["outputs"][0]["data"][0])
        return ProbeResult(True, seconds, str(result["strategy"]))
    except (TypeError, KeyError, IndexError, ValueError):
        return ProbeResult(False, seconds, f"HTTP 200 without a result: {data[:200]!r}")
