"""iter_batches: decode and preprocess images on a thread pool, in input order, into encoder batches.

Pillow releases the GIL while it decodes and resizes, so threads give real parallelism without the
pickling cost of processes. Read-ahead is bounded (``prefetch_batches`` batches of work in flight), so
the memory used does not grow with the number of inputs, and ``sources`` is consumed lazily. A bad
item becomes an ``ItemFailure`` in its batch; it never stops the batch or the job.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import count

import numpy as np

from georag.encoder.images import ImageSource, load_image
from georag.encoder.preprocess import ProcessorSpec
from georag.errors import ImageLoadError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ItemFailure:
    """One input that produced no pixels."""

    id: str
    """The input's id."""
    reason: str
    """Why it failed, one line for a log or a report."""


@dataclass(frozen=True)
class Batch:
    """Up to ``batch_size`` consecutive inputs: the pixels of those that decoded, and the failures."""

    pixels: np.ndarray
    """(n, 3, H, W) float32, C-contiguous; n may be 0 when every item of the batch failed."""
    ids: list[str] = field(default_factory=list)
    """The ids of the n decoded items, in input order (row i of ``pixels`` is ``ids[i]``)."""
    failures: list[ItemFailure] = field(default_factory=list)
    """The items of this batch that failed, in input order."""


_Outcome = np.ndarray | ItemFailure


def iter_batches(
    sources: Iterable[ImageSource],
    spec: ProcessorSpec,
    batch_size: int,
    *,
    ids: Iterable[str] | None = None,
    workers: int = 0,
    prefetch_batches: int = 2,
) -> Iterator[Batch]:
    """Yield ``Batch``es of ``batch_size`` consecutive inputs (the last one may be shorter).

    ``ids`` (same length as ``sources``) names the inputs; by default a path's id is the path string
    and a bytes or file-object input's id is its index, as a string. ``workers`` threads decode
    (0 means ``os.cpu_count()``); at most ``batch_size * prefetch_batches`` items are read ahead of
    the batch being assembled. Closing the generator early cancels the work not yet started.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ValueError(f"workers must be an integer >= 0 (0 = one per CPU), got {workers!r}")
    if isinstance(prefetch_batches, bool) or not isinstance(prefetch_batches, int) or prefetch_batches < 1:
        raise ValueError(f"prefetch_batches must be an integer >= 1, got {prefetch_batches!r}")
    return _generate(sources, spec, batch_size, ids, workers or os.cpu_count() or 1, prefetch_batches)


def _generate(
    sources: Iterable[ImageSource],
    spec: ProcessorSpec,
    batch_size: int,
    ids: Iterable[str] | None,
    workers: int,
    prefetch_batches: int,
) -> Iterator[Batch]:
    """The generator behind ``iter_batches`` (arguments already validated)."""
    items = _with_ids(sources, ids)
    max_in_flight = batch_size * prefetch_batches
    pending: deque[tuple[str, Future[_Outcome]]] = deque()
    executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="georag-decode")
    try:
        exhausted = False
        while True:
            while not exhausted and len(pending) < max_in_flight:
                nxt = next(items, None)
                if nxt is None:
                    exhausted = True
                else:
                    item_id, source = nxt
                    pending.append((item_id, executor.submit(_process, item_id, source, spec)))
            if not pending:
                return
            take = min(batch_size, len(pending))  # short only for the last batch: max_in_flight >= batch_size
            yield _assemble([pending.popleft() for _ in range(take)], spec)
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


def _with_ids(sources: Iterable[ImageSource], ids: Iterable[str] | None) -> Iterator[tuple[str, ImageSource]]:
    """Pair every source with its id, lazily; a length mismatch with ``ids`` is a ValueError."""
    if ids is None:
        for index, source in enumerate(sources):
            yield _default_id(source, index), source
        return
    id_iter = iter(ids)
    for index, source in zip(count(), sources):
        item_id = next(id_iter, None)
        if item_id is None:
            raise ValueError(f"ids has fewer entries ({index}) than sources")
        yield str(item_id), source
    if next(id_iter, None) is not None:
        raise ValueError("ids has more entries than sources")


def _default_id(source: ImageSource, index: int) -> str:
    """The path string for a path, the index for bytes and file objects."""
    if isinstance(source, (str, os.PathLike)):
        return os.fsdecode(source)
    return str(index)


def _process(item_id: str, source: ImageSource, spec: ProcessorSpec) -> _Outcome:
    """Decode and preprocess one item on a worker thread; every failure becomes an ItemFailure."""
    try:
        pixels = spec(load_image(source))
    except ImageLoadError as exc:
        return ItemFailure(item_id, str(exc))
    except Exception as exc:  # one item must never take the batch down
        logger.warning("unexpected error preprocessing %s", item_id, exc_info=True)
        return ItemFailure(item_id, f"{type(exc).__name__}: {exc}")
    expected = (3, spec.height, spec.width)
    if pixels.shape != expected:
        return ItemFailure(
            item_id,
            f"image is {pixels.shape[2]}x{pixels.shape[1]}, the batch needs {spec.width}x{spec.height}"
            " (do_resize is off)",
        )
    return pixels


def _assemble(done: list[tuple[str, Future[_Outcome]]], spec: ProcessorSpec) -> Batch:
    """Wait for a batch's items, in order, and stack the successes."""
    arrays: list[np.ndarray] = []
    ok_ids: list[str] = []
    failures: list[ItemFailure] = []
    for item_id, future in done:
        outcome = future.result()
        if isinstance(outcome, ItemFailure):
            failures.append(outcome)
        else:
            arrays.append(outcome)
            ok_ids.append(item_id)
    empty = (0, 3, spec.height, spec.width)
    pixels = np.stack(arrays) if arrays else np.empty(empty, dtype=np.float32)
    return Batch(pixels=pixels, ids=ok_ids, failures=failures)
