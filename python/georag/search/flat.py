"""Exact contrastive search over an in-memory database with the C++ core (``georag._core``)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

import numpy as np
import numpy.typing as npt

import georag._core as _core
from georag.search.core_backed import CoreBacked

_Index = TypeVar("_Index", bound="FlatIndex")


class FlatIndex(CoreBacked):
    """Exact k-nearest AND k-farthest search by cosine similarity, both from ONE pass over the database.

    The (N, d) float32 database is copied and, with ``normalize=True``, L2-normalized once here; a row of
    zero norm or with NaN/Inf is rejected with a ValueError naming the first bad row. Queries are
    normalized inside each search, so raw SigLIP outputs can be passed as they are.

    Building from a database larger than half the memory: ``FlatIndex.from_chunks(chunks, n, d)`` (or
    ``reserve`` + ``append``) allocates the index once and copies the rows in chunk by chunk, e.g. slices of
    memory-mapped float16 shards, each converted to float32 on its own. The peak memory is the index plus
    one float32 chunk, where ``FlatIndex(array)`` needs the whole float32 array as well. The stored rows, and
    so every search result, are bit-identical to ``FlatIndex(array)`` on the same rows, however they were
    chunked. An incomplete index (``filled < ntotal``) refuses to search.

    How a search runs: the database is cut into fixed tiles that worker threads take in turn. Batches of
    fewer than ``blas_min_batch`` queries (default 256, the measured crossover here) use a register-blocked
    kernel (6 rows x 4 queries of 16-lane accumulators; AVX-512 / AVX2 / generic chosen at run time) that
    streams each row from memory once, prefetching the next rows; larger batches score each tile with one
    single-threaded OpenBLAS SGEMM per block of 256 queries, sized so the scores fit in L2. Every score
    block feeds both top-k selections while it is in cache; the (B, N) score matrix is never materialised.
    Extra memory per search: O(B x tile + threads x B x (k_near + k_far)), i.e. the normalized queries,
    one score tile per thread on the SGEMM path (1 MiB), and each thread's heaps (96 KiB for B=256, k=16+16).

    Results are deterministic for a given input and independent of the thread count: tile bounds do not
    depend on it and candidates are ordered by (score, id). The GIL is released during a search, and
    several threads may search one index concurrently.

    ``search`` (the `georag.search.protocol.Index` contract; RuntimeError while the index is incomplete) and
    ``search_raw`` take three tuning keywords: ``num_threads`` (worker threads of this call; default the
    index's ``num_threads``), ``blas_min_batch`` (default 256) and ``tile_rows`` (rows per tile; default 0,
    automatic).
    """

    tuning_keywords = ("num_threads", "blas_min_batch", "tile_rows")

    def __init__(
        self,
        vectors: npt.NDArray[np.float32],
        normalize: bool = True,
        *,
        num_threads: int = 0,
    ) -> None:
        """Builds the index from an (N, d) float32 array; ``num_threads=0`` uses every available core."""
        self._core = _core.FlatIndex(vectors, normalize=normalize, num_threads=num_threads)

    @classmethod
    def reserve(cls: type[_Index], n: int, d: int, *, normalize: bool = True, num_threads: int = 0) -> _Index:
        """An empty index with room for exactly ``n`` rows of dimension ``d``; fill it with ``append``.

        The (n, d) float32 buffer (rows padded to a multiple of 16 floats) is allocated here; its pages are
        committed as rows are appended. ValueError for n < 0, d <= 0 or num_threads < 0.
        """
        index = cls.__new__(cls)
        index._core = _core.FlatIndex.reserve(n, d, normalize=normalize, num_threads=num_threads)
        return index

    @classmethod
    def from_chunks(
        cls: type[_Index],
        chunks: Iterable[npt.ArrayLike],
        n: int,
        d: int,
        *,
        normalize: bool = True,
        num_threads: int = 0,
    ) -> _Index:
        """Builds the index from ``chunks`` of (m, d) rows that together hold exactly ``n`` rows, in order.

        A chunk is any 2-D float16 or float32 array (a ``np.memmap`` slice included); each is converted to
        C-contiguous float32 on its own and copied in (see ``append``), so only one chunk is ever converted
        at a time and nothing is concatenated. Raises ValueError when the chunks hold fewer or more than
        ``n`` rows, for a chunk of the wrong shape, or for a bad row (named by its index in the whole
        database), and TypeError for a chunk of another dtype.
        """
        index = cls.reserve(n, d, normalize=normalize, num_threads=num_threads)
        it = iter(chunks)
        for i, chunk in enumerate(it):
            rows = _float32_rows(chunk, d, f"chunk {i}")
            if rows.shape[0] > n - index.filled:
                # Count what the rest would bring (shapes only), so the message gives the real total.
                total = index.filled + rows.shape[0] + sum(_row_count(c) for c in it)
                raise ValueError(f"the chunks hold {total} rows, more than the n={n} the index was built for")
            index._core.append(rows)
        if index.filled != n:
            raise ValueError(
                f"the chunks hold {index.filled} rows, fewer than the n={n} the index was built for"
            )
        return index

    @property
    def filled(self) -> int:
        """Rows appended so far; equal to ``ntotal`` once the index is complete (always, when built whole)."""
        return int(self._core.filled)

    def append(self, chunk: npt.ArrayLike) -> None:
        """Copies an (m, d) float16 or float32 chunk into the next m rows, normalizing and checking them.

        The chunk is converted to C-contiguous float32 (one copy, unless it already is) and the GIL is
        released during the copy. Raises ValueError when the index has no room for m more rows, for a wrong
        shape, or naming the first bad row by its index in the whole database; then ``filled`` is unchanged,
        so the fixed chunk may be appended again. TypeError for a dtype other than float16 / float32.
        """
        self._core.append(_float32_rows(chunk, self.dim, "chunk"))

    @property
    def num_threads(self) -> int:
        """Worker threads a search uses (the resolved core count when built with 0)."""
        return int(self._core.num_threads)

    @num_threads.setter
    def num_threads(self, value: int) -> None:
        self._core.num_threads = value

    def __repr__(self) -> str:
        return f"FlatIndex(ntotal={self.ntotal}, dim={self.dim}, threads={self.num_threads})"

    def vectors(self) -> npt.NDArray[np.float32]:
        """A read-only (filled, d) view of the stored rows (normalized unless built with normalize=False)."""
        return self._core.vectors()


def _float32_rows(chunk: npt.ArrayLike, d: int, what: str) -> npt.NDArray[np.float32]:
    """``chunk`` as a C-contiguous (m, d) float32 array; float16 is widened exactly, other dtypes refused."""
    arr = np.asarray(chunk)
    if arr.dtype not in (np.float16, np.float32):
        raise TypeError(
            f"{what} must be float16 or float32, got {arr.dtype}; convert with .astype(numpy.float32)"
        )
    if arr.ndim != 2 or arr.shape[1] != d:
        raise ValueError(f"{what} must have shape (rows, {d}), got {arr.shape}")
    return np.ascontiguousarray(arr, dtype=np.float32)


def _row_count(chunk: npt.ArrayLike) -> int:
    """Rows in a chunk, read from its shape (no conversion): 0 for a scalar."""
    shape = np.shape(chunk)
    return int(shape[0]) if shape else 0
