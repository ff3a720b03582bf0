"""The geometric median on the sphere: the point with the least sum of great-circle distances to the inputs.

Unlike the medoid it need not be one of the inputs: between three answers in Paris, Lyon and Marseille it
lies inside the triangle. It is found by Weiszfeld's iteration on the sphere (Fletcher, Venkatasubramanian
and Joshi 2009): from the current point, every input pulls along its great circle with weight 1/distance;
the weighted mean of those pulls in the tangent plane is mapped back onto the sphere. Where the current
point is an input itself (LLMs often repeat one answer exactly), Vardi and Zhang's rule decides: it is the
median when the pull of the others is no stronger than its multiplicity, else the step is shortened by it.

The iteration starts at the medoid (the best input); the result is never worse than the medoid by the
objective, so a spread of inputs across continents, where the sphere's median need not be unique, still
gets a sound answer.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from georag.errors import InputError
from georag.geo.coords import EARTH_RADIUS_KM, from_unit_vectors, to_unit_vectors

MAX_ITERATIONS = 500
"""Weiszfeld steps at most; the step shrinks linearly, so well-posed inputs converge in a few dozen."""
TOLERANCE_RAD = 1e-12
"""Stop when a step moves less than this angle (about 6 micrometres on the Earth)."""


def angles(points: npt.NDArray[np.float64], x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Great-circle angles in radians from the unit vector ``x`` to each row of ``points`` (atan2 form:
    accurate for tiny and for near-antipodal angles alike)."""
    cross = np.linalg.norm(np.cross(points, x), axis=1)
    return np.asarray(np.arctan2(cross, points @ x), dtype=np.float64)


def sum_of_distances_km(
    lat: npt.ArrayLike, lon: npt.ArrayLike, at_lat: float, at_lon: float, weights: npt.ArrayLike | None = None
) -> float:
    """The objective: the (weighted) sum of great-circle distances in km from (at_lat, at_lon) to the
    points."""
    p = to_unit_vectors(lat, lon)
    x = to_unit_vectors([at_lat], [at_lon])[0]
    w = np.ones(p.shape[0]) if weights is None else np.asarray(weights, dtype=np.float64)
    return float(EARTH_RADIUS_KM * np.sum(w * angles(p, x)))


def _log_map(
    points: npt.NDArray[np.float64], x: npt.NDArray[np.float64], theta: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """Unit tangent directions at ``x`` toward each point (rows; zero where the point is ``x`` or
    antipodal)."""
    tangent = points - np.outer(points @ x, x)
    norm = np.linalg.norm(tangent, axis=1)
    out = np.zeros_like(points)
    ok = (norm > 0) & (theta > 0)
    out[ok] = tangent[ok] / norm[ok, None]
    return out


def _exp_map(x: npt.NDArray[np.float64], v: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """The point reached from ``x`` along the tangent vector ``v`` (its length an angle in radians)."""
    t = float(np.linalg.norm(v))
    if t == 0.0:
        return x
    y = np.cos(t) * x + np.sin(t) * (v / t)
    return np.asarray(y / np.linalg.norm(y), dtype=np.float64)


def _step(
    points: npt.NDArray[np.float64], w: npt.NDArray[np.float64], x: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """One Weiszfeld step from ``x`` (Vardi-Zhang where ``x`` is an input point): the tangent move."""
    theta = angles(points, x)
    here = theta <= 1e-15
    away = ~here
    if not away.any():
        return np.zeros(3)
    u = _log_map(points[away], x, theta[away])
    inv = w[away] / theta[away]
    pull = (inv[:, None] * u * theta[away, None]).sum(axis=0) / inv.sum()  # Weiszfeld's weighted mean
    if not here.any():
        return np.asarray(pull, dtype=np.float64)
    force = float(np.linalg.norm((w[away, None] * u).sum(axis=0)))  # the others' pull: sum of unit vectors
    stay = float(w[here].sum())
    if force <= stay:
        return np.zeros(3)  # an input point that the others cannot pull away: the median
    return np.asarray((1.0 - stay / force) * pull, dtype=np.float64)


def geometric_median(
    lat: npt.ArrayLike, lon: npt.ArrayLike, weights: npt.ArrayLike | None = None
) -> tuple[float, float]:
    """(lat, lon) in degrees of the point with the least (weighted) sum of great-circle distances to the
    points; see the module docstring. InputError for no points, invalid coordinates or weights."""
    p_all = to_unit_vectors(lat, lon)
    if p_all.shape[0] == 0:
        raise InputError("no points: the geometric median needs at least one")
    w_all = np.ones(p_all.shape[0]) if weights is None else np.asarray(weights, dtype=np.float64).ravel()
    if w_all.shape != (p_all.shape[0],) or not (np.isfinite(w_all).all() and (w_all >= 0).all()):
        raise InputError("weights must be one finite non-negative number per point")
    if not (w_all > 0).any():
        raise InputError("weights are all zero")
    # Identical points become one point of their summed weight (the Vardi-Zhang multiplicity).
    points, inverse = np.unique(p_all, axis=0, return_inverse=True)
    w = np.bincount(inverse.reshape(-1), weights=w_all, minlength=points.shape[0]).astype(np.float64)
    costs = np.array([np.sum(w * angles(points, q)) for q in points])
    best = points[int(np.argmin(costs))]
    best_cost = float(costs.min())
    x = best
    for _ in range(MAX_ITERATIONS):
        v = _step(points, w, x)
        if float(np.linalg.norm(v)) < TOLERANCE_RAD:
            break
        x = _exp_map(x, v)
        cost = float(np.sum(w * angles(points, x)))
        if cost < best_cost:
            best, best_cost = x, cost
    la, lo = from_unit_vectors(best)
    return float(la[0]), float(lo[0])
