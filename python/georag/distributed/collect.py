"""The driver's side of a Ray build: the streamed per-item rows of the pipeline, grouped into slices."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from georag.distributed.build_stages import EMBEDDING, IMAGE_ID, ITEM, REASON, Batch
from georag.errors import StoreError
from georag.store.build import slice_from_encoded

if TYPE_CHECKING:
    from georag.datasets import DatasetRecords
    from georag.store.build import _Slice

_Outcome = tuple[str, "npt.NDArray[np.float32] | None", str]


def collect_slices(
    batches: Iterable[Batch], records: DatasetRecords, start: int, shard_rows: int, dim: int
) -> Iterator[_Slice]:
    """The slices of items [start, len(records)) in order, each as soon as all of its items came back
    (``dim``: the embeddings' width, for a slice where every item failed).

    Rows may come in any order and in batches of any size; each item must come exactly once (StoreError
    for a repeated item, or for items missing when the stream ends).
    """
    total = len(records)
    pending: dict[int, _Outcome] = {}
    first = start
    for batch in batches:
        for item, outcome in _outcomes(batch):
            if item in pending or not first <= item < total:
                raise StoreError(f"the Ray pipeline returned work item {item} twice or out of range")
            pending[item] = outcome
        while first < total and _complete(pending, first, min(first + shard_rows, total)):
            end = min(first + shard_rows, total)
            yield _make_slice(records, first, end, [pending.pop(i) for i in range(first, end)], dim)
            first = end
    if first < total:
        raise StoreError(
            f"the Ray pipeline ended without work items {first}..{total - 1} ({len(pending)} of them came "
            "back); re-run the same command to resume at the first uncommitted shard"
        )


def _outcomes(batch: Batch) -> Iterator[tuple[int, _Outcome]]:
    reasons = batch[REASON]
    for j, item in enumerate(np.asarray(batch[ITEM]).tolist()):
        reason = str(reasons[j])
        embedding = None if reason else np.asarray(batch[EMBEDDING][j], dtype=np.float32)
        yield int(item), (str(batch[IMAGE_ID][j]), embedding, reason)


def _complete(pending: dict[int, Any], start: int, end: int) -> bool:
    return all(i in pending for i in range(start, end))


def _make_slice(records: DatasetRecords, start: int, end: int, outcomes: list[_Outcome], dim: int) -> _Slice:
    encoded = [(image_id, emb) for image_id, emb, _ in outcomes if emb is not None]
    failed = [(image_id, reason) for image_id, emb, reason in outcomes if emb is None]
    rows = np.stack([e for _, e in encoded]) if encoded else np.zeros((0, dim), dtype=np.float32)
    return slice_from_encoded(records, start, end, [i for i, _ in encoded], rows, failed)
