"""Independent reference for contrastive search: numpy float64 brute force and a tie-tolerant checker."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

TOL = 2e-5  # float32 dot products of unit vectors vs the float64 reference

SMALL = {"blas_min_batch": 10**9}  # force the register-blocked kernel
BLAS = {"blas_min_batch": 1}  # force SGEMM tiles
PATHS = pytest.mark.parametrize("path", [SMALL, BLAS], ids=["kernel", "blas"])


def data(n: int, d: int, b: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Seeded random (n, d) database and (b, d) queries, float32."""
    rng = np.random.default_rng(seed)
    return (
        rng.standard_normal((n, d), dtype=np.float32),
        rng.standard_normal((b, d), dtype=np.float32),
    )


def reference_scores(
    db: npt.NDArray[np.float32], queries: npt.NDArray[np.float32], normalize_db: bool = True
) -> npt.NDArray[np.float64]:
    x = db.astype(np.float64)
    if normalize_db:
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
    q = queries.astype(np.float64)
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    return q @ x.T


def check_side(
    ids: npt.NDArray[np.int64],
    scores: npt.NDArray[np.float32],
    ref: npt.NDArray[np.float64],
    allowed: npt.NDArray[np.int64],
    k: int,
    far: bool,
) -> None:
    """Asserts that (ids, scores) is a correct top-k of one query against the reference row `ref`.

    Tolerant where reference scores tie within TOL at the k-th boundary (as faiss's check_ref_knn_with_draws).
    """
    assert ids.shape == (k,) and scores.shape == (k,)
    m = min(k, allowed.size)
    assert np.all(ids[m:] == -1), "padding ids must be -1"
    assert np.all(np.isnan(scores[m:])), "padding scores must be NaN"
    got, got_s = ids[:m], scores[:m].astype(np.float64)
    assert np.all(np.isin(got, allowed)), "an id outside the searchable rows was returned"
    assert np.unique(got).size == m, "duplicate ids in a result row"
    np.testing.assert_allclose(got_s, ref[got], atol=TOL, rtol=0)
    order = np.sign(1.0 if far else -1.0)
    assert np.all(np.diff(got_s) * order >= 0), "scores not sorted"
    eq = np.diff(got_s) == 0
    assert np.all(np.diff(got)[eq] > 0), "equal scores must be ordered by lower id"
    if m == 0:
        return
    sub = ref[allowed] * (1.0 if far else -1.0)  # smaller = better on both sides now
    kth = np.sort(sub, kind="stable")[m - 1]
    must = allowed[sub < kth - TOL]
    assert np.all(np.isin(must, got)), "a clearly better row is missing"
    signed_got = ref[got] * (1.0 if far else -1.0)
    assert np.all(signed_got <= kth + TOL), "a clearly worse row was returned"


def check_neighbors(
    result: object,
    db: npt.NDArray[np.float32],
    queries: npt.NDArray[np.float32],
    k_near: int,
    k_far: int,
    allowed: npt.NDArray[np.int64] | None = None,
    normalize_db: bool = True,
) -> None:
    ref = reference_scores(db, queries, normalize_db)
    if allowed is None:
        allowed = np.arange(db.shape[0], dtype=np.int64)
    near_ids, near_scores, far_ids, far_scores = (
        result.near_ids,
        result.near_scores,
        result.far_ids,
        result.far_scores,  # type: ignore[attr-defined]
    )
    b = queries.shape[0]
    assert near_ids.shape == (b, k_near) and near_ids.dtype == np.int64
    assert far_ids.shape == (b, k_far) and far_ids.dtype == np.int64
    assert near_scores.dtype == np.float32 and far_scores.dtype == np.float32
    for i in range(b):
        check_side(near_ids[i], near_scores[i], ref[i], allowed, k_near, far=False)
        check_side(far_ids[i], far_scores[i], ref[i], allowed, k_far, far=True)
