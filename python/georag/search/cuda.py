"""Exact contrastive search with float16 rows resident on a GPU (``georag._core`` built with CUDA).

NOT RUN ON A GPU by the project yet: the CUDA kernels compile, and their selection and certification code
is the code of the CPU twin (``georag._core._cuda_twin_search``) that tests/test_cuda_twin.py checks
against the CPU index bit for bit, but the device path itself has not run on a device. Prefer
:class:`georag.search.flat.FlatIndex` where results matter until it has been checked on one.
"""

from __future__ import annotations

import importlib.util
import os
from types import ModuleType

import numpy as np
import numpy.typing as npt

from georag.errors import MissingDependencyError
from georag.search.core_backed import CoreBacked

_REBUILD = "rebuild with a CUDA toolkit: GEORAG_CUDA=ON pip install ."


def cublas_dirs() -> list[str]:
    """Folders of the ``nvidia-cublas`` wheel's ``libcublas.so.*`` (``nvidia/cu13/lib`` or
    ``nvidia/cublas/lib``) in this environment, found without importing anything; empty when the wheel is
    not installed (the core then tries the system loader path)."""
    spec = importlib.util.find_spec("nvidia")
    if spec is None or not spec.submodule_search_locations:
        return []
    found = []
    for root in spec.submodule_search_locations:
        for sub in ("cu13", "cublas"):
            lib = os.path.join(root, sub, "lib")
            if os.path.isdir(lib) and any(f.startswith("libcublas.so") for f in os.listdir(lib)):
                found.append(lib)
    return found


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
    setter = getattr(_core, "cuda_set_cublas_dirs", None)
    if setter is not None:
        setter(cublas_dirs())
    return _core


class CudaFlatIndex(CoreBacked):
    """Exact k-nearest AND k-farthest search by cosine similarity on one GPU. NOT RUN ON A GPU yet.

    The rows live on the device as float16 (10M x 1152 takes 23.0 GB, plus 8 bytes per row and a search
    workspace of about 0.2 GB: ``georag._core.cuda_memory_estimate``):

    * a float16 array is kept as given, with a float32 scale (1 / norm) per row when ``normalize=True``:
      exactly the CPU ``FlatIndex(array)`` over the same array;
    * a float32 array is checked and L2-normalized as the CPU index does it (same errors), rounded to float16
      and then treated as above: exactly ``FlatIndex(FlatIndex(array).vectors().astype(np.float16))``. With
      ``normalize=False`` a value beyond the float16 range is refused (ValueError).

    Rows are uploaded chunk by chunk through a reused pinned buffer (no full host copy). Results: the same
    ids, order, ties (lower id first), padding (id -1, score NaN) and float32 scores, bit for bit, as the CPU
    index over those float16 rows on an AVX-512/AVX2 CPU (the GPU sums in the CPU kernel's lane order with
    FMAs). Batches of at least ``gemm_min_batch`` queries (default 8) score tiles with cuBLAS on tensor cores
    and re-score exactly every row within a proven error bound of a threshold (cpp/src/cuda/certified.hpp);
    smaller batches stream the rows once with an exact kernel and need no cuBLAS. The GEMM path loads cuBLAS
    at its first use: ``pip install nvidia-cublas`` (MissingDependencyError otherwise).

    Before its first GEMM search an index checks the GEMM's error on this GPU against the certified bound
    (a built-in stress set, :attr:`gemm_self_check`); if the bound's assumption about the tensor cores fails,
    the index warns once (RuntimeWarning) and uses the exact kernel only: same results, slower.

    Each index has its own CUDA stream and workspace; concurrent searches on one index are serialized.
    Raises MissingDependencyError when ``georag._core`` was built without CUDA or no device is usable.
    ``search`` and ``search_raw`` take two tuning keywords: ``tile_rows`` (rows per device tile; default 0,
    automatic) and ``gemm_min_batch`` (default 0 = 8).
    """

    tuning_keywords = ("tile_rows", "gemm_min_batch")

    def __init__(
        self,
        vectors: npt.NDArray[np.float32] | npt.NDArray[np.float16],
        normalize: bool = True,
        *,
        device: int = 0,
    ) -> None:
        """Builds the index from an (N, d) float32 or float16 array on CUDA device ``device``."""
        core = cuda_core()
        self._core = core.CudaFlatIndex(vectors, normalize=normalize, device=device)

    def _bound_check(
        self, queries: npt.NDArray[np.float32], row_start: int = 0, tile_rows: int = 0
    ) -> dict[str, float | int | bool]:
        """Test hook: the measured error of the tensor-core GEMM on this GPU.

        Scores one tile of rows (from ``row_start``; ``tile_rows`` rows, 0 = the GEMM path's automatic tile)
        for 1 to 512 ``queries`` with the GEMM AND with the exact kernel, and returns the largest
        ``|approx - exact| / e`` over the pairs (``ratio``), with ``e`` the certified bound the selection uses
        (cpp/src/cuda/certified.hpp), the pair where it was reached (``query``, ``row``, ``approx``,
        ``exact``, ``bound``), ``limit`` (1 / 1.0625) and ``ok`` (``ratio < limit``). A ratio at or above
        the limit means the GEMM breaks the bound's assumption on this GPU.
        ``georag._core._cuda_bound_stress_set`` gives rows and queries that push the ratio towards its
        worst case.
        """
        q = np.ascontiguousarray(queries, dtype=np.float32)
        return dict(self._core.bound_check(q, row_start=row_start, tile_rows=tile_rows))

    @property
    def gemm_self_check(self) -> dict[str, float | int | bool] | None:
        """The GEMM self-check run before this index's first GEMM search (None until then): the bound check
        on a built-in stress set. When it fails (``ok`` False) the index uses the exact kernel only and warned
        once (RuntimeWarning)."""
        res = self._core.gemm_self_check
        return None if res is None else dict(res)

    @property
    def device(self) -> int:
        """The CUDA device holding the database."""
        return int(self._core.device)

    @property
    def device_bytes(self) -> int:
        """Device bytes held by the rows and per-row arrays plus the current search workspace."""
        return int(self._core.row_bytes) + int(self._core.workspace_bytes)

    def __repr__(self) -> str:
        return f"CudaFlatIndex(ntotal={self.ntotal}, dim={self.dim}, device={self.device})"
