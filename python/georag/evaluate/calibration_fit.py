"""Fitting a calibration from files: a georag run's predictions and the photos' truth (`georag eval
calibrate`).

The rows fitted on are the predictions joined to a truth row, with coordinates and a confidence, that
did not fall back (a fallback's confidence is 0 by definition and stays so). Their features come from the
JSONL evidence (`georag.geo.calibration.prediction_features`: the raw agreement even where the run was
calibrated), or from the ``confidence`` column of a CSV (agreement only).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from georag.errors import EvaluationError
from georag.evaluate.calibration import CalibrationReport, calibration_report
from georag.evaluate.join import join_ids
from georag.evaluate.predictions import read_predictions
from georag.evaluate.records import read_records
from georag.evaluate.scoring import score_rows
from georag.evaluate.truth import read_truth
from georag.geo.calibration import Calibration, fit_calibration, prediction_features


def fit_from_files(
    predictions: str | os.PathLike[str],
    truth: str | os.PathLike[str],
    truth_format: str = "im2gps3k",
    *,
    columns: tuple[str, str, str] = ("id", "lat", "lon"),
    truth_columns: tuple[str | None, str | None, str | None] = (None, None, None),
    distance: str = "haversine",
    within_km: float = 25.0,
    method: str = "isotonic",
) -> tuple[Calibration, CalibrationReport, CalibrationReport]:
    """The fitted calibration, and the in-sample reports of the raw agreement and of the fit."""
    id_col, lat_col, lon_col = columns
    t_id, t_lat, t_lon = truth_columns
    truth_rows = read_truth(truth, truth_format, id_col=t_id, lat_col=t_lat, lon_col=t_lon)
    preds = read_predictions(predictions, id_col, lat_col, lon_col)
    records = read_records(predictions, id_col)
    if not records.has_confidence:
        raise EvaluationError(f"{predictions} has no confidence column: nothing to calibrate")
    scored = score_rows(preds, truth_rows, distance)
    join = join_ids(records.ids, truth_rows.ids)
    fell_back = dict(zip(preds.ids, preds.fallback.tolist(), strict=True))
    rows, within, strategies = [], [], set()
    left = {"no truth row": 0, "no coordinates": 0, "no confidence": 0, "fallback": 0}
    for j, pid in enumerate(records.ids):
        t = int(join.truth_of_pred[j])
        conf = float(records.confidence[j])
        pred = records.predictions[j]
        why = (
            "no truth row" if t < 0
            else "no coordinates" if not np.isfinite(scored.dist_km[t])
            else "fallback" if fell_back.get(pid, False)
            else "no confidence" if not np.isfinite(conf)
            else None
        )  # fmt: skip
        if why is not None:
            left[why] += 1
            continue
        rows.append(prediction_features(pred) if pred is not None else {"agreement": conf})
        within.append(float(scored.dist_km[t] <= within_km))
        strategies.add(records.strategy[j].split(">")[0])
    if len(rows) < 2 or len(set(within)) < 2:
        raise EvaluationError(
            f"{len(rows)} usable predictions, "
            + (
                f"all {'within' if within and within[0] else 'farther than'} {within_km:g} km"
                if rows
                else "none"
            )
            + ": a calibration needs predictions both within and farther than --within-km"
        )
    if len(strategies) > 1:
        raise EvaluationError(
            f"the predictions mix strategies ({', '.join(sorted(strategies))}): their agreement means "
            "different things; fit one calibration per strategy"
        )
    y = np.asarray(within)
    fitted_on = {
        "distance": distance,
        "predictions": str(Path(predictions)),
        "truth": str(Path(truth)),
        "left_out": [f"{n} {why}" for why, n in left.items() if n],
    }
    cal = fit_calibration(
        rows, y, within_km=within_km, method=method, strategy=strategies.pop(), fitted_on=fitted_on
    )
    raw = np.clip([r["agreement"] for r in rows], 0.0, 1.0)
    before = calibration_report(raw, y, within_km, resamples=0, source="raw agreement")
    after = calibration_report(cal.probability(rows), y, within_km, resamples=0, source="calibrated")
    return cal, before, after
