"""One model call for the requests of a dynamic batch: check each, stack the good ones, split the answer.

Triton hands a batched Python-backend model several requests at once; each holds a (b, ...) array. A bad
request (NaN, wrong width, zero vector) must fail alone, not take its batch-mates with it, so each is
checked first and only the good ones are stacked into the one call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt

from georag.serving.errors import BadRequest

Outputs = tuple[npt.NDArray[np.generic], ...]

MIN_NORM = 1e-12
"""Smallest norm of a row that must have a direction (an embedding, with ``nonzero``): a smaller one (a
denormal such as 1e-45) normalizes to NaN in float32 and would come back as ids -1 and NaN scores."""


def run_batched(
    arrays: Sequence[npt.NDArray[np.generic]],
    call: Callable[[npt.NDArray[np.float32]], Outputs],
    *,
    row_shape: tuple[int, ...],
    nonzero: bool = False,
) -> list[Outputs | BadRequest]:
    """For each request's (b, *row_shape) array: its slice of ``call``'s outputs, or why it was refused.

    ``call`` takes the stacked (n, *row_shape) float32 rows and returns arrays with n leading rows.
    ``nonzero``: refuse rows whose values are all zero or whose norm is under `MIN_NORM` (an embedding
    with no direction).
    """
    results: list[Outputs | BadRequest | None] = []
    good: list[npt.NDArray[np.float32]] = []
    for array in arrays:
        problem = _problem(array, row_shape, nonzero)
        if problem is not None:
            results.append(BadRequest(problem))
            continue
        good.append(np.asarray(array, dtype=np.float32))
        results.append(None)
    if good:
        outputs = call(np.concatenate(good) if len(good) > 1 else good[0])
        start = 0
        for i, array in enumerate(arrays):
            if results[i] is None:
                rows = len(array)
                results[i] = tuple(o[start : start + rows] for o in outputs)
                start += rows
    return [r for r in results if r is not None]


def _problem(array: npt.NDArray[np.generic], row_shape: tuple[int, ...], nonzero: bool) -> str | None:
    if array.ndim != 1 + len(row_shape) or tuple(array.shape[1:]) != row_shape or array.shape[0] < 1:
        return f"expected rows of shape {list(row_shape)}, got {list(array.shape)}"
    values = np.asarray(array, dtype=np.float32)
    if not np.isfinite(values).all():
        return "the input holds NaN or infinite values"
    if nonzero:
        rows = values.reshape(len(values), -1)
        if not np.any(rows, axis=1).all():
            return "the input holds an all-zero row"
        norms = np.linalg.norm(rows.astype(np.float64), axis=1)
        if (norms < MIN_NORM).any():
            return (
                f"the input holds a row of norm {float(norms.min()):.3g}: too close to zero to have a "
                f"direction (at least {MIN_NORM:g} is needed)"
            )
    return None
