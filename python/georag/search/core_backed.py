"""The part of FlatIndex and CudaFlatIndex that only forwards to their georag._core object."""

from __future__ import annotations

from typing import Any


class CoreBacked:
    """Size and dimension of an index held by a ``georag._core`` object in ``self._core``."""

    _core: Any

    @property
    def ntotal(self) -> int:
        """Number of database rows."""
        return int(self._core.ntotal)

    @property
    def dim(self) -> int:
        """Embedding dimension d."""
        return int(self._core.dim)

    def __len__(self) -> int:
        return self.ntotal
