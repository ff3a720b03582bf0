"""The result of a contrastive search: nearest and farthest ids with their cosine similarities."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

# What georag._core's search returns: near ids, near scores, far ids, far scores, scratch bytes.
RawResult = tuple[
    npt.NDArray[np.int64], npt.NDArray[np.float32], npt.NDArray[np.int64], npt.NDArray[np.float32], int
]


@dataclass(frozen=True, repr=False)
class Neighbors:
    """Per query, the k most similar and k most dissimilar database rows.

    All arrays are (B, k). Scores are cosine similarities. ``near_*`` is sorted by descending score,
    ``far_*`` by ascending score, ties by lower id. Where fewer than k rows were searchable, a row is
    padded with id -1 and score NaN.
    """

    near_ids: npt.NDArray[np.int64]
    near_scores: npt.NDArray[np.float32]
    far_ids: npt.NDArray[np.int64]
    far_scores: npt.NDArray[np.float32]

    def __len__(self) -> int:
        return int(self.near_ids.shape[0])

    def __repr__(self) -> str:
        b, kn = self.near_ids.shape
        kf = self.far_ids.shape[1]
        first = ""
        if b and kn and kf:
            first = (
                f", first query: nearest id {self.near_ids[0, 0]} ({self.near_scores[0, 0]:.4f}),"
                f" farthest id {self.far_ids[0, 0]} ({self.far_scores[0, 0]:.4f})"
            )
        return f"Neighbors(queries={b}, k_near={kn}, k_far={kf}{first})"
