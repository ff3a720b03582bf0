"""The one retry loop of the LLM clients: exponential backoff with jitter, a server's Retry-After (capped),
and a cancel event that ends a wait at once. `georag.llm.transport.Transport.call` is its caller."""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from georag.errors import ConfigError, LLMError

log = logging.getLogger(__name__)

T = TypeVar("T")


class TransientError(LLMError):
    """A failure worth retrying: connection refused or reset, HTTP 429 / 5xx, a timeout.

    ``retry_after_s`` is the wait the server asked for (a ``Retry-After`` header), else None.
    """

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class RetryPolicy:
    """How a client retries one request."""

    retries: int = 2
    """Extra attempts after the first; default 2."""
    backoff_s: float = 0.5
    """First wait; doubled after each failure, with +-50% jitter; default 0.5 s."""
    max_backoff_s: float = 8.0
    """Cap on one wait, a server's Retry-After included; default 8 s."""

    def __post_init__(self) -> None:
        if isinstance(self.retries, bool) or not isinstance(self.retries, int) or self.retries < 0:
            raise ConfigError(f"retries must be an integer >= 0, got {self.retries!r}")
        if not 0 <= self.backoff_s <= self.max_backoff_s:
            raise ConfigError(
                f"backoff must satisfy 0 <= backoff_s <= max_backoff_s, got {self.backoff_s}, "
                f"{self.max_backoff_s}"
            )

    def wait_s(self, failures: int, retry_after_s: float | None = None) -> float:
        """The wait after the ``failures``-th failure in a row: the jittered backoff, or the server's
        Retry-After when that is longer, never more than ``max_backoff_s`` (plus jitter)."""
        backoff = min(self.backoff_s * 2.0 ** (failures - 1), self.max_backoff_s) * random.uniform(0.5, 1.5)
        if retry_after_s is not None and retry_after_s > 0:
            # Capped, so a hostile or confused Retry-After cannot park a caller.
            return max(backoff, min(retry_after_s, self.max_backoff_s))
        return backoff


def with_retries(
    fn: Callable[[], T], policy: RetryPolicy, what: str, cancelled: threading.Event | None = None
) -> tuple[T, int]:
    """Runs ``fn`` until it returns or raises a non-transient error; returns (result, attempts).

    A `TransientError` is retried up to ``policy.retries`` times; the last one is raised as an `LLMError`
    that says how many attempts were made. Any other `LLMError` is raised at once (e.g. HTTP 400). Once
    ``cancelled`` is set, no further attempt starts and a backoff wait ends at once (LLMError "cancelled").
    """
    stop = cancelled if cancelled is not None else threading.Event()
    for attempt in range(1, policy.retries + 2):
        if stop.is_set():
            raise LLMError(f"{what}: cancelled")
        try:
            return fn(), attempt
        except TransientError as exc:
            if attempt > policy.retries:
                tries = f"{attempt} attempt{'s' if attempt > 1 else ''}"
                raise LLMError(f"{what}: {exc} (gave up after {tries})") from exc
            wait = policy.wait_s(attempt, exc.retry_after_s)
            log.info("%s: %s; retrying in %.2f s (attempt %d)", what, exc, wait, attempt + 1)
            if stop.wait(wait):
                raise LLMError(f"{what}: cancelled") from exc
    raise AssertionError("unreachable")
