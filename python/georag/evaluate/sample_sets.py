"""Sample sets: several LLM answers to one prompt about one photo, with the photo's truth, read from a file.

The file is JSON lines shaped as ``shared/data/llm_answers/answers.jsonl``: one answer a line with ``id``
(``PHOTO#SAMPLE``), ``prompt_kind``, ``raw_text`` (null where the API gave nothing), ``gt_lat`` and
``gt_lon``. Each answer is parsed by georag's own parser (`georag.llm.parse.parse_coordinates`), not taken
from another program's parse: an answer that states no coordinates is a sample that failed, never (0, 0).
The selection benchmark, the calibration measurement and their tests read the real sets through this.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from georag.errors import EvaluationError
from georag.llm.parse import parse_coordinates


@dataclass(frozen=True, repr=False)
class SampleSet:
    """The answers of one prompt about one photo."""

    photo: str
    """The photo's id (the part of ``id`` before ``#``)."""
    prompt: str
    """The prompt kind (``zs``, ``5_rag``, ...)."""
    true_lat: float
    true_lon: float
    lat: npt.NDArray[np.float64]
    """The parsed answers' latitudes, in sample order (failed samples left out)."""
    lon: npt.NDArray[np.float64]
    asked: int
    """Samples in the file for this set, parsed or not."""

    def __repr__(self) -> str:
        return f"SampleSet({self.photo!r}, {self.prompt!r}, {self.lat.size}/{self.asked} parsed)"


def read_sample_sets(
    path: str | os.PathLike[str], *, source_contains: str = "", prompts: Iterable[str] | None = None
) -> list[SampleSet]:
    """The sample sets of ``path`` in file order, keeping the answers whose ``source`` contains
    ``source_contains`` and whose ``prompt_kind`` is in ``prompts`` (default: all). EvaluationError for a
    missing file, a line that is not a JSON object, or an answer without the fields above."""
    file = Path(path)
    if not file.is_file():
        raise EvaluationError(f"sample-set file {file} does not exist")
    wanted = None if prompts is None else set(prompts)
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    with open(file, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise EvaluationError(f"{file}:{n} is not JSON ({exc})") from exc
            if not isinstance(row, dict):
                raise EvaluationError(f"{file}:{n} is not a JSON object")
            if source_contains not in str(row.get("source", "")):
                continue
            missing = [k for k in ("id", "prompt_kind", "gt_lat", "gt_lon") if k not in row]
            if missing:
                raise EvaluationError(f"{file}:{n} lacks {', '.join(missing)}")
            kind = str(row["prompt_kind"])
            if wanted is not None and kind not in wanted:
                continue
            groups[(str(row["id"]).split("#", 1)[0], kind)].append(row)
    return [_set(photo, kind, rows) for (photo, kind), rows in groups.items()]


def _set(photo: str, kind: str, rows: list[dict[str, Any]]) -> SampleSet:
    parsed = [parse_coordinates(r.get("raw_text")) for r in rows]
    ok = [p for p in parsed if p is not None]
    return SampleSet(
        photo,
        kind,
        float(rows[0]["gt_lat"]),
        float(rows[0]["gt_lon"]),
        np.array([p[0] for p in ok], dtype=np.float64),
        np.array([p[1] for p in ok], dtype=np.float64),
        len(rows),
    )
