"""An LLMClient for a multimodal LLM served by Triton Inference Server with the vLLM backend.

Chosen by a URL: ``triton://HOST:PORT/MODEL?family=qwen2-vl&protocol=grpc`` (``family`` defaults to
``qwen2-vl``, ``protocol`` to ``grpc``; the port defaults to 8001 for gRPC and 8000 for HTTP). A user and
password in the URL are sent as HTTP basic auth (for a proxy in front of Triton) and never appear in the
client's name, logs or errors.

This module is the wire format:

* The vLLM backend applies no chat template, so the prompt is rendered here by
  `georag.llm.chat_templates.render_chat` for the URL's ``family``, image placeholder included. The image
  travels base64-encoded in the ``image`` input; ``sampling_parameters`` is the JSON of ``temperature``,
  ``top_p``, ``max_tokens``, ``n`` and ``seed`` (when not None); ``exclude_input_in_output`` is always true
  and ``stream`` always false, so one final response carries the n answers.
* The model is decoupled (it may answer a request with any number of responses), so gRPC uses a
  bidirectional stream (one per request, on a pooled connection) and waits for the response flagged final,
  cancelling the request when the attempt's deadline passes first; HTTP uses
  ``POST /v2/models/MODEL/generate``. ``/infer`` does not work with decoupled models.
* gRPC UNAVAILABLE / DEADLINE_EXCEEDED / RESOURCE_EXHAUSTED are transient; any other gRPC error (an unknown
  model, a request the model refuses) raises `LLMError` at once.
* ``tritonclient`` is imported only for gRPC; without it `MissingDependencyError` says what to install.

Slots (``concurrency``), retries, the per-attempt deadline (``timeout_s``), HTTP statuses, the body cap,
error messages and echo cutting (an answer that still holds the rendered prompt despite
``exclude_input_in_output`` is cut after it and flagged ``echoed``) are
`georag.llm.transport.Transport`'s, shared with the OpenAI-compatible client.
"""

from __future__ import annotations

import base64
import functools
import importlib
import itertools
import json
import logging
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass
from queue import Empty, SimpleQueue
from types import ModuleType
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from georag.config import Sampling
from georag.errors import ConfigError, LLMError, MissingDependencyError, extra_hint
from georag.llm.chat_templates import chat_format, render_chat
from georag.llm.transport import (
    Deadline,
    HttpStatusError,
    HttpTarget,
    Limits,
    Transport,
    TransportClient,
    completion,
    current_abort,
)
from georag.types import Completion, Prompt

if TYPE_CHECKING:
    from typing_extensions import Unpack

log = logging.getLogger(__name__)

DEFAULT_FAMILY = "qwen2-vl"
"""Model family used when the URL names none."""
DEFAULT_PORTS = {"grpc": 8001, "http": 8000}
"""Triton's default ports per protocol, used when the URL names none."""

_QUERY_KEYS = frozenset({"family", "protocol"})
_TRANSIENT_GRPC = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED"})
_STREAM_GRACE_S = 1.0  # the gRPC deadline backs up our own wait, so it expires just after it
_ABANDONED = object()
"""Put in a call's response queue when its caller fires the call's abort."""


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
        raise ConfigError(f"not a triton:// URL: {parts.scheme or '(no scheme)'}://...")
    if not parts.hostname:
        raise ConfigError("triton URL has no host: use triton://HOST:PORT/MODEL")
    model = unquote(parts.path.strip("/"))
    if not model or "/" in model:
        raise ConfigError(f"triton URL must name exactly one model after the host, got path {parts.path!r}")
    query = parse_qs(parts.query, keep_blank_values=True)
    unknown = sorted(set(query) - _QUERY_KEYS)
    if unknown:
        raise ConfigError(f"triton URL: unknown parameter(s) {', '.join(unknown)}; known: family, protocol")
    family = query.get("family", [DEFAULT_FAMILY])[-1].strip().lower() or DEFAULT_FAMILY
    chat_format(family)  # an unknown family fails here, naming the known ones
    protocol = query.get("protocol", ["grpc"])[-1].strip().lower() or "grpc"
    if protocol not in DEFAULT_PORTS:
        raise ConfigError(f"triton URL: protocol must be grpc or http, got {protocol!r}")
    try:
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"triton URL: bad port ({exc})") from exc
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
            f"the Triton gRPC client needs tritonclient: {extra_hint('llm', 'tritonclient[grpc]')} "
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


class TritonClient(TransportClient):
    """A thread-safe `LLMClient` of one model on a Triton server with the vLLM backend (``name``:
    ``triton://host:port/model``, no credentials)."""

    def __init__(
        self,
        endpoint: TritonEndpoint,
        **limits: Unpack[Limits],
    ) -> None:
        """``limits``: ``timeout_s``, ``policy``, ``concurrency`` (see `georag.llm.transport.Limits`).
        ConfigError for a bad limit; MissingDependencyError for gRPC without ``tritonclient``."""
        tokens = [value.split()[-1] for value in endpoint.auth_headers().values()]
        self._transport = Transport(endpoint.name, secrets=[endpoint.password, *tokens], **limits)
        self._endpoint = endpoint
        self._http = HttpTarget(endpoint.host, endpoint.port)
        self._path = f"/v2/models/{quote(endpoint.model, safe='')}/generate"
        self._lock = threading.Lock()
        self._idle: list[Any] = []  # gRPC clients not in use; at most `concurrency` exist
        self._ids = itertools.count(1)
        self._grpc: ModuleType | None = import_tritonclient_grpc() if endpoint.protocol == "grpc" else None

    @classmethod
    def from_url(cls, url: str, **limits: Unpack[Limits]) -> TritonClient:
        """The client for ``triton://HOST:PORT/MODEL?family=...&protocol=grpc|http``."""
        return cls(parse_triton_url(url), **limits)

    @property
    def endpoint(self) -> TritonEndpoint:
        """The parsed endpoint (its repr hides credentials)."""
        return self._endpoint

    def __repr__(self) -> str:
        endpoint = self._endpoint
        return f"TritonClient({endpoint.name}, family={endpoint.family}, protocol={endpoint.protocol})"

    def generate(self, prompt: Prompt, sampling: Sampling) -> Completion:
        """Sends one request (retrying transient failures) and returns its n answers, prompt excluded."""
        request = VllmRequest.of(prompt, sampling, self._endpoint.family, f"georag-{next(self._ids)}")
        start = time.monotonic()
        texts, attempts = self._transport.call(
            functools.partial(self._attempt, request), f"{self.name} request {request.id}"
        )
        if len(texts) != sampling.n:
            log.warning("%s answered %d texts for n=%d", self.name, len(texts), sampling.n)
        return self._transport.completion(texts, request.text, time.monotonic() - start, attempts)

    def check(self) -> None:
        """Checks, before a run, that the server answers and the model is ready: ``GET
        /v2/models/MODEL/ready`` over HTTP, ``is_model_ready`` over gRPC (slots, retries and the attempt
        deadline are the transport's). LLMError (naming the client, never a credential) for an unreachable
        server or a model that is unknown or not ready."""
        attempt = self._grpc_ready if self._grpc is not None else self._http_ready
        ready, _ = self._transport.call(attempt, f"{self.name} (readiness check)")
        if not ready:
            raise self._transport.error(
                f"model {self._endpoint.model!r} is unknown or not ready on the server"
            )

    def _http_ready(self) -> bool:
        path = f"/v2/models/{quote(self._endpoint.model, safe='')}/ready"
        try:
            self._transport.get(self._http, path, self._endpoint.auth_headers())
        except HttpStatusError as exc:
            if exc.status in (401, 403):
                raise
            return False  # 400/404: unknown model; Triton answers 400 for one that is not ready
        return True

    def _grpc_ready(self) -> bool:
        grpc = self._grpc
        assert grpc is not None
        client = self._checkout()
        healthy = False
        try:
            ready = bool(
                client.is_model_ready(
                    self._endpoint.model,
                    headers=self._endpoint.auth_headers() or None,
                    client_timeout=self._transport.timeout_s,
                )
            )
            healthy = True
            return ready
        except grpc.InferenceServerException as exc:
            raise self._grpc_error(exc) from exc
        finally:
            self._release(client, healthy)

    def close(self) -> None:
        """Cancels, closes pooled connections; later calls to `generate` raise LLMError."""
        super().close()
        with self._lock:
            idle, self._idle = self._idle, []
        for client in idle:
            self._close_grpc(client)

    def _attempt(self, request: VllmRequest) -> list[str]:
        texts = self._grpc_attempt(request) if self._grpc is not None else self._http_attempt(request)
        if not texts:
            raise self._transport.error("the server answered no text_output")
        return texts

    # gRPC: one bidirectional stream per request, on a pooled client (connection).

    def _grpc_attempt(self, request: VllmRequest) -> list[str]:
        grpc = self._grpc
        assert grpc is not None
        deadline = self._transport.deadline()
        client = self._checkout()
        responses: SimpleQueue[tuple[Any, Any]] = SimpleQueue()

        def on_response(result: Any, error: Any) -> None:
            # Runs on tritonclient's stream thread, which dies on an exception: only enqueue here.
            responses.put((result, error))

        healthy = False
        abort = current_abort()
        try:
            client.start_stream(
                callback=on_response,
                stream_timeout=self._transport.timeout_s + _STREAM_GRACE_S,
                headers=self._endpoint.auth_headers() or None,
            )
            client.async_stream_infer(
                self._endpoint.model,
                self._grpc_inputs(grpc, request),
                request_id=request.id,
                outputs=[grpc.InferRequestedOutput("text_output")],
                enable_empty_final_response=True,
            )
            # An abandoned call stops waiting at once; the stream is then cancelled like a timed-out one.
            with abort.on_fire(lambda: responses.put((None, _ABANDONED))) if abort else nullcontext():
                texts = self._collect(responses, deadline)
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

    def _collect(self, responses: SimpleQueue[tuple[Any, Any]], deadline: Deadline) -> list[str]:
        texts: list[str] = []
        while True:
            try:
                result, error = responses.get(timeout=deadline.left())
            except Empty:
                raise self._transport.timed_out() from None  # the stream is stopped, cancelling the request
            if error is _ABANDONED:
                raise self._transport.abandoned()
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
        message = self._transport.short(exc.message() if hasattr(exc, "message") else exc)
        text = f"{status}: {message}" if status else message
        return self._transport.failure(text, transient=status in _TRANSIENT_GRPC)

    def _checkout(self) -> Any:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        grpc = self._grpc
        assert grpc is not None
        try:
            return grpc.InferenceServerClient(url=self._endpoint.address)
        except Exception as exc:  # tritonclient raises plain exceptions for bad addresses
            raise self._transport.error(f"cannot create a gRPC client: {self._transport.short(exc)}") from exc

    def _release(self, client: Any, healthy: bool) -> None:
        try:
            # A failed or timed-out request is cancelled, so the server stops working on it.
            client.stop_stream(cancel_requests=not healthy)
        except Exception as exc:  # closing a broken stream must not hide the request's own error
            log.debug("%s: stopping a stream failed: %s", self.name, exc)
            healthy = False
        with self._lock:
            if healthy and not self._transport.closed:
                self._idle.append(client)
                return
        self._close_grpc(client)

    def _close_grpc(self, client: Any) -> None:
        try:
            client.close()
        except Exception as exc:  # best effort: the connection is going away anyway
            log.debug("%s: closing a gRPC client failed: %s", self.name, exc)

    # HTTP: POST /v2/models/MODEL/generate through the transport.

    def _http_attempt(self, request: VllmRequest) -> list[str]:
        body = {
            "text_input": request.text,
            "image": [request.image_b64],
            "sampling_parameters": request.sampling_parameters,
            "exclude_input_in_output": True,
            "stream": False,
        }
        text = self._transport.post(
            self._http, self._path, json.dumps(body).encode("utf-8"), self._endpoint.auth_headers()
        )
        try:
            payload = json.loads(text)
        except ValueError:
            payload = None
        output = payload.get("text_output") if isinstance(payload, dict) else None
        if isinstance(output, str):
            return [output]
        if isinstance(output, list) and all(isinstance(item, str) for item in output):
            return list(output)
        short = self._transport.short(text, 200)
        raise self._transport.error(f"/generate answered no text_output strings: {short}")


def _decode(item: object) -> str:
    return item.decode("utf-8", "replace") if isinstance(item, bytes) else str(item)
