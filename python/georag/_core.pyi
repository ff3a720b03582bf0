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

class CudaFlatIndex:  # present only when has_cuda is True; NOT YET RUN ON A GPU
    def __init__(self, vectors: npt.NDArray[np.float32], normalize: bool = True, device: int = 0) -> None: ...
    def search(
        self,
        queries: npt.NDArray[np.float32],
        k_near: int = 16,
        k_far: int = 16,
        row_ranges: npt.NDArray[np.int64] | None = None,
        tile_rows: int = 0,
    ) -> _SearchResult: ...
    @property
    def ntotal(self) -> int: ...
    @property
    def dim(self) -> int: ...
    @property
    def device(self) -> int: ...

def kernel_name() -> str: ...
def amx_status() -> str: ...
def blas_info() -> str: ...
def cuda_device_available() -> tuple[bool, str]: ...
