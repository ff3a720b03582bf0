"""Tests of georag.llm.transport (the transport under both LLM clients) against real local HTTP servers.

Timings are checked only with generous bounds: a lower bound where the transport must wait at least that
long, an upper bound several times the deadline where it must not hang.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from georag.config import LLMConfig
from georag.errors import ConfigError, LLMError
from georag.llm import transport as transport_module
from georag.llm.backends import open_llm, open_llm_from
from georag.llm.retry import RetryPolicy, TransientError
from georag.llm.transport import (
    HttpTarget,
    Transport,
    completion,
    cut_echo,
    error_message,
    retry_after_s,
    truncate,
)

FAST = RetryPolicy(retries=2, backoff_s=0.01, max_backoff_s=0.05)
NO_RETRIES = RetryPolicy(retries=0)
SECRET = "sk-transport-SECRET-42ab"

Reply = tuple[int, dict[str, str], bytes]


class Scripted:
    """An HTTP server on 127.0.0.1 answering POSTs from a script: reply ``i`` for request ``i`` (the last
    one for every later request). Records each request's path, headers and body."""

    def __init__(self, *replies: Reply) -> None:
        self.replies = list(replies)
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.arrived = threading.Event()
        lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with lock:
                    owner.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                    status, headers, payload = owner.replies[min(len(owner.requests), len(owner.replies)) - 1]
                owner.arrived.set()
                head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
                self.wfile.write(f"HTTP/1.0 {status} Scripted\r\n{head}\r\n".encode() + payload)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    @property
    def target(self) -> HttpTarget:
        return HttpTarget("127.0.0.1", int(self._server.server_address[1]))

    def __enter__(self) -> Scripted:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def _reply(status: int, payload: bytes, **headers: str) -> Reply:
    return status, {"Content-Length": str(len(payload)), **headers}, payload


def _json(status: int, doc: Any, **headers: str) -> Reply:
    return _reply(status, json.dumps(doc).encode(), **{"Content-Type": "application/json", **headers})


OK = _json(200, {"answer": 42})


@contextmanager
def _raw_server(serve: Callable[[socket.socket, threading.Event], None]) -> Iterator[HttpTarget]:
    """A socket server on 127.0.0.1 that runs ``serve(connection, stop)`` for each connection."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.1)
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                serve(conn, stop)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield HttpTarget("127.0.0.1", int(listener.getsockname()[1]))
    finally:
        stop.set()
        thread.join(5)
        listener.close()


def _transport(
    policy: RetryPolicy = FAST, timeout_s: float = 5.0, concurrency: int = 4, **kwargs: Any
) -> Transport:
    return Transport("test://llm", timeout_s=timeout_s, policy=policy, concurrency=concurrency, **kwargs)


def _post(transport: Transport, target: HttpTarget, body: bytes = b"{}") -> tuple[str, int]:
    return transport.call(lambda: transport.post(target, "/generate", body, {"X-Test": "1"}))


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- one exchange --


def test_post_sends_json_and_returns_the_body() -> None:
    with Scripted(OK) as server:
        text, attempts = _post(_transport(), server.target, b'{"q": 1}')
        ((path, headers, body),) = server.requests
    assert json.loads(text) == {"answer": 42} and attempts == 1
    assert (path, body) == ("/generate", b'{"q": 1}')
    assert headers["content-type"] == "application/json" and headers["x-test"] == "1"
    assert headers["user-agent"].startswith("georag/")


def test_retries_503_with_retry_after_then_succeeds() -> None:
    policy = RetryPolicy(retries=2, backoff_s=0.001, max_backoff_s=0.5)
    busy = _json(503, {"error": "busy"}, **{"Retry-After": "1"})
    with Scripted(busy, OK) as server:
        start = time.monotonic()
        text, attempts = _post(_transport(policy), server.target)
        elapsed = time.monotonic() - start
        assert len(server.requests) == 2
    assert json.loads(text) == {"answer": 42} and attempts == 2
    assert 0.45 <= elapsed < 5.0  # waited the Retry-After, capped at max_backoff_s (0.5 s), not 1 s+


def test_retry_after_is_capped() -> None:
    policy = RetryPolicy(retries=1, backoff_s=0.001, max_backoff_s=0.2)
    with Scripted(_json(429, {"error": "slow down"}, **{"Retry-After": "3600"}), OK) as server:
        start = time.monotonic()
        _, attempts = _post(_transport(policy), server.target)
    assert attempts == 2 and time.monotonic() - start < 5.0


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_transient_statuses_are_retried_until_given_up(status: int) -> None:
    with Scripted(_json(status, {"error": {"message": "try later"}})) as server:
        expected = rf"test://llm: HTTP {status}: try later.*gave up after 3 attempts"
        with pytest.raises(LLMError, match=expected):
            _post(_transport(), server.target)
        assert len(server.requests) == 3


@pytest.mark.parametrize("status", [400, 401, 404, 422])
def test_other_statuses_are_not_retried(status: int) -> None:
    with Scripted(_json(status, {"error": {"message": "this model does not accept images"}})) as server:
        with pytest.raises(LLMError, match=rf"test://llm: HTTP {status}: this model does not") as info:
            _post(_transport(RetryPolicy(retries=3, backoff_s=5.0)), server.target)
        assert len(server.requests) == 1
    assert not isinstance(info.value, TransientError)


def test_connection_refused_is_transient() -> None:
    with pytest.raises(LLMError, match=r"ConnectionRefusedError.*gave up after 3 attempts"):
        _post(_transport(), HttpTarget("127.0.0.1", _closed_port()))


def test_short_body_is_transient() -> None:
    short = 200, {"Content-Length": "1000"}, b'{"answer": '
    with Scripted(short) as server:
        with pytest.raises(LLMError, match=r"IncompleteRead.*gave up after 3 attempts"):
            _post(_transport(), server.target)
        assert len(server.requests) == 3


@pytest.mark.parametrize("declared", [True, False])
def test_body_over_the_cap_is_refused(monkeypatch: pytest.MonkeyPatch, declared: bool) -> None:
    monkeypatch.setattr(transport_module, "MAX_BODY_BYTES", 1000)
    if declared:
        with Scripted(_reply(200, b"x" * 5000)) as server:
            with pytest.raises(LLMError, match="larger than 1000 bytes") as info:
                _post(_transport(), server.target)
            assert len(server.requests) == 1
        assert not isinstance(info.value, TransientError)
        return

    def endless(conn: socket.socket, stop: threading.Event) -> None:
        conn.recv(65536)
        conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n")
        sent = 0
        while not stop.is_set() and sent < 1 << 20:
            try:
                conn.sendall(b"y" * 4096)
            except OSError:
                return
            sent += 4096

    with _raw_server(endless) as target, pytest.raises(LLMError, match="larger than 1000 bytes"):
        _post(_transport(), target)


@pytest.mark.parametrize("phase", ["headers", "body"])
def test_a_trickling_server_hits_the_overall_deadline(phase: str) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n"

    def trickle(conn: socket.socket, stop: threading.Event) -> None:
        conn.recv(65536)
        if phase == "body":
            conn.sendall(head)
        for i in range(1000):  # one byte every 50 ms: each read succeeds, the whole never ends
            if stop.wait(0.05):
                return
            try:
                conn.sendall(head[i % len(head) : i % len(head) + 1] if phase == "headers" else b" ")
            except OSError:
                return

    with _raw_server(trickle) as target:
        start = time.monotonic()
        with pytest.raises(LLMError, match=r"timed out: no complete answer within 1 s") as info:
            _post(_transport(NO_RETRIES, timeout_s=1.0), target)
        elapsed = time.monotonic() - start
    assert isinstance(info.value.__cause__, TransientError)  # retried when retries are allowed
    assert 0.9 <= elapsed < 5.0


def test_a_silent_server_times_out_and_is_retried() -> None:
    def silent(conn: socket.socket, stop: threading.Event) -> None:
        stop.wait(10)

    with _raw_server(silent) as target:
        start = time.monotonic()
        with pytest.raises(LLMError, match=r"timed out.*gave up after 2 attempts"):
            _post(_transport(RetryPolicy(retries=1, backoff_s=0.01), timeout_s=0.5), target)
    assert time.monotonic() - start < 5.0


def test_https_to_a_plain_server_is_a_tls_error_not_retried() -> None:
    with Scripted(OK) as server:
        target = HttpTarget(server.target.host, server.target.port, https=True)
        with pytest.raises(LLMError, match="test://llm: TLS error") as info:
            _post(_transport(RetryPolicy(retries=3, backoff_s=5.0)), target)
    assert not isinstance(info.value, TransientError)


# -- state --


def test_cancel_stops_the_retry_wait() -> None:
    policy = RetryPolicy(retries=5, backoff_s=30.0, max_backoff_s=30.0)
    transport = _transport(policy)
    failures: list[BaseException] = []
    with Scripted(_json(503, {"error": "busy"}, **{"Retry-After": "30"})) as server:

        def run() -> None:
            try:
                _post(transport, server.target)
            except BaseException as exc:
                failures.append(exc)

        thread = threading.Thread(target=run)
        thread.start()
        assert server.arrived.wait(5.0)
        time.sleep(0.1)  # into the 30 s wait
        start = time.monotonic()
        transport.cancel()
        thread.join(5.0)
        assert not thread.is_alive()
        assert time.monotonic() - start < 5.0
        assert len(server.requests) == 1
    (error,) = failures
    assert isinstance(error, LLMError) and "cancelled" in str(error)
    with pytest.raises(LLMError, match="cancelled"):
        transport.call(lambda: "never")


def test_closed_transport_refuses() -> None:
    transport = _transport()
    transport.close()
    assert transport.closed
    with pytest.raises(LLMError, match="test://llm: the client is closed"):
        transport.call(lambda: "never")


def test_slots_bound_concurrent_attempts() -> None:
    transport = _transport(concurrency=3)
    lock = threading.Lock()
    now = peak = 0

    def attempt() -> int:
        nonlocal now, peak
        with lock:
            now += 1
            peak = max(peak, now)
        time.sleep(0.05)
        with lock:
            now -= 1
        return 1

    threads = [threading.Thread(target=transport.call, args=(attempt,)) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak == 3


def test_a_retry_wait_holds_no_slot() -> None:
    transport = _transport(RetryPolicy(retries=1, backoff_s=0.3, max_backoff_s=0.3), concurrency=1)
    calls: list[str] = []
    waiting = threading.Event()

    def flaky() -> str:
        calls.append("flaky")
        if len(calls) == 1:
            waiting.set()
            raise TransientError("busy")
        return "flaky"

    thread = threading.Thread(target=transport.call, args=(flaky,))
    thread.start()
    assert waiting.wait(5.0)
    assert transport.call(lambda: "quick") == ("quick", 1)  # ran while the other waited to retry
    thread.join()
    assert calls == ["flaky", "flaky"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"timeout_s": 0}, "timeout_s"),
        ({"timeout_s": -1.0}, "timeout_s"),
        ({"timeout_s": float("inf")}, "timeout_s"),
        ({"timeout_s": True}, "timeout_s"),
        ({"concurrency": 0}, "concurrency"),
        ({"concurrency": 2.5}, "concurrency"),
    ],
)
def test_bad_limits_are_config_errors(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _transport(**kwargs)


def test_bad_retry_policy_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="retries"):
        RetryPolicy(retries=-1)
    with pytest.raises(ConfigError, match="backoff"):
        RetryPolicy(backoff_s=10.0, max_backoff_s=1.0)


# -- messages and secrets --


def test_long_messages_are_cut_after_secrets_are_masked() -> None:
    reply = _json(400, {"error": {"message": "y" * 290 + SECRET + "z" * 5000}})
    with Scripted(reply) as server, pytest.raises(LLMError) as info:
        _post(_transport(secrets=[SECRET, None]), server.target)
    message = str(info.value)
    assert "sk-transport" not in message and "SECRET" not in message
    assert "y" * 290 + "***" in message and len(message) < 400


def test_transient_messages_and_logs_are_masked(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with Scripted(_json(503, {"error": f"bad key {SECRET}"})) as server, pytest.raises(LLMError) as info:
        _post(_transport(secrets=[SECRET]), server.target)
    assert caplog.records
    for text in (str(info.value), caplog.text):
        assert SECRET not in text and "***" in text


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ('{"error": {"message": "openai style"}}', "openai style"),
        ('{"error": "triton style"}', "triton style"),
        ('{"message": "plain"}', "plain"),
        ('{"detail": [{"loc": ["body"]}]}', '[{"loc": ["body"]}]'),
        ("<html>Bad Gateway</html>", "<html>Bad Gateway</html>"),
        ("", "(empty body)"),
    ],
)
def test_error_message(body: str, expected: str) -> None:
    assert error_message(body) == expected


def test_truncate() -> None:
    assert truncate("a  b\n c") == "a b c"
    assert truncate("x" * 400) == "x" * 300 + "..."


def test_retry_after_values() -> None:
    assert retry_after_s("2.5") == 2.5
    assert retry_after_s(None) is None and retry_after_s("soon") is None and retry_after_s("-3") is None
    assert retry_after_s("Wed, 21 Oct 2015 07:28:00 GMT") is None  # in the past
    future = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 120))
    assert 100 < (retry_after_s(future) or 0) <= 120


def test_retry_wait_honours_retry_after_up_to_the_cap() -> None:
    policy = RetryPolicy(backoff_s=0.01, max_backoff_s=2.0)
    assert policy.wait_s(1) < 0.02
    assert policy.wait_s(1, retry_after_s=1.0) == 1.0
    assert policy.wait_s(1, retry_after_s=60.0) == 2.0
    assert RetryPolicy(backoff_s=1.0, max_backoff_s=2.0).wait_s(10) <= 3.0  # the cap, jitter included


# -- echo --


def test_cut_echo() -> None:
    assert cut_echo("Where?\n{answer}", "Where?") == ("{answer}", True)
    assert cut_echo("  Where?  {answer}", " Where? ") == ("{answer}", True)
    assert cut_echo("<s>PROMPT{answer}", "PROMPT") == ("{answer}", True)
    assert cut_echo("{answer}", "Where?") == ("{answer}", False)
    assert cut_echo("{answer}", "   ") == ("{answer}", False)


def test_completion_flags_and_logs_an_echo(caplog: pytest.LogCaptureFixture) -> None:
    done = completion(["P {a}", "{b}"], "P", 1.5, attempts=2)
    assert done.texts == ("{a}", "{b}") and done.echoed and (done.seconds, done.attempts) == (1.5, 2)
    assert not completion(["{a}"], "P", 0.1).echoed
    with caplog.at_level(logging.WARNING):
        assert _transport().completion(["P {a}"], "P", 0.1, 1).echoed
    assert "echoed the prompt" in caplog.text


# -- choosing a client --


def test_open_llm_names_its_limits_as_the_config_does() -> None:
    assert open_llm("none") is None
    assert open_llm_from(LLMConfig()) is None
    client = open_llm_from(LLMConfig(url="openai://127.0.0.1:1/v1?model=m", timeout_s=3.0, concurrency=2))
    assert client is not None and "timeout_s=3.0, concurrency=2" in repr(client)
    triton = open_llm("triton://127.0.0.1:1/m?protocol=http", concurrency=2)
    assert triton is not None and triton.name == "triton://127.0.0.1:1/m"
    with pytest.raises(ConfigError, match="use none"):
        open_llm("ftp://host/m")


@pytest.mark.parametrize("url", ["openai://127.0.0.1:1/v1?model=m", "triton://127.0.0.1:1/m?protocol=http"])
def test_both_clients_raise_the_same_errors(url: str) -> None:
    with pytest.raises(ConfigError, match="timeout_s"):
        open_llm(url, timeout_s=0)
    with pytest.raises(ConfigError, match="concurrency"):
        open_llm(url, concurrency=0)
    with pytest.raises(ConfigError, match="retries"):
        open_llm(url, retries=-1)
