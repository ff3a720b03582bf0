"""How a request to `georag serve` gets in: the counts it is admitted under, and its body read at a rate.

An upload and a request whose body is in are counted apart, so that slow uploads cannot take the slots of
requests ready to run. Each refusal comes at once, the body unread:

- a server already holding ``max_requests + max_queue`` requests whose body is in (waiting for one of the
  ``max_requests`` pipeline slots, or running): 503, before the body is read and again once it is in;
- a client address (the TCP peer: a proxy in front is one client) already uploading
  ``max_uploads_per_client`` bodies while half of ``max_uploads`` or more are being read: 429 (below half,
  one client may read more at once: a gateway sending a burst of requests from one address is not refused
  while the server has room, and under pressure every address gets its share);
- ``max_uploads`` bodies being read already, from all clients: 503.

A body must keep coming: no pause longer than ``body_timeout_s`` between two pieces, and after that grace
at least ``min_upload_bytes_per_s`` on average (by t seconds into the body, (t - grace) x rate bytes), or
the request ends with 408 and frees its upload slot; the request's deadline bounds the whole read too.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from georag.config import ServeConfig
from georag.serving.errors import BadRequest, StepTimeout
from georag.serving.forms import TooLarge, too_large

if TYPE_CHECKING:
    from starlette.requests import Request


class Busy(StepTimeout):
    """No room for the request: the server is full, no slot freed within its deadline, too many uploads
    at once, or the server is not ready (answered 503)."""


class TooManyUploads(Busy):
    """The client's address already uploads its share of bodies (answered 429)."""


class SlowBody(BadRequest):
    """The body did not arrive within the request's deadline, or came too slowly (answered 408)."""


class HungUp(BadRequest):
    """The client disconnected before its body arrived (answered 400, though no answer reaches it)."""


@dataclass
class Admission:
    """The counts of one server (on its event loop: no locks needed)."""

    limits: ServeConfig
    held: int = 0
    """Requests whose body is in and not yet answered: waiting for a slot, or running."""
    uploads: int = 0
    """Bodies being read."""
    uploading: Counter[str] = field(default_factory=Counter)
    """Bodies being read per client address (an address is dropped once it reads none)."""
    slots: asyncio.Semaphore | None = None
    """The ``max_requests`` pipeline slots; made at startup, on the serving event loop."""

    def check_room(self) -> None:
        """Busy where the server already holds ``max_requests + max_queue`` requests."""
        cfg = self.limits
        limit = cfg.max_requests + cfg.max_queue
        if self.held >= limit:
            raise Busy(
                f"the server is busy: it already holds {self.held} of at most {limit} requests "
                f"({cfg.max_requests} running + {cfg.max_queue} waiting)"
            )

    @contextmanager
    def upload(self, client: str) -> Iterator[None]:
        """Counts one body being read from ``client`` (an address); refuses it first where the server is
        full (Busy), the client uploads its share already while half the uploads or more are taken
        (TooManyUploads) or the server reads ``max_uploads`` bodies (Busy)."""
        cfg = self.limits
        self.check_room()
        pressed = self.uploads >= cfg.max_uploads // 2
        if pressed and self.uploading[client] >= cfg.max_uploads_per_client:
            raise TooManyUploads(
                f"too many uploads from one address at once (at most {cfg.max_uploads_per_client}): "
                "retry once one has ended"
            )
        if self.uploads >= cfg.max_uploads:
            raise Busy(
                f"the server is busy: it already reads {self.uploads} of at most {cfg.max_uploads} uploads"
            )
        self.uploads += 1
        self.uploading[client] += 1
        try:
            yield
        finally:
            self.uploads -= 1
            self.uploading[client] -= 1
            if not self.uploading[client]:
                del self.uploading[client]

    @contextmanager
    def hold(self) -> Iterator[None]:
        """Counts a request whose body is in while it waits and runs; Busy where the server is full."""
        self.check_room()
        self.held += 1
        try:
            yield
        finally:
            self.held -= 1

    @asynccontextmanager
    async def slot(self, left_s: float) -> AsyncIterator[None]:
        """Holds one of the ``max_requests`` slots, waiting for one at most ``left_s`` (then Busy)."""
        slots = self.slots
        if slots is None:
            raise Busy("the server is not ready or is shutting down")
        if slots.locked():
            try:
                await asyncio.wait_for(slots.acquire(), max(left_s, 0.001))
            except asyncio.TimeoutError:
                raise Busy("the server is busy: the request could not start within its deadline") from None
        else:
            await slots.acquire()
        try:
            yield
        finally:
            slots.release()


async def read_body(request: Request, cap: int, image_cap: int, left_s: float, limits: ServeConfig) -> bytes:
    """The whole body, read under ``limits``'s rate rules (SlowBody) and within ``left_s`` (SlowBody);
    refused (TooLarge, the message naming ``image_cap``) once its pieces pass ``cap`` bytes, and (HungUp)
    if the client hangs up before it ends. BadRequest for an empty body."""
    from starlette.requests import ClientDisconnect

    grace, rate = limits.body_timeout_s, limits.min_upload_bytes_per_s
    start = time.monotonic()
    pieces = request.stream().__aiter__()
    parts: list[bytes] = []
    size = 0
    while True:
        spent = time.monotonic() - start
        on_time = left_s - spent
        wait = min(grace, grace + size / rate - spent, on_time)
        try:
            piece = await asyncio.wait_for(pieces.__anext__(), max(wait, 0.001))
        except StopAsyncIteration:
            break
        except asyncio.TimeoutError:
            if wait >= on_time:
                raise SlowBody("the image did not arrive within the request's deadline") from None
            raise SlowBody(
                f"the upload is too slow: the body must keep coming, at {rate} bytes/s or more after its "
                f"first {grace:g} s"
            ) from None
        except ClientDisconnect:
            raise HungUp("the client disconnected before the image arrived") from None
        size += len(piece)
        if size > cap:
            raise TooLarge(too_large(None, image_cap))
        parts.append(piece)
    if not size:
        raise BadRequest(
            "the body is empty: send the encoded image (curl --data-binary @photo.jpg or -F file=@photo.jpg)"
        )
    return b"".join(parts)
