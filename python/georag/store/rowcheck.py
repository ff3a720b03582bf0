"""Damaged embedding rows met while searching, reported by shard file: never served as an answer.

The exact index searches the memory-mapped shards in place and checks only a sample of rows when it is made
(`georag.search.flat.FlatIndex.from_normalized`); the quick check at open reads 16 blocks per file. So every
row a search returns is checked here (finite, of unit norm), and a bad one is a StoreError naming its shard
file and pointing to `georag index verify`, which hashes every byte.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from georag.errors import StoreError

if TYPE_CHECKING:
    from georag.store.store import GeoStore

STORED_NORM_TOLERANCE = {"float16": 2.0**-10, "float32": 2.0**-20}
"""How far from 1 the norm of a stored row may be. Every writer stores rows normalized in float64 and rounded
to the store's dtype (through float32): each element moves by at most about the unit roundoff u (2^-11 for
float16, 2^-24 for float32) relatively, so the norm too; twice that (a margin for the double rounding and
subnormal elements) is still far tighter than a search index's tolerance, and catches a flipped exponent or
high mantissa bit."""

_SAMPLE_ERROR = re.compile(r"array (\d+) row (\d+) has (.+?): ")
"""How `FlatIndex.from_normalized` names a bad row of its sample (array = shard, row within it)."""


def check_served_rows(store: GeoStore, ids: npt.NDArray[np.int64]) -> None:
    """StoreError (see `damaged_row`) when a row among ``ids`` (-1: padding) is not finite, of norm 1
    within `STORED_NORM_TOLERANCE`."""
    rows = np.unique(ids[ids >= 0])
    if rows.size == 0:
        return
    values = store.embeddings(rows)
    finite = np.isfinite(values).all(axis=1)
    # float32 squares summed in float64: the norm to about 2^-25, far inside the tolerance, and 7x cheaper
    # than a float64 copy (8192 rows of a B=256 search: 20 ms instead of 150 here).
    with np.errstate(over="ignore", invalid="ignore"):
        norms = np.sqrt(np.add.reduce(np.square(values), axis=1, dtype=np.float64))
    bad = np.flatnonzero(~finite | (np.abs(norms - 1.0) > STORED_NORM_TOLERANCE[store.manifest.dtype]))
    if bad.size:
        j = int(bad[0])
        raise damaged_row(store, int(rows[j]), "a NaN/Inf value" if not finite[j] else f"norm {norms[j]:.6g}")


def damaged_row(store: GeoStore, row: int, what: str) -> StoreError:
    """The error for store row ``row`` holding ``what`` instead of a unit vector: its shard file named."""
    starts = np.array([s.first_row for s in store.manifest.shards], dtype=np.int64)
    shard = store.manifest.shards[int(np.searchsorted(starts, row, side="right")) - 1]
    return StoreError(
        f"{store.path / shard.embeddings}: row {row - shard.first_row} (store row {row}) has {what}, not "
        f"a normalized embedding: the file is damaged; run `georag index verify {store.path}` and rebuild "
        "the affected source"
    )


def sample_error(store: GeoStore, exc: ValueError) -> StoreError:
    """``exc`` from `FlatIndex.from_normalized` over the store's shards, as a StoreError naming the file."""
    m = _SAMPLE_ERROR.match(str(exc))
    if m is None or int(m.group(1)) >= len(store.manifest.shards):
        return StoreError(
            f"{store.path}: {exc}; the store is damaged: run `georag index verify {store.path}`"
        )
    shard = store.manifest.shards[int(m.group(1))]
    return damaged_row(store, shard.first_row + int(m.group(2)), m.group(3))
