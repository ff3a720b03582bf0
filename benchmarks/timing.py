"""Shared by the benchmark scripts: progress lines on stderr and the median-of-repeats timer."""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable


def log(msg: str) -> None:
    """A progress line on stderr (stdout carries the table)."""
    print(msg, file=sys.stderr, flush=True)


def median_s(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``fn`` in seconds over ``repeats`` runs, after one untimed warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def paired_median_s(fns: list[Callable[[], object]], repeats: int) -> list[float]:
    """Median wall time of each of ``fns``, run interleaved (a, b, a, b, ...) so drift hits all alike."""
    for fn in fns:
        fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, acc in zip(fns, times, strict=True):
            t0 = time.perf_counter()
            fn()
            acc.append(time.perf_counter() - t0)
    return [statistics.median(t) for t in times]
