"""compare: two predictions files on the same truth rows, and a paired bootstrap of their accuracy gap."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from georag.errors import EvaluationError
from georag.evaluate.bootstrap import CI_LEVEL, paired_difference, percentile_interval
from georag.evaluate.metrics import threshold_key
from georag.evaluate.predictions import Predictions
from georag.evaluate.report import EvalReport, Interval
from georag.evaluate.scoring import ScoreOptions, score_rows, summarize
from georag.evaluate.truth import Truth


@dataclass(frozen=True, repr=False)
class Comparison:
    """A and B scored on the same rows, and accuracy(A) - accuracy(B) per threshold with a paired CI."""

    a: EvalReport
    b: EvalReport
    difference: dict[float, float]
    """accuracy(A) - accuracy(B) for each threshold (a fraction; positive when A is better)."""
    difference_ci: dict[float, Interval] | None
    """95% paired percentile-bootstrap interval of each difference (None without resamples)."""

    @property
    def n(self) -> int:
        """The rows both were scored on."""
        return self.a.n

    def to_json(self) -> dict[str, Any]:
        """{"n", "a": A's report, "b": B's report, "difference": {"accuracy": {...}, "ci": {...}}}."""
        keys = {t: threshold_key(t) for t in self.a.thresholds_km}
        ci = None
        if self.difference_ci is not None:
            ci = {keys[t]: list(v) for t, v in self.difference_ci.items()}
        return {
            "n": self.n,
            "a": self.a.to_json(),
            "b": self.b.to_json(),
            "difference": {
                "of": "accuracy(a) - accuracy(b)",
                "accuracy": {keys[t]: v for t, v in self.difference.items()},
                "ci": ci,
                "level": CI_LEVEL,
                "method": "paired percentile bootstrap",
                "resamples": self.a.resamples,
                "seed": self.a.seed,
            },
        }

    def __repr__(self) -> str:
        diff = ", ".join(f"{threshold_key(t)} km: {100 * v:+.1f} pp" for t, v in self.difference.items())
        return f"Comparison(n={self.n}, A - B = {{{diff}}})"


def compare(a: Predictions, b: Predictions, truth: Truth, options: ScoreOptions | None = None) -> Comparison:
    """Score A and B on the same truth rows: every truth row (``denominator="truth"``) or the rows both
    scored (``"predicted"``). The difference's interval resamples the same rows for both (paired), which
    is narrower than two independent intervals suggest when the systems agree on which photos are hard."""
    options = options or ScoreOptions()
    sa, sb = score_rows(a, truth, options.distance), score_rows(b, truth, options.distance)
    rows = np.ones(len(truth), dtype=bool) if options.denominator == "truth" else sa.scored & sb.scored
    if not rows.any():
        raise EvaluationError("the two files have no scored truth row in common; try --denominator truth")
    ra, rb = summarize(sa, rows, options), summarize(sb, rows, options)
    thresholds_km, bootstrap, seed = options.thresholds, options.bootstrap, options.seed
    difference = {t: ra.accuracy[t] - rb.accuracy[t] for t in thresholds_km}
    ci: dict[float, Interval] | None = None
    if bootstrap > 0:
        reps = paired_difference(
            sa.dist_km[rows], sb.dist_km[rows], thresholds_km, bootstrap, seed, strict=options.strict
        )
        lo, hi = percentile_interval(reps)
        ci = {t: (float(x), float(y)) for t, x, y in zip(thresholds_km, lo, hi, strict=True)}
    return Comparison(ra, rb, difference, ci)
