"""evaluate: join predictions to truth, measure each distance, and summarise it as an EvalReport."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from georag.errors import EvaluationError
from georag.evaluate.bootstrap import bootstrap as bootstrap_replicates
from georag.evaluate.bootstrap import percentile_interval
from georag.evaluate.distances import DISTANCES, distance_km
from georag.evaluate.join import join_ids
from georag.evaluate.metrics import THRESHOLDS_KM, check_thresholds, geoscore
from georag.evaluate.predictions import Predictions
from georag.evaluate.report import Counts, EvalReport, Rows
from georag.evaluate.truth import Truth

log = logging.getLogger(__name__)

DENOMINATORS = ("truth", "predicted")
"""truth: every truth row (a missing or failed prediction is wrong everywhere); predicted: scored rows."""

DEFAULT_DENOMINATOR = "truth"
"""The denominator of `georag eval` and `georag eval sweep` alike (and of `ScoreOptions`)."""

CONVENTIONS = ("georag", "g3")
"""georag: the chosen distance, accuracy counts d <= t (default); g3: as G3's evaluation code scores
(geopy's WGS-84 geodesic, d < t), so numbers compare with papers that used it."""

DENOMINATOR_HELP = (
    "truth: every row of the truth file (a missing or failed prediction counts as wrong); "
    "predicted: only rows with a scored prediction."
)
"""The --denominator help of every command that scores."""


@dataclass(frozen=True, repr=False)
class Scored:
    """Per truth row: its prediction (index, -1 for none) and distance (inf where not scored)."""

    predictions: Predictions
    truth: Truth
    pred_of_truth: npt.NDArray[np.int64]
    dist_km: npt.NDArray[np.float64]
    extra: npt.NDArray[np.int64]
    by_extension: int

    @property
    def joined(self) -> npt.NDArray[np.bool_]:
        return self.pred_of_truth >= 0

    @property
    def scored(self) -> npt.NDArray[np.bool_]:
        return np.isfinite(self.dist_km)


@dataclass(frozen=True)
class ScoreOptions:
    """How predictions are scored (`evaluate_predictions`, `compare`, `georag eval`); checked on creation."""

    distance: str = "haversine"
    """"haversine" (R = 6371.0 km, as the benchmark papers; default) or "geodesic" (WGS-84)."""
    thresholds: tuple[float, ...] = THRESHOLDS_KM
    """Accuracy thresholds in km (sorted and made unique here); default 1 / 25 / 200 / 750 / 2500."""
    denominator: str = DEFAULT_DENOMINATOR
    """"truth" (every truth row; a missing or failed prediction is wrong everywhere; default) or
    "predicted" (only rows with a scored prediction)."""
    bootstrap: int = 1000
    """Percentile-bootstrap resamples of the 95% intervals; default 1000 (0: no intervals)."""
    seed: int = 0
    """Seed of the resampling; default 0."""
    strict: bool = False
    """Accuracy counts d < t instead of d <= t (G3's convention; see `for_convention`); default False."""

    @classmethod
    def for_convention(cls, convention: str, **kw: Any) -> ScoreOptions:
        """Options scoring as ``convention`` does: "georag" (as given, d <= t) or "g3" (geodesic, d < t;
        a ``distance`` other than geodesic is refused)."""
        if convention not in CONVENTIONS:
            known = ", ".join(CONVENTIONS)
            raise EvaluationError(f"unknown convention {convention!r}; choose one of {known}")
        if convention == "g3":
            if kw.get("distance", "geodesic") != "geodesic":
                raise EvaluationError("--convention g3 measures the WGS-84 geodesic; drop --distance")
            kw = {**kw, "distance": "geodesic", "strict": True}
        return cls(**kw)

    @property
    def rule(self) -> str:
        """How a hit is counted, in words: "d <= t" or "d < t"."""
        return "d < t" if self.strict else "d <= t"

    def __post_init__(self) -> None:
        if self.distance not in DISTANCES:
            raise EvaluationError(f"unknown distance {self.distance!r}; choose one of {', '.join(DISTANCES)}")
        if self.denominator not in DENOMINATORS:
            raise EvaluationError(
                f"unknown denominator {self.denominator!r}; choose one of {', '.join(DENOMINATORS)}"
            )
        if self.bootstrap < 0:
            raise EvaluationError(
                f"bootstrap resamples must be >= 0 (0 = no intervals), got {self.bootstrap}"
            )
        object.__setattr__(self, "thresholds", check_thresholds(self.thresholds))


def score_rows(predictions: Predictions, truth: Truth, distance: str) -> Scored:
    """Join by id and measure the distance of every truth row that has usable predicted coordinates."""
    join = join_ids(predictions.ids, truth.ids)
    joined = join.pred_of_truth >= 0
    if len(predictions) and not joined.any():
        raise EvaluationError(
            f"no prediction id matches a truth id (first prediction id {predictions.ids[0]!r}, first truth "
            f"id {truth.ids[0] if len(truth) else None!r}); check --id-col and the truth file and format"
        )
    pj = np.where(joined, join.pred_of_truth, 0)
    usable = joined & ~predictions.failed[pj] if len(predictions) else np.zeros(len(truth), dtype=bool)
    dist = np.full(len(truth), np.inf)
    if usable.any():
        p = pj[usable]
        dist[usable] = distance_km(
            distance, predictions.lat[p], predictions.lon[p], truth.lat[usable], truth.lon[usable]
        )
    extra = np.flatnonzero(join.truth_of_pred < 0)
    return Scored(predictions, truth, join.pred_of_truth, dist, extra, join.by_extension)


def summarize(scored: Scored, rows: npt.NDArray[np.bool_], options: ScoreOptions) -> EvalReport:
    """The report over the truth rows selected by ``rows`` (the denominator); counts cover both files."""
    preds, truth = scored.predictions, scored.truth
    thresholds_km, bootstrap, seed = options.thresholds, options.bootstrap, options.seed
    n = int(rows.sum())
    if n == 0:
        raise EvaluationError(
            "no row to score: no truth row has a prediction with coordinates; "
            "use --denominator truth to score a run whose every prediction failed"
        )
    d = scored.dist_km[rows]
    finite = d[np.isfinite(d)]
    hit = np.less if options.strict else np.less_equal
    accuracy = {t: float(np.mean(hit(d, t))) for t in thresholds_km}
    acc_ci: dict[float, tuple[float, float]] | None = None
    med_ci: tuple[float, float] | None = None
    if bootstrap > 0:
        acc_rep, med_rep = bootstrap_replicates(d, thresholds_km, bootstrap, seed, strict=options.strict)
        lo, hi = percentile_interval(acc_rep)
        acc_ci = {t: (float(a), float(b)) for t, a, b in zip(thresholds_km, lo, hi, strict=True)}
        mlo, mhi = percentile_interval(med_rep)
        med_ci = (float(mlo), float(mhi))
    joined = scored.joined
    pj = scored.pred_of_truth[joined]
    failed = joined.copy()
    failed[joined] = preds.failed[pj]
    fallback = joined.copy()
    fallback[joined] = preds.fallback[pj]
    counts = Counts(
        n=n,
        truth=len(truth),
        predictions=len(preds),
        joined=int(joined.sum()),
        scored=int(scored.scored.sum()),
        missing=int((~joined).sum()),
        extra=int(scored.extra.size),
        failures=int(failed.sum()),
        fallbacks=int(fallback.sum()),
        by_extension=scored.by_extension,
    )
    return EvalReport(
        thresholds_km=thresholds_km,
        accuracy=accuracy,
        mean_km=float(finite.mean()) if finite.size else float("nan"),
        median_km=float(np.median(finite)) if finite.size else float("nan"),
        geoscore=float(geoscore(d).mean()),
        counts=counts,
        distance=options.distance,
        denominator=options.denominator,
        accuracy_ci=acc_ci,
        median_ci=med_ci,
        resamples=bootstrap,
        seed=seed,
        missing_ids=_pick(truth.ids, ~joined),
        extra_ids=tuple(preds.ids[j] for j in scored.extra.tolist()),
        failed_ids=_pick(truth.ids, failed),
        rows=_rows(scored, rows),
        strict=options.strict,
    )


def _pick(ids: tuple[str, ...], mask: npt.NDArray[np.bool_]) -> tuple[str, ...]:
    return tuple(ids[i] for i in np.flatnonzero(mask).tolist())


def _rows(scored: Scored, rows: npt.NDArray[np.bool_]) -> Rows:
    preds, truth = scored.predictions, scored.truth
    pj = scored.pred_of_truth[rows]
    has = pj >= 0
    pred_lat = np.full(pj.size, np.nan)
    pred_lon = np.full(pj.size, np.nan)
    pred_lat[has] = preds.lat[pj[has]]
    pred_lon[has] = preds.lon[pj[has]]
    d = scored.dist_km[rows]
    return Rows(
        ids=_pick(truth.ids, rows),
        true_lat=truth.lat[rows],
        true_lon=truth.lon[rows],
        pred_lat=pred_lat,
        pred_lon=pred_lon,
        dist_km=np.where(np.isfinite(d), d, np.nan),
    )


def evaluate_predictions(
    predictions: Predictions, truth: Truth, options: ScoreOptions | None = None
) -> EvalReport:
    """Score ``predictions`` against ``truth`` (see `ScoreOptions`; default options when None)."""
    options = options or ScoreOptions()
    scored = score_rows(predictions, truth, options.distance)
    rows = np.ones(len(truth), dtype=bool) if options.denominator == "truth" else scored.scored
    return summarize(scored, rows, options)


def evaluate(
    pred_ids: Iterable[object],
    pred_lat: npt.ArrayLike,
    pred_lon: npt.ArrayLike,
    truth_ids: Iterable[object],
    truth_lat: npt.ArrayLike,
    truth_lon: npt.ArrayLike,
    *,
    distance: str = "haversine",
    thresholds: Iterable[float] = THRESHOLDS_KM,
    denominator: str = "truth",
    bootstrap: int = 1000,
    seed: int = 0,
) -> EvalReport:
    """Score predicted coordinates against the truth, joined by id (also "x" with "x.jpg", see `join_ids`).

    A NaN or out-of-range prediction is a failure. ``distance``: "haversine" (R = 6371.0 km, as the
    benchmark papers) or "geodesic" (WGS-84). ``denominator``: "truth" (every truth row; a missing or
    failed prediction is wrong at every threshold) or "predicted" (only rows with a scored prediction).
    ``bootstrap`` percentile-bootstrap resamples (seeded by ``seed``; 0 for none) give the 95% intervals.
    Raises EvaluationError for unknown options, repeated ids, or when no id matches.
    """
    options = ScoreOptions(distance, tuple(thresholds), denominator, bootstrap, seed)
    return evaluate_predictions(
        Predictions.from_arrays(pred_ids, pred_lat, pred_lon),
        Truth.from_arrays(truth_ids, truth_lat, truth_lon),
        options,
    )
