"""Fitting a probability to scores: isotonic regression (pool adjacent violators) and Platt's logistic fit.

Both take scores and 0/1 outcomes and return what `georag.geo.calibration` stores and applies; neither
needs scikit-learn.

* Isotonic: the non-decreasing step function of one score that is closest to the outcomes in squared
  error (pool adjacent violators; equal scores are pooled first). It is stored as the ends of its blocks
  and applied by linear interpolation between them, flat beyond the first and last (as scikit-learn's
  IsotonicRegression predicts).
* Platt: p = 1 / (1 + exp(-(z . w + b))) over standardized features z, fitted by Newton's method on
  Platt's smoothed targets ((N+ + 1) / (N+ + 2) for a success, 1 / (N- + 2) for a failure), which keeps
  the fit finite on data a line separates, with a small ridge on w.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from georag.errors import InputError

RIDGE = 1e-3
"""The L2 penalty on Platt's weights (not on the intercept)."""
NEWTON_STEPS = 100


def _check(x: npt.NDArray[np.float64], y: npt.NDArray[np.float64]) -> None:
    if x.shape[0] != y.shape[0]:
        raise InputError(f"{x.shape[0]} scores but {y.shape[0]} outcomes")
    if x.shape[0] == 0:
        raise InputError("nothing to fit: no scores")
    if not (np.isfinite(x).all() and np.isin(y, (0.0, 1.0)).all()):
        raise InputError("scores must be finite and outcomes 0 or 1")


def isotonic_fit(score: npt.ArrayLike, outcome: npt.ArrayLike) -> tuple[list[float], list[float]]:
    """(x, y) of the fitted step function's block ends, x ascending (see the module docstring)."""
    x = np.asarray(score, dtype=np.float64).ravel()
    y = np.asarray(outcome, dtype=np.float64).ravel()
    _check(x, y)
    ux, inverse = np.unique(x, return_inverse=True)
    weight = np.bincount(inverse, minlength=ux.size).astype(np.float64)
    mean = np.bincount(inverse, weights=y, minlength=ux.size) / weight
    # Blocks of [value, weight, first index, last index]; a new point merges backwards while it violates.
    blocks: list[list[float]] = []
    for i in range(ux.size):
        blocks.append([float(mean[i]), float(weight[i]), i, i])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            v2, w2, _, hi = blocks.pop()
            v1, w1, lo, _ = blocks.pop()
            blocks.append([(v1 * w1 + v2 * w2) / (w1 + w2), w1 + w2, lo, hi])
    xs: list[float] = []
    ys: list[float] = []
    for value, _, lo, hi in blocks:
        for end in sorted({int(lo), int(hi)}):
            xs.append(float(ux[end]))
            ys.append(float(value))
    return xs, ys


def isotonic_apply(
    x_ends: npt.ArrayLike, y_ends: npt.ArrayLike, score: npt.ArrayLike
) -> npt.NDArray[np.float64]:
    """The fitted step function at ``score``: linear between block ends, flat beyond them."""
    return np.asarray(
        np.interp(np.asarray(score, dtype=np.float64), np.asarray(x_ends), np.asarray(y_ends)),
        dtype=np.float64,
    )


def platt_fit(
    features: npt.ArrayLike, outcome: npt.ArrayLike, ridge: float = RIDGE
) -> tuple[list[float], float]:
    """(w, b) of Platt's logistic fit of the outcomes on ``features`` (n, f), already standardized."""
    z = np.asarray(features, dtype=np.float64)
    z = z.reshape(z.shape[0], -1) if z.ndim != 2 else z
    y = np.asarray(outcome, dtype=np.float64).ravel()
    _check(z, y)
    positives = float(y.sum())
    negatives = float(y.size - positives)
    target = np.where(y == 1.0, (positives + 1.0) / (positives + 2.0), 1.0 / (negatives + 2.0))
    a = np.hstack([z, np.ones((z.shape[0], 1))])
    theta = np.zeros(a.shape[1])
    theta[-1] = np.log((positives + 1.0) / (negatives + 1.0))
    penalty = np.full(a.shape[1], ridge)
    penalty[-1] = 0.0
    for _ in range(NEWTON_STEPS):
        p = _sigmoid(a @ theta)
        grad = a.T @ (p - target) + penalty * theta
        hess = (a * (p * (1.0 - p))[:, None]).T @ a + np.diag(penalty) + 1e-12 * np.eye(a.shape[1])
        step = np.linalg.solve(hess, grad)
        theta -= step
        if float(np.abs(step).max()) < 1e-12:
            break
    return [float(v) for v in theta[:-1]], float(theta[-1])


def platt_apply(w: npt.ArrayLike, b: float, features: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Platt's probability at standardized ``features`` (n, f)."""
    z = np.asarray(features, dtype=np.float64)
    z = z.reshape(z.shape[0], -1) if z.ndim != 2 else z
    return _sigmoid(z @ np.asarray(w, dtype=np.float64) + b)


def _sigmoid(t: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return np.asarray(0.5 * (1.0 + np.tanh(0.5 * t)), dtype=np.float64)
