"""Boundary checks shared by every index: k values and submap row ranges ([start, end) pairs)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

RowRanges = Sequence[tuple[int, int]] | npt.NDArray[np.integer]


def as_row_ranges(row_ranges: RowRanges | None) -> npt.NDArray[np.int64] | None:
    """Returns ``row_ranges`` as a C-contiguous (R, 2) int64 array, or None for "search everything".

    Accepts a sequence of (start, end) pairs or an integer array; refuses floats, booleans and other shapes.
    Bounds, order and emptiness are checked by the core, which knows the index size.
    """
    if row_ranges is None:
        return None
    arr = np.asarray(row_ranges)
    if arr.size == 0:
        raise ValueError("row_ranges selects no rows; pass None to search the whole index")
    if arr.dtype.kind not in "iu":
        raise TypeError(f"row_ranges must hold integers, got dtype {arr.dtype}")
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"row_ranges must be (R, 2) [start, end) pairs, got shape {arr.shape}")
    if arr.dtype.kind == "u" and arr.max() > np.iinfo(np.int64).max:
        raise ValueError("row_ranges holds a value beyond the int64 range")
    return np.ascontiguousarray(arr, dtype=np.int64)


def check_k(k: object, name: str) -> None:
    """TypeError unless ``k`` is an int (not a bool); ValueError when it is negative."""
    if isinstance(k, bool) or not isinstance(k, int | np.integer):
        raise TypeError(f"{name} must be an int, got {type(k).__name__}")
    if k < 0:
        raise ValueError(f"{name} must be >= 0, got {k}")
