"""The part of FlatIndex and CudaFlatIndex that only forwards to their georag._core object."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from georag.search.protocol import IndexBase, Queries, Ranges, search_args
from georag.search.validate import RowRanges
from georag.types import Neighbors

# What georag._core's search returns: near ids, near scores, far ids, far scores, scratch bytes.
RawResult = tuple[
    npt.NDArray[np.int64], npt.NDArray[np.float32], npt.NDArray[np.int64], npt.NDArray[np.float32], int
]


class CoreBacked(IndexBase):
    """An index held by a ``georag._core`` object in ``self._core``: size, dimension and both searches.

    ``search`` and ``search_raw`` take the core's tuning keywords that the subclass names in
    ``tuning_keywords`` (None: the index's default).
    """

    _core: Any

    @property
    def ntotal(self) -> int:
        """Number of database rows."""
        return int(self._core.ntotal)

    @property
    def dim(self) -> int:
        """Embedding dimension d."""
        return int(self._core.dim)

    def search_raw(
        self,
        queries: Queries,
        k_near: int,
        k_far: int,
        *,
        row_ranges: RowRanges | None = None,
        **tuning: int | None,
    ) -> RawResult:
        """``search`` as the core answers it: the four arrays and the scratch bytes the search allocated
        (0 on a GPU). ``k_near`` and ``k_far`` have no default here."""
        k_near, k_far, ranges = search_args(k_near, k_far, row_ranges)
        raw: RawResult = self._core.search(
            queries, k_near=k_near, k_far=k_far, row_ranges=ranges, **self._tuning(tuning)
        )
        return raw

    def _search(
        self, queries: Queries, k_near: int, k_far: int, ranges: Ranges, tuning: dict[str, int]
    ) -> Neighbors:
        return Neighbors(
            *self._core.search(queries, k_near=k_near, k_far=k_far, row_ranges=ranges, **tuning)[:4]
        )
