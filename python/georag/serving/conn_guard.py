"""The connection guard of `georag serve`: uvicorn's h11 protocol, bounding what a client may keep open
without sending anything the app can read.

uvicorn closes an idle keep-alive connection, but a client sending its request headers a byte at a time
keeps its connection forever (every byte re-arms nothing, and the app never sees the request). Here a
connection that has not completed its request headers within ``header_timeout_s`` of connecting, or of its
previous response, is closed; so is one still sending the rest of a body the app answered without reading
(a 413, 429 or 503 before the body) that long after the answer. A body the app reads is the app's to time
(`georag.serving.admission`). At most ``max_per_client`` connections from one address (the TCP peer) may
be sending a request, headers or body, at once: one more is closed as it connects, before it is read.

The guard relies on a few parts of uvicorn's ``H11Protocol`` (its hooks ``connection_made``,
``data_received``, ``on_response_complete``, ``connection_lost`` and its ``conn``, ``transport`` and
``client``); `guarded_protocol` checks them on a probe connection and refuses to start (GeoRagError) where
a uvicorn release changed them, rather than serve unguarded.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import Any, ClassVar

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from georag.errors import GeoRagError

log = logging.getLogger(__name__)

_HOOKS = ("connection_made", "data_received", "on_response_complete", "connection_lost")
_PROBE_PEER = ("127.0.0.1", 1)


class GuardedH11Protocol(H11Protocol):
    """`H11Protocol` with a header time limit and a per-address cap; `guarded_protocol` makes the class
    uvicorn runs, with its settings and its own count of connections per address."""

    header_timeout_s: ClassVar[float] = 10.0
    max_per_client: ClassVar[int] = 32
    sending: ClassVar[Counter[str]] = Counter()
    """Connections sending a request, per client address (an address is dropped at zero)."""

    _timer: asyncio.TimerHandle | None = None
    _counted: bool = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if self.sending[self._address()] >= self.max_per_client:
            log.debug("georag serve: a connection over the per-client cap was closed")
            self.transport.close()
            return
        self._watch()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._arm(False)
        self._count(False)

    def _address(self) -> str:
        return self.client[0] if self.client else ""

    def _watch(self) -> None:
        """Counts and times the connection by what it waits for: the client's headers, or the rest of a
        body the app answered without reading (timed), or a body the app reads (counted only)."""
        if self.transport.is_closing():
            self._arm(False)
            self._count(False)
            return
        theirs, ours = self.conn.their_state, self.conn.our_state
        leftover = theirs is h11.SEND_BODY and ours in (h11.DONE, h11.MUST_CLOSE)
        self._arm(theirs is h11.IDLE or leftover)
        self._count(theirs is h11.IDLE or theirs is h11.SEND_BODY)

    def _arm(self, on: bool) -> None:
        """Starts the header timer where it is not running (data arriving never restarts it), or stops it."""
        if on and self._timer is None:
            self._timer = self.loop.call_later(self.header_timeout_s, self._expired)
        elif not on and self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _count(self, on: bool) -> None:
        if on != self._counted:
            address = self._address()
            self.sending[address] += 1 if on else -1
            if self.sending[address] <= 0:
                del self.sending[address]
            self._counted = on

    def _expired(self) -> None:
        self._timer = None
        if not self.transport.is_closing():
            log.debug("georag serve: a connection that did not send its request in time was closed")
            self.transport.close()


def guarded_protocol(header_timeout_s: float, max_per_client: int) -> type[GuardedH11Protocol]:
    """The protocol class to give ``uvicorn.run(..., http=...)``: `GuardedH11Protocol` with these settings
    and a count of its own. GeoRagError where the installed uvicorn no longer has what the guard needs."""
    settings = {"header_timeout_s": header_timeout_s, "max_per_client": max_per_client, "sending": Counter()}
    protocol = type("GuardedH11Protocol", (GuardedH11Protocol,), settings)
    check_uvicorn(protocol)
    return protocol


def check_uvicorn(protocol: type[GuardedH11Protocol]) -> None:
    """Runs ``protocol`` on a probe connection (no socket): one request, answered, then a hang-up, its timer
    and count checked at each step. GeoRagError saying what changed."""
    import uvicorn

    missing = [name for name in _HOOKS if not callable(getattr(H11Protocol, name, None))]
    try:
        if not missing:
            asyncio.run(_probe(protocol))
    except (AttributeError, TypeError, AssertionError, h11.ProtocolError) as exc:
        missing.append(f"{type(exc).__name__}: {exc}")
    if missing:
        raise GeoRagError(
            f"uvicorn {uvicorn.__version__} changed its h11 protocol, which georag serve's connection guard "
            f"relies on ({'; '.join(missing)}); install the uvicorn release georag was tested with (0.55)"
        )


async def _probe(protocol: type[GuardedH11Protocol]) -> None:
    from uvicorn.config import Config
    from uvicorn.server import ServerState

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    def expect(timed: bool, counted: bool, when: str) -> None:
        assert (conn._timer is not None) == timed, f"the header timer is {'not ' * timed}running when {when}"
        assert (_PROBE_PEER[0] in protocol.sending) == counted, f"the count is wrong when {when}"

    server = ServerState()
    conn = protocol(Config(app, log_config=None, proxy_headers=False), server, {})
    conn.connection_made(_ProbeTransport())
    expect(True, True, "a connection is made")
    conn.data_received(b"GET / HTTP/1.1\r\nHost: probe\r\n")
    expect(True, True, "its headers are incomplete")
    conn.data_received(b"\r\n")
    expect(False, False, "its headers are complete")
    await asyncio.gather(*server.tasks)
    expect(True, True, "it was answered (keep-alive)")
    conn.connection_lost(None)
    expect(False, False, "it hung up")


class _ProbeTransport(asyncio.Transport):
    """A transport without a socket: the peer `_PROBE_PEER`, nothing written."""

    def __init__(self) -> None:
        super().__init__()
        self._closing = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": _PROBE_PEER, "sockname": ("127.0.0.1", 2)}.get(name, default)

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        self._closing = True

    def write(self, data: Any) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass
