"""Exact contrastive search over an in-memory database with the C++ core (``georag._core``)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from georag import _core
from georag.search.core_backed import CoreBacked
from georag.search.neighbors import Neighbors, RawResult
from georag.search.validate import RowRanges, as_row_ranges, check_k


class FlatIndex(CoreBacked):
    """Exact k-nearest AND k-farthest search by cosine similarity, both from ONE pass over the database.

    The (N, d) float32 database is copied and, with ``normalize=True``, L2-normalized once here; a row of
    zero norm or with NaN/Inf is rejected with a ValueError naming the first bad row. Queries are
    normalized inside each search, so raw SigLIP outputs can be passed as they are.

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
    """

    def __init__(
        self,
        vectors: npt.NDArray[np.float32],
        normalize: bool = True,
        *,
        num_threads: int = 0,
    ) -> None:
        """Builds the index from an (N, d) float32 array; ``num_threads=0`` uses every available core."""
        self._core = _core.FlatIndex(vectors, normalize=normalize, num_threads=num_threads)

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
        """A read-only (N, d) view of the stored rows (normalized unless built with normalize=False)."""
        return self._core.vectors()

    def search(
        self,
        queries: npt.NDArray[np.float32],
        k_near: int = 16,
        k_far: int = 16,
        *,
        row_ranges: RowRanges | None = None,
        num_threads: int | None = None,
    ) -> Neighbors:
        """Returns the ``k_near`` most and ``k_far`` least similar rows for each of the (B, d) queries.

        ``row_ranges``: restrict the search to the union of these [start, end) row ranges (a submap whose
        rows the store keeps contiguous); any order, overlaps merged; a restriction that selects no row is a
        ValueError, not an empty answer. When fewer than k rows are searchable, each result row is padded with
        id -1 and score NaN. Raises TypeError for a non-float32 array and ValueError for a wrong shape or
        dimension, a non-finite or zero-norm query, or k < 0.
        """
        return Neighbors(
            *self.search_raw(queries, k_near, k_far, row_ranges=row_ranges, num_threads=num_threads)[:4]
        )

    def search_raw(
        self,
        queries: npt.NDArray[np.float32],
        k_near: int = 16,
        k_far: int = 16,
        *,
        row_ranges: RowRanges | None = None,
        num_threads: int | None = None,
        blas_min_batch: int = 256,
        tile_rows: int = 0,
    ) -> RawResult:
        """``search`` with the tuning knobs exposed; also returns the scratch bytes the search allocated."""
        check_k(k_near, "k_near")
        check_k(k_far, "k_far")
        return self._core.search(
            queries,
            k_near=k_near,
            k_far=k_far,
            row_ranges=as_row_ranges(row_ranges),
            num_threads=0 if num_threads is None else num_threads,
            blas_min_batch=blas_min_batch,
            tile_rows=tile_rows,
        )
