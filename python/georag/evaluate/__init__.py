"""Evaluation against ground truth: accuracy within 1 / 25 / 200 / 750 / 2500 km, errors, GeoScore, CIs.

``evaluate`` scores arrays; ``read_predictions`` and ``read_truth`` read files for ``evaluate_predictions``
and ``compare``; `georag eval` is the command line over them.
"""

from __future__ import annotations

from georag.errors import EvaluationError
from georag.evaluate.compare import Comparison, compare
from georag.evaluate.distances import DISTANCES, distance_km, geodesic_km
from georag.evaluate.join import IMAGE_EXTENSIONS, join_ids, strip_extension
from georag.evaluate.metrics import (
    GEOSCORE_SCALE_KM,
    THRESHOLDS_KM,
    accuracy,
    geoscore,
    parse_thresholds,
    threshold_key,
)
from georag.evaluate.predictions import Predictions, read_predictions
from georag.evaluate.report import Counts, EvalReport, Rows
from georag.evaluate.scoring import DENOMINATORS, ScoreOptions, evaluate, evaluate_predictions
from georag.evaluate.truth import Truth, read_truth

__all__ = [
    "DENOMINATORS",
    "DISTANCES",
    "GEOSCORE_SCALE_KM",
    "IMAGE_EXTENSIONS",
    "THRESHOLDS_KM",
    "Comparison",
    "Counts",
    "EvalReport",
    "EvaluationError",
    "Predictions",
    "Rows",
    "ScoreOptions",
    "Truth",
    "accuracy",
    "compare",
    "distance_km",
    "evaluate",
    "evaluate_predictions",
    "geodesic_km",
    "geoscore",
    "join_ids",
    "parse_thresholds",
    "read_predictions",
    "read_truth",
    "strip_extension",
    "threshold_key",
]
