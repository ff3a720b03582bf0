"""Exact contrastive search over an in-memory database with the C++ core (``georag._core``)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

import georag._core as _core
from georag.search.core_backed import CoreBacked

_Index = TypeVar("_Index", bound="FlatIndex")

NORM_SAMPLE = 4096
"""Rows `FlatIndex.from_normalized` reads to check normalization (spread over all arrays)."""


class FlatIndex(CoreBacked):
    """Exact k-nearest AND k-farthest search by cosine similarity, both from ONE pass over the database.

    Three ways to hold the rows:

    * ``FlatIndex(array)`` copies an (N, d) float32 or float16 array. float32 rows are kept as float32 and,
      with ``normalize=True``, L2-normalized once here; float16 rows are kept as float16 (half the memory)
      with one float32 scale (1 / norm) per row when normalizing. A row of zero norm or with NaN/Inf is
      rejected with a ValueError naming the first bad row. Queries are normalized inside each search, so raw
      SigLIP outputs can be passed as they are.
    * ``FlatIndex.from_normalized(arrays)`` searches already-normalized C-contiguous float16 or float32
      arrays IN PLACE, with no copy (e.g. the ``np.memmap`` shards of a store: opening is instant and the
      resident memory is the page cache plus per-search buffers). A sample of rows is checked.
    * ``FlatIndex.from_chunks(chunks, n, d)`` (or ``reserve`` + ``append``) builds a float32 copy chunk by
      chunk, each chunk converted on its own: bit-identical to ``FlatIndex(array)`` on the same rows.

    Exactness over float16 rows: the scores are the exact float32 arithmetic over the float16 values, the
    same sums in the same order as a float32 index of the same values (``normalize=False``) on its
    small-batch path, so ids and scores agree bit for bit; ties rank by lower id.

    How a search runs: the database is cut into fixed tiles that worker threads take in turn.

    * float32 rows: batches of fewer than ``blas_min_batch`` queries (default 256) use a register-blocked
      kernel (6 rows x 4 queries of 16-lane accumulators; AVX-512 / AVX2 / generic chosen at run time) that
      streams each row from memory once; larger batches score each tile with single-threaded OpenBLAS SGEMM
      per block of 256 queries, sized so the scores fit in L2.
    * float16 rows: batches of fewer than ``amx_min_batch`` queries (default 16) stream the rows through the
      same kernel, widened to float32 as they are read (AVX-512 / F16C / portable), so a search reads half the
      bytes. Larger batches, where the CPU has AMX-BF16 (``georag._core.amx_status()``), score 32 x 32 tiles
      with bf16 tile instructions and re-score in float32 every pair whose approximate score lies within the
      proven error bound of a heap's threshold (see cpp/src/amx.cpp): the same ids and scores, bit for bit.
      Without AMX (or with ``use_amx=False``), batches of at least ``blas_min_batch`` queries widen chunks
      of 256-512 rows to float32, score them with SGEMM, and re-score the same way under the SGEMM error
      bound (cpp/src/certified_sgemm.cpp): again bit for bit the streaming kernel's ids and scores.

    Every score block feeds both top-k selections while it is in cache; the (B, N) score matrix is never
    materialised. Results are deterministic for a given input and independent of the thread count: tile
    bounds do not depend on it and candidates are ordered by (score, id). The GIL is released during a
    search, and several threads may search one index concurrently.

    ``search`` (the `georag.search.protocol.Index` contract; RuntimeError while the index is incomplete) and
    ``search_raw`` take five tuning keywords: ``num_threads`` (worker threads of this call; default the
    index's ``num_threads``), ``blas_min_batch`` (default 256), ``amx_min_batch`` (default 16),
    ``tile_rows`` (rows per tile; default 0, automatic) and ``use_amx`` (default True; False searches
    float16 rows as a CPU without AMX would, for tests and benchmarks). Forcing one float16 path:
    streaming ``amx_min_batch=10**9, blas_min_batch=10**9``; certified SGEMM ``use_amx=False,
    blas_min_batch=1``; AMX ``amx_min_batch=1`` (where ``amx_status()`` is "available").
    """

    tuning_keywords = ("num_threads", "blas_min_batch", "tile_rows", "amx_min_batch", "use_amx")

    def __init__(
        self,
        vectors: npt.NDArray[np.float32] | npt.NDArray[np.float16],
        normalize: bool = True,
        *,
        num_threads: int = 0,
    ) -> None:
        """Builds the index from a copy of an (N, d) float32 or float16 array (kept in that precision);
        ``num_threads=0`` uses every available core. TypeError for another dtype."""
        self._core = _core.FlatIndex(vectors, normalize=normalize, num_threads=num_threads)

    @classmethod
    def from_normalized(
        cls: type[_Index],
        arrays: npt.NDArray[np.float16] | npt.NDArray[np.float32] | Sequence[npt.NDArray[Any]],
        *,
        num_threads: int = 0,
        sample: int = NORM_SAMPLE,
    ) -> _Index:
        """Searches already L2-normalized rows IN PLACE: no copy, nothing read but a sample.

        ``arrays``: one C-contiguous (N, d) float16 or float32 array, or a sequence of them (all one dtype
        and width; row ids run through them in order), e.g. the ``np.memmap`` shards of a store. They must
        stay alive and unchanged while the index is used (the index keeps a reference to each). About
        ``sample`` rows spread over every array (all of them when fewer) are read and checked: finite, with a
        norm within `norm_tolerance` of 1 (ValueError naming the array and row otherwise). Rows outside the
        sample are taken as they are; `georag index verify` checks every byte of a store. A non-contiguous
        array is refused (ValueError), since searching it in place is impossible.
        """
        segments = [arrays] if isinstance(arrays, np.ndarray) else list(arrays)
        if not segments:
            raise ValueError("from_normalized needs at least one array")
        first = np.asarray(segments[0])
        if first.ndim != 2:
            raise ValueError(f"array 0 must be 2-D (rows, d), got shape {first.shape}")
        d = int(first.shape[1])
        dtypes = {np.asarray(a).dtype for a in segments}
        if len(dtypes) > 1:
            raise TypeError(f"every array must have the same dtype, got {sorted(map(str, dtypes))}")
        total = sum(int(np.shape(a)[0]) for a in segments)
        for i, arr in enumerate(segments):
            _check_normalized(arr, i, d, sample * int(np.shape(arr)[0]) // max(total, 1) + 2)
        index = cls.__new__(cls)
        index._core = _core.FlatIndex.wrap(segments, d, num_threads=num_threads)
        return index

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

    @property
    def dtype(self) -> str:
        """The precision the rows are searched in: "float32" or "float16"."""
        return str(self._core.dtype)

    @property
    def in_place(self) -> bool:
        """True for an index over the caller's arrays (`from_normalized`), which it never copied."""
        return bool(self._core.borrowed)

    @property
    def nbytes(self) -> int:
        """Bytes of row storage the index allocated itself: 0 for an index searching arrays in place."""
        return int(self._core.owned_bytes)

    def __repr__(self) -> str:
        where = ", in place" if self.in_place else ""
        return (
            f"FlatIndex(ntotal={self.ntotal}, dim={self.dim}, {self.dtype}{where}, "
            f"threads={self.num_threads})"
        )

    def vectors(self) -> npt.NDArray[np.float32] | npt.NDArray[np.float16]:
        """A read-only (filled, d) view of the stored rows: float32 (normalized unless built with
        normalize=False), or float16 as given for an index built from float16. ValueError for an index
        searching the caller's arrays in place (read those)."""
        return self._core.vectors()


def norm_tolerance(dtype: np.dtype[Any]) -> float:
    """How far from 1 the norm of a normalized row may be: float16 rounding of a unit vector moves its norm
    by at most about 2^-11 (half an ulp per element, relative); float32 by about 2^-24 times sqrt(d)."""
    return 4e-3 if dtype == np.float16 else 1e-4


def _check_normalized(arr: Any, i: int, d: int, count: int) -> None:
    """Checks ``count`` rows spread over ``arr`` (all when fewer): finite, of norm 1 within tolerance."""
    a = arr if isinstance(arr, np.ndarray) else np.asarray(arr)
    if a.dtype not in (np.float16, np.float32):
        raise TypeError(f"array {i} must be float16 or float32, got {a.dtype}")
    if a.ndim != 2 or a.shape[1] != d:
        raise ValueError(f"array {i} must have shape (rows, {d}), got {a.shape}")
    if not a.flags.c_contiguous:
        raise ValueError(f"array {i} is not C-contiguous: it cannot be searched in place")
    n = a.shape[0]
    if n == 0:
        return
    rows = np.unique(np.linspace(0, n - 1, num=min(n, max(count, 2))).astype(np.int64))
    values = np.asarray(a[rows], dtype=np.float64)
    finite = np.isfinite(values).all(axis=1)
    norms = np.linalg.norm(np.where(finite[:, None], values, 0.0), axis=1)
    bad = np.flatnonzero(~finite | (np.abs(norms - 1.0) > norm_tolerance(a.dtype)))
    if bad.size:
        r = int(rows[bad[0]])
        what = "a NaN/Inf value" if not finite[bad[0]] else f"norm {norms[bad[0]]:.6g}"
        raise ValueError(
            f"array {i} row {r} has {what}: from_normalized needs L2-normalized rows; "
            "use FlatIndex(array) to normalize a copy"
        )


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
