"""The CPU twin of the CUDA search: the device's selection and certification code, run on the host.

``georag._core._cuda_twin_search`` runs the same ``__host__ __device__`` functions as the CUDA kernels
(cpp/src/cuda/certified.hpp: the exact lane-order dot product, select_slice with its certified limits,
merge_candidates) through the device driver's steps, with the tensor-core GEMM emulated: queries rounded to
float16 as the device rounds them and products summed in float32 in reverse order ("fp16-gemm"), or
approximate scores pushed to 95% of the certified bound with random signs ("adversarial"). It is compiled
in every build, so this file runs without a GPU.

The reference is the CPU FlatIndex over the same float16 rows. Ids AND scores must be equal bit for bit
where the CPU kernel fuses its multiply-adds (AVX-512 / AVX2: the twin and the device sum in the CPU's lane
order with FMAs); on the portable kernel scores may differ in the last bits, so ids are compared where the
reference's scores are not within float32 rounding of a neighbour.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from georag import FlatIndex, _core
from reference import data

FMA_KERNEL = _core.kernel_name() in ("avx512", "avx2")
EXACT = {"amx_min_batch": 10**9}  # the CPU's exact float16 kernel at every batch size
PATHS = ("exact", "fp16-gemm", "adversarial")


def unit_half(db: npt.NDArray[np.float32]) -> npt.NDArray[np.float16]:
    return (db / np.linalg.norm(db, axis=1, keepdims=True)).astype(np.float16)


def adversarial_rows(d: int, seed: int) -> npt.NDArray[np.float16]:
    """Near-ties one float16 ulp apart, exact duplicates, axis rows (exact zero scores), sign flips."""
    rng = np.random.default_rng(seed)
    base = unit_half(rng.standard_normal((40, d), dtype=np.float32))
    rows = [base]
    for k in range(1, 6):
        t = base.copy()
        j = rng.integers(0, d, size=40)
        t[np.arange(40), j] = np.nextafter(t[np.arange(40), j], np.float16(k), dtype=np.float16)
        rows.append(t)
    rows.append(base[:10])
    e = np.zeros((min(d, 64), d), np.float16)
    e[np.arange(min(d, 64)), np.arange(min(d, 64))] = 1
    rows.append(e)
    rows.append(-base[:20])
    rows.append(unit_half(rng.standard_normal((200, d), dtype=np.float32)))
    return np.ascontiguousarray(np.concatenate(rows))


def adversarial_queries(half: npt.NDArray[np.float16], b: int, seed: int) -> npt.NDArray[np.float32]:
    rng = np.random.default_rng(seed)
    d = half.shape[1]
    q = np.concatenate(
        [
            half[:8].astype(np.float32),  # on database rows: their near-ties are the whole top k
            np.eye(d, dtype=np.float32)[:8],  # axis queries: many exact zeros and ties
            -half[:4].astype(np.float32),  # the far side's mirror
            rng.standard_normal((max(b, 1), d), dtype=np.float32),
        ]
    )
    return np.ascontiguousarray(q[:b])


def cpu(half: npt.NDArray[np.float16], q: npt.NDArray[np.float32], kn: int, kf: int, normalize: bool, **kw):  # type: ignore[no-untyped-def]
    index = FlatIndex(half, normalize=normalize)
    return index.search_raw(q, kn, kf, **EXACT, **kw)


def twin(half, q, kn, kf, approx, normalize=False, **kw):  # type: ignore[no-untyped-def]
    return _core._cuda_twin_search(half, q, kn, kf, approx=approx, normalize=normalize, **kw)


def assert_equal(got, want) -> None:  # type: ignore[no-untyped-def]
    for g_ids, g_s, w_ids, w_s in ((got[0], got[1], want[0], want[1]), (got[2], got[3], want[2], want[3])):
        assert g_ids.dtype == np.int64 and g_s.dtype == np.float32
        if FMA_KERNEL:
            np.testing.assert_array_equal(g_ids, w_ids)
            np.testing.assert_array_equal(g_s, w_s)
        else:  # portable CPU kernel: separate multiply and add, scores within float32 rounding
            np.testing.assert_allclose(g_s, w_s, rtol=0, atol=2e-6, equal_nan=True)
            tie = np.zeros_like(w_s, dtype=bool)
            tie[:, 1:] |= np.abs(np.diff(w_s, axis=1)) <= 2e-6
            tie[:, :-1] |= tie[:, 1:].copy()
            np.testing.assert_array_equal(np.where(tie, 0, g_ids), np.where(tie, 0, w_ids))


@pytest.mark.parametrize("approx", PATHS)
@pytest.mark.parametrize("d", [32, 96, 1152])
def test_adversarial_rows_equal_the_cpu_index(approx: str, d: int) -> None:
    half = adversarial_rows(d, seed=d)
    for b in (1, 7, 8, 20):
        q = adversarial_queries(half, b, seed=b)
        for k in (1, 16, 40):
            got = twin(half, q, k, k, approx, seed=b + k)
            assert_equal(got, cpu(half, q, k, k, normalize=False))


def test_a_bound_too_small_is_seen() -> None:
    """The tests above have teeth: with a tenth of the certified bound, scores pushed to 95% of it pick
    other rows (or other scores) than the CPU index somewhere."""
    half = adversarial_rows(96, seed=96)
    differs = 0
    for b in (8, 20):
        q = adversarial_queries(half, b, seed=b)
        want = cpu(half, q, 16, 16, normalize=False)
        got = twin(half, q, 16, 16, "adversarial", seed=b, bound_scale=0.1)
        differs += sum(not np.array_equal(g, w) for g, w in zip(got[:4], want[:4], strict=True))
        assert_equal(twin(half, q, 16, 16, "adversarial", seed=b), want)  # the certified bound: exact
    assert differs > 0


@pytest.mark.parametrize("approx", PATHS)
def test_batch_of_256_with_scales_small_tiles_and_ranges(approx: str) -> None:
    rng = np.random.default_rng(3)
    d = 48
    base = rng.standard_normal((3000, d), dtype=np.float32)
    raw = (base * np.exp(rng.uniform(-3, 3, size=(3000, 1))).astype(np.float32)).astype(np.float16)
    raw[1500::7] = raw[0]  # many exact duplicates: ties by the lower id
    q = rng.standard_normal((256, d), dtype=np.float32)
    q[:20] = raw[:20].astype(np.float32)
    ranges = [(100, 1500), (2900, 3000), (1490, 1700)]
    for tile_rows in (0, 333):
        got = twin(raw, q, 16, 12, approx, normalize=True, tile_rows=tile_rows, row_ranges=_ranges(ranges))
        assert_equal(got, cpu(raw, q, 16, 12, normalize=True, row_ranges=ranges))
    got = twin(raw, q, 40, 0, approx, normalize=True, tile_rows=4096 + 17)
    assert_equal(got, cpu(raw, q, 40, 0, normalize=True))


def _ranges(ranges: list[tuple[int, int]]) -> npt.NDArray[np.int64]:
    return np.asarray(ranges, dtype=np.int64)


def test_slices_use_the_certified_limit_and_stay_exact() -> None:
    """Tiles of several 4096-column slices: the first tile's selection must cut by the slice limit L."""
    db, q = data(20000, 24, 9, seed=4)
    half = unit_half(db)
    want = cpu(half, q, 16, 16, normalize=False)
    for approx in PATHS:
        got = twin(half, q, 16, 16, approx)
        assert_equal(got, want)
        stats = got[4]
        assert stats["gemm"] == (approx != "exact")
        # certification keeps the re-scored set small: far below every pair (9 queries x 20000 rows x 2)
        assert stats["candidates"] < 9 * 20000 * 2 // 10, stats


def test_k_beyond_the_rows_and_duplicates_everywhere() -> None:
    half = np.tile(unit_half(np.ones((1, 16), np.float32)), (300, 1))  # 300 identical rows: all ties
    q = np.ones((9, 16), np.float32)
    for approx in PATHS:
        for k in (5, 300, 400):
            got = twin(half, q, k, k, approx)
            want = cpu(half, q, k, k, normalize=False)
            assert_equal(got, want)
            if k > 300:
                assert (got[0][:, 300:] == -1).all() and np.isnan(got[1][:, 300:]).all()


def test_error_bound_statement_for_1152() -> None:
    got = twin(unit_half(np.ones((2, 1152), np.float32)), np.ones((8, 1152), np.float32), 1, 1, "fp16-gemm")
    bound = got[4]["error_bound"]
    assert 1.1e-3 < bound < 1.25e-3  # the bracket of cpp/src/cuda/certified.hpp times its 1.0625 margin


def test_same_errors_as_the_cpu_index() -> None:
    half = unit_half(data(20, 4, 1)[0])
    q = data(20, 4, 2, seed=1)[1]
    zero = q.copy()
    zero[1] = 0
    bad = half.copy()
    bad[5, 2] = np.nan
    cases = [
        (lambda f: f(half, zero, 3, 3), ValueError),
        (lambda f: f(half, q, -1, 3), ValueError),
        (lambda f: f(bad, q, 3, 3), ValueError),
    ]
    for run, exc in cases:
        with pytest.raises(exc) as on_cpu:
            run(lambda h, qq, kn, kf: FlatIndex(h).search_raw(qq, kn, kf))
        with pytest.raises(exc) as on_twin:
            run(lambda h, qq, kn, kf: twin(h, qq, kn, kf, "fp16-gemm", normalize=True))
        assert str(on_twin.value) == str(on_cpu.value)


def test_memory_estimate_for_10m_by_1152() -> None:
    est = _core.cuda_memory_estimate(10_000_000, 1152, 256, 16, 16)
    assert est["rows"] == 10_000_000 * 1152 * 2  # 23.04 GB of float16 rows
    assert est["per_row"] == 10_000_000 * 8
    assert est["total"] < 23.5e9


# ---- the bound check (CudaFlatIndex._bound_check and the GEMM self-check) with the emulated GEMM ----

LIMIT = 1 / 1.0625
EPS = 2.0**-11 - 2.0**-17  # the stress set's query-rounding error, relative (cpp/src/cuda/rows.cpp)


def bound_check(rows, q, approx="fp16-gemm", **kw):  # type: ignore[no-untyped-def]
    return _core._cuda_twin_bound_check(rows, q, approx=approx, **kw)


@pytest.mark.parametrize("d", [1, 3, 32, 96])
def test_stress_set_stays_within_the_bound_with_a_float32_gemm(d: int) -> None:
    rows, q = _core._cuda_bound_stress_set(d)
    assert rows.dtype == np.float16 and rows.shape == (512, d)
    assert q.dtype == np.float32 and q.shape == (256, d)
    assert np.isfinite(rows).all() and (np.abs(rows.astype(np.float32)).sum(axis=1) > 0).all()
    for normalize in (False, True):
        got = bound_check(rows, q, normalize=normalize)
        assert got["ok"] and got["ratio"] < LIMIT == pytest.approx(got["limit"])
        assert (got["queries"], got["rows"]) == (256, 512)
        assert abs(got["approx"] - got["exact"]) == pytest.approx(got["ratio"] * got["bound"], rel=1e-3)


@pytest.mark.parametrize("d", [32, 96, 1152])
def test_stress_set_drives_the_query_rounding_term_near_its_worst_case(d: int) -> None:
    """Query 128 + i against row 384 + i: every element's float16 rounding errs by EPS the same way, so the
    GEMM's error is ~EPS |q| |x|, i.e. EPS / (gemm_error_rel / 1.0625) of the bound: the check has teeth
    (a GEMM that rounded the queries twice as coarsely would exceed the limit at d <= 96)."""
    rows, q = _core._cuda_bound_stress_set(d)
    rel = twin(rows[:2], q[:8], 1, 1, "fp16-gemm")[4]["error_bound"]  # gemm_error_rel(D), margin included
    got = bound_check(rows, q[128:136], row_start=384, tile_rows=8)
    assert got["ok"]
    assert got["ratio"] > 0.9 * EPS / rel
    assert got["row"] - 384 == got["query"]  # the paired row


def test_bound_check_reads_an_injected_error_exactly() -> None:
    """The adversarial emulation puts every approximate score at exact +- 0.95 / 1.0625 of e."""
    rows, q = _core._cuda_bound_stress_set(40)
    got = bound_check(rows, q, "adversarial", seed=5)
    assert got["ratio"] == pytest.approx(0.95 / 1.0625, rel=1e-3)  # exact + e rounds to float32
    assert got["ok"]


def test_bound_check_arguments() -> None:
    rows, q = _core._cuda_bound_stress_set(8)
    with pytest.raises(ValueError, match="1 to 512 queries"):
        bound_check(rows, np.concatenate([q, q, q])[:513])
    with pytest.raises(ValueError, match="1 to 512 queries"):
        bound_check(rows, q[:0])
    with pytest.raises(ValueError, match=r"row_start must be in \[0, 512\)"):
        bound_check(rows, q, row_start=512)
    with pytest.raises(ValueError, match="compares a GEMM"):
        bound_check(rows, q, "exact")
    got = bound_check(rows, q[:3], row_start=500)  # the tile is cut at the last row
    assert (got["queries"], got["rows"]) == (3, 12) and 500 <= got["row"] < 512
