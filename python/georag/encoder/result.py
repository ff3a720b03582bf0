"""EncodeResult: the raw embeddings of the inputs that encoded, their ids, and the inputs that failed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from georag.encoder.batches import ItemFailure


@dataclass(frozen=True, repr=False)
class EncodeResult:
    """What one `Encoder.encode` call produced.

    Rows of `embeddings` are raw (the vision tower's pooler_output, NOT L2-normalized) and line up
    with `ids`; inputs that could not be decoded or encoded are listed in `failures` instead, in input
    order. `model_id` and `dim` travel with the vectors so a store can refuse to mix models.
    """

    embeddings: npt.NDArray[np.float32]
    """(n, dim) float32, one row per id that encoded; no default."""
    ids: tuple[str, ...]
    """Ids of the rows of `embeddings`, in input order; no default."""
    failures: tuple[ItemFailure, ...]
    """One (id, reason) per input that failed, in input order; no default."""
    model_id: str
    """The model the vectors came from (hub id or resolved local folder); no default."""
    dim: int
    """Embedding width d (768 for siglip-base, 1152 for so400m); no default."""

    def __post_init__(self) -> None:
        if self.embeddings.dtype != np.float32 or self.embeddings.ndim != 2:
            raise ValueError(
                f"embeddings must be 2-D float32, got {self.embeddings.dtype} {self.embeddings.shape}"
            )
        if self.embeddings.shape != (len(self.ids), self.dim):
            raise ValueError(
                f"embeddings shape {self.embeddings.shape} != {len(self.ids)} ids x dim {self.dim}"
            )

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        shown = ", ".join(f"{f.id}: {f.reason}" for f in self.failures[:3])
        more = f", ... {len(self.failures) - 3} more" if len(self.failures) > 3 else ""
        return (
            f"EncodeResult(model_id={self.model_id!r}, dim={self.dim}, encoded={len(self.ids)}, "
            f"failed={len(self.failures)}" + (f" [{shown}{more}]" if self.failures else "") + ")"
        )
