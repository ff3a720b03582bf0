"""The retrieval-only baselines: the top-1 neighbor's coordinates, or the geodesic medoid of the top k."""

from __future__ import annotations

import math

from georag.errors import ConfigError
from georag.geo.select import agreement, medoid
from georag.strategies.route import Route, answer
from georag.types import Photo, Prediction, Retrieved

KNN_MODES = ("knn", "knn-medoid")


def knn_predict(item: Retrieved, mode: str = "knn", k: int = 16) -> Prediction:
    """``"knn"``: the most similar row's coordinates; ``"knn-medoid"``: the medoid of the top ``k``.

    Confidence: the share of the top-k neighbors within 100 km of the answer. A store search that found
    no row (an empty submap) gives an error prediction, never (0, 0).
    """
    valid = item.valid_near()
    lat, lon = item.near_lat[valid][:k], item.near_lon[valid][:k]
    if lat.size == 0:
        return Prediction(item.id, strategy=mode, error="no neighbors: the store returned no rows")
    chosen = 0 if mode == "knn" else medoid(lat, lon)
    return Prediction(
        item.id,
        lat=float(lat[chosen]),
        lon=float(lon[chosen]),
        confidence=agreement(lat, lon, chosen, int(lat.size)),
        strategy=mode,
    )


def as_fallback(item: Retrieved, reason: str, strategy: str = "rag") -> Prediction:
    """The knn prediction standing in for ``strategy`` that failed, saying why."""
    pred = knn_predict(item, "knn")
    if pred.error is None:
        pred.strategy = f"{strategy}>knn"
        pred.fallback = reason
        pred.confidence = 0.0
    else:
        pred.error = f"{reason}; and {pred.error}"
    if not math.isfinite(pred.lat):
        pred.strategy = f"{strategy}>knn"
    return pred


class Knn:
    """The knn / knn-medoid strategy: no LLM, no second search."""

    needs_llm = False
    needs_embedding = False

    def __init__(self, mode: str = "knn", k: int = 16) -> None:
        if mode not in KNN_MODES:
            raise ConfigError(f"knn mode must be one of {KNN_MODES}, got {mode!r}")
        self.name, self.k = mode, k
        self.k_near = 1 if mode == "knn" else k

    def route(self, item: Retrieved, image: Photo | None = None) -> Route:
        """The prediction at once."""
        return answer(knn_predict(item, self.name, self.k))
