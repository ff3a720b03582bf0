"""Prediction files: a CSV of the answers and a JSONL of the evidence, written as results come, resumable.

The JSONL is the record of truth: on resume its complete lines are the finished photos (a line cut by a
kill is dropped), and the CSV is rewritten from it before new rows are appended, so the two always agree.
A GeoJSON FeatureCollection (`georag.geojson`) is derived from the JSONL once a run is complete
(`write_geojson`), in one atomic replace: it is never half-written, and never the only record of a photo.
"""

from __future__ import annotations

import csv
import fcntl
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from georag.config import Config
from georag.errors import OutputError
from georag.geojson import iter_text
from georag.store.files import write_json
from georag.types import Prediction

log = logging.getLogger(__name__)

CSV_FIELDS = ("id", "lat", "lon", "confidence", "strategy", "error", "fallback")
OUT_SUFFIXES = (".csv", ".jsonl", ".geojson")
"""What ``--out`` may end with: the CSV and the JSONL are always written, the GeoJSON on request."""
FORMATS = ("csv", "geojson")
"""``--format``: csv (the CSV and the JSONL) or geojson (a .geojson too); default: by ``--out``'s suffix."""


def output_paths(out: Path) -> tuple[Path, Path]:
    """(CSV, JSONL) for ``--out preds.csv`` (or ``preds.jsonl``, ``preds.geojson``): the same stem, both
    suffixes."""
    if out.suffix not in OUT_SUFFIXES:
        raise OutputError(
            f"--out {out}: name a .csv (a .jsonl with the evidence is written beside it) or a .geojson"
        )
    return out.with_suffix(".csv"), out.with_suffix(".jsonl")


def geojson_path(out: Path, out_format: str | None = None) -> Path | None:
    """Where the GeoJSON of a run into ``out`` goes: ``out`` itself when it ends with .geojson, the same
    stem with .geojson for ``out_format`` "geojson", else None (none is written). OutputError for
    ``out_format`` "csv" with a .geojson ``out``, or an unknown format."""
    if out_format not in (None, *FORMATS):
        raise OutputError(f"--format {out_format}: use one of {', '.join(FORMATS)}")
    output_paths(out)  # the suffix is checked
    if out.suffix == ".geojson":
        if out_format == "csv":
            raise OutputError(f"--out {out} names a GeoJSON file, but --format is csv")
        return out
    return out.with_suffix(".geojson") if out_format == "geojson" else None


def read_done(jsonl: Path) -> tuple[list[Prediction], int]:
    """The predictions of the complete JSONL lines and the byte length they span (resume).

    A cut last line (the run was killed while writing it) is not counted; the writer truncates it away.
    """
    done: list[Prediction] = []
    size = 0
    for pred, length in _records(jsonl):
        done.append(pred)
        size += length
    return done, size


def write_geojson(jsonl: Path, path: Path, *, evidence: bool = False) -> int:
    """Writes the FeatureCollection (`georag.geojson`) of the complete records of ``jsonl`` to ``path``,
    atomically (a temporary file beside it, then one rename), one record at a time; the number of photos.
    ``evidence``: the LLM candidates and the near and far gallery rows too."""
    count = 0

    def preds() -> Iterator[Prediction]:
        nonlocal count
        for pred, _ in _records(jsonl):
            count += 1
            yield pred

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            for chunk in iter_text(preds(), evidence=evidence):
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return count


def _records(jsonl: Path) -> Iterator[tuple[Prediction, int]]:
    """Each complete JSONL line's prediction and its length in bytes (a cut last line is dropped)."""
    if not jsonl.exists():
        return
    with open(jsonl, "rb") as f:
        for n, raw in enumerate(f, 1):
            if not raw.endswith(b"\n"):
                log.warning("%s: dropping the cut last line %d (interrupted while writing it)", jsonl, n)
                return
            try:
                pred = Prediction.from_record(json.loads(raw))
            except (ValueError, KeyError, TypeError) as exc:
                raise OutputError(
                    f"{jsonl}:{n} is not a georag prediction record ({exc}); move it away"
                ) from exc
            yield pred, len(raw)


class PredictionWriter:
    """Appends predictions to the CSV and JSONL (flushed per row; fsynced on close), holding a lock on them.

    Open it with :meth:`open`, which locks the files (a second run on the same --out is refused instead of
    interleaving rows), reads what an earlier run finished, and checks that run used the same settings.
    """

    def __init__(
        self, out: Path, done: list[Prediction], done_bytes: int, *, lock: IO[bytes] | None = None
    ) -> None:
        """Continues ``out`` after ``done`` (from `read_done`): the JSONL is cut back to its complete lines,
        never rewritten (it is the only record of finished work); the CSV is rebuilt from it atomically."""
        self.csv_path, self.jsonl_path = output_paths(out)
        self.csv_path.parent.mkdir(parents=True, exist_ok=True)
        self.done = done
        self._lock = lock
        if self.jsonl_path.exists() and self.jsonl_path.stat().st_size != done_bytes:
            os.truncate(self.jsonl_path, done_bytes)
        tmp = self.csv_path.with_name(f"{self.csv_path.name}.tmp-{os.getpid()}")
        # Ids are file names; one that is not UTF-8 is written back as the bytes it was (surrogateescape).
        with open(tmp, "w", encoding="utf-8", errors="surrogateescape", newline="") as f:
            w = csv.DictWriter(f, CSV_FIELDS)
            w.writeheader()
            for p in done:
                w.writerow(p.row())
        os.replace(tmp, self.csv_path)
        self._csv: IO[str] = open(  # noqa: SIM115
            self.csv_path, "a", encoding="utf-8", errors="surrogateescape", newline=""
        )
        self._jsonl: IO[str] = open(self.jsonl_path, "a", encoding="utf-8")  # noqa: SIM115
        self._writer = csv.DictWriter(self._csv, CSV_FIELDS)

    @classmethod
    def open(
        cls, out: Path, settings: dict[str, Any] | None = None, *, overwrite: bool = False
    ) -> PredictionWriter:
        """Locks ``out``'s files, resumes them (or starts over with ``overwrite``), and records ``settings``.

        ``settings`` (what decides the predictions: strategy, k, prompts, LLM, exclusions, store, encoder) is
        kept in ``<out>.settings.json``; resuming predictions made with other settings is refused (they would
        mix silently) with the differences listed.
        """
        csv_path, jsonl_path = output_paths(out)
        csv_path.parent.mkdir(parents=True, exist_ok=True)
        lock = open(jsonl_path.with_name(jsonl_path.name + ".lock"), "a+b")  # noqa: SIM115
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise OutputError(
                f"{out} is being written by another georag run; wait for it or use another --out"
            ) from None
        try:
            side = csv_path.with_suffix(".settings.json")
            if overwrite:
                for p in (csv_path, jsonl_path, side):
                    p.unlink(missing_ok=True)
            done, size = read_done(jsonl_path)
            if settings is not None:
                _check_settings(side, settings, resuming=bool(done))
            return cls(out, done, size, lock=lock)
        except BaseException:
            lock.close()
            raise

    def write(self, pred: Prediction) -> None:
        """Appends one prediction to both files."""
        self._jsonl.write(json.dumps(pred.record(), default=_json_default) + "\n")
        self._jsonl.flush()
        self._writer.writerow(pred.row())
        self._csv.flush()

    def close(self) -> None:
        """Flushes to disk, closes, and releases the lock."""
        for f in (self._jsonl, self._csv):
            f.flush()
            os.fsync(f.fileno())
            f.close()
        if self._lock is not None:
            self._lock.close()

    def __enter__(self) -> PredictionWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def run_settings(
    config: Config, *, llm: str, store: str | Path | None = None, encoder: str | None = None
) -> dict[str, Any]:
    """What decides a run's predictions (a resumed run must match it), by dotted config key: the search,
    the strategy and the settings of its route, the exclusions, the LLM endpoint ``llm`` (its name: no
    credentials), the store (``config.store`` unless given) and the encoder's model id (``encoder``, else
    ``config.encoder.model``). Not: request limits, concurrency, the encoder's backend or batch size."""
    settings = config.values(("search", "strategy", "exclusion"))
    for how in ("search.shards", "search.ray"):  # how the search runs, not what it answers (exact either way)
        settings.pop(how, None)
    name = config.strategy.name
    if name.startswith("knn"):  # retrieval only: the LLM settings do not matter
        settings = {k: v for k, v in settings.items() if not k.startswith(("strategy.rag.", "strategy.vpr."))}
        llm = "none"
    elif name == "rag":
        settings = {k: v for k, v in settings.items() if not k.startswith("strategy.vpr.")}
    where = config.store if store is None else store
    return {
        **settings,
        "llm": llm,
        "store": str(Path(where).resolve()),
        "encoder": config.encoder.model if encoder is None else encoder,
    }


def _check_settings(path: Path, settings: dict[str, Any], *, resuming: bool) -> None:
    """Refuses to resume with settings other than those recorded in ``path``; then records ``settings``
    there atomically (a kill leaves the old file or the new one, never half of one)."""
    now = json.loads(json.dumps(settings, default=str))
    if resuming and path.exists():
        before = _read_settings(path)
        # A setting newer than the earlier run is missing from its record: it ran with that setting's
        # default, so the default now is no difference (upgrading georag mid-run does not block resuming).
        defaults = json.loads(json.dumps(Config().values(("search", "strategy", "exclusion")), default=str))
        diff = [
            f"{k}: was {before.get(k)!r}, now {now.get(k)!r}"
            for k in sorted(set(before) | set(now))
            if before.get(k) != now.get(k) and not _new_at_default(k, before, now, defaults)
        ]
        if diff:
            raise OutputError(
                f"{path.with_suffix('').with_suffix('.csv')} holds predictions made with other settings; "
                "use --overwrite to start over, or another --out. Differences: " + "; ".join(diff)
            )
    write_json(path, now, indent=1)


def _new_at_default(key: str, before: dict[str, Any], now: dict[str, Any], defaults: dict[str, Any]) -> bool:
    """Whether ``key`` is a setting the earlier run did not record and this run leaves at its default."""
    return key not in before and key in defaults and defaults[key] == now.get(key)


def _read_settings(path: Path) -> dict[str, Any]:
    """The settings recorded in ``path``; OutputError naming it, and saying how to recover without losing
    the finished photos, when it is unreadable."""
    try:
        before = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(before, dict):
            return before
        problem = f"holds a JSON {type(before).__name__}, not the settings object"
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        problem = f"is not readable JSON ({exc})"
    jsonl = path.with_suffix("").with_suffix(".jsonl")
    raise OutputError(
        f"{path} {problem}: the settings of the earlier run cannot be compared. The finished photos in "
        f"{jsonl} are intact: if this run uses the same settings, delete {path} and run again to resume "
        "(the settings are recorded anew); --overwrite starts over and discards them"
    )


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")
