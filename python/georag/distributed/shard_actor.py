"""One shard of a sharded search: a contiguous row range of a store, searched in place by the exact core.

`ShardSearcher` is what each Ray actor of a `georag.distributed.sharded_search.ShardedIndex` holds (a plain
class, so it runs and is tested without Ray). It memory-maps only the store's shard files that overlap its
rows and searches them with `FlatIndex.from_normalized`: nothing is copied, its memory is the page cache of
its own rows.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from georag.errors import StoreError
from georag.search.flat import FlatIndex
from georag.store.manifest import Manifest
from georag.store.store import _open_shard
from georag.types import Neighbors


class ShardSearcher:
    """Rows [lo, hi) of the store at ``path``, whose manifest must hash to ``manifest_sha256`` (the one the
    driver opened: a store changed since is refused, not searched)."""

    def __init__(self, path: str, manifest_sha256: str, lo: int, hi: int, num_threads: int = 0) -> None:
        root = Path(path)
        manifest, sha = Manifest.load_hashed(root)
        if sha != manifest_sha256:
            raise StoreError(
                f"{root}/manifest.json changed since the sharded search opened the store (another build, "
                "add or reorder); open the store again"
            )
        if not 0 <= lo <= hi <= manifest.num_rows:
            raise StoreError(f"shard rows [{lo}, {hi}) are not within the store's {manifest.num_rows} rows")
        self.lo, self.hi = lo, hi
        arrays: list[npt.NDArray[np.generic]] = []
        for i, info in enumerate(manifest.shards):
            start, end = max(lo, info.first_row), min(hi, info.first_row + info.rows)
            if start < end:
                manifest.check_file(root, info.embeddings, "none")
                arrays.append(_open_shard(root, manifest, i)[start - info.first_row : end - info.first_row])
        self.index = FlatIndex.from_normalized(arrays, num_threads=num_threads) if arrays else None

    def ready(self) -> tuple[int, int]:
        """(pid, rows): the actor is up, its shard files opened."""
        return os.getpid(), self.hi - self.lo

    def search(
        self,
        queries: npt.NDArray[np.float32],
        k_near: int,
        k_far: int,
        ranges: npt.NDArray[np.int64] | None,
        num_threads: int | None = None,
    ) -> Neighbors:
        """The shard's ``k_near`` / ``k_far`` rows of each query (global ids), within its own ``ranges``
        (shard row ids; None: all its rows)."""
        if self.index is None:
            raise StoreError("an empty shard is never searched")
        res = self.index.search(
            _canonical(queries, np.float32),
            k_near,
            k_far,
            row_ranges=None if ranges is None else _canonical(ranges, np.int64),
            num_threads=num_threads,
        )
        return Neighbors(
            np.where(res.near_ids >= 0, res.near_ids + self.lo, -1),
            res.near_scores,
            np.where(res.far_ids >= 0, res.far_ids + self.lo, -1),
            res.far_scores,
        )


def _canonical(array: npt.NDArray[Any], dtype: type[np.generic]) -> npt.NDArray[Any]:
    """``array`` (already of ``dtype``) viewed with numpy's own dtype object: an unpickled array, as Ray
    delivers it, carries an equal but distinct dtype object, which `georag._core` refuses."""
    if array.dtype != dtype:
        raise TypeError(f"expected {np.dtype(dtype)}, got {array.dtype}")
    return np.ascontiguousarray(array).view(dtype)
