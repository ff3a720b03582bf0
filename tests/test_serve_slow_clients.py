"""`georag serve` against slow clients (issue 19): headers that never end, bodies that trickle, and many
uploads from one address. One real server (the command, on 127.0.0.1) with small limits; clients bind
other loopback addresses (127.0.0.N: Linux routes all of 127/8 to the loopback) to act as other hosts."""

from __future__ import annotations

import http.client
import json
import select
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("torch")

from georag.errors import GeoRagError
from test_serve import _photo
from test_serve_security import _cli_server

LIMITS = {
    "--header-timeout-s": "2",
    "--body-timeout-s": "2",
    "--min-upload-bytes-per-s": "4096",
    "--max-uploads": "4",
    "--max-uploads-per-client": "2",
    "--max-connections-per-client": "4",
    "--max-requests": "1",
    "--max-queue": "0",
}
"""Small limits, so that each test takes seconds; one pipeline slot and no queue: an upload that counted
against them would lock every other client out."""
BIG = 4 << 20
"""The Content-Length of a body that is never all sent."""


@pytest.fixture(scope="module")
def port(locate_env: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    args = [part for pair in LIMITS.items() for part in pair]
    with _cli_server(locate_env, tmp_path_factory.mktemp("slow"), *args) as served:
        yield served


def _connect(port: int, source: str) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))


def _closed_within(conn: socket.socket, seconds: float, trickle: bytes = b"") -> bool:
    """Whether the server closes ``conn`` unanswered within ``seconds`` while it sends ``trickle`` every
    0.2 s (False as soon as an answer comes)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            if select.select([conn], [], [], 0.2)[0]:
                return not conn.recv(65536)
            if trickle:
                conn.sendall(trickle)
        except (ConnectionResetError, BrokenPipeError):
            return True
    return False


def _post(port: int, source: str, body: bytes) -> tuple[int, dict[str, Any]]:
    """POSTs ``body`` to /v1/locate from ``source``; the status and the JSON answer."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30, source_address=(source, 0))
    try:
        conn.request("POST", "/v1/locate?strategy=knn", body=body)
        answer = conn.getresponse()
        return answer.status, json.loads(answer.read())
    finally:
        conn.close()


def _answer(conn: socket.socket, data: bytes = b"") -> tuple[int, dict[str, Any]]:
    """The status and JSON body of the next answer on ``conn`` (``data``: its start, already read)."""
    while b"\r\n\r\n" not in data or len(data.partition(b"\r\n\r\n")[2]) < _length(data):
        piece = conn.recv(65536)
        if not piece:
            break
        data += piece
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def _length(data: bytes) -> int:
    for line in data.partition(b"\r\n\r\n")[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


class _Uploader:
    """An upload from ``source`` announcing `BIG` bytes with ``Expect: 100-continue``: the server's
    ``100 Continue`` says the upload was admitted and its body is being read (made, it has been counted);
    then ``piece`` goes every ``every_s`` seconds until the server answers, with ``answer``."""

    def __init__(self, port: int, source: str, piece: bytes, every_s: float) -> None:
        self.conn = _connect(port, source)
        self.conn.sendall(
            b"POST /v1/locate?strategy=knn HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
            b"Content-Length: %d\r\n\r\n" % BIG
        )
        head = b""
        while b"\r\n\r\n" not in head:
            head += self.conn.recv(1)
        assert head.startswith(b"HTTP/1.1 100 "), f"the upload was not admitted: {head!r}"
        self.answer: tuple[int, dict[str, Any]] | None = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(piece, every_s), daemon=True)
        self.thread.start()

    def _run(self, piece: bytes, every_s: float) -> None:
        try:
            while not self.stop.is_set():
                if select.select([self.conn], [], [], every_s)[0]:
                    self.answer = _answer(self.conn)
                    return
                self.conn.sendall(piece)
        except OSError:
            return

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)
        self.conn.close()


@contextmanager
def _uploads(port: int, source: str, n: int, piece: bytes, every_s: float) -> Iterator[list[_Uploader]]:
    """``n`` uploads from ``source``, all admitted; closed after."""
    made: list[_Uploader] = []
    try:
        for _ in range(n):
            made.append(_Uploader(port, source, piece, every_s))
        yield made
    finally:
        for upload in made:
            upload.close()


def _kept_alive(port: int, source: str) -> socket.socket:
    """A connection from ``source`` that was answered once and now sends half the headers of its next
    request (counted by then: the server counts it before it reads anything more)."""
    conn = _connect(port, source)
    conn.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
    assert _answer(conn) == (200, {"status": "live"})
    conn.sendall(b"GET /health/live HTTP/1.1\r\n")
    return conn


def test_headers_that_never_end_are_closed(port: int) -> None:
    with _connect(port, "127.0.0.2") as conn:  # a fresh connection, trickling header lines
        conn.sendall(b"POST /v1/locate HTTP/1.1\r\nHost: x\r\n")
        assert _closed_within(conn, 8.0, trickle=b"X-Slow: 1\r\n"), "a header trickle kept its connection"
    with _kept_alive(port, "127.0.0.2") as conn:  # the same after an answer, on a kept-alive connection
        assert _closed_within(conn, 8.0, trickle=b"X-Slow: 1\r\n")
    with _connect(port, "127.0.0.2") as conn:  # a client that completes its headers is answered
        conn.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _answer(conn) == (200, {"status": "live"})


def test_a_trickling_body_is_408_and_frees_its_upload_slot(port: int, locate_env: dict[str, Any]) -> None:
    with _uploads(port, "127.0.0.3", 2, b"x", 0.3) as slow:  # 3 bytes/s; 4096 a second are due after 2 s
        # The address's share (2) is taken: a third upload is refused at once, its body unread.
        status, body = _post(port, "127.0.0.3", _photo(locate_env))
        assert status == 429 and body["code"] == "UNAVAILABLE" and "too many uploads" in body["error"]
        for upload in slow:
            upload.thread.join(10.0)
            assert upload.answer is not None, "a trickling body was never answered"
            status, body = upload.answer
            assert status == 408 and "the upload is too slow" in body["error"], body
    status, body = _post(port, "127.0.0.3", _photo(locate_env))  # the slots are free again
    assert status == 200 and body["strategy"] == "knn"


def test_uploaders_cannot_lock_another_client_out(port: int, locate_env: dict[str, Any]) -> None:
    # Uploads within the rate rules (10 KiB/s), as many as one address may, and more header trickles than
    # it may keep: with one pipeline slot and no queue, none of it holds a slot another client needs.
    trickles: list[socket.socket] = []
    with _uploads(port, "127.0.0.4", 2, bytes(1024), 0.1) as steady:
        try:
            for _ in range(6):
                trickles.append(_connect(port, "127.0.0.4"))
                trickles[-1].sendall(b"POST /v1/locate HTTP/1.1\r\n")
            status, body = _post(port, "127.0.0.5", _photo(locate_env))
            assert status == 200 and body["strategy"] == "knn"
            # Two more steady uploads from a third address fill the 4 upload slots: one more is refused.
            with _uploads(port, "127.0.0.6", 2, bytes(1024), 0.1) as more:
                status, body = _post(port, "127.0.0.5", _photo(locate_env))
                assert status == 503 and "reads 4 of at most 4 uploads" in body["error"], body
                assert all(upload.answer is None for upload in [*steady, *more]), "an upload was cut"
        finally:
            for conn in trickles:
                conn.close()


def test_an_address_keeps_only_so_many_connections_sending(port: int) -> None:
    held = [_kept_alive(port, "127.0.0.7") for _ in range(4)]
    try:
        with _connect(port, "127.0.0.7") as extra:  # closed before its request is read
            extra.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
            assert _closed_within(extra, 5.0), "a fifth connection from the address was answered"
        with _connect(port, "127.0.0.8") as other:  # another address is served meanwhile
            other.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
            assert _answer(other) == (200, {"status": "live"})
        for conn in held:  # the header time limit closes the four, and frees the address's count
            assert _closed_within(conn, 8.0)
    finally:
        for conn in held:
            conn.close()
    with _connect(port, "127.0.0.7") as conn:
        conn.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _answer(conn) == (200, {"status": "live"})


def test_the_guard_refuses_to_start_on_a_uvicorn_it_does_not_fit(monkeypatch: pytest.MonkeyPatch) -> None:
    from uvicorn.protocols.http.h11_impl import H11Protocol

    from georag.serving.conn_guard import guarded_protocol

    protocol = guarded_protocol(1.0, 4)  # the installed uvicorn passes the probe
    assert (protocol.header_timeout_s, protocol.max_per_client, dict(protocol.sending)) == (1.0, 4, {})
    with monkeypatch.context() as patch:  # a hook gone
        patch.delattr(H11Protocol, "on_response_complete")
        with pytest.raises(GeoRagError, match=r"changed its h11 protocol.*\(on_response_complete\)"):
            guarded_protocol(1.0, 4)
    with monkeypatch.context() as patch:  # a hook that no longer parses the request
        patch.setattr(H11Protocol, "data_received", lambda self, data: None)
        with pytest.raises(GeoRagError, match="the header timer is running when its headers are complete"):
            guarded_protocol(1.0, 4)


def test_the_limits_are_checked() -> None:
    from georag.config import Config, ServeConfig
    from georag.errors import ConfigError

    assert ServeConfig().max_uploads_per_client == 8
    for key, value in (
        ("serve.max_uploads_per_client", 0),
        ("serve.body_timeout_s", 0),
        ("serve.header_timeout_s", -1),
    ):
        with pytest.raises(ConfigError, match=key.split(".")[1]):
            Config().with_values({key: value})
