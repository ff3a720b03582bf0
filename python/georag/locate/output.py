"""Prediction files: a CSV of the answers and a JSONL of the evidence, written as results come, resumable.

The JSONL is the record of truth: on resume its complete lines are the finished photos (a line cut by a
kill is dropped), and the CSV is rewritten from it before new rows are appended, so the two always agree.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from pathlib import Path
from typing import IO, Any

from georag.errors import GeoRagError
from georag.locate.prediction import Prediction

log = logging.getLogger(__name__)

CSV_FIELDS = ("id", "lat", "lon", "confidence", "strategy", "error", "fallback")


def output_paths(out: Path) -> tuple[Path, Path]:
    """(CSV, JSONL) for ``--out preds.csv`` (or ``preds.jsonl``): the same stem, both suffixes."""
    if out.suffix not in (".csv", ".jsonl"):
        raise GeoRagError(f"--out {out}: name a .csv (a .jsonl with the evidence is written beside it)")
    return out.with_suffix(".csv"), out.with_suffix(".jsonl")


def read_done(jsonl: Path) -> tuple[list[Prediction], int]:
    """The predictions of the complete JSONL lines and the byte length they span (resume).

    A cut last line (the run was killed while writing it) is not counted; the writer truncates it away.
    """
    if not jsonl.exists():
        return [], 0
    done: list[Prediction] = []
    size = 0
    with open(jsonl, "rb") as f:
        for n, raw in enumerate(f, 1):
            if not raw.endswith(b"\n"):
                log.warning("%s: dropping the cut last line %d (interrupted while writing it)", jsonl, n)
                break
            try:
                done.append(Prediction.from_record(json.loads(raw)))
            except (ValueError, KeyError, TypeError) as exc:
                raise GeoRagError(
                    f"{jsonl}:{n} is not a georag prediction record ({exc}); move it away"
                ) from exc
            size += len(raw)
    return done, size


class PredictionWriter:
    """Appends predictions to the CSV and JSONL (flushed per row; fsynced on close)."""

    def __init__(self, out: Path, done: list[Prediction], done_bytes: int) -> None:
        """Continues ``out`` after ``done`` (from `read_done`): the JSONL is cut back to its complete lines,
        never rewritten (it is the only record of finished work); the CSV is rebuilt from it atomically."""
        self.csv_path, self.jsonl_path = output_paths(out)
        self.csv_path.parent.mkdir(parents=True, exist_ok=True)
        if self.jsonl_path.exists() and self.jsonl_path.stat().st_size != done_bytes:
            os.truncate(self.jsonl_path, done_bytes)
        tmp = self.csv_path.with_name(f"{self.csv_path.name}.tmp-{os.getpid()}")
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            w = csv.DictWriter(f, CSV_FIELDS)
            w.writeheader()
            for p in done:
                w.writerow(p.row())
        os.replace(tmp, self.csv_path)
        self._csv: IO[str] = open(self.csv_path, "a", encoding="utf-8", newline="")  # noqa: SIM115
        self._jsonl: IO[str] = open(self.jsonl_path, "a", encoding="utf-8")  # noqa: SIM115
        self._writer = csv.DictWriter(self._csv, CSV_FIELDS)

    def write(self, pred: Prediction) -> None:
        """Appends one prediction to both files."""
        self._jsonl.write(json.dumps(pred.record(), default=_json_default) + "\n")
        self._jsonl.flush()
        self._writer.writerow(pred.row())
        self._csv.flush()

    def close(self) -> None:
        """Flushes to disk and closes."""
        for f in (self._jsonl, self._csv):
            f.flush()
            os.fsync(f.fileno())
            f.close()

    def __enter__(self) -> PredictionWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")
