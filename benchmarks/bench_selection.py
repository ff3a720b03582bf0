#!/usr/bin/env python
"""Selection rules and calibrated confidence, measured on the 160 real GPT-4o sample sets.

Data: ``../shared/data/llm_answers/answers.jsonl``, the G3 replication with GPT-4o (40 IM2GPS3k photos x 4
prompts: zero-shot and RAG with 5 / 10 / 15 neighbours, 10 samples each, temperature 1.2). Every answer
is parsed by georag's parser (`georag.evaluate.sample_sets`); a set whose answers all fail has no
prediction and counts as wrong (denominator: all 160 sets).

Tables (markdown on stdout; ``--out FILE`` writes them there too):

1. Each selection rule over the 160 sets: accuracy within 1 / 25 / 200 / 750 / 2500 km and the median
   error, haversine (R = 6371 km), d <= t, with 95 % percentile-bootstrap intervals. The bootstrap draws
   PHOTOS (each with its 4 sets), since one photo's sets are not independent. "oracle" is the candidate
   nearest the truth: the ceiling of any rule.
2. Each rule minus the medoid, paired (the same photo resamples for both).
3. Per prompt (40 sets each).
4. Calibration of the confidence as P(error <= D km), by 5-fold cross-validation over photos (the folds
   split photos, so no photo is fitted and tested on): the raw agreement taken as the probability, then
   isotonic and Platt fits, and the other folds' base rate as a constant; ECE (10 bins), Brier, with
   bootstrap intervals over sets. ``--plot DIR`` draws the raw and the isotonic reliability diagrams.

The ``support`` rule needs the retrieved neighbours' coordinates, which this file does not hold, so it
is not in the tables (its behaviour is tested in tests/test_selection.py).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt

from georag.evaluate.bootstrap import grouped_bootstrap, grouped_resamples, percentile_interval
from georag.evaluate.calibration import calibration_report
from georag.evaluate.metrics import THRESHOLDS_KM
from georag.evaluate.sample_sets import SampleSet, read_sample_sets
from georag.geo.calibration import fit_calibration, sample_features
from georag.geo.coords import haversine_km
from georag.geo.select import agreement_at
from georag.geo.selection import Candidates, choose

REPO = Path(__file__).resolve().parents[1]
ANSWERS = REPO.parent / "shared" / "data" / "llm_answers" / "answers.jsonl"
SOURCE = "result-mp-16-images-20-new"
PROMPTS = ("zs", "5_rag", "10_rag", "15_rag")
RULES: tuple[tuple[str, str, float], ...] = (
    ("first", "first", 25.0),
    ("medoid", "medoid", 25.0),
    ("geomedian", "geomedian", 25.0),
    ("cluster R=25 km", "cluster", 25.0),
    ("cluster R=200 km", "cluster", 200.0),
    ("cluster R=1000 km", "cluster", 1000.0),
)
DEFAULT = "medoid"


def run_rule(
    sets: list[SampleSet], rule: str, radius_km: float
) -> tuple[npt.NDArray[np.float64], list[dict[str, float] | None]]:
    """Per set: the error of the rule's answer (inf without one) and its calibration features."""
    dist: list[float] = []
    feats: list[dict[str, float] | None] = []
    for s in sets:
        if s.lat.size == 0:
            dist.append(np.inf)
            feats.append(None)
            continue
        c = choose(rule, Candidates.of(s.lat, s.lon), radius_km=radius_km)
        dist.append(float(haversine_km(c.lat, c.lon, s.true_lat, s.true_lon)))
        conf = agreement_at(s.lat, s.lon, c.lat, c.lon, s.asked)
        feats.append(sample_features(s.lat, s.lon, c.lat, c.lon, s.asked, conf))
    return np.asarray(dist, dtype=np.float64), feats


def oracle(sets: list[SampleSet]) -> npt.NDArray[np.float64]:
    return np.asarray(
        [
            float(haversine_km(s.lat, s.lon, s.true_lat, s.true_lon).min()) if s.lat.size else np.inf
            for s in sets
        ]
    )


def accuracy_cells(dist: npt.NDArray[np.float64], groups: list[str], resamples: int) -> list[str]:
    acc = [(dist <= t).mean() for t in THRESHOLDS_KM]
    finite = dist[np.isfinite(dist)]
    reps, meds = grouped_bootstrap(dist, groups, THRESHOLDS_KM, resamples, seed=0)
    lo, hi = percentile_interval(reps)
    mlo, mhi = percentile_interval(meds)
    cells = [f"{100 * a:.1f} [{100 * x:.1f}, {100 * y:.1f}]" for a, x, y in zip(acc, lo, hi, strict=True)]
    cells.append(f"{np.median(finite):,.0f} [{float(mlo):,.0f}, {float(mhi):,.0f}]")
    return cells


def paired_cells(
    a: npt.NDArray[np.float64], b: npt.NDArray[np.float64], groups: list[str], resamples: int
) -> list[str]:
    t = np.asarray(THRESHOLDS_KM)
    delta = (a[:, None] <= t).astype(float) - (b[:, None] <= t).astype(float)
    reps = np.stack([delta[idx].mean(axis=0) for idx in grouped_resamples(groups, resamples, seed=0)])
    lo, hi = percentile_interval(reps)
    return [
        f"{100 * d:+.1f} [{100 * x:+.1f}, {100 * y:+.1f}]"
        for d, x, y in zip(delta.mean(axis=0), lo, hi, strict=True)
    ]


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def folds_by_photo(photos: list[str], k: int, seed: int) -> npt.NDArray[np.int64]:
    unique = sorted(set(photos))
    order = np.random.default_rng(seed).permutation(len(unique))
    fold_of = {unique[i]: n % k for n, i in enumerate(order.tolist())}
    return np.asarray([fold_of[p] for p in photos])


def cross_validated(
    feats: list[dict[str, float]],
    within: npt.NDArray[np.float64],
    folds: npt.NDArray[np.int64],
    method: str,
    within_km: float,
) -> npt.NDArray[np.float64]:
    out = np.empty(within.size)
    for f in np.unique(folds).tolist():
        train = np.flatnonzero(folds != f)
        test = np.flatnonzero(folds == f)
        cal = fit_calibration([feats[i] for i in train], within[train], within_km=within_km, method=method)
        out[test] = cal.probability([feats[i] for i in test])
    return out


def base_rate_cv(within: npt.NDArray[np.float64], folds: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
    """Each set's prediction: the share within of the other folds' sets (no information but the rate)."""
    out = np.empty(within.size)
    for f in np.unique(folds).tolist():
        out[folds == f] = within[folds != f].mean()
    return out


def plot_reliability_pair(
    sets: list[SampleSet], dist: npt.NDArray[np.float64], feats: list[dict[str, float] | None], out: Path
) -> None:
    """reliability_raw.png and reliability_isotonic_cv.png (P(error <= 25 km)) in ``out``."""
    from georag.evaluate.reliability_plot import plot_reliability

    has = [i for i, f in enumerate(feats) if f is not None]
    fx = [f for f in (feats[i] for i in has) if f is not None]
    within = (dist[has] <= 25.0).astype(float)
    folds = folds_by_photo([sets[i].photo for i in has], 5, seed=0)
    raw = np.asarray([f["agreement"] for f in fx])
    cv = cross_validated(fx, within, folds, "isotonic", 25.0)
    what = f"{DEFAULT}, {len(sets)} real GPT-4o sample sets"
    plot_reliability(
        calibration_report(raw, within, 25.0, source="raw agreement"), out / "reliability_raw.png",
        title=f"Raw agreement: {what}",
    )  # fmt: skip
    plot_reliability(
        calibration_report(cv, within, 25.0, source="isotonic, 5-fold CV over photos"),
        out / "reliability_isotonic_cv.png", title=f"Isotonic calibration (cross-validated): {what}",
    )  # fmt: skip


def calibration_rows(
    sets: list[SampleSet],
    dist: npt.NDArray[np.float64],
    feats: list[dict[str, float] | None],
    within_km: float,
    resamples: int,
) -> list[list[str]]:
    has = [i for i, f in enumerate(feats) if f is not None]
    rows_f = [feats[i] for i in has]
    assert all(f is not None for f in rows_f)
    fx: list[dict[str, float]] = [f for f in rows_f if f is not None]
    within = (dist[has] <= within_km).astype(float)
    folds = folds_by_photo([sets[i].photo for i in has], 5, seed=0)
    fits: list[tuple[str, Callable[[], npt.NDArray[np.float64]]]] = [
        ("raw agreement (uncalibrated)", lambda: np.asarray([f["agreement"] for f in fx])),
        (
            "isotonic on agreement (5-fold CV)",
            lambda: cross_validated(fx, within, folds, "isotonic", within_km),
        ),
        (
            "Platt on agreement, answered, spread (5-fold CV)",
            lambda: cross_validated(fx, within, folds, "platt", within_km),
        ),
        ("base rate of the other folds (constant)", lambda: base_rate_cv(within, folds)),
    ]
    out = []
    for name, make in fits:
        rep = calibration_report(make(), within, within_km, resamples=resamples)
        assert rep.ece_ci is not None and rep.brier_ci is not None
        out.append([
            f"P(error <= {within_km:g} km)", name, f"{rep.n}", f"{100 * rep.base_rate:.1f} %",
            f"{rep.ece:.3f} [{rep.ece_ci[0]:.3f}, {rep.ece_ci[1]:.3f}]",
            f"{rep.brier:.3f} [{rep.brier_ci[0]:.3f}, {rep.brier_ci[1]:.3f}]",
        ])  # fmt: skip
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--answers", type=Path, default=ANSWERS)
    ap.add_argument("--resamples", type=int, default=2000)
    ap.add_argument("--out", type=Path, default=None, help="Also write the tables to this markdown file.")
    ap.add_argument("--plot", type=Path, default=None, help="Write the two reliability diagrams here.")
    args = ap.parse_args()
    if not args.answers.is_file():
        print(f"no answers file at {args.answers} (../shared/data is absent)", file=sys.stderr)
        return 2
    sets = read_sample_sets(args.answers, source_contains=SOURCE, prompts=PROMPTS)
    photos = [s.photo for s in sets]
    empty = sum(1 for s in sets if s.lat.size == 0)
    parsed = sum(s.lat.size for s in sets)
    asked = sum(s.asked for s in sets)
    head = ["rule", *[f"{t:g} km" for t in THRESHOLDS_KM], "median km"]
    out = [
        f"{len(sets)} sample sets ({len(set(photos))} photos x {len(PROMPTS)} prompts), {parsed} of {asked} "
        f"answers parsed, {empty} sets without any; haversine, d <= t; 95 % CI: bootstrap over photos "
        f"({args.resamples} resamples).",
        "",
        "**Selection rules, all 160 sets**",
        "",
    ]
    results = {name: run_rule(sets, rule, r) for name, rule, r in RULES}
    rows = [[name, *accuracy_cells(d, photos, args.resamples)] for name, (d, _) in results.items()]
    rows.append(["oracle (best candidate)", *accuracy_cells(oracle(sets), photos, args.resamples)])
    out += [table(head, rows), "", f"**Each rule minus {DEFAULT} (paired, percentage points)**", ""]
    base = results[DEFAULT][0]
    diff = [
        [name, *paired_cells(d, base, photos, args.resamples)]
        for name, (d, _) in results.items()
        if name != DEFAULT
    ]
    diff.append(["oracle (best candidate)", *paired_cells(oracle(sets), base, photos, args.resamples)])
    out += [table(head[:-1], diff), "", "**Per prompt (40 sets each)**", ""]
    per = []
    for kind in PROMPTS:
        idx = [i for i, s in enumerate(sets) if s.prompt == kind]
        sub_photos = [photos[i] for i in idx]
        for name, (d, _) in results.items():
            per.append([f"{kind}: {name}", *accuracy_cells(d[idx], sub_photos, args.resamples)])
        per.append(
            [f"{kind}: oracle", *accuracy_cells(oracle([sets[i] for i in idx]), sub_photos, args.resamples)]
        )
    out += [table(["prompt: rule", *head[1:]], per), ""]
    out += [f"**Calibration of the {DEFAULT}'s confidence (5-fold cross-validation over photos)**", ""]
    d, feats = results[DEFAULT]
    cal = [row for km in (25.0, 200.0, 750.0) for row in calibration_rows(sets, d, feats, km, args.resamples)]
    out += [table(["target", "confidence", "n", "base rate", "ECE (10 bins)", "Brier"], cal)]
    text = "\n".join(out) + "\n"
    print(text)
    if args.out is not None:
        args.out.write_text(text, encoding="utf-8")
    if args.plot is not None:
        args.plot.mkdir(parents=True, exist_ok=True)
        plot_reliability_pair(sets, d, feats, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
