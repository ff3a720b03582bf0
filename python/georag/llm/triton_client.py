"""An LLMClient for a multimodal LLM served by Triton Inference Server with the vLLM backend.

Chosen by a URL: ``triton://HOST:PORT/MODEL?family=qwen2-vl&protocol=grpc`` (``family`` defaults to
``qwen2-vl``, ``protocol`` to ``grpc``; the port defaults to 8001 for gRPC and 8000 for HTTP). A user and
password in the URL are sent as HTTP basic auth (for a proxy in front of Triton) and never appear in the
client's name, logs or errors.

Behaviour:

* The vLLM backend applies no chat template, so the prompt is rendered here by
  `georag.llm.chat_templates.render_chat` for the URL's ``family``, image placeholder included. The image
  travels base64-encoded in the ``image`` input; ``sampling_parameters`` is the JSON of ``temperature``,
  ``top_p``, ``max_tokens``, ``n`` and ``seed`` (when not None); ``exclude_input_in_output`` is always true
  and ``stream`` always false, so one final response carries the n answers.
* The model is decoupled (it may answer a request with any number of responses), so gRPC uses a
  bidirectional stream (one per request, on a pooled connection) and waits for the response flagged final;
  HTTP uses ``POST /v2/models/MODEL/generate``. ``/infer`` does not work with decoupled models.
* ``timeout_s`` bounds each attempt: gRPC waits at most that long for the final response, then cancels the
  request; HTTP uses it as the deadline for the connect and every read. A stalled server fails the attempt.
* Transient failures (server unavailable or refusing connections, a timeout, gRPC UNAVAILABLE /
  DEADLINE_EXCEEDED / RESOURCE_EXHAUSTED, HTTP 429 / 5xx) are retried by `georag.llm.retry.with_retries`;
  anything else (an unknown model, a request the model refuses) raises `LLMError` at once.
* An answer that still contains the rendered prompt (a server that echoes its input despite
  ``exclude_input_in_output``) is cut after the prompt and the completion is flagged ``echoed``.
* At most ``max_in_flight`` requests are open at once across threads; the client is thread-safe.
* ``tritonclient`` is imported only for gRPC; without it `MissingDependencyError` says what to install.
"""

from __future__ import annotations

import base64
import http.client
import importlib
import itertools
import json
import logging
import threading
import time
from dataclasses import dataclass
from queue import Empty, SimpleQueue
from types import ModuleType
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from georag.config import Sampling
from georag.errors import LLMError, MissingDependencyError
from georag.llm.chat_templates import chat_format, render_chat
from georag.llm.retry import RetryPolicy, TransientError, with_retries
from georag.types import Completion, Prompt

log = logging.getLogger(__name__)

DEFAULT_FAMILY = "qwen2-vl"
"""Model family used when the URL names none."""
DEFAULT_PORTS = {"grpc": 8001, "http": 8000}
"""Triton's default ports per protocol, used when the URL names none."""

_QUERY_KEYS = frozenset({"family", "protocol"})
_TRANSIENT_GRPC = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED"})
_TRANSIENT_HTTP = frozenset({429, 500, 502, 503, 504})
_MAX_BODY_BYTES = 32 << 20  # n answers of a few hundred tokens are kilobytes; more is not an answer
_MESSAGE_CHARS = 300
_STREAM_GRACE_S = 1.0  # the gRPC deadline backs up our own wait, so it expires just after it
_DEFAULT_POLICY = RetryPolicy()


@dataclass(frozen=True)
class TritonEndpoint:
    """Where a model is served, parsed from a ``triton://`` URL."""

    host: str
    """Server host name or address."""
    port: int
    """Server port; default 8001 for gRPC, 8000 for HTTP."""
    model: str
    """Triton model name."""
    family: str = DEFAULT_FAMILY
    """Model family whose chat format is rendered (see `georag.llm.chat_templates`); default qwen2-vl."""
    protocol: str = "grpc"
    """``grpc`` (streaming) or ``http`` (``/generate``); default grpc."""
    username: str | None = None
    """Basic-auth user from the URL; default None."""
    password: str | None = None
    """Basic-auth password from the URL; default None."""

    @property
    def name(self) -> str:
        """``triton://host:port/model``, never with credentials."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"triton://{host}:{self.port}/{self.model}"

    @property
    def address(self) -> str:
        """``host:port`` as gRPC expects it."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def auth_headers(self) -> dict[str, str]:
        """An ``Authorization: Basic`` header when the URL had credentials, else nothing."""
        if self.username is None:
            return {}
        token = base64.b64encode(f"{self.username}:{self.password or ''}".encode()).decode("ascii")
        return {"Authorization": f"Basic {token}"}

    def __repr__(self) -> str:
        return f"TritonEndpoint({self.name}, family={self.family}, protocol={self.protocol})"


def parse_triton_url(url: str) -> TritonEndpoint:
    """Parses ``triton://[USER:PASS@]HOST[:PORT]/MODEL[?family=F&protocol=grpc|http]``; LLMError if bad."""
    # Errors never quote the URL itself: it may hold a password.
    parts = urlsplit(url.strip())
    if parts.scheme.lower() != "triton":
        raise LLMError(f"not a triton:// URL: {parts.scheme or '(no scheme)'}://...")
    if not parts.hostname:
        raise LLMError("triton URL has no host: use triton://HOST:PORT/MODEL")
    model = unquote(parts.path.strip("/"))
    if not model or "/" in model:
        raise LLMError(f"triton URL must name exactly one model after the host, got path {parts.path!r}")
    query = parse_qs(parts.query, keep_blank_values=True)
    unknown = sorted(set(query) - _QUERY_KEYS)
    if unknown:
        raise LLMError(f"triton URL: unknown parameter(s) {', '.join(unknown)}; known: family, protocol")
    family = query.get("family", [DEFAULT_FAMILY])[-1].strip().lower() or DEFAULT_FAMILY
    chat_format(family)  # an unknown family fails here, naming the known ones
    protocol = query.get("protocol", ["grpc"])[-1].strip().lower() or "grpc"
    if protocol not in DEFAULT_PORTS:
        raise LLMError(f"triton URL: protocol must be grpc or http, got {protocol!r}")
    try:
        port = parts.port
    except ValueError as exc:
        raise LLMError(f"triton URL: bad port ({exc})") from exc
    return TritonEndpoint(
        host=parts.hostname,
        port=port if port is not None else DEFAULT_PORTS[protocol],
        model=model,
        family=family,
        protocol=protocol,
        username=unquote(parts.username) if parts.username is not None else None,
        password=unquote(parts.password) if parts.password is not None else None,
    )


def import_tritonclient_grpc() -> ModuleType:
    """The ``tritonclient.grpc`` module, or MissingDependencyError saying how to install it."""
    try:
        return importlib.import_module("tritonclient.grpc")
    except ImportError as exc:
        raise MissingDependencyError(
            "the Triton gRPC client needs `tritonclient`: pip install tritonclient[grpc] "
            "(or use protocol=http in the triton:// URL, which needs nothing extra)"
        ) from exc


def sampling_json(sampling: Sampling) -> str:
    """The vLLM backend's ``sampling_parameters`` for ``sampling`` (``seed`` only when set)."""
    params: dict[str, Any] = {
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "max_tokens": sampling.max_tokens,
        "n": sampling.n,
    }
    if sampling.seed is not None:
        params["seed"] = sampling.seed
    return json.dumps(params)


@dataclass(frozen=True)
class VllmRequest:
    """One generate call's wire content for the vLLM backend, built once and sent by every attempt (and by
    the `georag` Triton model's BLS call)."""

    id: str
    text: str
    """The prompt rendered in the model family's chat format."""
    image_b64: str
    sampling_parameters: str

    @classmethod
    def of(cls, prompt: Prompt, sampling: Sampling, family: str, request_id: str = "") -> VllmRequest:
        """The request for ``prompt`` in ``family``'s chat format."""
        return cls(
            id=request_id,
            text=render_chat(prompt, family),
            image_b64=base64.b64encode(prompt.image).decode("ascii"),
            sampling_parameters=sampling_json(sampling),
        )

    def completion(self, texts: list[str], seconds: float, attempts: int = 1) -> Completion:
        """The answers ``texts`` with an echoed prompt cut off (``echoed`` says whether one was)."""
        return completion(texts, self.text, seconds, attempts)


