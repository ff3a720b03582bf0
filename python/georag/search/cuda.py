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

_REBUILD = "rebuild with a CUDA toolkit: GEORAG_CUDA=ON pip install ."


def cuda_core() -> ModuleType:
    """Returns ``georag._core`` when it has the CUDA variant and sees a device, else raises.

    Raises MissingDependencyError when the extension was built without CUDA or no device is usable.
    """
    import georag._core as _core

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
    usable. ``search`` and ``search_raw`` take one tuning keyword, ``tile_rows`` (rows per device
    tile; default 0, automatic).
    """

    tuning_keywords = ("tile_rows",)

    def __init__(
        self,
        vectors: npt.NDArray[np.float32] | npt.NDArray[np.float16],
        normalize: bool = True,
        *,
        device: int = 0,
    ) -> None:
        """Builds the index from an (N, d) float32 or float16 array on CUDA device ``device`` (as the CPU
        `FlatIndex` takes them; the device keeps float32 rows for now, so float16 is widened, exactly)."""
        core = cuda_core()
        if isinstance(vectors, np.ndarray) and vectors.dtype == np.float16:
            vectors = vectors.astype(np.float32)
        self._core = core.CudaFlatIndex(vectors, normalize=normalize, device=device)

    @property
    def device(self) -> int:
        """The CUDA device holding the database."""
        return int(self._core.device)

    def __repr__(self) -> str:
        return f"CudaFlatIndex(ntotal={self.ntotal}, dim={self.dim}, device={self.device})"
