"""Type stubs for the compiled extension georag._core (cpp/bindings)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__version__: str
has_cuda: bool
cuda_build_note: str

_SearchResult = tuple[
    npt.NDArray[np.int64], npt.NDArray[np.float32], npt.NDArray[np.int64], npt.NDArray[np.float32], int
]

class FlatIndex:
    def __init__(
        self,
        vectors: npt.NDArray[np.float32] | npt.NDArray[np.float16],
        normalize: bool = True,
        num_threads: int = 0,
    ) -> None: ...
    @staticmethod
    def wrap(
        segments: list[npt.NDArray[np.float16] | npt.NDArray[np.float32]], d: int, num_threads: int = 0
    ) -> FlatIndex: ...
    @staticmethod
    def reserve(n: int, d: int, normalize: bool = True, num_threads: int = 0) -> FlatIndex: ...
    def append(self, rows: npt.NDArray[np.float32]) -> None: ...
    @property
    def filled(self) -> int: ...
    def search(
        self,
        queries: npt.NDArray[np.float32],
        k_near: int = 16,
        k_far: int = 16,
        row_ranges: npt.NDArray[np.int64] | None = None,
        num_threads: int = 0,
        blas_min_batch: int = 256,
        tile_rows: int = 0,
        amx_min_batch: int = 16,
        use_amx: bool = True,
    ) -> _SearchResult: ...
    @property
    def ntotal(self) -> int: ...
    @property
    def dim(self) -> int: ...
    @property
    def normalized(self) -> bool: ...
    @property
    def dtype(self) -> str: ...
    @property
    def borrowed(self) -> bool: ...
    @property
    def owned_bytes(self) -> int: ...
    num_threads: int
    def vectors(self) -> npt.NDArray[np.float32] | npt.NDArray[np.float16]: ...

class CudaFlatIndex:  # present only when has_cuda is True; NOT RUN ON A GPU yet
    def __init__(
        self,
        vectors: npt.NDArray[np.float32] | npt.NDArray[np.float16],
        normalize: bool = True,
        device: int = 0,
    ) -> None: ...
    def search(
        self,
        queries: npt.NDArray[np.float32],
        k_near: int = 16,
        k_far: int = 16,
        row_ranges: npt.NDArray[np.int64] | None = None,
        tile_rows: int = 0,
        gemm_min_batch: int = 0,
    ) -> _SearchResult: ...
    @property
    def ntotal(self) -> int: ...
    @property
    def dim(self) -> int: ...
    @property
    def device(self) -> int: ...
    def bound_check(
        self, queries: npt.NDArray[np.float32], row_start: int = 0, tile_rows: int = 0
    ) -> dict[str, float | int | bool]: ...
    @property
    def gemm_self_check(self) -> dict[str, float | int | bool] | None: ...
    @property
    def row_bytes(self) -> int: ...
    @property
    def workspace_bytes(self) -> int: ...

def cuda_set_cublas_dirs(dirs: list[str]) -> None: ...  # present only when has_cuda is True
def _cuda_twin_search(
    rows: npt.NDArray[np.float16],
    queries: npt.NDArray[np.float32],
    k_near: int,
    k_far: int,
    approx: str = "fp16-gemm",
    normalize: bool = False,
    row_ranges: npt.NDArray[np.int64] | None = None,
    tile_rows: int = 0,
    l2_bytes: int = 52428800,
    seed: int = 0,
    bound_scale: float = 1.0,
) -> tuple[
    npt.NDArray[np.int64],
    npt.NDArray[np.float32],
    npt.NDArray[np.int64],
    npt.NDArray[np.float32],
    dict[str, bool | int | float],
]: ...
def _cuda_twin_bound_check(
    rows: npt.NDArray[np.float16],
    queries: npt.NDArray[np.float32],
    approx: str = "fp16-gemm",
    normalize: bool = False,
    row_start: int = 0,
    tile_rows: int = 0,
    l2_bytes: int = 52428800,
    seed: int = 0,
) -> dict[str, float | int | bool]: ...
def _cuda_bound_stress_set(d: int) -> tuple[npt.NDArray[np.float16], npt.NDArray[np.float32]]: ...
def cuda_memory_estimate(
    n: int, d: int, batch: int = 256, k_near: int = 16, k_far: int = 16, l2_bytes: int = 52428800
) -> dict[str, int]: ...
def kernel_name() -> str: ...
def amx_status() -> str: ...
def _set_certify_bound_scale(scale: float) -> float: ...  # TEST ONLY: scales the certified bounds
def blas_info() -> str: ...
def cuda_device_available() -> tuple[bool, str]: ...
