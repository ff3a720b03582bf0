"""Retrieved: one photo's neighbours from the store (ids, cosine scores, coordinates) for the strategies."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True, repr=False)
class Retrieved:
    """A photo and its k nearest and k farthest store rows (padding rows have id -1 and NaN coordinates)."""

    id: str
    """The image file name."""
    path: Path
    """Where the image is read from (the LLM gets its bytes)."""
    near_ids: npt.NDArray[np.int64]
    near_scores: npt.NDArray[np.float32]
    near_lat: npt.NDArray[np.float64]
    near_lon: npt.NDArray[np.float64]
    far_ids: npt.NDArray[np.int64]
    far_scores: npt.NDArray[np.float32]
    far_lat: npt.NDArray[np.float64]
    far_lon: npt.NDArray[np.float64]
    embedding: npt.NDArray[np.float32] | None = None
    """The photo's raw (d,) embedding, for routes that search again (vpr-guided: its submap); default None."""

    def valid_near(self) -> npt.NDArray[np.bool_]:
        """Which near slots hold a row (not padding)."""
        return self.near_ids >= 0

    def evidence(self) -> dict[str, Any]:
        """The neighbours as JSON-ready lists (for the JSONL record)."""

        def side(
            ids: np.ndarray, scores: np.ndarray, lat: np.ndarray, lon: np.ndarray
        ) -> list[dict[str, Any]]:
            return [
                {"row": int(i), "score": round(float(s), 5), "lat": float(a), "lon": float(b)}
                for i, s, a, b in zip(ids, scores, lat, lon, strict=True)
                if i >= 0
            ]

        return {
            "near": side(self.near_ids, self.near_scores, self.near_lat, self.near_lon),
            "far": side(self.far_ids, self.far_scores, self.far_lat, self.far_lon),
        }

    def __repr__(self) -> str:
        near, far = int(self.valid_near().sum()), int((self.far_ids >= 0).sum())
        return f"Retrieved({self.id!r}, near={near}, far={far})"
