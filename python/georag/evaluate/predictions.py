"""Reading predictions: a georag output (CSV or JSONL) or any CSV/JSONL with chosen id/lat/lon columns."""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from georag.errors import EvaluationError
from georag.evaluate.join import check_unique

log = logging.getLogger(__name__)

NO_COORDINATES = "no coordinates"
NOT_A_NUMBER = "not a number"
OUT_OF_RANGE = "out of range"

# The columns that mark a georag output (`georag locate --out`): its error, strategy and fallback fields.
_GEORAG_FIELDS = ("strategy", "error", "fallback")
_JSONL_SUFFIXES = (".jsonl", ".ndjson")
_MAX_LISTED = 40


@dataclass(frozen=True, repr=False)
class Predictions:
    """One prediction per id; a failed row (no usable coordinates) has NaN lat/lon and a ``failure``."""

    ids: tuple[str, ...]
    """The photo ids, unique, in file order."""
    lat: npt.NDArray[np.float64]
    """Predicted latitude in degrees; NaN where the row failed."""
    lon: npt.NDArray[np.float64]
    """Predicted longitude in degrees; NaN where the row failed."""
    failure: tuple[str, ...]
    """Why each row has no usable coordinates ("" when it has them): georag's error, "no coordinates",
    "not a number" or "out of range"."""
    fallback: npt.NDArray[np.bool_]
    """True where georag fell back to retrieval (``strategy`` like "rag>knn", or a ``fallback`` reason)."""
    path: Path | None = None
    """The file read, None for arrays."""
    kind: str = "arrays"
    """"georag-csv", "georag-jsonl", "csv", "jsonl" or "arrays"."""
    skipped: int = 0
    """Rows dropped because they had no id (or a JSONL line that is not JSON)."""
    ignored_after_blank: int = 0
    """Non-blank lines after the first blank line of a CSV, not read (result files end with summary rows)."""
    notes: tuple[str, ...] = field(default=())
    """What the reader skipped or ignored, in words, for the report."""
    detail: tuple[str, ...] = field(default=())
    """Each row's failure in words ("" when it has coordinates), e.g. "lat 'abc' is not a number",
    "lat 95 out of range", "lon empty" or georag's error; empty for predictions built by hand."""
    swappable: int = 0
    """Failed rows whose coordinates would be valid with lat and lon swapped."""

    @classmethod
    def from_arrays(
        cls,
        ids: Iterable[object],
        lat: npt.ArrayLike,
        lon: npt.ArrayLike,
        *,
        failure: Sequence[str] | None = None,
        fallback: npt.ArrayLike | None = None,
    ) -> Predictions:
        """Predictions from arrays: NaN (or out-of-range) coordinates are failures; ids must be unique."""
        id_tuple = tuple(str(i) for i in ids)
        la = np.array(lat, dtype=np.float64, ndmin=1)
        lo = np.array(lon, dtype=np.float64, ndmin=1)
        if not (la.shape == lo.shape == (len(id_tuple),)):
            raise EvaluationError(
                f"predictions: {len(id_tuple)} ids but lat/lon of shapes {la.shape} and {lo.shape}"
            )
        given = tuple(failure) if failure is not None else ("",) * len(id_tuple)
        fb = np.zeros(len(id_tuple), dtype=bool) if fallback is None else np.array(fallback, dtype=bool)
        if len(given) != len(id_tuple) or fb.shape != (len(id_tuple),):
            raise EvaluationError("predictions: failure and fallback need one entry per id")
        check_unique(id_tuple, "predictions")
        reasons = _coordinate_failures(la, lo, given)
        details = _details(la, lo, given, given)
        swappable = _swappable(la, lo, reasons)
        failed = np.array([bool(r) for r in reasons], dtype=bool)
        la[failed] = np.nan
        lo[failed] = np.nan
        return cls(id_tuple, la, lo, reasons, fb, detail=details, swappable=swappable)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def failed(self) -> npt.NDArray[np.bool_]:
        """True where a row has no usable coordinates."""
        return np.array([bool(r) for r in self.failure], dtype=bool)

    def failure_counts(self) -> dict[str, int]:
        """Failed rows by reason ("no coordinates", "not a number", "out of range", or "georag error"),
        most frequent first."""
        counts = Counter(_kind(r) for r in self.failure if r)
        return dict(counts.most_common())

    def failure_rows(self) -> list[dict[str, str]]:
        """Every failed row: {"id", "reason" (the kind, see `failure_counts`), "detail" (in words)}."""
        details = self.detail or self.failure
        return [
            {"id": i, "reason": _kind(r), "detail": d or r}
            for i, r, d in zip(self.ids, self.failure, details, strict=True)
            if r
        ]

    @property
    def swap_hint(self) -> str:
        """A hint when most failed rows would be valid with lat and lon swapped ("" otherwise)."""
        failed = int(self.failed.sum())
        if not failed or 2 * self.swappable <= failed:
            return ""
        return (
            f"{self.swappable} of {failed} failed rows would be valid with lat and lon swapped: "
            "are the latitude and longitude columns the other way round (--lat-col / --lon-col)?"
        )

    def failure_summary(self) -> dict[str, Any]:
        """The failures as JSON: {"failed", "by_reason", "swap_hint", "rows"}."""
        return {
            "failed": int(self.failed.sum()),
            "by_reason": self.failure_counts(),
            "swap_hint": self.swap_hint or None,
            "rows": self.failure_rows(),
        }

    def failure_lines(self, shown: int = 10) -> list[str]:
        """The failures for the terminal: counts by reason, the first ``shown`` rows, the swap hint."""
        rows = self.failure_rows()
        if not rows:
            return []
        counts = ", ".join(f"{k} {v}" for k, v in self.failure_counts().items())
        lines = [f"rows without usable coordinates ({len(rows)}): {counts}"]
        lines += [f"  {r['id']}: {r['detail']}" for r in rows[:shown]]
        if len(rows) > shown:
            lines.append(f"  ... (first {shown}; --json lists all)")
        if self.swap_hint:
            lines.append(f"hint: {self.swap_hint}")
        return lines

    def __repr__(self) -> str:
        where = f", path={str(self.path)!r}" if self.path is not None else ""
        return (
            f"Predictions(kind={self.kind!r}{where}, rows={len(self)}, failed={int(self.failed.sum())}, "
            f"fallbacks={int(self.fallback.sum())})"
        )


def read_predictions(
    path: str | os.PathLike[str], id_col: str = "id", lat_col: str = "lat", lon_col: str = "lon"
) -> Predictions:
    """Read a predictions file: JSONL (by its .jsonl/.ndjson suffix, or a first line that opens with "{")
    or CSV (any line endings; reading stops at the first blank line, which is how the GeoEstimation result
    files separate their summary rows).

    Columns (JSONL keys) are chosen by name. An empty, non-numeric or out-of-range coordinate makes the row
    a failure; so does a non-empty georag ``error``. Rows with a georag ``strategy`` containing ">"
    ("rag>knn") or a non-empty ``fallback`` fell back (they are still scored). Raises EvaluationError
    naming the file's columns when a chosen column is absent, and for repeated ids.
    """
    file = Path(path)
    if not file.is_file():
        raise EvaluationError(f"predictions file {file} does not exist")
    columns = (id_col, lat_col, lon_col)
    if _is_jsonl(file):
        return _read_jsonl(file, columns)
    return _read_csv(file, columns)


def _is_jsonl(file: Path) -> bool:
    if file.suffix.lower() in _JSONL_SUFFIXES:
        return True
    with open(file, "rb") as f:
        head = f.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    return head.startswith(b"{")


def _read_csv(file: Path, columns: tuple[str, str, str]) -> Predictions:
    with open(file, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = [h.strip() for h in next(reader, [])]
        if not header:
            raise EvaluationError(f"{file} is empty; expected a header row naming {', '.join(columns)}")
        where = _positions(file, header, columns)
        extra = {name: header.index(name) for name in _GEORAG_FIELDS if name in header}
        wanted = {**where, **extra}
        rows: list[dict[str, str]] = []
        ignored = 0
        for cells in reader:
            if not any(c.strip() for c in cells):
                # The GeoEstimation result files end with a blank line and two summary rows.
                ignored = sum(1 for rest in reader if any(c.strip() for c in rest))
                break
            rows.append({name: (cells[i] if i < len(cells) else "") for name, i in wanted.items()})
    kind = "georag-csv" if len(extra) == len(_GEORAG_FIELDS) else "csv"
    notes = []
    if ignored:
        notes.append(f"read up to the first blank line; {ignored} line(s) after it ignored (a summary?)")
        log.info("%s: %s", file, notes[-1])
    return _build(file, kind, rows, columns, notes, ignored_after_blank=ignored)


def _read_jsonl(file: Path, columns: tuple[str, str, str]) -> Predictions:
    rows: list[dict[str, Any]] = []
    bad: list[int] = []
    seen_keys: set[str] = set()
    with open(file, encoding="utf-8-sig") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                bad.append(n)  # e.g. the last line of a run killed while writing it
                continue
            if not isinstance(record, dict):
                bad.append(n)
                continue
            seen_keys.update(record)
            rows.append(record)
    if rows:
        _positions(file, sorted(seen_keys), columns)
    elif not bad:
        raise EvaluationError(f"{file} holds no JSON records; expected one object per line")
    kind = "georag-jsonl" if all(k in seen_keys for k in _GEORAG_FIELDS) else "jsonl"
    notes = []
    if bad:
        notes.append(f"{len(bad)} line(s) are not JSON objects and were skipped (first: line {bad[0]})")
        log.warning("%s: %s", file, notes[-1])
    return _build(file, kind, rows, columns, notes, skipped=len(bad))


def _positions(file: Path, header: Sequence[str], columns: tuple[str, str, str]) -> dict[str, int]:
    """{column name: index}; EvaluationError naming the file's columns when one is absent."""
    for option, name in zip(("--id-col", "--lat-col", "--lon-col"), columns, strict=True):
        if name not in header:
            shown = ", ".join(repr(h) for h in header[:_MAX_LISTED])
            more = f", ... ({len(header) - _MAX_LISTED} more)" if len(header) > _MAX_LISTED else ""
            raise EvaluationError(
                f"{file}: no column {name!r} ({option}); the file has columns: {shown}{more}. "
                "Name the id, latitude and longitude columns with --id-col, --lat-col and --lon-col."
            )
    return {name: list(header).index(name) for name in columns}


def _build(
    file: Path,
    kind: str,
    rows: list[dict[str, Any]],
    columns: tuple[str, str, str],
    notes: list[str],
    *,
    skipped: int = 0,
    ignored_after_blank: int = 0,
) -> Predictions:
    id_col, lat_col, lon_col = columns
    ids: list[str] = []
    lat: list[float] = []
    lon: list[float] = []
    failure: list[str] = []
    why: list[str] = []
    fallback: list[bool] = []
    no_id = 0
    for row in rows:
        pid = _text(row.get(id_col))
        if not pid:
            no_id += 1
            continue
        la, la_why = _number(row.get(lat_col))
        lo, lo_why = _number(row.get(lon_col))
        ids.append(pid)
        lat.append(la)
        lon.append(lo)
        error = _text(row.get("error"))
        failure.append(error or la_why or lo_why)
        la_text, lo_text = _said(la_why, "lat", row.get(lat_col)), _said(lo_why, "lon", row.get(lon_col))
        why.append(error or "; ".join(t for t in (la_text, lo_text) if t))
        fallback.append(">" in _text(row.get("strategy")) or bool(_text(row.get("fallback"))))
    if no_id:
        notes.append(f"{no_id} row(s) without an id were skipped")
        log.warning("%s: %s", file, notes[-1])
    check_unique(ids, str(file))
    la_arr, lo_arr = np.array(lat, dtype=np.float64), np.array(lon, dtype=np.float64)
    reasons = _coordinate_failures(la_arr, lo_arr, failure)
    details = _details(la_arr, lo_arr, failure, why)
    swappable = _swappable(la_arr, lo_arr, reasons)
    failed = np.array([bool(r) for r in reasons], dtype=bool)
    la_arr[failed] = np.nan
    lo_arr[failed] = np.nan
    if swappable:
        log.warning("%s: %d failed rows would be valid with lat and lon swapped", file, swappable)
    return Predictions(
        tuple(ids),
        la_arr,
        lo_arr,
        reasons,
        np.array(fallback, dtype=bool),
        path=file,
        kind=kind,
        skipped=skipped + no_id,
        ignored_after_blank=ignored_after_blank,
        notes=tuple(notes),
        detail=details,
        swappable=swappable,
    )


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def _number(value: Any) -> tuple[float, str]:
    """A coordinate cell as a float, or NaN and why not."""
    if isinstance(value, bool):
        return math.nan, NOT_A_NUMBER
    if isinstance(value, (int, float)):
        return float(value), ""
    text = _text(value)
    if not text:
        return math.nan, NO_COORDINATES
    try:
        return float(text), ""
    except ValueError:
        return math.nan, NOT_A_NUMBER


def _coordinate_failures(
    lat: npt.NDArray[np.float64], lon: npt.NDArray[np.float64], given: Sequence[str]
) -> tuple[str, ...]:
    """The given reasons, with "no coordinates" / "out of range" added where the numbers are unusable."""
    with np.errstate(invalid="ignore"):
        nan = ~(np.isfinite(lat) & np.isfinite(lon))
        outside = ~nan & ((np.abs(lat) > 90.0) | (np.abs(lon) > 180.0))
    out = []
    for why, is_nan, is_out in zip(given, nan.tolist(), outside.tolist(), strict=True):
        out.append(why or (NO_COORDINATES if is_nan else OUT_OF_RANGE if is_out else ""))
    return tuple(out)


GEORAG_ERROR = "georag error"
_KINDS = (NO_COORDINATES, NOT_A_NUMBER, OUT_OF_RANGE)


def _kind(reason: str) -> str:
    """The reason's kind: one of the coordinate reasons, else a georag error."""
    return reason if reason in _KINDS else GEORAG_ERROR


def _said(why: str, name: str, value: Any) -> str:
    """One coordinate's failure in words: "lat empty", "lat 'abc' is not a number"."""
    if why == NO_COORDINATES:
        return f"{name} empty"
    if why == NOT_A_NUMBER:
        return f"{name} {value!r} is not a number"
    return ""


def _details(
    lat: npt.NDArray[np.float64], lon: npt.NDArray[np.float64], given: Sequence[str], said: Sequence[str]
) -> tuple[str, ...]:
    """Each row's failure in words: what the reader said, else the unusable number ("lat 95 out of range")."""
    out = []
    for la, lo, why, text in zip(lat.tolist(), lon.tolist(), given, said, strict=True):
        if why:
            out.append(text or why)
            continue
        parts = []
        for name, v, limit in (("lat", la, 90.0), ("lon", lo, 180.0)):
            if not math.isfinite(v):
                parts.append(f"{name} {v!r} is not a finite number" if not math.isnan(v) else f"{name} empty")
            elif abs(v) > limit:
                parts.append(f"{name} {v:g} out of range (|{name}| <= {limit:g})")
        out.append("; ".join(parts))
    return tuple(out)


def _swappable(lat: npt.NDArray[np.float64], lon: npt.NDArray[np.float64], reasons: Sequence[str]) -> int:
    """Rows failed for their coordinates that would be valid with lat and lon swapped."""
    failed = np.array([r in _KINDS for r in reasons], dtype=bool)
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(lat) & np.isfinite(lon) & (np.abs(lon) <= 90.0) & (np.abs(lat) <= 180.0)
    return int((failed & ok).sum())
