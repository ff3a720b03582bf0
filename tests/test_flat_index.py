"""FlatIndex (georag._core) against numpy float64 brute force: sizes, ties, padding, submaps, bad input."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import numpy as np
import pytest

from georag import FlatIndex
from georag.types import Neighbors
from reference import PATHS, check_neighbors, data


def raw_search(index: FlatIndex, q: np.ndarray, kn: int, kf: int, **kw: object) -> Neighbors:
    return Neighbors(*index.search_raw(q, kn, kf, **kw)[:4])  # type: ignore[arg-type]


@PATHS
@pytest.mark.parametrize(
    ("n", "d", "b", "kn", "kf"),
    [
        (1, 1, 1, 1, 1),
        (7, 3, 2, 16, 16),  # k > N: padding
        (100, 17, 1, 16, 16),  # d not a multiple of the SIMD width, B = 1
        (1000, 64, 5, 16, 16),
        (2000, 100, 16, 0, 7),
        (3000, 768, 20, 3, 0),
        (1500, 33, 130, 16, 16),  # more than one BLAS query block boundary in small tiles below
    ],
)
def test_matches_brute_force(path: dict, n: int, d: int, b: int, kn: int, kf: int) -> None:
    db, q = data(n, d, b, seed=n + d + b)
    index = FlatIndex(db)
    check_neighbors(raw_search(index, q, kn, kf, **path), db, q, kn, kf)


@PATHS
@pytest.mark.parametrize("tile_rows", [16, 48, 1000])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_thread_count_does_not_change_results(path: dict, tile_rows: int, threads: int) -> None:
    # Bit-identical for any thread count at a fixed tiling (SGEMM rounding may depend on the tile's shape).
    db, q = data(4000, 40, 9, seed=3)
    index = FlatIndex(db)
    got = index.search_raw(q, 16, 16, num_threads=threads, tile_rows=tile_rows, **path)
    base = index.search_raw(q, 16, 16, num_threads=1, tile_rows=tile_rows, **path)
    for a, e in zip(got[:4], base[:4], strict=True):
        np.testing.assert_array_equal(a, e)
    check_neighbors(Neighbors(*got[:4]), db, q, 16, 16)


@pytest.mark.slow
def test_larger_instance_more_than_one_query_block() -> None:
    db, q = data(60000, 96, 300, seed=5)
    res = FlatIndex(db).search(q, 16, 16)
    check_neighbors(res, db, q, 16, 16)


@PATHS
def test_duplicated_rows_tie_by_lower_id(path: dict) -> None:
    rng = np.random.default_rng(1)
    base = rng.standard_normal((50, 24), dtype=np.float32)
    db = np.concatenate(
        [base, base, base * 3.0, base]
    )  # every row four times (scaled copies normalize equal)
    q = np.concatenate([base[:3], -base[3:5]])
    res = raw_search(FlatIndex(db), q, 8, 8, **path)
    check_neighbors(res, db, q, 8, 8)
    # The query equals row 0 (and its copies 50, 100, 150): all four tie for first, lowest id first.
    np.testing.assert_array_equal(res.near_ids[0, :4], [0, 50, 100, 150])
    np.testing.assert_array_equal(res.far_ids[3, :4], [3, 53, 103, 153])


@PATHS
def test_row_ranges_edges_unsorted_and_overlapping(path: dict) -> None:
    db, q = data(500, 20, 4, seed=7)
    index = FlatIndex(db)
    cases = [
        [(0, 1)],
        [(499, 500)],
        [(0, 500)],
        [(400, 500), (0, 10)],
        [(10, 60), (50, 70), (70, 71), (5, 5)],  # overlap, adjacency and an empty piece
        np.array([[100, 200]], dtype=np.int32),
    ]
    for ranges in cases:
        allowed = np.unique(np.concatenate([np.arange(s, e) for s, e in np.asarray(ranges)]))
        res = raw_search(index, q, 16, 16, row_ranges=ranges, **path)
        check_neighbors(res, db, q, 16, 16, allowed=allowed.astype(np.int64))


@pytest.mark.parametrize(
    ("ranges", "exc", "match"),
    [
        ([], ValueError, "selects no rows"),
        ([(5, 5)], ValueError, "selects no rows"),
        ([(0, 101)], ValueError, "not within"),
        ([(-1, 3)], ValueError, "not within"),
        ([(7, 3)], ValueError, "not within"),
        ([(0.0, 3.0)], TypeError, "integers"),
        ([(0, 1, 2)], ValueError, r"\(R, 2\)"),
    ],
)
def test_bad_row_ranges(ranges: object, exc: type[Exception], match: str) -> None:
    db, q = data(100, 8, 1)
    with pytest.raises(exc, match=match):
        FlatIndex(db).search(q, row_ranges=ranges)  # type: ignore[arg-type]


def test_bad_queries() -> None:
    db, q = data(100, 8, 3)
    index = FlatIndex(db)
    with pytest.raises(TypeError, match="float32"):
        index.search(q.astype(np.float64))
    with pytest.raises(TypeError, match="float32"):
        index.search(q.astype(np.int32))
    with pytest.raises(ValueError, match="2-D"):
        index.search(q[0])
    with pytest.raises(ValueError, match="dimension 9"):
        index.search(np.ones((2, 9), np.float32))
    for bad, what in [(np.nan, "a NaN/Inf"), (np.inf, "a NaN/Inf"), (0.0, "zero norm")]:
        qq = q.copy()
        qq[2] = 0.0
        qq[2, 1] = bad
        with pytest.raises(ValueError, match=f"query 2 has {what}"):
            index.search(qq)
    with pytest.raises(ValueError, match="k_near must be >= 0"):
        index.search(q, -1, 2)
    with pytest.raises(ValueError, match="k_far must be >= 0"):
        index.search(q, 2, -3)
    with pytest.raises(TypeError, match="k_near must be an int"):
        index.search(q, 2.5, 2)  # type: ignore[arg-type]


def test_bad_database() -> None:
    db, _ = data(50, 6, 1)
    with pytest.raises(TypeError, match="float32"):
        FlatIndex(db.astype(np.float64))
    with pytest.raises(ValueError, match="2-D"):
        FlatIndex(db[0])
    for row, bad in [(17, np.nan), (3, -np.inf)]:
        x = db.copy()
        x[row, 2] = bad
        with pytest.raises(ValueError, match=f"database row {row} has"):
            FlatIndex(x)
    x = db.copy()
    x[41] = 0.0
    with pytest.raises(ValueError, match="database row 41 has zero norm"):
        FlatIndex(x)
    FlatIndex(x, normalize=False)  # a zero row is a legitimate raw vector
    x[40, 0] = np.nan
    with pytest.raises(ValueError, match="database row 40 has a NaN/Inf"):
        FlatIndex(x, normalize=False)
    with pytest.raises(ValueError, match="num_threads"):
        FlatIndex(db, num_threads=-1)


def test_first_bad_row_is_reported_with_many_threads() -> None:
    db, _ = data(100_000, 4, 1)
    db[[70_000, 30_001, 99_999]] = np.nan
    with pytest.raises(ValueError, match="database row 30001 "):
        FlatIndex(db, num_threads=4)


def test_normalize_false_scores_are_raw_inner_products() -> None:
    db, q = data(300, 10, 3, seed=11)
    db *= np.linspace(0.5, 2, 300, dtype=np.float32)[:, None]
    res = FlatIndex(db, normalize=False).search(q, 5, 5)
    check_neighbors(res, db, q, 5, 5, normalize_db=False)


def test_queries_need_not_be_contiguous_or_unit_length() -> None:
    db, q = data(400, 12, 10, seed=2)
    view = np.asfortranarray(q * 37.0)[::2]
    res = FlatIndex(db).search(view)
    check_neighbors(res, db, np.ascontiguousarray(view), 16, 16)


def test_empty_batch_empty_index_and_k_zero() -> None:
    db, q = data(30, 5, 2)
    res = FlatIndex(db).search(q[:0])
    assert res.near_ids.shape == (0, 16) and res.far_scores.shape == (0, 16)
    empty = FlatIndex(db[:0])
    assert len(empty) == 0
    res = empty.search(q, 3, 2)
    assert np.all(res.near_ids == -1) and np.all(np.isnan(res.far_scores))
    res = FlatIndex(db).search(q, 0, 0)
    assert res.near_ids.shape == (2, 0) and res.far_ids.shape == (2, 0)


def test_vectors_view_is_normalized_and_read_only() -> None:
    db, _ = data(20, 7, 1)
    index = FlatIndex(db)
    v = index.vectors()
    assert v.shape == (20, 7) and not v.flags.writeable
    np.testing.assert_allclose(v, db / np.linalg.norm(db, axis=1, keepdims=True), rtol=1e-6, atol=1e-7)
    del index
    assert np.isfinite(v).all()  # the view keeps the index alive


def test_concurrent_searches_share_one_index() -> None:
    db, q = data(20000, 32, 8, seed=9)
    index = FlatIndex(db)
    expected = index.search(q)
    results: list[Neighbors] = []

    def work() -> None:
        for _ in range(3):
            results.append(index.search(q))

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 9
    for r in results:
        np.testing.assert_array_equal(r.near_ids, expected.near_ids)
        np.testing.assert_array_equal(r.far_ids, expected.far_ids)


def test_repr_and_len() -> None:
    db, q = data(10, 4, 1)
    index = FlatIndex(db, num_threads=2)
    assert repr(index) == "FlatIndex(ntotal=10, dim=4, float32, threads=2)"
    assert len(index) == 10
    assert repr(index.search(q, 2, 2)).startswith("Neighbors(queries=1, k_near=2, k_far=2, first query")


KERNEL_SCRIPT = """
import sys, numpy as np
sys.path.insert(0, {tests!r})
from georag import FlatIndex, _core
from reference import check_neighbors
assert _core.kernel_name() == {kernel!r}, _core.kernel_name()
rng = np.random.default_rng(4)
db = rng.standard_normal((3000, 52), dtype=np.float32)
q = rng.standard_normal((20, 52), dtype=np.float32)
from georag.types import Neighbors
idx = FlatIndex(db)
for bmb in (1, 10**9):
    check_neighbors(Neighbors(*idx.search_raw(q, 16, 16, blas_min_batch=bmb)[:4]), db, q, 16, 16)
# float16 rows: the widening load of this variant, bit-identical to its float32 kernel on the same values
half = (db / np.linalg.norm(db, axis=1, keepdims=True)).astype(np.float16)
same = FlatIndex(half.astype(np.float32), normalize=False).search_raw(q, 16, 16, blas_min_batch=10**9)
for amx in (1, 10**9):
    got = FlatIndex.from_normalized([half[:1000], half[1000:]]).search_raw(q, 16, 16, amx_min_batch=amx)
    for a, b in zip(got[:4], same[:4]):
        np.testing.assert_array_equal(a, b)
print("ok")
"""


@pytest.mark.parametrize("kernel", ["generic", "avx2", "avx512"])
def test_every_kernel_variant(kernel: str) -> None:
    """Each instruction-set build of the kernels, forced through GEORAG_KERNEL in a fresh process."""
    from georag import _core

    if kernel != "generic" and _core.kernel_name() == "generic":
        pytest.skip("this build or CPU has only the generic kernel")
    if kernel == "avx512" and _core.kernel_name() != "avx512":
        pytest.skip("this CPU has no AVX-512")
    env = {**os.environ, "GEORAG_KERNEL": kernel}
    script = KERNEL_SCRIPT.format(tests=os.path.dirname(__file__), kernel=kernel)
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_unknown_kernel_variant_is_a_clear_error() -> None:
    env = {**os.environ, "GEORAG_KERNEL": "sse9"}
    script = "import numpy as np, georag; georag.FlatIndex(np.ones((2, 2), np.float32))"
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=False)
    assert out.returncode != 0
    assert "GEORAG_KERNEL=sse9 is not built or not supported" in out.stderr
