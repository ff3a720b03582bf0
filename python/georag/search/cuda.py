"""Exact contrastive search with the database resident on a GPU (``georag._core`` built with CUDA).

NOT YET RUN ON A GPU: the CUDA kernels compile and mirror the CPU search, but the project has not
run them on a device yet. Prefer :class:`georag.search.flat.FlatIndex` where results matter until
they have been checked on one.
"""

from __future__ import annotations

from types import ModuleType

import numpy as np
import numpy.typing as npt

from georag.errors import MissingDependencyError
from georag.search.core_backed import CoreBacked
from georag.search.neighbors import Neighbors, RawResult
from georag.search.validate import RowRanges, as_row_ranges, check_k

_REBUILD = "rebuild with a CUDA toolkit: GEORAG_CUDA=ON pip install ."


def _cuda_core() -> ModuleType:
    """Returns ``georag._core`` when it has the CUDA variant and sees a device, else raises.

    Raises MissingDependencyError when the extension was built without CUDA or no device is usable.
    """
    from georag import _core

    if not getattr(_core, "has_cuda", False):
        note = getattr(_core, "cuda_build_note", "georag._core was built without CUDA")
        raise MissingDependencyError(f"CudaFlatIndex is not available: {note}; {_REBUILD}")
    ok, why = _core.cuda_device_available()
    if not ok:
        raise MissingDependencyError(
            f"CudaFlatIndex needs a CUDA device: {why}; use georag.FlatIndex on the CPU"
        )
    return _core


class CudaFlatIndex(CoreBacked):
    """Exact k-nearest AND k-farthest search by cosine similarity on one GPU. NOT YET RUN ON A GPU.

    Same contract as :class:`georag.search.flat.FlatIndex`: the (N, d) float32 database is
    validated and, with ``normalize=True``, L2-normalized on the host (same errors), then copied to
    ``device``. Queries are normalized on the host in each search. Results have the same ids, order,
    ties (lower id first) and padding (id -1, score NaN) as the CPU index; the GPU sums dot products
    in another order, so scores may differ in the last bits and two rows whose scores are equal
    within float rounding may swap places.

    Raises MissingDependencyError when ``georag._core`` was built without CUDA or no device is
    usable.
    """

    def __init__(
        self,
        vectors: npt.NDArray[np.float32],
        normalize: bool = True,
        *,
        device: int = 0,
    ) -> None:
        """Builds the index from an (N, d) float32 array on CUDA device ``device``."""
        core = _cuda_core()
        self._core = core.CudaFlatIndex(vectors, normalize=normalize, device=device)

    @property
    def device(self) -> int:
        """The CUDA device holding the database."""
        return int(self._core.device)

    def __repr__(self) -> str:
        return f"CudaFlatIndex(ntotal={self.ntotal}, dim={self.dim}, device={self.device})"

    def search(
        self,
        queries: npt.NDArray[np.float32],
        k_near: int = 16,
        k_far: int = 16,
        *,
        row_ranges: RowRanges | None = None,
    ) -> Neighbors:
        """Returns the ``k_near`` most and ``k_far`` least similar rows for each (B, d) query.

        Same arguments, results and errors as :meth:`georag.search.flat.FlatIndex.search`.
        """
        return Neighbors(*self.search_raw(queries, k_near, k_far, row_ranges=row_ranges)[:4])

    def search_raw(
        self,
        queries: npt.NDArray[np.float32],
        k_near: int = 16,
        k_far: int = 16,
        *,
        row_ranges: RowRanges | None = None,
        tile_rows: int = 0,
    ) -> RawResult:
        """``search`` with the device tile width exposed (0 = automatic); the last item is 0."""
        check_k(k_near, "k_near")
        check_k(k_far, "k_far")
        return self._core.search(
            queries,
            k_near=k_near,
            k_far=k_far,
            row_ranges=as_row_ranges(row_ranges),
            tile_rows=tile_rows,
        )
