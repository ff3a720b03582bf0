"""Sharded search arithmetic: split row ranges among shards, and merge the shards' neighbors exactly.

Each shard returns its own k best near and k worst far rows (global ids). The union's k best near rows are
among the shards' k best (a row beaten by k rows of its own shard is beaten by k rows of the union), so
sorting the concatenated lists by (descending score, id) for near and (ascending score, id) for far and
keeping k gives exactly the single-index answer, ties by lower id, padding (-1, NaN) last.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from georag.types import Neighbors

Ranges = npt.NDArray[np.int64]
"""(R, 2) int64 [start, end) row ranges."""


def shard_bounds(ntotal: int, shards: int) -> list[tuple[int, int]]:
    """``shards`` contiguous [start, end) row ranges covering [0, ntotal), sizes differing by at most one."""
    if shards < 1:
        raise ValueError(f"shards must be >= 1, got {shards}")
    edges = [ntotal * i // shards for i in range(shards + 1)]
    return list(itertools.pairwise(edges))


def check_ranges(ranges: Ranges, ntotal: int) -> Ranges:
    """``ranges`` (checked as the core checks them: each within [0, ntotal), their union not empty) as
    sorted, disjoint ranges: overlapping and touching ones merged, empty ones dropped."""
    for i, (start, end) in enumerate(ranges.tolist()):
        if not 0 <= start <= end <= ntotal:
            raise ValueError(f"row range {i} [{start}, {end}) is not within [0, {ntotal})")
    kept = sorted((s, e) for s, e in ranges.tolist() if e > s)
    if not kept:
        raise ValueError("row_ranges selects no rows; pass None to search the whole index")
    merged: list[list[int]] = [list(kept[0])]
    for start, end in kept[1:]:
        if start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return np.asarray(merged, dtype=np.int64)


def local_ranges(ranges: Ranges | None, lo: int, hi: int) -> Ranges | None:
    """The part of checked ``ranges`` inside the shard [lo, hi), in the shard's own row ids; None (the whole
    shard) for ``ranges`` None; an empty (0, 2) array when the shard holds none of the rows."""
    if ranges is None:
        return None
    clipped = np.clip(ranges, lo, hi) - lo
    return np.ascontiguousarray(clipped[clipped[:, 1] > clipped[:, 0]], dtype=np.int64)


def merge_neighbors(parts: Sequence[Neighbors], b: int, k_near: int, k_far: int) -> Neighbors:
    """The ``k_near`` best near and ``k_far`` worst far rows of the union of ``parts`` (each (b, k) with
    global ids), ordered and padded as a single index orders and pads them."""
    near_ids, near_scores = _merge([(p.near_ids, p.near_scores) for p in parts], b, k_near, descending=True)
    far_ids, far_scores = _merge([(p.far_ids, p.far_scores) for p in parts], b, k_far, descending=False)
    return Neighbors(near_ids, near_scores, far_ids, far_scores)


def _merge(
    lists: list[tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]], b: int, k: int, *, descending: bool
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    ids_out = np.full((b, k), -1, dtype=np.int64)
    scores_out = np.full((b, k), np.nan, dtype=np.float32)
    if not lists or k == 0 or b == 0:
        return ids_out, scores_out
    ids = np.concatenate([i for i, _ in lists], axis=1)
    scores = np.concatenate([s for _, s in lists], axis=1).astype(np.float32)
    padding = ids < 0
    rank = np.where(padding, np.inf, -scores.astype(np.float64) if descending else scores)
    order = np.lexsort((ids, rank), axis=1)[:, :k]
    chosen_ids = np.take_along_axis(ids, order, axis=1)
    chosen_scores = np.take_along_axis(scores, order, axis=1)
    real = ~np.take_along_axis(padding, order, axis=1)
    width = order.shape[1]
    ids_out[:, :width] = np.where(real, chosen_ids, -1)
    scores_out[:, :width] = np.where(real, chosen_scores, np.nan)
    return ids_out, scores_out
