"""Damaged embedding rows met while searching, reported by shard file: never served as an answer.

The exact index searches the memory-mapped shards in place and checks only a sample of rows when it is made
(`georag.search.flat.FlatIndex.from_normalized`); the quick check at open reads 16 blocks per file. So every
row a search returns is checked here: finite, of unit norm, and (stores of format version 2 on) of the CRC32
its shard's metadata records for it (`georag.store.metadata.ROW_CRC32`; the metadata is SHA-256-checked at
open), which catches a changed bit that keeps the norm. A bad row is a StoreError naming its shard file and
pointing to `georag index verify`, which hashes every byte.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from georag.errors import StoreError
from georag.store.manifest import Manifest
from georag.store.metadata import row_crc32


class RowChecksums:
    """The CRC32 of every store row as written (`georag.store.metadata.row_crc32`), read from the shards'
    metadata files; the rows of shards written before row checksums (format version 1) have none."""

    def __init__(self, shards: Sequence[tuple[int, npt.NDArray[np.uint32] | None]]) -> None:
        """``shards``: (rows, their CRC32s or None) of each shard, in row order."""
        self.values = np.concatenate(
            [np.zeros(0, np.uint32)] + [np.zeros(n, np.uint32) if c is None else c for n, c in shards]
        )
        """(N,) the recorded CRC32 of each row (0 where none is)."""
        self.recorded = np.concatenate(
            [np.zeros(0, np.bool_)] + [np.full(n, c is not None) for n, c in shards]
        )
        """(N,) whether row i has a recorded CRC32."""
        self.missing = int(np.count_nonzero(~self.recorded))
        """Rows without one."""

    def first_mismatch(self, rows: npt.NDArray[np.int64], actual: npt.NDArray[np.uint32]) -> int | None:
        """The position in ``rows`` of the first row whose CRC32 ``actual`` is not its recorded one (a row
        without one passes), or None."""
        bad = np.flatnonzero(self.recorded[rows] & (self.values[rows] != actual))
        return int(bad[0]) if bad.size else None

    def note(self) -> str | None:
        """What a reader should know when rows have no checksum (`unchecked_note`), else None."""
        return unchecked_note(self.missing, len(self.recorded))


def unchecked_note(missing: int, total: int) -> str | None:
    """The note for a store of ``total`` rows of which ``missing`` have no row checksum; None when none."""
    if missing == 0:
        return None
    which = "the store was" if missing == total else f"{missing} of its {total} rows were"
    return (
        f"{which} built before row checksums: a search checks their norms only, so a changed bit that keeps "
        "the norm goes unseen until a full check; rebuild (`index submaps --reorder` also adds them) or run "
        "`georag index verify` periodically"
    )


class ServedStore(Protocol):
    """What the checks read of a `georag.store.store.GeoStore`."""

    path: Path
    manifest: Manifest
    row_checksums: RowChecksums

    @property
    def ntotal(self) -> int: ...

    def stored_rows(self, rows: npt.ArrayLike) -> npt.NDArray[Any]: ...


STORED_NORM_TOLERANCE = {"float16": 2.0**-10, "float32": 2.0**-20}
"""How far from 1 the norm of a stored row may be. Every writer stores rows normalized in float64 and rounded
to the store's dtype (through float32): each element moves by at most about the unit roundoff u (2^-11 for
float16, 2^-24 for float32) relatively, so the norm too; twice that (a margin for the double rounding and
subnormal elements) is still far tighter than a search index's tolerance, and catches a flipped exponent or
high mantissa bit."""

_SAMPLE_ERROR = re.compile(r"array (\d+) row (\d+) has (.+?): ")
"""How `FlatIndex.from_normalized` names a bad row of its sample (array = shard, row within it)."""


class ServedRows:
    """Checks the rows searches return (finite, of norm 1 within `STORED_NORM_TOLERANCE`, of their recorded
    CRC32 where there is one), each row once.

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
        stored = self._store.stored_rows(rows)
        self._check_norms(rows, stored)
        has = self._store.row_checksums.recorded[rows]
        if has.all():
            check_crc32(self._store, rows, stored)
        elif has.any():
            check_crc32(self._store, rows[has], stored[has])
        self._passed[rows] = True

    def _check_norms(self, rows: npt.NDArray[np.int64], stored: npt.NDArray[Any]) -> None:
        norms = np.sqrt(_squared_norms(stored))  # NaN or Inf where a value is: not within tolerance below
        good = np.abs(norms - 1.0) <= STORED_NORM_TOLERANCE[self._store.manifest.dtype]
        if not good.all():
            j = int(np.flatnonzero(~good)[0])
            what = f"norm {norms[j]:.6g}" if np.isfinite(stored[j]).all() else "a NaN/Inf value"
            raise damaged_row(self._store, int(rows[j]), f"{what}, not a normalized embedding")


_NORM_BLOCK = 256
"""float16 rows converted to float32 at once for their norms: one reused buffer of 256 x d float32 (1.2 MB
at d = 1152) converts 8192 rows in about half the time a whole float32 copy takes (no fresh pages)."""


def _squared_norms(stored: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
    """The squared norm of each stored row. float16: float32 sums of d squares, off by at most d * 2^-24
    (7e-5 at d = 1152) relatively, far inside float16's tolerance, and 10x cheaper than float64 squares;
    float32: float64 squares."""
    if stored.dtype != np.float16:
        with np.errstate(over="ignore", invalid="ignore"):
            squares: npt.NDArray[np.float64] = np.add.reduce(np.square(stored, dtype=np.float64), axis=1)
        return squares
    out = np.empty(len(stored), dtype=np.float64)
    buf = np.empty((min(len(stored), _NORM_BLOCK), stored.shape[1]), dtype=np.float32)
    for start in range(0, len(stored), _NORM_BLOCK):
        block = stored[start : start + _NORM_BLOCK]
        values = buf[: len(block)]
        np.copyto(values, block)
        out[start : start + len(block)] = np.einsum("ij,ij->i", values, values)
    return out


def check_crc32(
    store: ServedStore, rows: npt.NDArray[np.int64], stored: npt.NDArray[Any]
) -> npt.NDArray[np.uint32]:
    """The CRC32s of store rows ``rows`` whose bytes are ``stored`` (as `ServedStore.stored_rows` gives
    them); StoreError (see `damaged_row`) when one is not the CRC32 recorded for its row."""
    actual = row_crc32(stored)
    j = store.row_checksums.first_mismatch(rows, actual)
    if j is not None:
        row, recorded = int(rows[j]), int(store.row_checksums.values[rows[j]])
        what = (
            f"other bytes than were written (CRC32 {int(actual[j]):08x}, its metadata records {recorded:08x})"
        )
        raise damaged_row(store, row, what)
    return actual


def damaged_row(store: ServedStore, row: int, what: str) -> StoreError:
    """The error for store row ``row`` that has ``what`` (a damaged row): its shard file named."""
    starts = np.array([s.first_row for s in store.manifest.shards], dtype=np.int64)
    shard = store.manifest.shards[int(np.searchsorted(starts, row, side="right")) - 1]
    return StoreError(
        f"{store.path / shard.embeddings}: row {row - shard.first_row} (store row {row}) has {what}: the "
        f"file is damaged; run `georag index verify {store.path}` and rebuild the affected source"
    )


def sample_error(store: ServedStore, exc: ValueError) -> StoreError:
    """``exc`` from `FlatIndex.from_normalized` over the store's shards, as a StoreError naming the file."""
    m = _SAMPLE_ERROR.match(str(exc))
    if m is None or int(m.group(1)) >= len(store.manifest.shards):
        return StoreError(
            f"{store.path}: {exc}; the store is damaged: run `georag index verify {store.path}`"
        )
    shard = store.manifest.shards[int(m.group(1))]
    return damaged_row(store, shard.first_row + int(m.group(2)), f"{m.group(3)}, not a normalized embedding")
