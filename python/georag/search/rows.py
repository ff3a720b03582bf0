"""RowSource: a read-only (N, d) float32 matrix that indexes read chunk by chunk (a store's shards)."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt


@runtime_checkable
class RowSource(Protocol):
    """Rows too large to hold twice in memory: indexing returns float32 copies of the requested rows only."""

    @property
    def shape(self) -> tuple[int, int]:
        """(N, d)."""
        ...

    @property
    def dtype(self) -> np.dtype[Any]:
        """Always float32 (what indexing returns)."""
        ...

    @property
    def ndim(self) -> int:
        """Always 2."""
        ...

    def __getitem__(self, rows: slice | npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        """A (m, d) float32 array of a slice of rows or of sorted row ids."""
        ...
