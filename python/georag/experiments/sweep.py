"""`georag eval sweep`: run `locate` over a grid of settings on a benchmark and score every run in one table.

The grid is strategies x k_near x k_far (the papers' ablations: 0 / 5 / 10 / 16 similar and dissimilar
references). For the rag route a grid point's prompt shows k_near similar and k_far dissimilar coordinates
(``zero`` when both are 0); the knn baselines ignore k_far, and knn-medoid takes the medoid of the top
k_near. Photos are encoded once for the whole grid. Each run writes ``<out>/<run>.csv`` (+ ``.jsonl``) and
resumes like `georag locate`, so an interrupted sweep continues where it stopped.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from georag.encoder.result import EncodeResult
from georag.errors import ConfigError, EvaluationError
from georag.evaluate.metrics import threshold_key
from georag.evaluate.predictions import Predictions
from georag.evaluate.report import EvalReport
from georag.evaluate.scoring import DEFAULT_DENOMINATOR, ScoreOptions, evaluate_predictions
from georag.evaluate.tables import denominator_text
from georag.evaluate.truth import Truth

if TYPE_CHECKING:
    from georag.config import Config
    from georag.encoder.encoder import Encoder
    from georag.llm.client import LLMClient
    from georag.locate.exclusion import QueryTruth
    from georag.store.store import GeoStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SweepPoint:
    """One setting of the grid."""

    strategy: str
    k_near: int
    k_far: int

    @property
    def name(self) -> str:
        """File-name stem of its run, e.g. ``rag_k16-16``."""
        return f"{self.strategy.replace('>', '-')}_k{self.k_near}-{self.k_far}"


def grid(strategies: Sequence[str], k_near: Sequence[int], k_far: Sequence[int]) -> list[SweepPoint]:
    """The grid points; the knn baselines get one point per k_near (k_far does not change them)."""
    points: list[SweepPoint] = []
    for s, kn, kf in itertools.product(strategies, k_near, k_far):
        if s.startswith("knn"):
            kf = 0
            kn = 1 if s == "knn" else max(kn, 1)  # knn: the top-1 neighbor, whatever k
        point = SweepPoint(s, kn, kf)
        if point not in points:
            points.append(point)
    return points


class CachedEncoder:
    """An encoder that embeds each photo once, for every run of a sweep (same interface as `Encoder`)."""

    def __init__(self, encoder: Encoder) -> None:
        self._encoder = encoder
        self._cache: dict[str, np.ndarray] = {}
        self._failed: dict[str, Any] = {}
        self.batch_size, self.dim, self.model_id = encoder.batch_size, encoder.dim, encoder.model_id

    def encode(self, images: Sequence[Path], ids: Sequence[str], *, progress: bool = False) -> EncodeResult:
        todo = [
            (p, i) for p, i in zip(images, ids, strict=True) if i not in self._cache and i not in self._failed
        ]
        if todo:
            res = self._encoder.encode([p for p, _ in todo], ids=[i for _, i in todo], progress=progress)
            self._cache.update(zip(res.ids, res.embeddings, strict=True))
            self._failed.update({f.id: f for f in res.failures})
        ok = [i for i in ids if i in self._cache]
        rows = np.stack([self._cache[i] for i in ok]) if ok else np.zeros((0, self.dim), np.float32)
        return EncodeResult(
            rows, tuple(ok), tuple(self._failed[i] for i in ids if i in self._failed), self.model_id, self.dim
        )


@dataclass(frozen=True)
class SweepRow:
    """One grid point's scores."""

    point: SweepPoint
    report: EvalReport
    failed: int
    fallbacks: int


def run_sweep(
    photos: Sequence[Path],
    truth: Mapping[str, QueryTruth],
    *,
    store: GeoStore,
    encoder: Encoder,
    llm: LLMClient | None,
    points: Iterable[SweepPoint],
    base: Config,
    out: Path,
    distance: str = "haversine",
    bootstrap: int = 1000,
    denominator: str = DEFAULT_DENOMINATOR,
    score_truth: Truth | None = None,
    on_run: Callable[[SweepPoint, int], None] | None = None,
) -> list[SweepRow]:
    """Locates ``photos`` at every grid point (resumable runs in ``out``); scores each against ``truth``.

    ``base``: the settings of every run but the grid's (strategy, k_near = knn_k, k_far, one prompt variant
    rag:K_NEAR:K_FAR, or zero at 0, 0); its store and encoder are ``store`` and ``encoder``.
    Each run is scored like `georag eval` with ``denominator``: against ``score_truth`` (the whole truth
    file, as `georag eval` reads it, `read_truth`) when given, else against the photos' own truth rows."""
    from georag.config import PromptVariant
    from georag.locate.geolocator import Geolocator
    from georag.locate.output import PredictionWriter, run_settings

    missing = [p.name for p in photos if p.name not in truth]
    if missing:
        raise EvaluationError(
            f"{len(missing)} photos have no truth row (first: {missing[0]}); a sweep scores every photo"
        )
    options = ScoreOptions(distance=distance, denominator=denominator, bootstrap=bootstrap)
    truth_rows = score_truth
    if truth_rows is None:
        truth_rows = Truth.from_arrays(
            [p.name for p in photos], [truth[p.name].lat for p in photos], [truth[p.name].lon for p in photos]
        )
    out.mkdir(parents=True, exist_ok=True)
    cached = CachedEncoder(encoder)
    rows: list[SweepRow] = []
    for point in points:
        if point.strategy not in ("knn", "knn-medoid") and llm is None:
            raise ConfigError(f"strategy {point.strategy} needs an LLM (--llm)")
        variant = (
            PromptVariant("zero", 0, 0)
            if point.k_near == point.k_far == 0
            else PromptVariant("rag", point.k_near, point.k_far)
        )
        config = base.with_values(
            {
                "strategy.name": point.strategy,
                "search.k_near": max(point.k_near, 1),
                "search.k_far": point.k_far,
                "strategy.knn_k": max(point.k_near, 1),
                "strategy.rag.variants": (variant,),
            }
        )
        geo = Geolocator(store, cached, llm, config, truth=truth)  # type: ignore[arg-type]
        path = out / f"{point.name}.csv"
        settings = run_settings(
            config, llm=llm.name if llm is not None else "none", store=store.path, encoder=encoder.model_id
        )
        settings["truth_ids"] = len(truth_rows)
        with PredictionWriter.open(path, settings) as writer:
            finished = {p.id for p in writer.done}
            preds = list(writer.done)
            for pred in geo.locate([p for p in photos if p.name not in finished]):
                writer.write(pred)
                preds.append(pred)
        if on_run is not None:
            on_run(point, len(preds))
        scored = Predictions.from_arrays(
            [p.id for p in preds],
            [p.lat for p in preds],
            [p.lon for p in preds],
            failure=[p.error or "" for p in preds],
            fallback=[p.fallback is not None or ">" in p.strategy for p in preds],
        )
        report = evaluate_predictions(scored, truth_rows, options)
        rows.append(SweepRow(point, report, report.counts.failures, report.counts.fallbacks))
    return rows


def sweep_table(rows: Sequence[SweepRow], digits: int = 1) -> str:
    """The sweep as one markdown table: a row per grid point, accuracy per threshold, median km, n, n scored,
    n missing; the denominator rule below it (as under every `georag eval` table)."""
    if not rows:
        return "(no runs)"
    keys = rows[0].report.thresholds_km
    head = "| strategy | k_near | k_far | " + " | ".join(f"{threshold_key(t)} km" for t in keys)
    tail = " | median km | n | scored | missing | failed | fell back |"
    lines = [head + tail, "|---|---:|---:|" + "---:|" * (len(keys) + 6)]
    for r in rows:
        acc = " | ".join(f"{100 * r.report.accuracy[t]:.{digits}f}" for t in keys)
        c = r.report.counts
        lines.append(
            f"| {r.point.strategy} | {r.point.k_near} | {r.point.k_far} | {acc} | "
            f"{r.report.median_km:.1f} | {c.n} | {c.scored} | {c.missing} | {r.failed} | {r.fallbacks} |"
        )
    denominator = rows[0].report.denominator
    lines += ["", f"{denominator_text(denominator)} (--denominator)."]
    missing = max(r.report.counts.missing for r in rows)
    if denominator == "truth" and missing:
        lines.append(
            f"{missing} truth rows have no prediction and count as wrong; "
            "--denominator predicted scores only the rows with a prediction."
        )
    return "\n".join(lines)


def sweep_json(rows: Sequence[SweepRow]) -> str:
    """The sweep as JSON: a list of {strategy, k_near, k_far, report}."""
    return json.dumps(
        [
            {
                "strategy": r.point.strategy,
                "k_near": r.point.k_near,
                "k_far": r.point.k_far,
                **r.report.to_json(),
            }
            for r in rows
        ],
        indent=1,
    )
