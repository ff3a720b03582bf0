"""Predictions as GeoJSON (RFC 7946): one FeatureCollection, a Point ``[lon, lat]`` per photo.

Pure: predictions in, JSON-ready dicts (or text) out; nothing is read or written here.

Each photo is one Feature with ``role`` "prediction" and the properties ``id``, ``confidence``,
``strategy``, ``error`` and ``fallback`` (null where missing). A photo without a prediction keeps its
Feature with ``"geometry": null`` and its ``error`` (RFC 7946, section 3.2). With ``evidence``, each photo
adds its LLM candidates (``role`` "candidate", ``rank``: the order asked) and the gallery rows retrieved
for it (``role`` "near" and "far", ``rank``, ``row``, ``score``), each carrying the photo's ``id``.

Coordinates are WGS-84 degrees, longitude first, longitudes in [-180, 180] (RFC 7946, sections 3.1.1 and
4). A point whose latitude lies outside [-90, 90] or that is not finite has no geometry.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from typing import Any

from georag.types import Prediction

MEDIA_TYPE = "application/geo+json"
"""The media type of GeoJSON (RFC 7946, section 12)."""
ROLES = ("prediction", "region", "candidate", "near", "far")
"""The ``role`` of a Feature: the photo's prediction, a region its LLM answers crowd around, an LLM
candidate, a similar or a dissimilar row."""


def point(lat: float | None, lon: float | None) -> dict[str, Any] | None:
    """A GeoJSON Point at (``lat``, ``lon``) degrees, the longitude wrapped into [-180, 180]; None where
    either is missing, not finite, or the latitude lies outside [-90, 90]."""
    if lat is None or lon is None:
        return None
    lat, lon = float(lat), float(lon)
    if not (math.isfinite(lat) and math.isfinite(lon)) or abs(lat) > 90.0:
        return None
    if abs(lon) > 180.0:
        lon = (lon + 180.0) % 360.0 - 180.0
    return {"type": "Point", "coordinates": [lon, lat]}


def prediction_feature(pred: Prediction) -> dict[str, Any]:
    """The photo's Feature: its predicted Point (null geometry for a failed photo) and its properties."""
    geometry = point(pred.lat, pred.lon) if pred.error is None else None
    confidence = pred.confidence if geometry is not None and math.isfinite(pred.confidence) else None
    return _feature(
        geometry,
        {
            "id": pred.id,
            "role": "prediction",
            "confidence": confidence,
            "strategy": pred.strategy,
            "error": pred.error,
            "fallback": pred.fallback,
        },
    )


def evidence_features(pred: Prediction) -> list[dict[str, Any]]:
    """The photo's regions (centre, ``radius_km``, ``count``, ``share`` of the samples asked), its LLM
    candidates, then its near and far gallery rows, as Features (those without valid coordinates are left
    out)."""
    out: list[dict[str, Any]] = []
    for rank, region in enumerate(pred.regions):
        geometry = point(region.get("lat"), region.get("lon"))
        if geometry is not None:
            props = {"id": pred.id, "role": "region", "rank": rank}
            props.update({k: region.get(k) for k in ("radius_km", "count", "share")})
            out.append(_feature(geometry, props))
    for rank, (lat, lon) in enumerate(pred.candidates):
        geometry = point(lat, lon)
        if geometry is not None:
            out.append(_feature(geometry, {"id": pred.id, "role": "candidate", "rank": rank}))
    for side, rows in pred.neighbors.items():
        for rank, row in enumerate(rows):
            geometry = point(row.get("lat"), row.get("lon"))
            if geometry is not None:
                props = {
                    "id": pred.id,
                    "role": side,
                    "rank": rank,
                    "row": row.get("row"),
                    "score": row.get("score"),
                }
                out.append(_feature(geometry, props))
    return out


def features(pred: Prediction, *, evidence: bool = False) -> list[dict[str, Any]]:
    """The photo's Features: its prediction, then (with ``evidence``) its candidates and neighbours."""
    return [prediction_feature(pred), *(evidence_features(pred) if evidence else [])]


def feature_collection(preds: Iterable[Prediction], *, evidence: bool = False) -> dict[str, Any]:
    """A FeatureCollection of ``preds`` (see the module's docstring)."""
    return {
        "type": "FeatureCollection",
        "features": [f for p in preds for f in features(p, evidence=evidence)],
    }


def from_result(result: dict[str, Any], *, evidence: bool = False) -> dict[str, Any]:
    """The FeatureCollection of one result as `georag serve` answers it (or one JSONL record)."""
    return feature_collection([Prediction.from_record(result)], evidence=evidence)


def dumps(collection: dict[str, Any]) -> str:
    """Strict JSON text (no NaN or Infinity) of a FeatureCollection."""
    return json.dumps(collection, allow_nan=False, separators=(",", ":"))


def iter_text(preds: Iterable[Prediction], *, evidence: bool = False) -> Iterator[str]:
    """The FeatureCollection of ``preds`` as chunks of JSON text, one Feature at a time (for files too
    large to hold as one dict); their concatenation parses as `feature_collection` gives it."""
    yield '{"type":"FeatureCollection","features":['
    first = True
    for pred in preds:
        for feature in features(pred, evidence=evidence):
            yield ("" if first else ",\n") + json.dumps(feature, allow_nan=False, separators=(",", ":"))
            first = False
    yield "]}\n"


def _feature(geometry: dict[str, Any] | None, properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "Feature", "geometry": geometry, "properties": properties}
