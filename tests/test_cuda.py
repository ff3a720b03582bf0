"""CudaFlatIndex against the CPU FlatIndex and the float64 reference.

The device tests skip at two levels: when georag._core was built without CUDA, and when no CUDA
device is usable. The tests of the "not available" errors run everywhere.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from georag import FlatIndex, MissingDependencyError, _core
from georag.search import Index
from georag.search.cuda import CudaFlatIndex
from georag.types import Neighbors
from reference import check_neighbors

FMA_KERNEL = _core.kernel_name() in ("avx512", "avx2")  # the CPU sums as the GPU does: equal bit for bit
ATOL = 2e-6  # otherwise (portable CPU kernel: separate multiply and add)

HAS_CUDA: bool = bool(getattr(_core, "has_cuda", False))
DEVICE_OK, DEVICE_WHY = _core.cuda_device_available() if HAS_CUDA else (False, "no CUDA build")

ON_DEVICE = [
    pytest.mark.gpu,
    pytest.mark.skipif(not HAS_CUDA, reason="georag._core was not built with CUDA"),
    pytest.mark.skipif(HAS_CUDA and not DEVICE_OK, reason=f"no usable CUDA device: {DEVICE_WHY}"),
]

GEMM = {"gemm_min_batch": 1}  # cuBLAS tiles + certified exact re-scoring at every batch size
STREAM = {"gemm_min_batch": 10**9}  # the exact streaming kernel at every batch size


Matrix = npt.NDArray[np.float32]


def data(n: int, d: int, b: int, seed: int = 0) -> tuple[Matrix, Matrix]:
    rng = np.random.default_rng(seed)
    return (
        rng.standard_normal((n, d), dtype=np.float32),
        rng.standard_normal((b, d), dtype=np.float32),
    )


def device_rows(db: Matrix, normalize: bool = True) -> npt.NDArray[np.float16]:
    """The float16 rows a CudaFlatIndex built from float32 ``db`` holds (normalized as the CPU index does)."""
    return FlatIndex(db, normalize=normalize).vectors().astype(np.float16)


def assert_same_as_cpu(gpu: Neighbors, cpu: Neighbors) -> None:
    """Bit for bit where the CPU kernel fuses multiply-adds; else scores within ATOL, ids equal off ties."""
    for g_ids, g_s, c_ids, c_s in (
        (gpu.near_ids, gpu.near_scores, cpu.near_ids, cpu.near_scores),
        (gpu.far_ids, gpu.far_scores, cpu.far_ids, cpu.far_scores),
    ):
        assert g_ids.shape == c_ids.shape
        assert g_ids.dtype == np.int64
        assert g_s.dtype == np.float32
        if FMA_KERNEL:
            np.testing.assert_array_equal(g_ids, c_ids)
            np.testing.assert_array_equal(g_s, c_s)
            continue
        np.testing.assert_array_equal(g_ids < 0, c_ids < 0)  # same padding
        np.testing.assert_allclose(g_s, c_s, atol=ATOL, rtol=0, equal_nan=True)


def both(
    db: Matrix,
    q: Matrix,
    kn: int,
    kf: int,
    row_ranges: list[tuple[int, int]] | None = None,
    tile_rows: int = 0,
    **tuning: int,
) -> tuple[Neighbors, Neighbors]:
    raw = CudaFlatIndex(db).search_raw(q, kn, kf, row_ranges=row_ranges, tile_rows=tile_rows, **tuning)
    gpu = Neighbors(*raw[:4])
    cpu = FlatIndex(device_rows(db)).search(q, kn, kf, row_ranges=row_ranges, amx_min_batch=10**9)
    return gpu, cpu


# ---- everywhere: the errors of a build or a machine without CUDA ---------------------------


def test_not_built_with_cuda_is_a_missing_dependency(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_core, "has_cuda", False)
    db, _ = data(10, 4, 1)
    with pytest.raises(MissingDependencyError, match=r"GEORAG_CUDA=ON pip install \."):
        CudaFlatIndex(db)


def _no_driver() -> tuple[bool, str]:
    return False, "no driver (test)"


def test_no_device_is_a_missing_dependency(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_core, "has_cuda", True)
    monkeypatch.setattr(_core, "cuda_device_available", _no_driver, raising=False)
    db, _ = data(10, 4, 1)
    with pytest.raises(MissingDependencyError, match=r"no driver \(test\).*georag\.FlatIndex"):
        CudaFlatIndex(db)


@pytest.mark.skipif(DEVICE_OK, reason="a CUDA device is usable here; the device tests run instead")
def test_this_machine_explains_why_cuda_is_unavailable() -> None:
    db, _ = data(10, 4, 1)
    with pytest.raises(MissingDependencyError) as err:
        CudaFlatIndex(db)
    message = str(err.value)
    if HAS_CUDA:
        assert "needs a CUDA device" in message
        assert DEVICE_WHY in message
    else:
        assert "GEORAG_CUDA=ON pip install ." in message
    assert isinstance(err.value, ImportError)


# ---- on a CUDA device ---------------------------------------------------------------------


class TestOnDevice:
    pytestmark = ON_DEVICE

    @pytest.mark.parametrize(
        ("n", "d", "b", "kn", "kf"),
        [
            (1, 3, 1, 4, 4),  # k > N: padding
            (7, 17, 3, 5, 9),
            (100, 16, 5, 16, 16),
            (1000, 130, 70, 16, 3),  # more than one score block of queries
            (3000, 64, 2, 0, 7),
            (5000, 33, 4, 300, 200),  # fewer slots per query for a larger k
            (400, 20, 3, 450, 400),  # k > N with one slot per query
            (2000, 768, 8, 16, 16),  # SigLIP-base width
            (300, 8, 2100, 4, 4),  # two query blocks on the device
            (70_000, 32, 3, 16, 16),  # more than one automatic tile
        ],
    )
    @pytest.mark.parametrize("path", [GEMM, STREAM, {}])
    def test_matches_cpu_and_reference(
        self, n: int, d: int, b: int, kn: int, kf: int, path: dict[str, int]
    ) -> None:
        db, q = data(n, d, b, seed=n + d + b)
        gpu, cpu = both(db, q, kn, kf, **path)
        assert_same_as_cpu(gpu, cpu)
        check_neighbors(gpu, device_rows(db).astype(np.float32), q, kn, kf)

    @pytest.mark.parametrize("path", [GEMM, STREAM])
    @pytest.mark.parametrize("tile_rows", [1, 64, 333, 1000, 5000])
    def test_tiles_carry_heaps_across(self, tile_rows: int, path: dict[str, int]) -> None:
        db, q = data(9000, 24, 3, seed=8)
        gpu, cpu = both(db, q, 10, 40, tile_rows=tile_rows, **path)
        assert_same_as_cpu(gpu, cpu)

    @pytest.mark.parametrize(("kn", "kf"), [(12, 12), (400, 5)])  # 400 > the 285 searchable rows
    def test_row_ranges(self, kn: int, kf: int) -> None:
        db, q = data(1000, 24, 3, seed=10)
        ranges = [(700, 900), (10, 50), (40, 120), (995, 1000)]  # unordered and overlapping
        for path in (GEMM, STREAM):
            gpu, cpu = both(db, q, kn, kf, row_ranges=ranges, **path)
            assert_same_as_cpu(gpu, cpu)
        allowed = np.unique(np.concatenate([np.arange(s, e) for s, e in ranges]))
        check_neighbors(gpu, device_rows(db).astype(np.float32), q, kn, kf, allowed=allowed)

    def test_not_normalized_database(self) -> None:
        db, q = data(500, 20, 4, seed=11)
        half = db.astype(np.float16)
        for path in (GEMM, STREAM):
            gpu = CudaFlatIndex(db, normalize=False).search(q, 8, 8, **path)
            assert_same_as_cpu(gpu, FlatIndex(half, normalize=False).search(q, 8, 8, amx_min_batch=10**9))
        with pytest.raises(ValueError, match=r"row 3 has the value .* beyond the float16 range"):
            CudaFlatIndex(np.where(np.arange(500)[:, None] == 3, 1e6, db).astype(np.float32), normalize=False)

    @pytest.mark.parametrize("normalize", [True, False])
    def test_float16_input_is_kept_as_given(self, normalize: bool) -> None:
        rng = np.random.default_rng(21)
        raw = (rng.standard_normal((4000, 96)) * rng.uniform(0.01, 50, (4000, 1))).astype(np.float16)
        raw[2000::9] = raw[1]  # duplicates: ties by the lower id
        q = rng.standard_normal((300, 96)).astype(np.float32)
        q[:5] = raw[:5]
        index = CudaFlatIndex(raw, normalize=normalize)
        cpu = FlatIndex(raw, normalize=normalize)
        for b in (1, 7, 8, 300):
            for path in (GEMM, STREAM, {}):
                assert_same_as_cpu(
                    index.search(q[:b], 16, 40, **path), cpu.search(q[:b], 16, 40, amx_min_batch=10**9)
                )
        assert index.device_bytes >= 4000 * 96 * 2

    def test_no_queries_and_repeatable(self) -> None:
        db, q = data(300, 16, 5, seed=12)
        index = CudaFlatIndex(db)
        assert (index.ntotal, index.dim, index.device, len(index)) == (300, 16, 0, 300)
        empty = index.search(q[:0], 3, 4)
        assert empty.near_ids.shape == (0, 3)
        assert empty.far_ids.shape == (0, 4)
        first, second = index.search(q, 16, 16), index.search(q, 16, 16)
        np.testing.assert_array_equal(first.near_ids, second.near_ids)
        np.testing.assert_array_equal(first.far_scores, second.far_scores)

    def test_satisfies_the_search_protocol_with_its_tuning_keyword(self) -> None:
        db, q = data(500, 16, 3, seed=14)
        index = CudaFlatIndex(db)
        assert isinstance(index, Index)
        gpu = index.search(q, 8, 8, tile_rows=64)
        assert_same_as_cpu(gpu, FlatIndex(device_rows(db)).search(q, 8, 8, amx_min_batch=10**9))
        with pytest.raises(TypeError, match="its tuning keywords: tile_rows, gemm_min_batch"):
            index.search(q, 8, 8, num_threads=2)

    def test_same_errors_as_cpu(self) -> None:
        db, q = data(20, 4, 2, seed=13)
        gpu, cpu = CudaFlatIndex(db), FlatIndex(db)
        bad_db = db.copy()
        bad_db[5, 2] = np.nan
        zero_q = q.copy()
        zero_q[1] = 0.0
        cases = [
            (lambda cls: cls(bad_db), ValueError),
            (lambda cls: cls(db.astype(np.float64)), TypeError),
        ]
        for build, exc in cases:
            with pytest.raises(exc) as on_cpu:
                build(FlatIndex)
            with pytest.raises(exc) as on_gpu:
                build(CudaFlatIndex)
            assert str(on_gpu.value) == str(on_cpu.value)
        searches = [
            (lambda ix: ix.search(zero_q, 3, 3), ValueError),
            (lambda ix: ix.search(q, -1, 3), ValueError),
            (lambda ix: ix.search(q, 3, 3, row_ranges=[(3, 30)]), ValueError),
            (lambda ix: ix.search(q, 3, 3, row_ranges=[(4, 4)]), ValueError),
            (lambda ix: ix.search(q[:, :3].copy(), 3, 3), ValueError),
        ]
        for run, exc in searches:
            with pytest.raises(exc) as on_cpu:
                run(cpu)
            with pytest.raises(exc) as on_gpu:
                run(gpu)
            assert str(on_gpu.value) == str(on_cpu.value)

    def test_missing_cublas_is_a_missing_dependency_on_the_gemm_path_only(self) -> None:
        db, q = data(300, 16, 9, seed=15)
        index = CudaFlatIndex(db)
        _core.cuda_set_cublas_dirs(["/nonexistent"])
        try:
            index.search(q[:2], 4, 4, **STREAM)  # the streaming kernel needs no cuBLAS
        finally:
            from georag.search.cuda import cublas_dirs

            _core.cuda_set_cublas_dirs(cublas_dirs())

    def test_many_concurrent_searches_on_one_index(self) -> None:
        from concurrent.futures import ThreadPoolExecutor

        db, q = data(20000, 64, 40, seed=16)
        index = CudaFlatIndex(db)
        want = index.search(q, 16, 16)
        with ThreadPoolExecutor(4) as pool:
            got = list(pool.map(lambda _: index.search(q, 16, 16), range(8)))
        for g in got:
            np.testing.assert_array_equal(g.near_ids, want.near_ids)
            np.testing.assert_array_equal(g.far_scores, want.far_scores)

    @pytest.mark.parametrize("d", [1152, 768, 96, 32])
    def test_gemm_error_is_within_the_certified_bound_on_this_gpu(self, d: int) -> None:
        """THE assumption of the certified bound (cpp/src/cuda/certified.hpp, step 2), measured: the GEMM
        tile against the exact tile, random AND cancellation-heavy pairs (georag._core._cuda_bound_stress_set)
        and random rows, with and without per-row scales. A failure means the GEMM path must not be trusted
        on this GPU."""
        rows, q = _core._cuda_bound_stress_set(d)
        for normalize in (False, True):
            index = CudaFlatIndex(rows, normalize=normalize)
            for queries, start in ((q[:128], 0), (q[128:], 0), (q[128:], 384)):
                got = index._bound_check(queries, row_start=start)
                assert got["ok"], got
                assert got["ratio"] < 1 / 1.0625
            # the query-rounding adversary is seen by the device check too (the ratio is not trivially 0)
            assert index._bound_check(q[128:], row_start=384)["ratio"] > 0.1
        db, qr = data(20000, d, 512, seed=d)
        got = CudaFlatIndex(db)._bound_check(qr)
        assert got["ok"], got
        assert got["queries"] == 512 and 0 < got["rows"] <= 20000

    def test_gemm_self_check_runs_once_before_the_first_gemm_search(self) -> None:
        db, q = data(3000, 96, 9, seed=17)
        index = CudaFlatIndex(db)
        assert index.gemm_self_check is None
        index.search(q[:2], 4, 4, **STREAM)  # the streaming kernel: no self-check
        assert index.gemm_self_check is None
        gpu = index.search(q, 8, 8, **GEMM)
        check = index.gemm_self_check
        assert check is not None and check["ok"], check
        assert (check["queries"], check["rows"]) == (256, 512)
        assert_same_as_cpu(gpu, FlatIndex(device_rows(db)).search(q, 8, 8, amx_min_batch=10**9))

    def test_bound_check_arguments(self) -> None:
        db, q = data(100, 16, 3, seed=18)
        index = CudaFlatIndex(db)
        with pytest.raises(ValueError, match=r"row_start must be in \[0, 100\)"):
            index._bound_check(q, row_start=100)
        with pytest.raises(ValueError, match="1 to 512 queries"):
            index._bound_check(q[:0])
        got = index._bound_check(q, row_start=90, tile_rows=7)  # ld 8 for a tile of 7 rows
        assert (got["queries"], got["rows"]) == (3, 7) and 90 <= got["row"] < 97

    def test_missing_device_index_is_a_value_error(self) -> None:
        db, _ = data(10, 4, 1)
        with pytest.raises(ValueError, match="does not exist"):
            CudaFlatIndex(db, device=1_000)
