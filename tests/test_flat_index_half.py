"""float16 rows: copied (FlatIndex(half)), searched in place (FlatIndex.from_normalized), and the two
certified batch paths (AMX tiles, SGEMM tiles).

The references: numpy float64 brute force (tests/reference.py), and a float32 FlatIndex over the same values,
which the float16 paths must match bit for bit (same sums in the same order; see cpp/src/kernels_impl.hpp).
The AMX path (batches of at least ``amx_min_batch`` queries, where the CPU has AMX) and the certified SGEMM
path (batches of at least ``blas_min_batch`` queries without AMX; forced here with ``use_amx=False``) must
give exactly what the streaming float16 kernel gives, on adversarial rows too: that is the test of their
certified error bounds (cpp/src/amx.cpp, cpp/src/certified_sgemm.cpp). With the bounds scaled to 0 (a
test-only hook) the same adversarial searches differ: the tests can see a missing bound.
"""

from __future__ import annotations

import gc
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from georag import FlatIndex, _core
from georag.types import Neighbors
from reference import check_neighbors, data

STREAM = {"amx_min_batch": 10**9, "blas_min_batch": 10**9}  # the exact float16 kernel at every batch size
AMX = {"amx_min_batch": 1}  # AMX tiles + exact re-scoring wherever the CPU allows
SGEMM = {"use_amx": False, "blas_min_batch": 1}  # SGEMM tiles + exact re-scoring, as without AMX
F32_KERNEL = {"blas_min_batch": 10**9}  # the float32 register-blocked kernel (same summation order)
HAVE_AMX = _core.amx_status() == "available"
# The certified paths; "amx" is skipped where the CPU has no AMX (it would only re-run the others there).
CERTIFIED = [
    pytest.param(AMX, id="amx", marks=pytest.mark.skipif(not HAVE_AMX, reason=_core.amx_status())),
    pytest.param(SGEMM, id="sgemm"),
]


def unit_half(db: npt.NDArray[np.float32]) -> npt.NDArray[np.float16]:
    return (db / np.linalg.norm(db, axis=1, keepdims=True)).astype(np.float16)


def assert_same(a: tuple, b: tuple) -> None:  # type: ignore[type-arg]
    for x, y in zip(a[:4], b[:4], strict=True):
        np.testing.assert_array_equal(x, y)


def reference_of(
    half: npt.NDArray[np.float16], q: npt.NDArray[np.float32], kn: int, kf: int, **kw: int
) -> tuple:  # type: ignore[type-arg]
    """The float32 index over the same values, on its small-batch kernel: the definition of the answer."""
    return FlatIndex(half.astype(np.float32), normalize=False).search_raw(q, kn, kf, **F32_KERNEL, **kw)


@pytest.mark.parametrize("d", [16, 37, 64, 768])
@pytest.mark.parametrize("b", [1, 5, 40])
def test_in_place_float16_equals_float32_over_the_same_values_on_both_paths(d: int, b: int) -> None:
    db, q = data(3000, d, b, seed=d + b)
    half = unit_half(db)
    want = reference_of(half, q, 16, 12)
    index = FlatIndex.from_normalized([half[:1100], half[1100:2000], half[2000:]])
    assert index.in_place and index.nbytes == 0 and index.dtype == "float16"
    assert_same(index.search_raw(q, 16, 12, **STREAM), want)
    assert_same(index.search_raw(q, 16, 12, **AMX), want)
    assert_same(index.search_raw(q, 16, 12, **SGEMM), want)
    check_neighbors(Neighbors(*want[:4]), half.astype(np.float32), q, 16, 12, normalize_db=False)


def test_row_ranges_across_segments_and_thread_counts() -> None:
    db, q = data(5000, 48, 33, seed=3)
    half = unit_half(db)
    ranges = [(100, 1500), (2900, 3100), (4990, 5000)]
    want = reference_of(half, q, 9, 9, row_ranges=ranges)
    index = FlatIndex.from_normalized([half[:3000], half[3000:]])
    for threads in (1, 2, 3):
        for path in (STREAM, AMX, SGEMM):
            got = index.search_raw(q, 9, 9, row_ranges=ranges, num_threads=threads, tile_rows=256, **path)
            assert_same(got, want)


def test_copied_float16_rows_are_kept_half_size_and_match_the_float64_reference() -> None:
    db, q = data(2000, 40, 20, seed=5)
    raw = (db * np.linspace(0.01, 50, 2000, dtype=np.float32)[:, None]).astype(np.float16)  # unnormalized
    index = FlatIndex(raw)
    assert index.dtype == "float16" and not index.in_place and index.nbytes == 2000 * 40 * 2 + 2000 * 4
    np.testing.assert_array_equal(index.vectors(), raw)
    for path in (STREAM, AMX, SGEMM):
        res = index.search(q, 10, 10, **path)
        check_neighbors(res, raw.astype(np.float32), q, 10, 10)  # normalized float64 reference
    assert_same(index.search_raw(q, 10, 10, **STREAM), index.search_raw(q, 10, 10, **AMX))
    assert_same(index.search_raw(q, 10, 10, **STREAM), index.search_raw(q, 10, 10, **SGEMM))
    f32 = FlatIndex(raw.astype(np.float32)).search(q, 10, 10)
    np.testing.assert_allclose(index.search(q, 10, 10).near_scores, f32.near_scores, atol=1e-6)


def _adversarial(d: int, seed: int) -> npt.NDArray[np.float16]:
    """Rows made to sit inside the error band of each other: near-ties one float16 ulp apart, exact
    duplicates, rows orthogonal to the queries' main direction, sign-flipped twins, and permuted twins: 64
    permutations of one all-positive row, whose scores against a constant query are equal in real arithmetic
    and differ only by float32 rounding (the SGEMM path's bound is about the rounding of a sum alone)."""
    rng = np.random.default_rng(seed)
    base = unit_half(rng.standard_normal((40, d), dtype=np.float32))
    rows = [base]
    for k in range(1, 6):  # near-ties: one element nudged by k float16 ulps
        t = base.copy()
        j = rng.integers(0, d, size=40)
        t[np.arange(40), j] = np.nextafter(t[np.arange(40), j], np.float16(k), dtype=np.float16)
        rows.append(t)
    rows.append(base[:10])  # exact duplicates: ties broken by the lower id
    e = np.zeros((d, d), np.float16)
    np.fill_diagonal(e, 1)
    rows.append(e)  # axis rows: orthogonal to each other, exactly zero scores against axis queries
    rows.append(-base[:20])
    small = unit_half(rng.standard_normal((200, d), dtype=np.float32)) * np.float16(1.0)
    rows.append(small)
    positive = unit_half(np.abs(rng.standard_normal((1, d), dtype=np.float32)))[0]
    perms = np.stack([positive[rng.permutation(d)] for _ in range(64)])
    rows += [perms, -perms]  # the near AND the far top-k of a constant query are all rounding ties
    return np.ascontiguousarray(np.concatenate(rows))


def _adversarial_queries(half: npt.NDArray[np.float16], b: int, seed: int) -> npt.NDArray[np.float32]:
    """b queries: 2 constant ones (against the permuted twins), queries ON database rows (their near-ties
    are the whole top-k), axis queries (many exact zeros and exact ties), then random ones."""
    d = half.shape[1]
    rng = np.random.default_rng(seed)
    q = np.concatenate(
        [
            np.ones((2, d), np.float32),
            half[: b // 4].astype(np.float32),
            np.eye(d, dtype=np.float32)[: min(b // 4, d)],
        ]
    )
    return np.concatenate([q, rng.standard_normal((b - len(q), d), dtype=np.float32)])


@pytest.mark.parametrize("path", CERTIFIED)
@pytest.mark.parametrize("b", [16, 33, 256])
@pytest.mark.parametrize("d", [32, 96, 1152])
def test_certified_rescoring_is_exact_on_adversarial_rows(d: int, b: int, path: dict[str, int]) -> None:
    half = _adversarial(d, seed=d)
    q = _adversarial_queries(half, b, seed=d + 1)
    n = len(half)
    index = FlatIndex.from_normalized([half[: n // 2 + 7], half[n // 2 + 7 :]])  # two segments
    for k in (1, 16, 40):
        want = reference_of(half, q, k, k)
        assert_same(index.search_raw(q, k, k, **STREAM), want)
        assert_same(index.search_raw(q, k, k, **path), want)
    ranges = [(3, n // 3), (n // 2 - 50, n // 2 + 40), (n // 2, n // 2 + 100), (n - 140, n)]
    want = reference_of(half, q, 16, 16, row_ranges=ranges)
    assert_same(index.search_raw(q, 16, 16, row_ranges=ranges, tile_rows=512, **path), want)


@pytest.mark.parametrize("path", CERTIFIED)
@pytest.mark.parametrize("b", [16, 33, 256])
def test_certified_rescoring_with_per_row_scales_over_a_wide_range(b: int, path: dict[str, int]) -> None:
    rng = np.random.default_rng(11)
    d = 64
    base = rng.standard_normal((1500, d), dtype=np.float32)
    scale = np.exp(rng.uniform(np.log(1e-3), np.log(6e2), size=(1500, 1))).astype(np.float32)
    raw = (base * scale).astype(np.float16)
    raw[raw.shape[0] // 2 :: 7] = raw[0]  # many exact duplicates of row 0
    q = rng.standard_normal((b, d), dtype=np.float32)
    index = FlatIndex(raw)  # scores = exact float32 dot x (1 / norm) of each row
    for k in (1, 16, 40):
        assert_same(index.search_raw(q, k, k, **path), index.search_raw(q, k, k, **STREAM))


@pytest.mark.parametrize("path", CERTIFIED)
def test_without_the_bound_the_adversarial_rows_differ(path: dict[str, int]) -> None:
    """The test of the tests: with the certified bound scaled to 0 (the approximate score alone decides
    which pairs are re-scored) the adversarial searches above give other ids somewhere (where depends on
    the BLAS's summation order, so several shapes are tried)."""
    differing = 0
    for d in (32, 96, 1152):
        half = _adversarial(d, seed=d)
        q = _adversarial_queries(half, 33, seed=d + 1)
        index = FlatIndex.from_normalized(half)
        for k in (1, 16, 40):
            want = index.search_raw(q, k, k, **STREAM)
            before = _core._set_certify_bound_scale(0.0)
            try:
                unbounded = index.search_raw(q, k, k, **path)
            finally:
                _core._set_certify_bound_scale(before)
            assert before == 1.0
            differing += sum(int((x != y).sum()) for x, y in zip(want[:3:2], unbounded[:3:2], strict=True))
            assert_same(index.search_raw(q, k, k, **path), want)  # the bound restored: exact again
    assert differing > 0


def test_without_amx_large_float16_batches_take_the_sgemm_path_by_default() -> None:
    """use_amx=False with the default thresholds: streaming below blas_min_batch, certified SGEMM from it
    (the SGEMM path's per-thread workspace shows in the reported scratch bytes); the same answers."""
    db, q = data(3000, 48, 256, seed=4)
    half = unit_half(db)
    index = FlatIndex.from_normalized(half)
    small = index.search_raw(q[:255], 8, 8, use_amx=False)
    large = index.search_raw(q, 8, 8, use_amx=False)
    assert large[4] > small[4] + 256 * 48 * 4  # the widened rows of one chunk, at least
    assert_same(large, index.search_raw(q, 8, 8, **STREAM))
    assert_same(small, index.search_raw(q[:255], 8, 8, **STREAM))


def test_amx_status_is_reported() -> None:
    status = _core.amx_status()
    assert isinstance(status, str) and status
    if "amx_bf16" in Path("/proc/cpuinfo").read_text(encoding="utf-8"):
        assert status == "available"


def test_from_normalized_refuses_what_it_cannot_search_in_place() -> None:
    db, _ = data(100, 8, 1)
    half = unit_half(db)
    with pytest.raises(ValueError, match="array 0 row 0 has norm 2"):
        FlatIndex.from_normalized(half * np.float16(2))
    bad = half.copy()
    bad[99, 3] = np.nan
    with pytest.raises(ValueError, match="array 1 row 49 has a NaN/Inf value"):
        FlatIndex.from_normalized([half[:50], bad[50:]])
    with pytest.raises(ValueError, match="not C-contiguous"):
        FlatIndex.from_normalized(np.asfortranarray(half))
    with pytest.raises(TypeError, match="float16 or float32"):
        FlatIndex.from_normalized(half.astype(np.float64))
    with pytest.raises(TypeError, match="same dtype"):
        FlatIndex.from_normalized([half, half.astype(np.float32)])
    with pytest.raises(ValueError, match=r"shape \(rows, 8\)"):
        FlatIndex.from_normalized([half, half[:, :4].copy()])
    with pytest.raises(ValueError, match="at least one array"):
        FlatIndex.from_normalized([])
    index = FlatIndex.from_normalized(half)
    with pytest.raises(ValueError, match="append works on a float32 index"):
        index.append(db)
    with pytest.raises(ValueError, match="in place"):
        index.vectors()


def test_in_place_means_no_copy_and_the_arrays_stay_alive() -> None:
    db, q = data(400, 16, 3)
    half = unit_half(db)
    index = FlatIndex.from_normalized([half[:200].copy(), half[200:].copy()])  # only the index holds these
    gc.collect()
    before = index.search_raw(q, 5, 5)
    np.testing.assert_array_equal(before[0], reference_of(half, q, 5, 5)[0])
    # The index reads the very memory it was given: changing a row changes the answer.
    arrays = FlatIndex.from_normalized(half)
    top = int(arrays.search_raw(q[:1], 1, 0)[0][0, 0])
    half[top] = -half[top]
    assert int(arrays.search_raw(q[:1], 1, 0)[0][0, 0]) != top


def test_float32_in_place_rows_of_any_width_match_the_copied_index() -> None:
    db, q = data(700, 21, 9, seed=8)
    unit = db / np.linalg.norm(db, axis=1, keepdims=True)
    index = FlatIndex.from_normalized(unit[3:])  # an offset view: 4-byte aligned only, width 21
    assert index.dtype == "float32" and index.in_place
    want = FlatIndex(unit[3:], normalize=False).search_raw(q, 7, 7, **F32_KERNEL)
    assert_same(index.search_raw(q, 7, 7, **F32_KERNEL), want)
    check_neighbors(index.search(q, 7, 7, blas_min_batch=1), unit[3:], q, 7, 7, normalize_db=False)


def test_arrays_that_went_through_pickle_are_accepted_and_foreign_byte_order_refused() -> None:
    import pickle

    db, q = data(300, 12, 4, seed=2)
    half = unit_half(db)
    # pickle (as Ray ships arrays to actors) gives dtypes equal to, but not the same objects as, numpy's own
    q2, half2 = pickle.loads(pickle.dumps(q)), pickle.loads(pickle.dumps(half))
    assert_same(
        FlatIndex.from_normalized(half2).search_raw(q2, 5, 5),
        FlatIndex.from_normalized(half).search_raw(q, 5, 5),
    )
    assert_same(FlatIndex(half2).search_raw(q2, 5, 5), FlatIndex(half).search_raw(q, 5, 5))
    with pytest.raises(TypeError, match="must be float32"):
        FlatIndex(db.astype(">f4"))
