"""The reports `georag eval` adds when a predictions file carries more than coordinates.

* Calibration (`calibration_of`): whenever rows carry a confidence, how well it matches P(error <= D km)
  (`georag.evaluate.calibration`). D is the distance the predictions' calibration states (their
  evidence); uncalibrated confidences (the raw agreement) are checked against ``within_km`` (default
  25 km, the distance `georag eval calibrate` fits for by default).
* Headroom (`headroom_of`): oracle and baseline rows from a georag JSONL's evidence
  (`georag.evaluate.headroom`), scored exactly as the predictions are.
* Leaks (`without_ids`): the truth without the photos whose EXIF carries GPS.
"""

from __future__ import annotations

import numpy as np

from georag.errors import EvaluationError
from georag.evaluate.calibration import CalibrationReport, calibration_report
from georag.evaluate.headroom import headroom_predictions
from georag.evaluate.join import join_ids
from georag.evaluate.records import Records
from georag.evaluate.report import EvalReport
from georag.evaluate.scoring import ScoreOptions, evaluate_predictions
from georag.evaluate.truth import Truth
from georag.geo.calibration import WITHIN_KM


def stated_distance(records: Records) -> float | None:
    """The distance the records' calibrated confidences speak of (their evidence), None when none is
    calibrated; EvaluationError when rows state different ones."""
    stated = {
        float(p.evidence["calibration"]["probability_within_km"])
        for p in records.predictions
        if p is not None
        and isinstance(p.evidence.get("calibration"), dict)
        and "probability_within_km" in p.evidence["calibration"]
    }
    if len(stated) > 1:
        raise EvaluationError(
            f"the predictions' confidences are calibrated for different distances: {sorted(stated)}"
        )
    return stated.pop() if stated else None


def calibration_of(
    report: EvalReport, records: Records, options: ScoreOptions, within_km: float | None = None
) -> CalibrationReport | None:
    """The calibration of the records' confidences on the report's scored rows; None without confidences.
    ``within_km``: the distance to check uncalibrated confidences against (default 25 km); it must agree
    with the distance calibrated ones state."""
    if not records.has_confidence:
        return None
    stated = stated_distance(records)
    if stated is not None and within_km is not None and within_km != stated:
        raise EvaluationError(
            f"the confidences are calibrated as P(error <= {stated:g} km); --calibration-km {within_km:g} "
            "would check them against another distance"
        )
    km = stated if stated is not None else within_km if within_km is not None else WITHIN_KM
    rows = report.rows
    join = join_ids(records.ids, rows.ids)
    has = join.truth_of_pred >= 0
    conf = np.full(len(rows.ids), np.nan)
    conf[join.truth_of_pred[has]] = records.confidence[has]
    use = np.isfinite(conf) & np.isfinite(rows.dist_km)
    if not use.any():
        return None
    d = rows.dist_km[use]
    within = (d < km) if options.strict else (d <= km)
    if stated is not None:
        source = "calibrated"
    elif records.has_evidence:
        source = "raw agreement"
    else:
        source = "as given"
    return calibration_report(
        conf[use], within.astype(float), km, resamples=options.bootstrap, seed=options.seed, source=source
    )


def headroom_of(records: Records, truth: Truth, options: ScoreOptions) -> dict[str, EvalReport]:
    """The headroom rows' reports (empty when the records carry no evidence)."""
    if not records.has_evidence:
        return {}
    return {
        name: evaluate_predictions(preds, truth, options)
        for name, preds in headroom_predictions(records, truth).items()
    }


def without_ids(truth: Truth, ids: tuple[str, ...]) -> Truth:
    """``truth`` without the rows of ``ids`` (joined as predictions are: also across an image extension)."""
    join = join_ids(ids, truth.ids)
    drop = np.zeros(len(truth), dtype=bool)
    drop[join.truth_of_pred[join.truth_of_pred >= 0]] = True
    keep = ~drop
    return Truth(
        tuple(i for i, k in zip(truth.ids, keep.tolist(), strict=True) if k),
        truth.lat[keep],
        truth.lon[keep],
        path=truth.path,
        format=truth.format,
        rejected=truth.rejected,
    )
