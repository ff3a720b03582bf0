"""How well confidences match reality: expected calibration error, Brier score and the reliability bins.

A confidence p of a prediction claims P(error <= within_km) = p. Over predictions with outcomes y (1 when
the error was within the distance):

* Brier score: mean (p - y)^2 (0 is perfect; always answering the base rate r scores r (1 - r));
* ECE: the confidences cut into ``bins`` equal-width bins over [0, 1] (a confidence of exactly 1 falls
  in the last), sum over bins of (bin's share of predictions) * |mean confidence - share within|;
* the bins themselves: what a reliability diagram draws (`georag.evaluate.reliability_plot`).

Intervals are percentile bootstraps over predictions (`georag.evaluate.bootstrap`'s level).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from georag.errors import EvaluationError
from georag.evaluate.bootstrap import CI_LEVEL, percentile_interval

BINS = 10


@dataclass(frozen=True)
class CalibrationBin:
    lo: float
    hi: float
    n: int
    confidence: float
    """Mean confidence in the bin (NaN when empty)."""
    accuracy: float
    """Share of the bin's predictions within the distance (NaN when empty)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "lo": self.lo,
            "hi": self.hi,
            "n": self.n,
            "confidence": _num(self.confidence),
            "accuracy": _num(self.accuracy),
        }


@dataclass(frozen=True)
class CalibrationReport:
    """ECE, Brier and the reliability bins of one set of confidences."""

    within_km: float
    n: int
    base_rate: float
    """Share of the predictions within the distance."""
    ece: float
    brier: float
    bins: tuple[CalibrationBin, ...]
    ece_ci: tuple[float, float] | None = None
    brier_ci: tuple[float, float] | None = None
    source: str = ""
    """What the confidences are: "calibrated" (a calibration file's probabilities) or "raw agreement"."""

    def to_json(self) -> dict[str, Any]:
        ci = None
        if self.ece_ci is not None and self.brier_ci is not None:
            ci = {"level": CI_LEVEL, "ece": list(self.ece_ci), "brier": list(self.brier_ci)}
        return {
            "within_km": self.within_km,
            "n": self.n,
            "base_rate": self.base_rate,
            "ece": self.ece,
            "brier": self.brier,
            "ci": ci,
            "confidence": self.source,
            "bins": [b.to_json() for b in self.bins],
        }


def _check(confidence: npt.ArrayLike, within: npt.ArrayLike) -> tuple[npt.NDArray[np.float64], ...]:
    p = np.asarray(confidence, dtype=np.float64).ravel()
    y = np.asarray(within, dtype=np.float64).ravel()
    if p.shape != y.shape:
        raise EvaluationError(f"{p.size} confidences but {y.size} outcomes")
    if p.size == 0:
        raise EvaluationError("no prediction carries a confidence to check")
    if not (np.isfinite(p).all() and (p >= 0).all() and (p <= 1).all()):
        raise EvaluationError("confidences must lie in [0, 1]")
    return p, y


def bin_index(confidence: npt.NDArray[np.float64], bins: int = BINS) -> npt.NDArray[np.int64]:
    """Each confidence's bin: floor(p * bins), with p = 1 in the last bin."""
    return np.minimum((confidence * bins).astype(np.int64), bins - 1)


def brier(confidence: npt.ArrayLike, within: npt.ArrayLike) -> float:
    p, y = _check(confidence, within)
    return float(np.mean((p - y) ** 2))


def ece(confidence: npt.ArrayLike, within: npt.ArrayLike, bins: int = BINS) -> float:
    p, y = _check(confidence, within)
    b = bin_index(p, bins)
    gap = np.abs(np.bincount(b, weights=p, minlength=bins) - np.bincount(b, weights=y, minlength=bins))
    return float(gap.sum() / p.size)  # sum_b n_b/n * |mean p - mean y| = sum_b |sum p - sum y| / n


def reliability_bins(
    confidence: npt.ArrayLike, within: npt.ArrayLike, bins: int = BINS
) -> tuple[CalibrationBin, ...]:
    p, y = _check(confidence, within)
    b = bin_index(p, bins)
    count = np.bincount(b, minlength=bins)
    sp = np.bincount(b, weights=p, minlength=bins)
    sy = np.bincount(b, weights=y, minlength=bins)
    out = []
    for k in range(bins):
        n = int(count[k])
        out.append(
            CalibrationBin(
                k / bins, (k + 1) / bins, n, sp[k] / n if n else math.nan, sy[k] / n if n else math.nan
            )
        )
    return tuple(out)


def calibration_report(
    confidence: npt.ArrayLike,
    within: npt.ArrayLike,
    within_km: float,
    *,
    bins: int = BINS,
    resamples: int = 1000,
    seed: int = 0,
    source: str = "",
) -> CalibrationReport:
    """The report of ``confidence`` against the outcomes ``within`` (see the module docstring)."""
    p, y = _check(confidence, within)
    ece_ci = brier_ci = None
    if resamples > 0:
        rng = np.random.default_rng(seed)
        idx = rng.integers(0, p.size, size=(resamples, p.size))
        sq = (p - y) ** 2
        briers = sq[idx].mean(axis=1)
        b = bin_index(p, bins)
        # Per resample: the sums of p and y per bin, through one offset bincount.
        flat = (np.arange(resamples)[:, None] * bins + b[idx]).ravel()
        sp = np.bincount(flat, weights=p[idx].ravel(), minlength=resamples * bins).reshape(resamples, bins)
        sy = np.bincount(flat, weights=y[idx].ravel(), minlength=resamples * bins).reshape(resamples, bins)
        eces = np.abs(sp - sy).sum(axis=1) / p.size
        lo, hi = percentile_interval(np.stack([eces, briers], axis=1))
        ece_ci, brier_ci = (float(lo[0]), float(hi[0])), (float(lo[1]), float(hi[1]))
    return CalibrationReport(
        float(within_km),
        int(p.size),
        float(y.mean()),
        ece(p, y, bins),
        brier(p, y),
        reliability_bins(p, y, bins),
        ece_ci,
        brier_ci,
        source,
    )


def _num(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None
