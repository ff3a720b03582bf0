"""Headroom and honest baselines from a georag JSONL: what the evidence held, next to what was chosen.

For each photo whose record carries them, a stand-in prediction per row of the headroom table:

* ``best LLM candidate (oracle)``: the parsed LLM answer nearest the truth (what a perfect selection
  rule would pick; `georag.geo.selection`);
* ``best neighbour (oracle)``: the retrieved gallery row (global search, ``neighbors.near``) nearest the
  truth (a perfect re-ranker over the retrieved rows);
* ``best re-ranked row (oracle)``: vpr-guided's re-ranked submap candidates, nearest the truth;
* ``vpr-guided prior alone``: the LLM prior's coordinates (its medoid), as a baseline: retrieval inside
  the prior's region can score below the prior itself.

The oracles look at the truth, so they are ceilings, not systems. A photo whose record lacks the evidence
of a row is a failure in that row (wrong everywhere under ``--denominator truth``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from georag.evaluate.join import join_ids
from georag.evaluate.predictions import Predictions
from georag.evaluate.records import Records
from georag.evaluate.truth import Truth
from georag.geo.coords import haversine_km
from georag.types import Prediction

Point = tuple[float, float]


def _llm_candidates(pred: Prediction) -> list[Point]:
    return pred.candidates


def _neighbours(pred: Prediction) -> list[Point]:
    return [(float(r["lat"]), float(r["lon"])) for r in pred.neighbors["near"] if _has_point(r)]


def _reranked(pred: Prediction) -> list[Point]:
    found = pred.evidence.get("candidates") or []
    return [(float(c["lat"]), float(c["lon"])) for c in found if isinstance(c, dict) and _has_point(c)]


def _has_point(d: dict[str, object]) -> bool:
    lat, lon = d.get("lat"), d.get("lon")
    return isinstance(lat, int | float) and isinstance(lon, int | float) and math.isfinite(lat + lon)


ORACLES: dict[str, Callable[[Prediction], list[Point]]] = {
    "best LLM candidate (oracle)": _llm_candidates,
    "best neighbour (oracle)": _neighbours,
    "best re-ranked row (oracle)": _reranked,
}
PRIOR = "vpr-guided prior alone"


def _prior(pred: Prediction) -> Point | None:
    prior = pred.evidence.get("prior")
    if isinstance(prior, dict) and _has_point(prior):
        return float(prior["lat"]), float(prior["lon"])
    return None


def headroom_predictions(records: Records, truth: Truth) -> dict[str, Predictions]:
    """The stand-in predictions of each headroom row that some record has evidence for, by row name."""
    join = join_ids(records.ids, truth.ids)
    rows: dict[str, list[Point | None]] = {name: [] for name in [*ORACLES, PRIOR]}
    for j, pred in enumerate(records.predictions):
        t = int(join.truth_of_pred[j])
        for name, get in ORACLES.items():
            points = get(pred) if pred is not None and t >= 0 else []
            rows[name].append(_nearest(points, truth.lat[t], truth.lon[t]) if points else None)
        rows[PRIOR].append(_prior(pred) if pred is not None else None)
    out = {}
    for name, found in rows.items():
        if any(p is not None for p in found):
            lat = [math.nan if p is None else p[0] for p in found]
            lon = [math.nan if p is None else p[1] for p in found]
            out[name] = Predictions.from_arrays(records.ids, lat, lon)
    return out


def _nearest(points: list[Point], lat: float, lon: float) -> Point:
    arr = np.asarray(points, dtype=np.float64)
    d = haversine_km(arr[:, 0], arr[:, 1], lat, lon)
    i = int(np.argmin(d))
    return float(arr[i, 0]), float(arr[i, 1])


def exif_gps_ids(records: Records) -> tuple[str, ...]:
    """Ids of the photos whose record says their EXIF carries GPS (``evidence["exif_gps"]``)."""
    return tuple(
        i
        for i, p in zip(records.ids, records.predictions, strict=True)
        if p is not None and p.evidence.get("exif_gps")
    )
