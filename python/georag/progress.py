"""Progress of long jobs: a tqdm bar on a terminal, a plain line every few seconds in a log, or nothing.

::

    from georag.progress import progress

    with progress(len(photos), desc="locate", noun="photos") as bar:
        for photo in photos:
            ...
            bar.update(1)
            bar.set_postfix(failed=failed)

On a terminal (the stream's ``isatty()``) this is the tqdm bar. Elsewhere (a batch job's log, a pipe,
click's CliRunner) it writes at most one plain line every ``interval_s`` seconds, plus the first and the
final one, e.g. ``locate: 120/860 photos (14.0%), 8.2/s, 3 failed, ETA 1m30s``; the final line ends with
``elapsed 1m45s`` instead of the ETA. ``TQDM_DISABLE=1`` (tqdm's own variable) or `set_quiet` (the
``georag --quiet`` flag) turn progress off everywhere.

The ground floor: imports only the standard library, tqdm (lazily) and georag.errors.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, Protocol, TextIO

from georag.errors import InputError

DEFAULT_INTERVAL_S = 10.0
"""Seconds between two plain lines (not on a terminal)."""

_OFF_VALUES = ("", "0", "false", "no", "off")
_quiet = False


class Progress(Protocol):
    """What the callers use of a progress display (a subset of tqdm's interface)."""

    def update(self, n: float = 1) -> Any: ...

    def set_postfix(self, **fields: Any) -> None: ...

    def close(self) -> None: ...

    def __enter__(self) -> Progress: ...

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> Any: ...


def set_quiet(quiet: bool) -> bool:
    """Turns all progress output of this process off (True) or back on; returns the previous setting."""
    global _quiet
    previous, _quiet = _quiet, bool(quiet)
    return previous


def disabled() -> bool:
    """True when progress is off: `set_quiet(True)`, or ``TQDM_DISABLE`` set to anything but 0 / false / no /
    off (read now, unlike tqdm, which reads it when imported)."""
    return _quiet or os.environ.get("TQDM_DISABLE", "").strip().lower() not in _OFF_VALUES


def progress(
    total: float | None,
    *,
    desc: str,
    unit: str = "img",
    noun: str | None = None,
    initial: float = 0,
    unit_scale: bool = False,
    enabled: bool = True,
    interval_s: float = DEFAULT_INTERVAL_S,
    stream: TextIO | None = None,
    clock: Callable[[], float] = time.monotonic,
    **bar_options: Any,
) -> Progress:
    """A progress display over ``total`` items (None: unknown), starting at ``initial``.

    ``desc`` names the job; ``unit`` is tqdm's unit, ``noun`` what the plain lines call the items (default:
    ``unit``); ``unit_scale`` shows sizes as 1.23M (e.g. bytes with ``unit="B"``). ``enabled=False``, quiet
    or ``TQDM_DISABLE`` give a display that shows nothing. ``stream`` defaults to ``sys.stderr`` (looked up
    now, so a redirected stderr counts); on a terminal the result is a tqdm bar (``bar_options`` go to it),
    else plain lines at most every ``interval_s`` seconds of ``clock``. Raises InputError for a negative
    ``interval_s``.
    """
    if interval_s < 0:
        raise InputError(f"interval_s must be >= 0 seconds, got {interval_s!r}")
    if not enabled or disabled():
        return NullProgress()
    out = sys.stderr if stream is None else stream
    if out is None:  # no stderr at all (pythonw, some daemons)
        return NullProgress()
    if _is_terminal(out):
        from tqdm.auto import tqdm

        bar: Progress = tqdm(
            total=total,
            initial=initial,
            unit=unit,
            unit_scale=unit_scale,
            desc=desc,
            file=out,
            disable=False,  # the decision is made here; tqdm's own TQDM_DISABLE reading is import-time
            **bar_options,
        )
        return bar
    return LineProgress(
        total,
        desc=desc,
        noun=noun or unit,
        initial=initial,
        unit_scale=unit_scale,
        interval_s=interval_s,
        stream=out,
        clock=clock,
    )


class NullProgress:
    """Shows nothing (progress off)."""

    n: float = 0

    def update(self, n: float = 1) -> None:
        self.n += n

    def set_postfix(self, **fields: Any) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> NullProgress:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        pass


class LineProgress:
    """Plain progress lines for logs: the first at once, at most one per ``interval_s``, the final on close.

    Each line is ``DESC: N/TOTAL NOUN (P%), R/s[, VALUE NAME]...[, ETA D | , elapsed D]``; the rate is the
    mean since the start (items counted from ``initial``); without a total only ``DESC: N NOUN, R/s``.
    """

    def __init__(
        self,
        total: float | None,
        *,
        desc: str,
        noun: str,
        initial: float = 0,
        unit_scale: bool = False,
        interval_s: float = DEFAULT_INTERVAL_S,
        stream: TextIO,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total = total
        self.desc = desc
        self.noun = noun
        self.n = initial
        self.initial = initial
        self.unit_scale = unit_scale
        self.interval_s = interval_s
        self.stream = stream
        self.clock = clock
        self.postfix: dict[str, Any] = {}
        self.closed = False
        self.start = clock()
        self.last = self.start
        self._write(self.start, final=False)

    def update(self, n: float = 1) -> None:
        """Counts ``n`` more items; writes a line when ``interval_s`` has passed since the last one."""
        self.n += n
        now = self.clock()
        if now - self.last >= self.interval_s and not self.closed:
            self._write(now, final=False)

    def set_postfix(self, **fields: Any) -> None:
        """Fields shown as ``VALUE NAME`` on the next lines (e.g. ``failed=3``: ``3 failed``)."""
        self.postfix = dict(fields)

    def close(self) -> None:
        """Writes the final line (once)."""
        if not self.closed:
            self._write(self.clock(), final=True)
            self.closed = True

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def line(self, now: float, *, final: bool) -> str:
        """The line for the state at ``now``."""
        elapsed = max(now - self.start, 0.0)
        rate = (self.n - self.initial) / elapsed if elapsed > 0 else 0.0
        parts = [f"{self.desc}: {self._count()}"]
        parts.append(f"{_size(rate)}{self.noun}/s" if self.unit_scale else f"{rate:.1f}/s")
        parts += [f"{value} {name.replace('_', ' ')}" for name, value in self.postfix.items()]
        if final:
            parts.append(f"elapsed {format_duration(elapsed)}")
        elif self.total and rate > 0 and self.n < self.total:
            parts.append(f"ETA {format_duration((self.total - self.n) / rate)}")
        return ", ".join(parts)

    def _count(self) -> str:
        n, total = self.n, self.total
        if self.unit_scale:
            done = f"{_size(n)}{self.noun}" + ("" if total is None else f"/{_size(total)}{self.noun}")
        else:
            done = _number(n) + ("" if total is None else f"/{_number(total)}") + f" {self.noun}"
        if total is None:
            return done
        percent = 100.0 * n / total if total > 0 else 100.0
        return f"{done} ({percent:.1f}%)"

    def _write(self, now: float, *, final: bool) -> None:
        self.last = now
        try:
            self.stream.write(self.line(now, final=final) + "\n")
            self.stream.flush()
        except (OSError, ValueError):  # a closed or broken log stream must not stop the job
            pass


def format_duration(seconds: float) -> str:
    """``45s``, ``1m30s``, ``2h05m`` (rounded to whole seconds)."""
    s = max(round(seconds), 0)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:.1f}"


def _size(x: float) -> str:
    """``x`` with a decimal SI prefix, as tqdm's unit_scale writes it (``1.23M``)."""
    for prefix in ("", "k", "M", "G", "T", "P", "E", "Z"):
        if abs(x) < 999.5:
            if abs(x) < 99.95:
                return f"{x:.2f}{prefix}" if abs(x) < 9.995 else f"{x:.1f}{prefix}"
            return f"{x:.0f}{prefix}"
        x /= 1000
    return f"{x:.1f}Y"


def _is_terminal(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # no isatty, or a closed stream
        return False
