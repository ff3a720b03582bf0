"""Percentile bootstrap of accuracy and median error, alone or paired (two systems, the same resamples)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import numpy.typing as npt

CI_LEVEL = 0.95
"""The confidence level of every interval georag reports."""

# Resampled indices are drawn in blocks of at most this many cells, so memory stays flat for large n.
_BLOCK_CELLS = 1 << 22


def _blocks(n: int, resamples: int, seed: int) -> Iterator[npt.NDArray[np.int64]]:
    """(rows, n) blocks of indices into the n units, ``resamples`` rows in all, from one seeded stream."""
    rng = np.random.default_rng(seed)
    per = max(1, _BLOCK_CELLS // max(n, 1))
    done = 0
    while done < resamples:
        rows = min(per, resamples - done)
        yield rng.integers(0, n, size=(rows, n))
        done += rows


def bootstrap(
    dist_km: npt.NDArray[np.float64],
    thresholds_km: tuple[float, ...],
    resamples: int,
    seed: int,
    *,
    strict: bool = False,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Bootstrap replicates of the accuracies, shape (resamples, thresholds), and of the median error over
    the finite distances, shape (resamples,) (NaN where a resample has none). ``inf`` marks a unit with
    no prediction: wrong at every threshold, not part of the median. ``strict``: accuracy counts d < t
    (G3's convention) instead of d <= t.

    Each unit's rank in the sorted distances stands in for its distance: a resample's sorted ranks are its
    sorted distances, so accuracy is a count below a rank and the median a lookup, with no sort of floats.
    """
    n = dist_km.size
    order = np.argsort(dist_km, kind="stable")
    ranked = dist_km[order]
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    below = np.searchsorted(ranked, np.asarray(thresholds_km), side="left" if strict else "right")
    finite = int(np.isfinite(dist_km).sum())
    acc_parts, med_parts = [], []
    for idx in _blocks(n, resamples, seed):
        r = np.sort(rank[idx], axis=1)
        acc_parts.append(np.stack([(r < b).mean(axis=1) for b in below.tolist()], axis=1))
        m = (r < finite).sum(axis=1)
        lo = np.take_along_axis(r, np.maximum((m - 1) // 2, 0)[:, None], axis=1)[:, 0]
        hi = np.take_along_axis(r, np.minimum(m // 2, n - 1)[:, None], axis=1)[:, 0]
        med = (ranked[lo] + ranked[hi]) / 2.0
        med_parts.append(np.where(m > 0, med, np.nan))
    if not acc_parts:
        return np.zeros((0, len(thresholds_km))), np.zeros(0)
    return np.concatenate(acc_parts), np.concatenate(med_parts)


def grouped_resamples(groups: npt.ArrayLike, resamples: int, seed: int) -> Iterator[npt.NDArray[np.int64]]:
    """Unit indices of each cluster-bootstrap resample: the groups (e.g. photos, each with several sample
    sets) are drawn with replacement, and every unit of a drawn group comes along. Units of one group are
    not independent (one photo is easy for every prompt), so resampling units alone would make intervals
    too narrow."""
    _, inverse = np.unique(np.asarray(groups), return_inverse=True)
    inverse = inverse.reshape(-1)
    members = [np.flatnonzero(inverse == g) for g in range(int(inverse.max()) + 1 if inverse.size else 0)]
    rng = np.random.default_rng(seed)
    for _ in range(resamples):
        drawn = rng.integers(0, len(members), size=len(members))
        yield np.concatenate([members[g] for g in drawn.tolist()]) if members else np.zeros(0, dtype=np.int64)


def grouped_bootstrap(
    dist_km: npt.NDArray[np.float64],
    groups: npt.ArrayLike,
    thresholds_km: tuple[float, ...],
    resamples: int,
    seed: int,
    *,
    strict: bool = False,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """`bootstrap` resampling groups of units (`grouped_resamples`): accuracy replicates (resamples,
    thresholds) and median-error replicates (NaN where a resample has no finite distance). ``strict``:
    accuracy counts d < t instead of d <= t."""
    t = np.asarray(thresholds_km, dtype=np.float64)
    hit = (dist_km[:, None] < t) if strict else (dist_km[:, None] <= t)
    acc, med = [], []
    for idx in grouped_resamples(groups, resamples, seed):
        acc.append(hit[idx].mean(axis=0))
        d = dist_km[idx]
        d = d[np.isfinite(d)]
        med.append(float(np.median(d)) if d.size else np.nan)
    if not acc:
        return np.zeros((0, t.size)), np.zeros(0)
    return np.stack(acc), np.asarray(med)


def paired_difference(
    dist_a: npt.NDArray[np.float64],
    dist_b: npt.NDArray[np.float64],
    thresholds_km: tuple[float, ...],
    resamples: int,
    seed: int,
    *,
    strict: bool = False,
) -> npt.NDArray[np.float64]:
    """Bootstrap replicates of accuracy(A) - accuracy(B), shape (resamples, thresholds): each resample
    draws the same units for both systems, so what they share (easy and hard photos) cancels. ``strict``:
    d < t counts, instead of d <= t."""
    t = np.asarray(thresholds_km)
    hit = np.less if strict else np.less_equal
    delta = hit(dist_a[:, None], t).astype(np.int8) - hit(dist_b[:, None], t).astype(np.int8)
    parts = [delta[idx].mean(axis=1) for idx in _blocks(dist_a.size, resamples, seed)]
    return np.concatenate(parts) if parts else np.zeros((0, t.size))


def percentile_interval(
    replicates: npt.NDArray[np.float64], level: float = CI_LEVEL
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """The percentile interval along axis 0, ignoring NaN replicates; NaN where every replicate is NaN."""
    tail = 100.0 * (1.0 - level) / 2.0
    rep = np.asarray(replicates, dtype=np.float64)
    shape = rep.shape[1:]
    lo, hi = np.full(shape, np.nan), np.full(shape, np.nan)
    usable = np.isfinite(rep).any(axis=0) if rep.shape[0] else np.zeros(shape, dtype=bool)
    if np.any(usable):
        cols = rep[:, usable] if rep.ndim > 1 else rep
        lo_u, hi_u = np.nanpercentile(cols, [tail, 100.0 - tail], axis=0)
        lo[usable], hi[usable] = lo_u, hi_u
    return lo, hi
