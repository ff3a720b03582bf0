"""The one transport under every LLM client; a client keeps only its wire format (URL, request, response).

A `Transport` owns what the OpenAI-compatible and the Triton clients share:

* slots: at most ``concurrency`` attempts open at once across threads (a retry's wait holds none);
* state: `Transport.close` and `Transport.cancel` (no request or retry starts any more, a backoff wait ends at
  once; an attempt in flight ends within its deadline);
* abandoning one call: a caller that stops waiting for a `generate` running on another thread fires that
  call's `Abort` (`abortable` binds it to the call); the attempt in flight ends AT ONCE (its socket is shut,
  a gRPC stream cancelled), no retry starts, and the thread is free (`CallAbandoned`);
* retries (`georag.llm.retry`, the only retry loop): a `TransientError` (connection refused or reset, a
  timeout, HTTP 429/500/502/503/504, gRPC UNAVAILABLE...) is retried with backoff and jitter, a server's
  ``Retry-After`` honoured up to ``policy.max_backoff_s``; any other `LLMError` is raised at once;
* the attempt deadline: `Transport.post` bounds a whole HTTP exchange (connect, send, headers, body) by
  ``timeout_s``, so a server trickling bytes cannot extend it; `Transport.deadline` gives other waits (gRPC)
  the same bound and `Transport.timed_out` the same error;
* limits on what a server says: a body over `MAX_BODY_BYTES` is refused, a message is cut to `MESSAGE_CHARS`
  after the secrets given to the transport are masked (`Transport.short`), so no part of one survives a cut;
* the `Completion`: answers with an echoed prompt cut off (`cut_echo`), flagged and logged.

`Transport.post` is the HTTP POST of both clients (stdlib ``http.client``, HTTP and HTTPS, one connection
per attempt); it returns a 2xx body as text and raises for everything else. `Transport.get` is the same for a
GET (the clients' ``check``: a model listing, a readiness endpoint).
"""

from __future__ import annotations

import contextlib
import contextvars
import email.utils
import http.client
import json
import logging
import math
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, TypedDict, TypeVar

from georag._version import __version__
from georag.config import LLMConfig
from georag.errors import ConfigError, LLMError
from georag.llm.retry import RetryPolicy, TransientError, with_retries
from georag.types import Completion

log = logging.getLogger(__name__)

T = TypeVar("T")
C = TypeVar("C", bound="TransportClient")

MAX_BODY_BYTES = 32 << 20
"""Largest response body read (n answers are kilobytes; anything this large is not an answer)."""
MESSAGE_CHARS = 300
"""A server's message is cut to this many characters in errors and logs."""
TRANSIENT_HTTP = frozenset({429, 500, 502, 503, 504})
"""HTTP statuses that are retried."""

_READ_CHUNK = 1 << 16
_DEFAULTS = LLMConfig()
_DEFAULT_POLICY = RetryPolicy(retries=_DEFAULTS.retries)


class Limits(TypedDict, total=False):
    """The limits every client on a `Transport` takes as keywords (each optional; defaults: `LLMConfig`'s)."""

    timeout_s: float
    """Time limit of each attempt in seconds (the whole HTTP exchange, the gRPC wait); default 60."""
    policy: RetryPolicy
    """How transient failures are retried; default `RetryPolicy()` (2 retries)."""
    concurrency: int
    """Requests open at once across threads; default 16."""


class CallAbandoned(LLMError):
    """The caller fired the call's `Abort`: it no longer waits for the answer."""


class Abort:
    """Ends one call of a client from another thread (thread-safe; fires once).

    Bind it to the call with `abortable` on the thread that runs the call; `fire` from any thread then
    shuts the attempt in flight (its socket, its gRPC stream) and stops the call's retries and slot wait.
    """

    def __init__(self) -> None:
        self.event = threading.Event()
        """Set once fired."""
        self._lock = threading.Lock()
        self._hooks: list[Callable[[], None]] = []

    @property
    def fired(self) -> bool:
        return self.event.is_set()

    def fire(self) -> None:
        """Ends the call: runs what its attempt in flight registered (`on_fire`)."""
        with self._lock:
            if self.event.is_set():
                return
            self.event.set()
            hooks = list(self._hooks)
        for hook in hooks:
            try:
                hook()
            except Exception as exc:  # ending a call must not fail the caller that gave up on it
                log.debug("aborting a call: %r", exc)

    @contextlib.contextmanager
    def on_fire(self, hook: Callable[[], None]) -> Iterator[None]:
        """Runs ``hook`` if the abort fires during the block (at once if it already has)."""
        with self._lock:
            fired = self.event.is_set()
            if not fired:
                self._hooks.append(hook)
        if fired:
            hook()
        try:
            yield
        finally:
            with self._lock:
                if hook in self._hooks:
                    self._hooks.remove(hook)


_ABORT: contextvars.ContextVar[Abort | None] = contextvars.ContextVar("georag_llm_abort", default=None)


@contextlib.contextmanager
def abortable(abort: Abort) -> Iterator[None]:
    """Binds ``abort`` to the client calls made in the block on this thread (see `Abort`)."""
    token = _ABORT.set(abort)
    try:
        yield
    finally:
        _ABORT.reset(token)


def current_abort() -> Abort | None:
    """The `Abort` bound to this thread's call, if any."""
    return _ABORT.get()


class HttpStatusError(LLMError):
    """A server answered a status that is not retried (400, 401, 404...); ``status`` says which."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class HttpTarget:
    """Where `Transport.post` connects."""

    host: str
    port: int
    https: bool = False


class Deadline:
    """The end of one attempt, ``seconds`` from now (monotonic clock)."""

    def __init__(self, seconds: float) -> None:
        self._end = time.monotonic() + seconds

    def left(self) -> float:
        """Seconds until the deadline, 0 once passed."""
        return max(self._end - time.monotonic(), 0.0)


class Transport:
    """Slots, state, retries, deadlines and limits of one LLM client (thread-safe)."""

    def __init__(
        self,
        name: str,
        *,
        timeout_s: float = _DEFAULTS.timeout_s,
        policy: RetryPolicy = _DEFAULT_POLICY,
        concurrency: int = _DEFAULTS.concurrency,
        secrets: Iterable[str | None] = (),
    ) -> None:
        """``name`` (no credentials) prefixes errors and logs; ``timeout_s`` bounds each attempt and
        ``concurrency`` attempts run at once (see `Limits`); ``secrets`` are masked in whatever a server says
        back. ConfigError for a bad ``timeout_s`` or ``concurrency``."""
        if isinstance(timeout_s, bool) or not isinstance(timeout_s, int | float) or not timeout_s > 0:
            raise ConfigError(f"timeout_s must be a positive number of seconds, got {timeout_s!r}")
        if not math.isfinite(timeout_s):
            raise ConfigError(f"timeout_s must be finite, got {timeout_s!r}")
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ConfigError(f"concurrency must be an integer >= 1, got {concurrency!r}")
        self._name = name
        self._timeout_s = float(timeout_s)
        self._policy = policy
        self._concurrency = concurrency
        self._secrets = tuple(s for s in secrets if s)
        self._slots = threading.BoundedSemaphore(concurrency)
        self._cancelled = threading.Event()
        self._closed = False
        self._lock = threading.Lock()
        self._ssl: ssl.SSLContext | None = None
        self._headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": f"georag/{__version__}",
        }

    @property
    def name(self) -> str:
        return self._name

    @property
    def timeout_s(self) -> float:
        return self._timeout_s

    @property
    def concurrency(self) -> int:
        return self._concurrency

    @property
    def closed(self) -> bool:
        return self._closed

    def cancel(self) -> None:
        """No request or retry starts any more (LLMError "cancelled"); a backoff wait ends at once."""
        self._cancelled.set()

    def close(self) -> None:
        """Cancels, and marks the transport closed (LLMError "closed" from then on)."""
        self._closed = True
        self._cancelled.set()

    # -- attempts --

    def call(self, attempt: Callable[[], T], what: str | None = None) -> tuple[T, int]:
        """Runs ``attempt`` in a slot, retrying it on `TransientError`; returns (result, attempts).

        ``what`` names the request in errors and logs (default: the transport's name). Under `abortable`,
        firing the abort ends the call (`CallAbandoned`); its backoff waits end on the abort (not on
        `cancel`, which still stops the next attempt).
        """
        abort = current_abort()
        self._check_open(abort)

        def in_slot() -> T:
            with self._slot(abort):
                self._check_open(abort)  # the client may have been cancelled while this waited for a slot
                return attempt()

        stop = abort.event if abort is not None else self._cancelled
        return with_retries(in_slot, self._policy, what or self._name, stop)

    @contextlib.contextmanager
    def _slot(self, abort: Abort | None) -> Iterator[None]:
        """One of the ``concurrency`` slots; the wait for it ends when ``abort`` fires."""
        if abort is None:
            self._slots.acquire()
        else:
            while not self._slots.acquire(timeout=0.05):
                if abort.fired:
                    raise self.abandoned()
        try:
            yield
        finally:
            self._slots.release()

    def _check_open(self, abort: Abort | None = None) -> None:
        if self._closed:
            raise LLMError(f"{self._name}: the client is closed")
        if self._cancelled.is_set():
            raise LLMError(f"{self._name}: cancelled")
        if abort is not None and abort.fired:
            raise self.abandoned()

    def abandoned(self) -> CallAbandoned:
        """The error of a call whose caller fired its `Abort` (not retried)."""
        return CallAbandoned(f"{self._name}: abandoned by its caller")

    def deadline(self) -> Deadline:
        """The deadline of an attempt starting now."""
        return Deadline(self._timeout_s)

    def timed_out(self) -> TransientError:
        """The error of an attempt past its deadline (transient: the next attempt may be quicker)."""
        return TransientError(f"timed out: no complete answer within {self._timeout_s:g} s")

    # -- errors --

    def scrub(self, text: str) -> str:
        """``text`` with the secrets masked (servers quote a wrong key back in their error messages)."""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def short(self, text: object, limit: int = MESSAGE_CHARS) -> str:
        """What a server said, fit for an error: secrets masked first, then whitespace folded and cut."""
        return truncate(self.scrub(str(text)), limit)

    def error(self, message: str) -> LLMError:
        """A failure that is not retried, prefixed with the client's name."""
        return LLMError(f"{self._name}: {self.scrub(message)}")

    def failure(self, message: str, *, transient: bool) -> LLMError:
        """`TransientError` (retried; the retry loop names the request) or `error`."""
        return TransientError(self.scrub(message)) if transient else self.error(message)

    # -- HTTP --

    def post(
        self, target: HttpTarget, path: str, body: bytes, headers: Mapping[str, str] | None = None
    ) -> str:
        """One HTTP POST attempt of a JSON ``body``; returns the 2xx answer as text (secrets masked).

        HTTP 429/5xx and connection failures raise `TransientError` (with the server's Retry-After);
        any other status, a body over `MAX_BODY_BYTES` or a TLS failure raise `LLMError` with the server's
        message. The whole exchange ends within ``timeout_s``.
        """
        return self._request("POST", target, path, body, headers)

    def get(self, target: HttpTarget, path: str, headers: Mapping[str, str] | None = None) -> str:
        """One HTTP GET attempt (a model listing, a readiness probe); errors as `post`'s, under the same
        deadline and body cap."""
        return self._request("GET", target, path, None, headers)

    def _request(
        self,
        method: str,
        target: HttpTarget,
        path: str,
        body: bytes | None,
        headers: Mapping[str, str] | None,
    ) -> str:
        sent = {**self._headers, **(headers or {})}
        if body is None:
            sent.pop("Content-Type", None)
        status, retry_after, data = self._exchange(target, path, body, sent, method=method)
        if data is None:
            raise self.error(f"HTTP {status}: response larger than {MAX_BODY_BYTES} bytes")
        # Masked before anything is cut to length, so no part of a secret can survive the cut.
        text = self.scrub(data.decode("utf-8", errors="replace"))
        if 200 <= status < 300:
            return text
        message = f"HTTP {status}: {self.short(error_message(text))}"
        if status in TRANSIENT_HTTP:
            raise TransientError(message, retry_after_s(retry_after))
        raise HttpStatusError(f"{self._name}: {self.scrub(message)}", status)

    def _exchange(
        self,
        target: HttpTarget,
        path: str,
        body: bytes | None,
        headers: Mapping[str, str],
        *,
        method: str = "POST",
    ) -> tuple[int, str | None, bytes | None]:
        """(status, Retry-After, body or None when over the cap) of one exchange under the deadline."""
        conn: http.client.HTTPConnection
        if target.https:
            conn = http.client.HTTPSConnection(
                target.host, target.port, timeout=self._timeout_s, context=self._context()
            )
        else:
            conn = http.client.HTTPConnection(target.host, target.port, timeout=self._timeout_s)
        # The socket timeout bounds each step; the watchdog bounds the whole attempt (a server trickling
        # bytes would otherwise keep it alive): at the deadline it shuts the socket under the reader. The
        # call's abort (when its caller gives up) does the same at once.
        expired = threading.Event()
        aborted = threading.Event()
        guard = threading.Lock()
        done = False

        def shut(flag: threading.Event) -> None:
            with guard:
                if done:
                    return
                flag.set()
                if conn.sock is not None:
                    with contextlib.suppress(OSError):
                        conn.sock.shutdown(socket.SHUT_RDWR)  # wakes a blocked read, unlike close()

        def ended() -> None:
            """Raises when the attempt was shut (a shut socket reads as the end of the body)."""
            if aborted.is_set():
                raise self.abandoned()
            if expired.is_set():
                raise self.timed_out()

        abort = current_abort()
        watchdog = threading.Timer(self._timeout_s, shut, (expired,))
        watchdog.daemon = True
        watchdog.start()
        try:
            with abort.on_fire(lambda: shut(aborted)) if abort is not None else contextlib.nullcontext():
                conn.connect()
                ended()  # shut during the connect, before there was a socket to shut
                log.debug("%s: %s %s (%d bytes)", self._name, method, path, len(body or b""))
                conn.request(method, path, body=body, headers=dict(headers))
                response = conn.getresponse()
                data = _read_capped(response)
                ended()
                return response.status, response.getheader("Retry-After"), data
        except (OSError, http.client.HTTPException) as exc:
            # Refused, reset, timed out, cut mid-response, or shut by the watchdog or the abort.
            if aborted.is_set():
                raise self.abandoned() from exc
            if expired.is_set() or isinstance(exc, TimeoutError):
                raise self.timed_out() from exc
            if isinstance(exc, ssl.SSLError):
                # Certificate or protocol mismatch: the same next time.
                raise self.error(f"TLS error: {self.short(exc)}") from exc
            raise TransientError(self.short(f"{type(exc).__name__}: {exc}")) from exc
        except (ValueError, UnicodeError) as exc:
            # http.client refuses a malformed header or URL; its message could quote a secret.
            raise self.error(f"the request could not be sent ({type(exc).__name__})") from None
        finally:
            with guard:
                done = True
            watchdog.cancel()
            conn.close()

    def _context(self) -> ssl.SSLContext:
        with self._lock:  # built once; an SSLContext is thread-safe once built
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            return self._ssl

    # -- answers --

    def completion(self, texts: Sequence[str], prompt: str, seconds: float, attempts: int) -> Completion:
        """`completion`, with a warning when the server echoed ``prompt``."""
        done = completion(texts, prompt, seconds, attempts)
        if done.echoed:
            log.warning("%s: the server echoed the prompt; cut it from the answers", self._name)
        return done


class TransportClient:
    """What every client on a `Transport` shares: its name, `cancel`, `close`, use as a context manager."""

    _transport: Transport

    @property
    def name(self) -> str:
        """The endpoint (and model) as a URL, never with credentials."""
        return self._transport.name

    def cancel(self) -> None:
        """Stops retries and new requests (they fail with LLMError "cancelled"); an attempt in flight ends
        within its deadline."""
        self._transport.cancel()

    def close(self) -> None:
        """Cancels and marks the client closed (later requests raise LLMError "closed")."""
        self._transport.close()

    def __enter__(self: C) -> C:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def cut_echo(text: str, prompt: str) -> tuple[str, bool]:
    """``text`` without an echoed ``prompt`` (cut with everything before it, such as a BOS token, and the
    whitespace after it), and whether there was one."""
    head = prompt.strip()
    at = text.find(head) if head else -1
    if at < 0:
        return text, False
    return text[at + len(head) :].lstrip(), True


def completion(texts: Sequence[str], prompt: str, seconds: float, attempts: int = 1) -> Completion:
    """The answers ``texts`` with an echoed ``prompt`` cut off (``echoed`` says whether one was)."""
    cut = [cut_echo(text, prompt) for text in texts]
    return Completion(
        texts=tuple(text for text, _ in cut),
        seconds=seconds,
        attempts=attempts,
        echoed=any(was_echoed for _, was_echoed in cut),
    )


def truncate(text: str, limit: int = MESSAGE_CHARS) -> str:
    """``text`` with whitespace folded, cut to ``limit`` characters (``...`` marks a cut)."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."


def error_message(raw: str) -> str:
    """A server's error text from its body: ``{"error": {"message"}}`` (OpenAI), ``{"error": "..."}``
    (Triton), ``{"message"}``, ``{"detail"}``, else the body itself; not yet cut to length."""
    try:
        doc = json.loads(raw)
    except ValueError:
        return raw.strip() or "(empty body)"
    message: Any = doc
    if isinstance(doc, dict):
        err = doc.get("error")
        if isinstance(err, dict) and "message" in err:
            message = err["message"]
        elif isinstance(err, str):
            message = err
        elif "message" in doc:
            message = doc["message"]
        elif "detail" in doc:
            message = doc["detail"]
    if not isinstance(message, str):
        message = json.dumps(message)
    return message.strip() or "(empty message)"


def retry_after_s(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta seconds or an HTTP date); None if absent or unreadable."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        seconds = (when - datetime.now(timezone.utc)).total_seconds()
    return seconds if math.isfinite(seconds) and seconds > 0 else None


def _read_capped(response: http.client.HTTPResponse) -> bytes | None:
    """The whole body, or None when it is over the cap; a body cut short raises IncompleteRead."""
    declared = response.length  # None without a Content-Length; reading lowers it as it goes
    if declared is not None and declared > MAX_BODY_BYTES:
        return None
    chunks = []
    total = 0
    # Bounded chunks cap memory against a server that streams without end.
    while chunk := response.read1(_READ_CHUNK):
        chunks.append(chunk)
        total += len(chunk)
        if total > MAX_BODY_BYTES:
            return None
    data = b"".join(chunks)
    if declared is not None and len(data) < declared:
        # A short body reads as an early end, not an error; a retry may get it whole.
        raise http.client.IncompleteRead(data, declared - len(data))
    return data
