"""A local stand-in for an OpenAI-compatible chat-completions server with switchable misbehaviours, for tests.

Usage::

    with StandIn(mode="one_choice", fail_first=2) as server:
        client = OpenAIClient.from_url(server.url)
        ...
        server.seen  # the requests it got

Modes (``StandIn.mode``; can be changed between requests):

* ``ok``: ``n`` choices, choice ``i`` answering `answer(i, seed)` as JSON text.
* ``one_choice``: always one choice, whatever ``n`` asks (llama.cpp / Ollama).
* ``bad_request``: HTTP 400 with ``{"error": {"message": error_message}}``.
* ``stall``: never answers; holds the connection until ``stall_s`` passes or the server closes.
* ``malformed``: HTTP 200 with a truncated JSON body.
* ``short_body``: HTTP 200 whose body ends before its Content-Length (a server dying mid-answer).
* ``no_choices``: HTTP 200 with ``{"choices": []}``.
* ``echo``: like ``ok`` but each answer starts with the user prompt.
* ``refuse``: every choice is a refusal with no coordinates.
* ``null_content`` / ``parts``: the content is null / a list of text parts.
* ``prior``: like ``ok`` with a country added: ``{"country": prior_country, "latitude": ..., ...}``.

``script`` (optional): a function of the request body returning the answer text (every choice), or a list
of texts (choice ``i`` gets item ``i`` modulo its length); it replaces the answer of ``ok`` and ``prior``.

Independently, the first ``fail_first`` requests get ``fail_status`` (503) with an optional ``Retry-After``,
and every request waits ``delay_s`` before answering (each request has its own thread, so slow requests are
served concurrently). ``peak_in_flight`` is the most requests the server was handling at once.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

log = logging.getLogger(__name__)

MODES = frozenset(
    {
        "ok",
        "refuse",
        "one_choice",
        "bad_request",
        "stall",
        "malformed",
        "short_body",
        "no_choices",
        "echo",
        "null_content",
        "parts",
        "prior",
    }
)
PATH = "/v1/chat/completions"


def answer(index: int, seed: int | None = None) -> dict[str, float]:
    """The coordinates the stand-in answers for choice ``index`` of a request with ``seed``: near Paris."""
    k = index + (seed or 0)
    return {"latitude": round(48.8566 + 0.01 * k, 4), "longitude": round(2.3522 + 0.01 * k, 4)}


@dataclass(frozen=True)
class Seen:
    """One request the stand-in received."""

    path: str
    headers: dict[str, str]
    """Header names lower-cased."""
    body: Any
    """The decoded JSON body, or None when it was not JSON."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a stalled handler must never keep the interpreter alive
    request_queue_size = 128  # a benchmark opens 16+ connections at once; the default backlog is 5
    standin: StandIn

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that timed out and hung up makes the handler's write fail; expected, not a test failure.
        log.debug("stand-in: error serving %s", client_address, exc_info=True)

    def process_request(self, request: Any, client_address: Any) -> None:
        # Counted before the thread starts, so close() cannot miss a handler that has not run yet.
        self.standin._handler_started()
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.standin._handler_done()


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.0"  # one request per connection, as the client does
    timeout = 30  # a client that connects and sends nothing cannot hold a thread forever

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("stand-in: " + format, *args)

    def do_POST(self) -> None:
        st = self.server.standin
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        st._arrive(Seen(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
        try:
            reply = st._reply(self.path, body)
        finally:
            # Counted out before the answer is written, so a client that sees the answer and sends its
            # next request can never be counted twice.
            st._depart()
        if reply is None:
            self.close_connection = True
            return
        status, headers, payload = reply
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        if "Content-Length" not in headers:
            self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


class StandIn:
    """A threaded chat-completions server on 127.0.0.1 (a free port); a context manager."""

    def __init__(
        self,
        *,
        mode: str = "ok",
        fail_first: int = 0,
        fail_status: int = 503,
        retry_after: str | None = None,
        delay_s: float = 0.0,
        stall_s: float = 30.0,
        error_message: str = "this model does not accept images",
        model: str = "standin-vl",
        script: Callable[[dict[str, Any]], str | list[str]] | None = None,
        prior_country: str = "FR",
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; one of {sorted(MODES)}")
        self.mode = mode
        self.fail_first = fail_first
        self.fail_status = fail_status
        self.retry_after = retry_after
        self.delay_s = delay_s
        self.stall_s = stall_s
        self.error_message = error_message
        self.model = model
        self.script = script
        self.prior_country = prior_country
        self._lock = threading.Condition()
        self._seen: list[Seen] = []
        self._in_flight = 0
        self._peak = 0
        self._handlers = 0
        self._release = threading.Event()  # set on exit: ends stalls and delays at once
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle --

    def __enter__(self) -> StandIn:
        server = _Server(("127.0.0.1", 0), _Handler)
        server.standin = self
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stops serving, releases stalled requests and waits (briefly) for their threads."""
        if self._server is None:
            return
        self._release.set()
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            self._lock.wait_for(lambda: self._handlers == 0, timeout=5.0)
        self._server = None

    # -- what tests read --

    @property
    def port(self) -> int:
        assert self._server is not None, "use StandIn as a context manager"
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """``openai://127.0.0.1:PORT/v1?model=MODEL``."""
        return f"openai://127.0.0.1:{self.port}/v1?model={self.model}"

    @property
    def seen(self) -> list[Seen]:
        """The requests received so far, in arrival order."""
        with self._lock:
            return list(self._seen)

    @property
    def peak_in_flight(self) -> int:
        """The most requests handled at the same time."""
        with self._lock:
            return self._peak

    # -- the handler's side --

    def _arrive(self, seen: Seen) -> None:
        with self._lock:
            self._seen.append(seen)
            self._in_flight += 1
            self._peak = max(self._peak, self._in_flight)

    def _depart(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def _handler_started(self) -> None:
        with self._lock:
            self._handlers += 1

    def _handler_done(self) -> None:
        with self._lock:
            self._handlers -= 1
            self._lock.notify_all()

    def _reply(self, path: str, body: Any) -> tuple[int, dict[str, str], bytes] | None:
        """(status, headers, payload) for one request, or None to hang up without answering."""
        with self._lock:
            number = len(self._seen)
        if path != PATH:
            return _json(404, {"error": {"message": f"no route {path}", "type": "NotFound"}})
        if number <= self.fail_first:
            status, headers, payload = _json(
                self.fail_status, {"error": {"message": "server busy", "type": "Overloaded"}}
            )
            if self.retry_after is not None:
                headers["Retry-After"] = self.retry_after
            return status, headers, payload
        if self.mode == "stall":
            self._release.wait(self.stall_s)
            return None
        if self.delay_s > 0:
            self._release.wait(self.delay_s)
        if self.mode == "bad_request":
            return _json(
                400, {"error": {"message": self.error_message, "type": "BadRequestError", "code": 400}}
            )
        if self.mode == "malformed":
            return 200, {"Content-Type": "application/json"}, b'{"id": "x", "choices": [{"index": 0, "mess'
        if self.mode == "short_body":
            # Declares more than it sends, as a server dying mid-answer does.
            return 200, {"Content-Type": "application/json", "Content-Length": "1000"}, b'{"choices": ['
        if self.mode == "no_choices":
            return _json(200, {"id": "x", "object": "chat.completion", "choices": []})
        if not isinstance(body, dict):
            return _json(400, {"error": {"message": "body is not JSON", "type": "BadRequestError"}})
        n = int(body.get("n", 1))
        seed = body.get("seed")
        count = 1 if self.mode == "one_choice" else n
        scripted = self.script(body) if self.script is not None else None
        choices = []
        for i in range(count):
            text = json.dumps(answer(i, seed))
            if self.mode == "prior":
                text = json.dumps({"country": self.prior_country, **answer(i, seed)})
            if isinstance(scripted, str):
                text = scripted
            elif scripted:
                text = scripted[i % len(scripted)]
            content: Any = text
            if self.mode == "echo":
                content = _user_text(body) + "\n" + text
            elif self.mode == "refuse":
                content = "I'm sorry, I can't determine where this photo was taken."
            elif self.mode == "null_content":
                content = None
            elif self.mode == "parts":
                content = [{"type": "text", "text": text[:10]}, {"type": "text", "text": text[10:]}]
            message = {"role": "assistant", "content": content}
            choices.append({"index": i, "message": message, "finish_reason": "stop"})
        doc = {
            "id": f"chatcmpl-{number}",
            "object": "chat.completion",
            "model": body.get("model", self.model),
            "choices": choices,
            "usage": {"prompt_tokens": 10, "completion_tokens": 12 * count, "total_tokens": 10 + 12 * count},
        }
        return _json(200, doc)


def _json(status: int, doc: Any) -> tuple[int, dict[str, str], bytes]:
    return status, {"Content-Type": "application/json"}, json.dumps(doc).encode()


def user_text(body: dict[str, Any]) -> str:
    """The text parts of a request's user message (what a script can tell requests apart by)."""
    return _user_text(body)


def _user_text(body: dict[str, Any]) -> str:
    for message in body.get("messages", []):
        if message.get("role") == "user" and isinstance(message.get("content"), list):
            return "".join(p.get("text", "") for p in message["content"] if p.get("type") == "text")
    return ""
