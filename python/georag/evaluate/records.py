"""What a predictions file carries beyond coordinates: confidences and, in a georag JSONL, the evidence.

`georag.evaluate.predictions` reads the coordinates that are scored; this reads the rest, by the same id
column, for the reports that need it: calibration (the ``confidence`` column), headroom (the candidates,
neighbours and vpr-guided prior of each JSONL record) and leaks (``exif_gps`` in the evidence).
"""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from georag.evaluate.predictions import _is_jsonl
from georag.types import Prediction

CONFIDENCE = "confidence"


@dataclass(frozen=True, repr=False)
class Records:
    """Per id (the file's order, rows without an id dropped): confidence and the JSONL's predictions."""

    ids: tuple[str, ...]
    confidence: npt.NDArray[np.float64]
    """The ``confidence`` column (NaN where empty, not a number, or absent)."""
    predictions: tuple[Prediction | None, ...]
    """The georag record of each row (JSONL with an ``evidence`` object), else None."""
    strategy: tuple[str, ...] = ()
    """The ``strategy`` column ("" where absent)."""

    @property
    def has_confidence(self) -> bool:
        """True when some row carries a confidence."""
        return bool(np.isfinite(self.confidence).any())

    @property
    def has_evidence(self) -> bool:
        return any(p is not None for p in self.predictions)

    def __repr__(self) -> str:
        return (
            f"Records({len(self.ids)} rows, confidence={self.has_confidence}, evidence={self.has_evidence})"
        )


def read_records(path: str | os.PathLike[str], id_col: str = "id") -> Records:
    """The confidences (and JSONL evidence) of ``path``; a missing column just means NaN everywhere."""
    file = Path(path)
    rows: list[dict[str, Any]] = []
    if _is_jsonl(file):
        with open(file, encoding="utf-8-sig") as f:
            for line in f:
                try:
                    rec = json.loads(line) if line.strip() else None
                except json.JSONDecodeError:
                    continue  # predictions.py reports such lines
                if isinstance(rec, dict):
                    rows.append(rec)
    else:
        with open(file, newline="", encoding="utf-8-sig") as f:
            for row in csv.DictReader(f):
                if not any((v or "").strip() for v in row.values() if isinstance(v, str)):
                    break  # the GeoEstimation summary rows follow a blank line
                rows.append(row)
    ids, conf, preds, strategy = [], [], [], []
    for row in rows:
        pid = str(row.get(id_col) or "").strip()
        if not pid:
            continue
        ids.append(pid)
        conf.append(_number(row.get(CONFIDENCE)))
        preds.append(_prediction(row))
        strategy.append(str(row.get("strategy") or ""))
    return Records(tuple(ids), np.asarray(conf, dtype=np.float64), tuple(preds), tuple(strategy))


def _number(value: Any) -> float:
    if isinstance(value, bool) or value is None:
        return math.nan
    try:
        out = float(value)
    except (TypeError, ValueError):
        return math.nan
    return out if math.isfinite(out) else math.nan


def _prediction(row: dict[str, Any]) -> Prediction | None:
    if not isinstance(row.get("evidence"), dict):
        return None
    try:
        return Prediction.from_record(row)
    except (KeyError, TypeError, ValueError):
        return None
