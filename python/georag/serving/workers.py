"""Lanes: the served pipeline's own bounded thread pools, one per kind of blocking work.

A blocking call (decoding, a BLS call, an LLM request, the strategy's parsing) never runs on the event
loop's default executor, which every other caller shares and which holds only min(32, cores + 4) threads:
each kind of work has a `Lane` of its own, sized from the config, so that calls of one kind (an LLM that
stalls) can never take the threads another kind needs (a knn request's encoder and retrieval calls).

A call the pipeline stops waiting for (its step's limit or the request's deadline passed) is cancelled
if it has not started; one already running keeps its thread until it returns (abandoned), so the caller
should also end it (`georag.llm.transport.Abort` for an LLM client). A lane whose every thread is held by
an abandoned call refuses new calls at once (DependencyDown: the model has not answered any of them)
instead of queueing them to their limit; ``queue=False`` makes a full lane refuse at once whatever holds
it (the local LLM lane, sized for every call the running requests can make at once).
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from georag.serving.errors import DependencyDown

T = TypeVar("T")

MAX_CPU_THREADS = 8
"""Most threads of a CPU-bound lane (decoding, the strategy's own work); default 8."""


def cpu_threads(max_requests: int) -> int:
    """Threads for CPU-bound work: the cores this process may use, at most ``max_requests`` and
    `MAX_CPU_THREADS` (more threads than cores only add memory: each decode holds a whole image)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(cores, max_requests, MAX_CPU_THREADS))


class Lane:
    """A bounded pool of threads for one kind of blocking call, awaited from the event loop."""

    def __init__(self, name: str, threads: int, *, queue: bool = True, what: str | None = None) -> None:
        """``threads`` run at once; with ``queue`` the others wait in line (under the caller's time limit),
        without it a call finding every thread busy raises DependencyDown naming ``what`` (the model)."""
        if threads < 1:
            raise ValueError(f"a lane needs at least 1 thread, got {threads}")
        self.name, self.threads, self.queue, self.what = name, threads, queue, what or name
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix=f"georag-{name}")
        self._lock = threading.Lock()
        self._held = 0
        self._abandoned = 0

    @property
    def held(self) -> int:
        """Calls running or waiting in line right now (abandoned ones still running included)."""
        return self._held

    @property
    def abandoned(self) -> int:
        """Calls still running that nobody waits for any more."""
        return self._abandoned

    async def run(self, fn: Callable[[], T]) -> T:
        """``fn()`` on one of the lane's threads. Cancelling the await cancels a call still in line; one
        running goes on as abandoned until it returns."""
        with self._lock:
            if self._abandoned >= self.threads:
                raise DependencyDown(
                    f"the {self.what} is not answering: it holds all {self.threads} calls this server "
                    "makes to it at once, unanswered past their time limit"
                )
            if not self.queue and self._held >= self.threads:
                raise DependencyDown(
                    f"the {self.what} is not answering: all {self.threads} of its calls this server "
                    "allows are waiting for it"
                )
            self._held += 1
        try:
            future = self._pool.submit(fn)
        except BaseException:
            self._release(held=1)
            raise
        future.add_done_callback(lambda _: self._release(held=1))
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            if not future.cancelled():  # running: it holds its thread until it returns
                with self._lock:
                    self._abandoned += 1
                future.add_done_callback(lambda _: self._release(abandoned=1))
            raise

    def _release(self, *, held: int = 0, abandoned: int = 0) -> None:
        with self._lock:
            self._held -= held
            self._abandoned -= abandoned

    def close(self) -> None:
        """Stops taking calls; those in line are cancelled, running ones end on their own."""
        self._pool.shutdown(wait=False, cancel_futures=True)
