"""Retries with exponential backoff and jitter for transient LLM request failures, under a time budget."""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from georag.errors import LLMError

log = logging.getLogger(__name__)

T = TypeVar("T")


class TransientError(LLMError):
    """A failure worth retrying: connection refused or reset, HTTP 429 / 5xx, a timeout."""


@dataclass(frozen=True)
class RetryPolicy:
    """How a client retries one request."""

    retries: int = 2
    """Extra attempts after the first; default 2."""
    backoff_s: float = 0.5
    """First wait; doubled after each failure, with +-50% jitter; default 0.5 s."""
    max_backoff_s: float = 8.0
    """Cap on one wait; default 8 s."""


def with_retries(
    fn: Callable[[], T], policy: RetryPolicy, what: str, cancelled: threading.Event | None = None
) -> tuple[T, int]:
    """Runs ``fn`` until it returns or raises a non-transient error; returns (result, attempts).

    A `TransientError` is retried up to ``policy.retries`` times; the last one is raised as an `LLMError`
    that says how many attempts were made. Any other `LLMError` is raised at once (e.g. HTTP 400). Once
    ``cancelled`` is set, no further attempt starts and a backoff wait ends at once (LLMError "cancelled").
    """
    delay = policy.backoff_s
    for attempt in range(1, policy.retries + 2):
        if cancelled is not None and cancelled.is_set():
            raise LLMError(f"{what}: cancelled")
        try:
            return fn(), attempt
        except TransientError as exc:
            if attempt > policy.retries:
                raise LLMError(f"{what}: {exc} (gave up after {attempt} attempts)") from exc
            wait = min(delay, policy.max_backoff_s) * random.uniform(0.5, 1.5)
            log.info("%s: %s; retrying in %.2f s (attempt %d)", what, exc, wait, attempt + 1)
            if cancelled is not None and cancelled.wait(wait):
                raise LLMError(f"{what}: cancelled") from exc
            if cancelled is None:
                threading.Event().wait(wait)
            delay *= 2
    raise AssertionError("unreachable")
