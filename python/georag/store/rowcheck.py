"""Damaged embedding rows met while searching, reported by shard file: never served as an answer.

The exact index searches the memory-mapped shards in place and checks only a sample of rows when it is made
(`georag.search.flat.FlatIndex.from_normalized`); the quick check at open reads 16 blocks per file. So every
row a search returns is checked here (finite, of unit norm), and a bad one is a StoreError naming its shard
file and pointing to `georag index verify`, which hashes every byte.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt

from georag.errors import StoreError
from georag.store.manifest import Manifest


class ServedStore(Protocol):
    """What the checks read of a `georag.store.store.GeoStore`."""

    path: Path
    manifest: Manifest

    @property
    def ntotal(self) -> int: ...

    def embeddings(self, rows: npt.ArrayLike) -> npt.NDArray[np.float32]: ...

STORED_NORM_TOLERANCE = {"float16": 2.0**-10, "float32": 2.0**-20}
"""How far from 1 the norm of a stored row may be. Every writer stores rows normalized in float64 and rounded
to the store's dtype (through float32): each element moves by at most about the unit roundoff u (2^-11 for
float16, 2^-24 for float32) relatively, so the norm too; twice that (a margin for the double rounding and
subnormal elements) is still far tighter than a search index's tolerance, and catches a flipped exponent or
high mantissa bit."""

_SAMPLE_ERROR = re.compile(r"array (\d+) row (\d+) has (.+?): ")
"""How `FlatIndex.from_normalized` names a bad row of its sample (array = shard, row within it)."""


class ServedRows:
    """Checks the rows searches return (finite, of norm 1 within `STORED_NORM_TOLERANCE`), each row once.

    A row that passed is remembered (one byte per store row, allocated zeroed on the first check, so only
    the pages of rows actually served become resident): the farthest rows repeat from query to query and
    the nearest ones often, so a long-running server soon checks little. The shards are read-only while a
    store is open (writers replace files, never edit them), so a row that passed stays good. Concurrent
    searches may check a row twice; that is harmless.
    """

    def __init__(self, store: ServedStore) -> None:
        self._store = store
        self._passed: npt.NDArray[np.bool_] | None = None

    def check(self, ids: npt.NDArray[np.int64]) -> None:
        """StoreError (see `damaged_row`) when a row among ``ids`` (-1: padding) is damaged."""
        rows = np.unique(ids[ids >= 0])
        if rows.size == 0:
            return
        if self._passed is None:
            self._passed = np.zeros(self._store.ntotal, dtype=np.bool_)
        rows = rows[~self._passed[rows]]
        if rows.size == 0:
            return
        values = self._store.embeddings(rows)
        tolerance = STORED_NORM_TOLERANCE[self._store.manifest.dtype]
        if self._store.manifest.dtype == "float16":
            # float32 sums of d squares: off by at most d * 2^-24 (7e-5 at d = 1152) relatively, far inside
            # float16's tolerance; 10x cheaper than float64 squares (8192 rows of a B=256 search: 3 ms).
            squares = np.einsum("ij,ij->i", values, values).astype(np.float64)
        else:
            with np.errstate(over="ignore", invalid="ignore"):
                squares = np.add.reduce(np.square(values, dtype=np.float64), axis=1)
        norms = np.sqrt(squares)  # NaN or Inf where a value is: caught below, since not within tolerance
        good = np.abs(norms - 1.0) <= tolerance
        if not good.all():
            j = int(np.flatnonzero(~good)[0])
            what = f"norm {norms[j]:.6g}" if np.isfinite(values[j]).all() else "a NaN/Inf value"
            raise damaged_row(self._store, int(rows[j]), what)
        self._passed[rows] = True


def damaged_row(store: ServedStore, row: int, what: str) -> StoreError:
    """The error for store row ``row`` holding ``what`` instead of a unit vector: its shard file named."""
    starts = np.array([s.first_row for s in store.manifest.shards], dtype=np.int64)
    shard = store.manifest.shards[int(np.searchsorted(starts, row, side="right")) - 1]
    return StoreError(
        f"{store.path / shard.embeddings}: row {row - shard.first_row} (store row {row}) has {what}, not "
        f"a normalized embedding: the file is damaged; run `georag index verify {store.path}` and rebuild "
        "the affected source"
    )


def sample_error(store: ServedStore, exc: ValueError) -> StoreError:
    """``exc`` from `FlatIndex.from_normalized` over the store's shards, as a StoreError naming the file."""
    m = _SAMPLE_ERROR.match(str(exc))
    if m is None or int(m.group(1)) >= len(store.manifest.shards):
        return StoreError(
            f"{store.path}: {exc}; the store is damaged: run `georag index verify {store.path}`"
        )
    shard = store.manifest.shards[int(m.group(1))]
    return damaged_row(store, shard.first_row + int(m.group(2)), m.group(3))
