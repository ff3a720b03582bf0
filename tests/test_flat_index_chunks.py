"""FlatIndex built in chunks (reserve + append, from_chunks) vs FlatIndex(whole array) and brute force."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from georag import FlatIndex, _core
from reference import BLAS, PATHS, SMALL, check_neighbors, data


def split(x: np.ndarray, sizes: list[int]) -> list[np.ndarray]:
    """x cut into consecutive chunks of the given sizes (which must add up to len(x))."""
    assert sum(sizes) == len(x)
    return np.split(x, np.cumsum(sizes)[:-1])


def assert_same_index(got: FlatIndex, expected: FlatIndex, q: np.ndarray, path: dict) -> None:
    """Bit-identical stored rows and search results, over everything and over a submap."""
    assert got.ntotal == expected.ntotal and got.filled == got.ntotal and got.dim == expected.dim
    np.testing.assert_array_equal(got.vectors(), expected.vectors())
    n = expected.ntotal
    for ranges in [None, [(n // 2, n), (0, 3), (n // 3, n // 3 + 5)]]:
        a = got.search_raw(q, 16, 16, row_ranges=ranges, **path)
        e = expected.search_raw(q, 16, 16, row_ranges=ranges, **path)
        for x, y in zip(a[:4], e[:4], strict=True):
            np.testing.assert_array_equal(x, y)


UNEVEN = [1, 40, 0, 333, 7, 119, 500]  # 1000 rows, an empty chunk included


@PATHS
@pytest.mark.parametrize("dtype", [np.float16, np.float32])
@pytest.mark.parametrize("normalize", [True, False])
def test_from_chunks_equals_whole_array(path: dict, dtype: type, normalize: bool) -> None:
    db, q = data(1000, 37, 6, seed=1)  # d = 37: rows are padded to 48 floats
    db = db.astype(dtype)
    whole = db.astype(np.float32)
    index = FlatIndex.from_chunks(split(db, UNEVEN), 1000, 37, normalize=normalize, num_threads=2)
    assert_same_index(index, FlatIndex(whole, normalize=normalize), q, path)
    check_neighbors(index.search(q), whole, q, 16, 16, normalize_db=normalize)
    allowed = np.arange(500, 1000, dtype=np.int64)
    check_neighbors(
        index.search(q, row_ranges=[(500, 1000)]), whole, q, 16, 16, allowed=allowed, normalize_db=normalize
    )


@pytest.mark.parametrize("threads", [1, 3])
def test_large_chunks_on_several_threads(threads: int) -> None:
    # Chunks over 2 x 16384 rows are split over worker threads; the stored rows must not depend on that.
    db, q = data(70_000, 20, 4, seed=2)
    index = FlatIndex.from_chunks(split(db, [50_001, 19_999]), 70_000, 20, num_threads=threads)
    assert_same_index(index, FlatIndex(db, num_threads=1), q, SMALL)


def test_padding_after_each_row_is_zero() -> None:
    db, _ = data(300, 37, 1, seed=3)
    index = FlatIndex.from_chunks(split(db, [100, 150, 50]), 300, 37)
    v = index.vectors()
    stride = v.strides[0] // v.itemsize
    assert stride == 48
    padded = np.lib.stride_tricks.as_strided(v, shape=(300, stride), strides=v.strides)  # inside the buffer
    assert np.all(padded[:, 37:] == 0.0)


def test_bad_row_names_its_global_index_and_leaves_filled_unchanged() -> None:
    db, q = data(60, 8, 3, seed=4)
    sizes = [10, 5, 12, 20, 13]  # chunk 3 holds rows [27, 47)
    chunks = split(db, sizes)
    for bad, what in [(np.nan, "zero norm or a NaN/Inf value"), (np.inf, "zero norm or a NaN/Inf value")]:
        broken = [c.copy() for c in chunks]
        broken[3][9, 4] = bad  # global row 27 + 9 = 36
        with pytest.raises(ValueError, match=f"database row 36 has {what}"):
            FlatIndex.from_chunks(broken, 60, 8)

    index = FlatIndex.reserve(60, 8)
    for c in chunks[:3]:
        index.append(c)
    assert index.filled == 27
    bad_chunk = chunks[3].copy()
    bad_chunk[[14, 9]] = 0.0  # rows 41 and 36 of the database: the first one is named
    with pytest.raises(ValueError, match="database row 36 has zero norm"):
        index.append(bad_chunk)
    assert index.filled == 27
    with pytest.raises(RuntimeError, match="holds 27 of 60 rows"):
        index.search(q)
    # Fixed and appended again, the index ends up exactly as if nothing had failed.
    for c in chunks[3:]:
        index.append(c)
    assert index.filled == 60
    assert_same_index(index, FlatIndex(db), q, SMALL)


def test_zero_rows_are_legitimate_without_normalization() -> None:
    db, q = data(40, 6, 2, seed=5)
    db[25] = 0.0
    index = FlatIndex.from_chunks(split(db, [20, 20]), 40, 6, normalize=False)
    assert_same_index(index, FlatIndex(db, normalize=False), q, SMALL)
    db[33, 1] = np.nan
    with pytest.raises(ValueError, match="database row 33 has a NaN/Inf value"):
        FlatIndex.from_chunks(split(db, [20, 20]), 40, 6, normalize=False)


def test_first_bad_row_of_a_chunk_split_over_threads() -> None:
    db, _ = data(100_000, 4, 1, seed=6)
    db[[90_000, 60_001, 99_999]] = np.nan  # in different workers of the second chunk
    index = FlatIndex.reserve(100_000, 4, num_threads=4)
    index.append(db[:10_000])
    with pytest.raises(ValueError, match="database row 60001 "):
        index.append(db[10_000:])
    assert index.filled == 10_000


def test_too_many_or_too_few_rows() -> None:
    db, _ = data(50, 5, 1, seed=7)
    with pytest.raises(ValueError, match="the chunks hold 50 rows, fewer than the n=60"):
        FlatIndex.from_chunks(split(db, [25, 25]), 60, 5)
    with pytest.raises(ValueError, match="the chunks hold 0 rows, fewer than the n=1"):
        FlatIndex.from_chunks([], 1, 5)

    def chunks() -> Iterator[np.ndarray]:  # a generator: the rows after the overflow are still counted
        yield db[:30]
        yield db[30:]
        yield db[:7]
        yield db[:3]

    with pytest.raises(ValueError, match="the chunks hold 60 rows, more than the n=45"):
        FlatIndex.from_chunks(chunks(), 45, 5)

    index = FlatIndex.reserve(50, 5)
    index.append(db[:45])
    with pytest.raises(
        ValueError, match="cannot append 6 rows: the index holds 45 of 50 rows, room for 5 more"
    ):
        index.append(db[:6])
    assert index.filled == 45
    index.append(db[45:])
    index.append(db[:0])  # nothing to add: fine even when full
    with pytest.raises(ValueError, match="cannot append 1 rows"):
        index.append(db[:1])
    assert index.filled == 50


def test_bad_chunks_and_reserve_arguments() -> None:
    db, _ = data(20, 6, 1, seed=8)
    with pytest.raises(TypeError, match="chunk 1 must be float16 or float32, got float64"):
        FlatIndex.from_chunks([db[:10], db[10:].astype(np.float64)], 20, 6)
    with pytest.raises(ValueError, match=r"chunk 0 must have shape \(rows, 6\), got \(20, 5\)"):
        FlatIndex.from_chunks([db[:, :5]], 20, 6)
    with pytest.raises(ValueError, match=r"chunk must have shape \(rows, 6\), got \(6,\)"):
        FlatIndex.reserve(20, 6).append(db[0])
    with pytest.raises(TypeError, match="chunk must be float16 or float32, got int64"):
        FlatIndex.reserve(20, 6).append(np.ones((2, 6), np.int64))
    # The core's own checks, for callers of georag._core directly.
    core = _core.FlatIndex.reserve(20, 6)
    with pytest.raises(ValueError, match="rows have dimension 5 but the index has dimension 6"):
        core.append(db[:, :5])
    with pytest.raises(TypeError, match="rows must be float32"):
        core.append(db.astype(np.float16))
    core.append(np.asfortranarray(db))  # non-contiguous float32 is copied by the binding
    np.testing.assert_array_equal(core.vectors(), FlatIndex(db).vectors())
    with pytest.raises(ValueError, match="must have >= 0 rows"):
        FlatIndex.reserve(-1, 6)
    with pytest.raises(ValueError, match="dimension must be > 0"):
        FlatIndex.reserve(3, 0)
    with pytest.raises(ValueError, match="num_threads"):
        FlatIndex.reserve(3, 6, num_threads=-1)


def test_search_before_the_index_is_full() -> None:
    db, q = data(30, 4, 2, seed=9)
    index = FlatIndex.reserve(30, 4)
    assert (index.ntotal, index.filled, index.dim, len(index)) == (30, 0, 4, 30)
    assert index.vectors().shape == (0, 4)
    index.append(db[:10])
    with pytest.raises(
        RuntimeError, match=r"^the index holds 10 of 30 rows: append the rest before searching$"
    ):
        index.search(q)
    with pytest.raises(RuntimeError, match="holds 10 of 30 rows"):
        index.search(q[:0])
    np.testing.assert_array_equal(index.vectors(), FlatIndex(db[:10]).vectors())  # the appended rows only
    index.append(db[10:])
    check_neighbors(index.search(q), db, q, 16, 16)


def test_zero_row_index() -> None:
    _, q = data(1, 5, 3, seed=10)
    for chunks in ([], [np.zeros((0, 5), np.float16)], [np.zeros((0, 5), np.float32)] * 3):
        index = FlatIndex.from_chunks(chunks, 0, 5)
        assert (len(index), index.filled, index.dim) == (0, 0, 5)
        assert index.vectors().shape == (0, 5)
        res = index.search_raw(q, 3, 2)
        expected = FlatIndex(np.zeros((0, 5), np.float32)).search_raw(q, 3, 2)
        for a, e in zip(res[:4], expected[:4], strict=True):
            np.testing.assert_array_equal(a, e)
        assert np.all(res[0] == -1) and np.all(np.isnan(res[3]))


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_memmap_chunks(tmp_path: Path, dtype: type) -> None:
    db, q = data(2500, 24, 5, seed=11)
    np.save(tmp_path / "shard.npy", db.astype(dtype))
    mm = np.load(tmp_path / "shard.npy", mmap_mode="r", allow_pickle=False)
    assert isinstance(mm, np.memmap) and mm.dtype == dtype
    chunk = 700
    index = FlatIndex.from_chunks((mm[i : i + chunk] for i in range(0, len(mm), chunk)), len(mm), 24)
    whole = np.asarray(mm, dtype=np.float32)
    assert_same_index(index, FlatIndex(whole), q, BLAS)
    check_neighbors(index.search(q), whole, q, 16, 16)
    # Strided memmap views (every other column) are made contiguous chunk by chunk too.
    index2 = FlatIndex.from_chunks((mm[i : i + chunk, ::2] for i in range(0, len(mm), chunk)), len(mm), 12)
    np.testing.assert_array_equal(index2.vectors(), FlatIndex(np.ascontiguousarray(whole[:, ::2])).vectors())
    del mm, index, index2


def test_concurrent_appends_land_whole() -> None:
    db, q = data(40_000, 8, 2, seed=12)
    halves = [db[:20_000], db[20_000:]]
    index = FlatIndex.reserve(40_000, 8)
    threads = [threading.Thread(target=index.append, args=(h,)) for h in halves]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert index.filled == 40_000
    v = index.vectors()
    first = 0 if np.array_equal(v[:20_000], FlatIndex(halves[0]).vectors()) else 1
    order = [halves[first], halves[1 - first]]
    np.testing.assert_array_equal(v, FlatIndex(np.concatenate(order)).vectors())
    check_neighbors(index.search(q), np.concatenate(order), q, 16, 16)
