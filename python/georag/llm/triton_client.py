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

from georag.errors import LLMError, MissingDependencyError
from georag.llm.chat_templates import chat_format, render_chat
from georag.llm.client import Completion, Prompt, Sampling
from georag.llm.retry import RetryPolicy, TransientError, with_retries

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


def strip_echo(text: str, rendered_prompt: str) -> tuple[str, bool]:
    """``text`` without the echoed prompt and everything before it, and whether there was one."""
    at = text.find(rendered_prompt)
    if at < 0:
        return text, False
    return text[at + len(rendered_prompt) :], True


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
        cut = [strip_echo(text, self.text) for text in texts]
        return Completion(
            texts=tuple(text for text, _ in cut),
            seconds=seconds,
            attempts=attempts,
            echoed=any(was_echoed for _, was_echoed in cut),
        )


def _short(message: object) -> str:
    text = " ".join(str(message).split())
    return text if len(text) <= _MESSAGE_CHARS else text[:_MESSAGE_CHARS] + "..."


class TritonClient:
    """A thread-safe `LLMClient` of one model on a Triton server with the vLLM backend."""

    def __init__(
        self,
        endpoint: TritonEndpoint,
        *,
        timeout_s: float = 60.0,
        policy: RetryPolicy = _DEFAULT_POLICY,
        max_in_flight: int = 16,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be at least 1, got {max_in_flight}")
        self._endpoint = endpoint
        self._timeout_s = timeout_s
        self._policy = policy
        self._slots = threading.BoundedSemaphore(max_in_flight)
        self._lock = threading.Lock()
        self._idle: list[Any] = []  # gRPC clients not in use; at most max_in_flight exist
        self._closed = False
        self._cancelled = threading.Event()
        self._ids = itertools.count(1)
        self._grpc: ModuleType | None = import_tritonclient_grpc() if endpoint.protocol == "grpc" else None

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        timeout_s: float = 60.0,
        policy: RetryPolicy = _DEFAULT_POLICY,
        max_in_flight: int = 16,
    ) -> TritonClient:
        """The client for ``triton://HOST:PORT/MODEL?family=...&protocol=grpc|http``."""
        return cls(parse_triton_url(url), timeout_s=timeout_s, policy=policy, max_in_flight=max_in_flight)

    @property
    def name(self) -> str:
        """``triton://host:port/model`` (no credentials)."""
        return self._endpoint.name

    @property
    def endpoint(self) -> TritonEndpoint:
        """The parsed endpoint (its repr hides credentials)."""
        return self._endpoint

    def __repr__(self) -> str:
        endpoint = self._endpoint
        return f"TritonClient({endpoint.name}, family={endpoint.family}, protocol={endpoint.protocol})"

    def generate(self, prompt: Prompt, sampling: Sampling) -> Completion:
        """Sends one request (retrying transient failures) and returns its n answers, prompt excluded."""
        if sampling.n < 1:
            raise LLMError(f"sampling.n must be at least 1, got {sampling.n}")
        request = VllmRequest.of(prompt, sampling, self._endpoint.family, f"georag-{next(self._ids)}")
        start = time.monotonic()
        if self._closed:
            raise LLMError(f"{self.name}: the client is closed")
        texts, attempts = with_retries(
            lambda: self._attempt(request), self._policy, f"{self.name} request {request.id}", self._cancelled
        )
        done = request.completion(texts, time.monotonic() - start, attempts)
        if done.echoed:
            log.warning("%s echoed the prompt despite exclude_input_in_output; cut it off", self.name)
        if len(texts) != sampling.n:
            log.warning("%s answered %d texts for n=%d", self.name, len(texts), sampling.n)
        return done

    def cancel(self) -> None:
        """Stops retries and new requests (they fail with LLMError "cancelled")."""
        self._cancelled.set()

    def close(self) -> None:
        """Closes pooled connections and cancels; later calls to `generate` raise LLMError."""
        self._cancelled.set()
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for client in idle:
            self._close_grpc(client)

    def __enter__(self) -> TritonClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _attempt(self, request: VllmRequest) -> list[str]:
        with self._slots:
            if self._closed:
                raise LLMError(f"{self.name}: client is closed")
            texts = self._grpc_attempt(request) if self._grpc is not None else self._http_attempt(request)
        if not texts:
            raise LLMError(f"{self.name}: the server answered no text_output")
        return texts

    # gRPC: one bidirectional stream per request, on a pooled client (connection).

    def _grpc_attempt(self, request: VllmRequest) -> list[str]:
        grpc = self._grpc
        assert grpc is not None
        client = self._checkout()
        responses: SimpleQueue[tuple[Any, Any]] = SimpleQueue()

        def on_response(result: Any, error: Any) -> None:
            # Runs on tritonclient's stream thread, which dies on an exception: only enqueue here.
            responses.put((result, error))

        healthy = False
        try:
            client.start_stream(
                callback=on_response,
                stream_timeout=self._timeout_s + _STREAM_GRACE_S,
                headers=self._endpoint.auth_headers() or None,
            )
            client.async_stream_infer(
                self._endpoint.model,
                self._grpc_inputs(grpc, request),
                request_id=request.id,
                outputs=[grpc.InferRequestedOutput("text_output")],
                enable_empty_final_response=True,
            )
            texts = self._collect(responses)
            healthy = True
            return texts
        except grpc.InferenceServerException as exc:
            # When the stream broke before the request went out (server down), tritonclient only says the
            # stream is invalid; the reason reaches the callback, possibly a moment later.
            try:
                _, reason = responses.get(timeout=_STREAM_GRACE_S)
            except Empty:
                reason = None
            raise self._grpc_error(reason if reason is not None else exc) from exc
        finally:
            self._release(client, healthy)

    def _collect(self, responses: SimpleQueue[tuple[Any, Any]]) -> list[str]:
        deadline = time.monotonic() + self._timeout_s
        texts: list[str] = []
        while True:
            remaining = deadline - time.monotonic()
            try:
                if remaining <= 0:
                    raise Empty
                result, error = responses.get(timeout=remaining)
            except Empty:
                raise TransientError(
                    f"{self.name}: no final answer within {self._timeout_s:g} s (request cancelled)"
                ) from None
            if error is not None:
                raise self._grpc_error(error)
            output = result.as_numpy("text_output")
            if output is not None:
                texts.extend(_decode(item) for item in output.reshape(-1))
            final = result.get_response().parameters.get("triton_final_response")
            if final is not None and final.bool_param:
                return texts

    def _grpc_inputs(self, grpc: ModuleType, request: VllmRequest) -> list[Any]:
        import numpy as np

        def tensor(name: str, datatype: str, value: Any) -> Any:
            array = np.array([value], dtype=np.object_ if datatype == "BYTES" else np.bool_)
            item = grpc.InferInput(name, [1], datatype)
            item.set_data_from_numpy(array)
            return item

        return [
            tensor("text_input", "BYTES", request.text.encode("utf-8")),
            tensor("image", "BYTES", request.image_b64.encode("ascii")),
            tensor("sampling_parameters", "BYTES", request.sampling_parameters.encode("utf-8")),
            tensor("exclude_input_in_output", "BOOL", True),
            tensor("stream", "BOOL", False),
        ]

    def _grpc_error(self, exc: Any) -> LLMError:
        status = str(exc.status() or "").rsplit(".", 1)[-1]
        message = _short(exc.message() if hasattr(exc, "message") else exc)
        text = f"{self.name}: {status + ': ' if status else ''}{message}"
        return TransientError(text) if status in _TRANSIENT_GRPC else LLMError(text)

    def _checkout(self) -> Any:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        grpc = self._grpc
        assert grpc is not None
        try:
            return grpc.InferenceServerClient(url=self._endpoint.address)
        except Exception as exc:  # tritonclient raises plain exceptions for bad addresses
            raise LLMError(f"{self.name}: cannot create a gRPC client: {_short(exc)}") from exc

    def _release(self, client: Any, healthy: bool) -> None:
        try:
            # A failed or timed-out request is cancelled, so the server stops working on it.
            client.stop_stream(cancel_requests=not healthy)
        except Exception as exc:  # closing a broken stream must not hide the request's own error
            log.debug("%s: stopping a stream failed: %s", self.name, exc)
            healthy = False
        with self._lock:
            if healthy and not self._closed:
                self._idle.append(client)
                return
        self._close_grpc(client)

    def _close_grpc(self, client: Any) -> None:
        try:
            client.close()
        except Exception as exc:  # best effort: the connection is going away anyway
            log.debug("%s: closing a gRPC client failed: %s", self.name, exc)

    # HTTP: POST /v2/models/MODEL/generate, one connection per request.

    def _http_attempt(self, request: VllmRequest) -> list[str]:
        body = json.dumps(
            {
                "text_input": request.text,
                "image": [request.image_b64],
                "sampling_parameters": request.sampling_parameters,
                "exclude_input_in_output": True,
                "stream": False,
            }
        ).encode("utf-8")
        headers = {"Content-Type": "application/json", **self._endpoint.auth_headers()}
        path = f"/v2/models/{quote(self._endpoint.model, safe='')}/generate"
        deadline = time.monotonic() + self._timeout_s
        conn = http.client.HTTPConnection(self._endpoint.host, self._endpoint.port, timeout=self._timeout_s)
        try:
            conn.request("POST", path, body=body, headers=headers)
            if conn.sock is not None:
                conn.sock.settimeout(max(deadline - time.monotonic(), 0.001))
            response = conn.getresponse()
            data = _read_until(response, conn, deadline)
        except TimeoutError as exc:
            raise TransientError(f"{self.name}: no answer within {self._timeout_s:g} s") from exc
        except (OSError, http.client.HTTPException) as exc:
            raise TransientError(f"{self.name}: {type(exc).__name__}: {_short(exc)}") from exc
        finally:
            conn.close()
        return self._http_texts(response.status, data)

    def _http_texts(self, status: int, data: bytes) -> list[str]:
        try:
            payload = json.loads(data)
        except ValueError:
            payload = None
        if status != 200:
            message = payload.get("error") if isinstance(payload, dict) else None
            if not message:
                message = data[:_MESSAGE_CHARS].decode("utf-8", "replace")
            text = f"{self.name}: HTTP {status}: {_short(message)}"
            raise TransientError(text) if status in _TRANSIENT_HTTP else LLMError(text)
        output = payload.get("text_output") if isinstance(payload, dict) else None
        if isinstance(output, str):
            return [output]
        if isinstance(output, list) and all(isinstance(item, str) for item in output):
            return list(output)
        raise LLMError(f"{self.name}: /generate answered no text_output strings: {_short(data[:200])}")


def _read_until(
    response: http.client.HTTPResponse, conn: http.client.HTTPConnection, deadline: float
) -> bytes:
    """The response body, read under one overall deadline (a per-read timeout alone allows trickling)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("deadline passed while reading the answer")
        if conn.sock is not None:
            conn.sock.settimeout(remaining)
        chunk = response.read1(1 << 16)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > _MAX_BODY_BYTES:
            raise LLMError(f"answer larger than {_MAX_BODY_BYTES} bytes")
        chunks.append(chunk)


def _decode(item: object) -> str:
    return item.decode("utf-8", "replace") if isinstance(item, bytes) else str(item)
