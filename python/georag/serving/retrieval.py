"""The retrieval step's contract: a GeoStore search as the 8 arrays the `retrieval` model returns.

Shared by the Triton `retrieval` model (a dynamic batch per call) and `LocalSteps` (one query per call),
so both check queries alike (NaN, infinite, all-zero or wrongly sized rows are a BadRequest) and answer the
same arrays in the same order.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from georag.serving.batching import Outputs, run_batched
from georag.serving.errors import BadRequest
from georag.serving.pipeline import NeighbourArrays
from georag.store.store import GeoStore

NEIGHBOUR_OUTPUTS = (
    "near_ids", "near_scores", "near_lat", "near_lon", "far_ids", "far_scores", "far_lat", "far_lon",
)  # fmt: skip
"""The retrieval model's outputs, in `NeighbourArrays` field order."""


def search_outputs(
    store: GeoStore, queries: npt.NDArray[np.float32], k_near: int, k_far: int, index: str | None = None
) -> Outputs:
    """(n, k) arrays in NEIGHBOUR_OUTPUTS order for raw ``queries`` (checked by the caller)."""
    res = store.search(queries, k_near, k_far, index=index)
    n = res.neighbors
    return (
        n.near_ids.astype(np.int64), n.near_scores.astype(np.float32), res.near_lat, res.near_lon,
        n.far_ids.astype(np.int64), n.far_scores.astype(np.float32), res.far_lat, res.far_lon,
    )  # fmt: skip


def search_one(
    store: GeoStore, embedding: npt.NDArray[np.float32], k_near: int, k_far: int, index: str | None = None
) -> NeighbourArrays:
    """One raw (d,) embedding's neighbours; BadRequest for a row the retrieval model would refuse."""
    (found,) = run_batched(
        [np.asarray(embedding)[None]],
        lambda q: search_outputs(store, q, k_near, k_far, index),
        row_shape=(store.dim,),
        nonzero=True,
    )
    if isinstance(found, BadRequest):
        raise found
    return NeighbourArrays(*(a[0] for a in found))
