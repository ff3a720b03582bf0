"""The one search protocol every index satisfies, and the base class that implements its checks once."""

from __future__ import annotations

from abc import abstractmethod
from typing import ClassVar, Protocol, TypeAlias, runtime_checkable

import numpy as np
import numpy.typing as npt

from georag.search.validate import RowRanges, as_row_ranges, check_k
from georag.types import Neighbors

Queries: TypeAlias = npt.NDArray[np.float32]
"""(B, d) float32 query embeddings, raw: every index normalizes them itself."""
Ranges: TypeAlias = npt.NDArray[np.int64] | None
"""Checked row ranges: an (R, 2) int64 array of [start, end) pairs, or None for the whole index."""


@runtime_checkable
class Index(Protocol):
    """What every index answers: `FlatIndex` (C++ core, CPU), `CudaFlatIndex` (GPU), `FaissIndex` (faiss).

    `georag.store.GeoStore.index` returns one by name ("exact", "cuda" or a faiss index of the store).
    """

    @property
    def ntotal(self) -> int:
        """Number of database rows."""
        ...

    @property
    def dim(self) -> int:
        """Embedding dimension d."""
        ...

    def search(
        self, queries: Queries, k_near: int = 16, k_far: int = 16, *, row_ranges: RowRanges | None = None
    ) -> Neighbors:
        """Returns the ``k_near`` most and ``k_far`` least similar rows for each of the (B, d) queries.

        Scores are cosine similarities: near rows by descending score, far rows by ascending score, ties by
        lower id. ``row_ranges`` restricts the search to the union of these [start, end) row ranges (a
        submap whose rows the store keeps contiguous); any order, overlaps merged; a restriction that
        selects no row is a ValueError, not an empty answer. When fewer than k rows are searchable, each
        result row is padded with id -1 and score NaN. Raises TypeError for a non-float32 array or a
        non-int k, and ValueError for a wrong shape or dimension, a non-finite or zero-norm query, or
        k < 0. The result carries no coordinates (`GeoStore.search` attaches them).
        """
        ...


class IndexBase(Index):
    """`Index.search` implemented once: the k values and row ranges are checked here, then ``_search``
    runs. An index may take tuning keywords of its own (named in ``tuning_keywords``); a value for any other
    keyword is a TypeError, while any keyword given as None means the index's default (so ``GeoStore.search``
    passes its ``num_threads=None`` to every index)."""

    tuning_keywords: ClassVar[tuple[str, ...]] = ()
    """Extra keywords ``search`` accepts (FlatIndex: num_threads, blas_min_batch, tile_rows)."""

    def search(
        self,
        queries: Queries,
        k_near: int = 16,
        k_far: int = 16,
        *,
        row_ranges: RowRanges | None = None,
        **tuning: int | None,
    ) -> Neighbors:
        """See `Index.search`; ``tuning``: this index's ``tuning_keywords`` (None: the index's default)."""
        return self._search(queries, *search_args(k_near, k_far, row_ranges), self._tuning(tuning))

    @abstractmethod
    def _search(
        self, queries: Queries, k_near: int, k_far: int, ranges: Ranges, tuning: dict[str, int]
    ) -> Neighbors:
        """The search itself, the arguments checked; ``tuning`` holds only this index's keywords."""

    def _tuning(self, given: dict[str, int | None]) -> dict[str, int]:
        """``given`` without the None values (any index takes ``x=None``, its default); TypeError for a
        value given to a keyword this index does not take."""
        tuning = {name: value for name, value in given.items() if value is not None}
        for name in tuning:
            if name not in self.tuning_keywords:
                takes = ", ".join(self.tuning_keywords) or "none"
                what = f"{type(self).__name__}.search got an unexpected keyword {name!r}"
                raise TypeError(f"{what}; its tuning keywords: {takes}")
        return tuning

    def __len__(self) -> int:
        return self.ntotal


def search_args(k_near: int, k_far: int, row_ranges: RowRanges | None) -> tuple[int, int, Ranges]:
    """The checked k values and ``row_ranges`` as an (R, 2) int64 array (None: the whole index)."""
    check_k(k_near, "k_near")
    check_k(k_far, "k_far")
    return int(k_near), int(k_far), as_row_ranges(row_ranges)
