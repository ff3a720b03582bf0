"""float16 rows: copied (FlatIndex(half)), searched in place (FlatIndex.from_normalized), and the AMX path.

The references: numpy float64 brute force (tests/reference.py), and a float32 FlatIndex over the same values,
which the float16 paths must match bit for bit (same sums in the same order; see cpp/src/kernels_impl.hpp).
The AMX path (batches of at least ``amx_min_batch`` queries) must give exactly what the streaming float16
kernel gives, on adversarial rows too: that is the test of its certified error bound (cpp/src/amx.cpp).
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

STREAM = {"amx_min_batch": 10**9}  # the exact float16 kernel at every batch size
AMX = {"amx_min_batch": 1}  # AMX tiles + exact re-scoring wherever the CPU allows
F32_KERNEL = {"blas_min_batch": 10**9}  # the float32 register-blocked kernel (same summation order)


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
    check_neighbors(Neighbors(*want[:4]), half.astype(np.float32), q, 16, 12, normalize_db=False)


def test_row_ranges_across_segments_and_thread_counts() -> None:
    db, q = data(5000, 48, 33, seed=3)
    half = unit_half(db)
    ranges = [(100, 1500), (2900, 3100), (4990, 5000)]
    want = reference_of(half, q, 9, 9, row_ranges=ranges)
    index = FlatIndex.from_normalized([half[:3000], half[3000:]])
    for threads in (1, 2, 3):
        for path in (STREAM, AMX):
            got = index.search_raw(q, 9, 9, row_ranges=ranges, num_threads=threads, tile_rows=256, **path)
            assert_same(got, want)


def test_copied_float16_rows_are_kept_half_size_and_match_the_float64_reference() -> None:
    db, q = data(2000, 40, 20, seed=5)
    raw = (db * np.linspace(0.01, 50, 2000, dtype=np.float32)[:, None]).astype(np.float16)  # unnormalized
    index = FlatIndex(raw)
    assert index.dtype == "float16" and not index.in_place and index.nbytes == 2000 * 40 * 2 + 2000 * 4
    np.testing.assert_array_equal(index.vectors(), raw)
    for path in (STREAM, AMX):
        res = index.search(q, 10, 10, **path)
        check_neighbors(res, raw.astype(np.float32), q, 10, 10)  # normalized float64 reference
    assert_same(index.search_raw(q, 10, 10, **STREAM), index.search_raw(q, 10, 10, **AMX))
    f32 = FlatIndex(raw.astype(np.float32)).search(q, 10, 10)
    np.testing.assert_allclose(index.search(q, 10, 10).near_scores, f32.near_scores, atol=1e-6)


def _adversarial(d: int, seed: int) -> npt.NDArray[np.float16]:
    """Rows made to sit inside the bf16 error band of each other: near-ties one float16 ulp apart, exact
    duplicates, rows orthogonal to the queries' main direction, and sign-flipped twins."""
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
    return np.ascontiguousarray(np.concatenate(rows))


@pytest.mark.parametrize("d", [32, 96, 1152])
def test_amx_certified_rescoring_is_exact_on_adversarial_rows(d: int) -> None:
    half = _adversarial(d, seed=d)
    rng = np.random.default_rng(d + 1)
    q = np.concatenate(
        [
            half[:8].astype(np.float32),  # queries ON database rows: their near-ties are the whole top-k
            np.eye(d, dtype=np.float32)[:8],  # axis queries: many exact zeros and exact ties
            rng.standard_normal((20, d), dtype=np.float32),
        ]
    )
    index = FlatIndex.from_normalized(half)
    want = reference_of(half, q, 16, 16)
    for k in (1, 16, 40):
        assert_same(index.search_raw(q, k, k, **AMX), reference_of(half, q, k, k))
    assert_same(index.search_raw(q, 16, 16, **AMX), want)
    assert_same(index.search_raw(q, 16, 16, **STREAM), want)


def test_amx_rescoring_with_per_row_scales_over_a_wide_dynamic_range() -> None:
    rng = np.random.default_rng(11)
    d = 64
    base = rng.standard_normal((1500, d), dtype=np.float32)
    scale = np.exp(rng.uniform(np.log(1e-3), np.log(6e2), size=(1500, 1))).astype(np.float32)
    raw = (base * scale).astype(np.float16)
    raw[raw.shape[0] // 2 :: 7] = raw[0]  # many exact duplicates of row 0
    q = rng.standard_normal((48, d), dtype=np.float32)
    index = FlatIndex(raw)  # scores = exact float32 dot x (1 / norm) of each row
    assert_same(index.search_raw(q, 16, 16, **AMX), index.search_raw(q, 16, 16, **STREAM))


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
