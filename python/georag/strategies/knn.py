"""The retrieval-only baselines: the top-1 neighbour's coordinates, or the geodesic medoid of the top k."""

from __future__ import annotations

import math

from georag.locate.prediction import Prediction
from georag.strategies.retrieved import Retrieved
from georag.strategies.select import agreement, medoid

KNN_MODES = ("knn", "knn-medoid")


def knn_predict(item: Retrieved, mode: str = "knn", k: int = 16) -> Prediction:
    """``"knn"``: the most similar row's coordinates; ``"knn-medoid"``: the medoid of the top ``k``.

    Confidence: the share of the top-k neighbours within 100 km of the answer. A store search that found
    no row (an empty submap) gives an error prediction, never (0, 0).
    """
    valid = item.valid_near()
    lat, lon = item.near_lat[valid][:k], item.near_lon[valid][:k]
    if lat.size == 0:
        return Prediction(item.id, strategy=mode, error="no neighbours: the store returned no rows")
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
