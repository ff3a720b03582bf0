"""The retrieval step's contract: a GeoStore search as the 8 arrays the `retrieval` model returns.

Shared by the Triton `retrieval` model (a dynamic batch per call) and `LocalSteps` (one query per call),
so both check queries alike (NaN, infinite, all-zero or wrongly sized rows are a BadRequest) and answer the
same arrays in the same order. A restricted search (the vpr-guided route's submap) passes row ranges.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from georag.serving.batching import Outputs, run_batched
from georag.serving.errors import BadRequest
from georag.store.store import EXACT, GeoStore
from georag.types import Neighbors

MAX_K = 1024
"""Most rows one retrieval request may ask for on each side (its ``k_near`` / ``k_far`` inputs)."""

NEIGHBOR_OUTPUTS = (
    "near_ids", "near_scores", "near_lat", "near_lon", "far_ids", "far_scores", "far_lat", "far_lon",
)  # fmt: skip
"""The retrieval model's outputs, in `as_neighbors` order."""


def search_outputs(
    store: GeoStore,
    queries: npt.NDArray[np.float32],
    k_near: int,
    k_far: int,
    row_ranges: npt.NDArray[np.int64] | None = None,
) -> Outputs:
    """(n, k) arrays in NEIGHBOR_OUTPUTS order for raw ``queries`` (checked by the caller). A restricted
    search (``row_ranges``) is exact whatever the store's index, as in-process."""
    index = None if row_ranges is None else EXACT
    res = store.search(queries, k_near, k_far, row_ranges=row_ranges, index=index)
    assert res.near_lat is not None and res.near_lon is not None
    assert res.far_lat is not None and res.far_lon is not None
    return (
        res.near_ids.astype(np.int64), res.near_scores.astype(np.float32), res.near_lat, res.near_lon,
        res.far_ids.astype(np.int64), res.far_scores.astype(np.float32), res.far_lat, res.far_lon,
    )  # fmt: skip


def as_neighbors(arrays: Outputs) -> Neighbors:
    """The retrieval model's outputs (NEIGHBOR_OUTPUTS order) as `Neighbors` with coordinates."""
    near_ids, near_scores, near_lat, near_lon, far_ids, far_scores, far_lat, far_lon = (
        np.asarray(a) for a in arrays
    )
    return Neighbors(
        near_ids.astype(np.int64), near_scores.astype(np.float32), far_ids.astype(np.int64),
        far_scores.astype(np.float32), near_lat.astype(np.float64), near_lon.astype(np.float64),
        far_lat.astype(np.float64), far_lon.astype(np.float64),
    )  # fmt: skip


def check_row_ranges(ranges: npt.NDArray[np.generic], ntotal: int) -> npt.NDArray[np.int64]:
    """Row ranges of a request as (R, 2) int64 [start, end) pairs within the store; BadRequest if not."""
    arr = np.asarray(ranges)
    if arr.dtype.kind not in "iu" or arr.ndim != 2 or arr.shape[1] != 2 or arr.shape[0] < 1:
        raise BadRequest(f"row_ranges must be (R, 2) integer [start, end) pairs, got {arr.dtype} {arr.shape}")
    out = np.ascontiguousarray(arr, dtype=np.int64)
    if (out[:, 0] < 0).any() or (out[:, 1] > ntotal).any() or (out[:, 0] >= out[:, 1]).any():
        raise BadRequest(f"row_ranges must be non-empty [start, end) pairs within [0, {ntotal}]")
    return out


def search_one(
    store: GeoStore,
    embedding: npt.NDArray[np.float32],
    k_near: int,
    k_far: int,
    row_ranges: npt.NDArray[np.int64] | None = None,
) -> Neighbors:
    """One raw (d,) embedding's neighbors; BadRequest for a row the retrieval model would refuse."""
    ranges = None if row_ranges is None else check_row_ranges(row_ranges, store.ntotal)
    (found,) = run_batched(
        [np.asarray(embedding)[None]],
        lambda q: search_outputs(store, q, k_near, k_far, ranges),
        row_shape=(store.dim,),
        nonzero=True,
    )
    if isinstance(found, BadRequest):
        raise found
    return as_neighbors(found)
