"""FaissIndex (faiss wrapper) against the exact C++ FlatIndex: same contract, same answers."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from georag.errors import GeoRagError, MissingDependencyError
from georag.search import FaissIndex, FlatIndex
from georag.types import Neighbors

faiss = pytest.importorskip("faiss")

ATOL = 1e-5


def _random(n: int, d: int, b: int, seed: int) -> tuple[npt.NDArray[np.float32], ...]:
    rng = np.random.default_rng(seed)
    return (
        rng.standard_normal((n, d), dtype=np.float32),
        rng.standard_normal((b, d), dtype=np.float32),
    )


def _clustered(n: int, d: int, b: int, seed: int) -> tuple[npt.NDArray[np.float32], ...]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((40, d), dtype=np.float32)
    x = centres[rng.integers(0, 40, n)] + 0.3 * rng.standard_normal((n, d), dtype=np.float32)
    q = centres[rng.integers(0, 40, b)] + 0.3 * rng.standard_normal((b, d), dtype=np.float32)
    return x.astype(np.float32), q.astype(np.float32)


def _unit(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    x64 = x.astype(np.float64)
    return x64 / np.linalg.norm(x64, axis=1, keepdims=True)


def _assert_same(
    got: Neighbors, want: Neighbors, x: npt.NDArray[np.float32], q: npt.NDArray[np.float32]
) -> None:
    """Equal up to ties: same scores and padding, and every returned id really has its score."""
    cos = _unit(q) @ _unit(x).T
    for ids, scores, ref_ids, ref_scores in (
        (got.near_ids, got.near_scores, want.near_ids, want.near_scores),
        (got.far_ids, got.far_scores, want.far_ids, want.far_scores),
    ):
        assert ids.dtype == np.int64
        assert scores.dtype == np.float32
        assert ids.shape == ref_ids.shape == scores.shape
        np.testing.assert_array_equal(ids < 0, ref_ids < 0)
        np.testing.assert_allclose(scores, ref_scores, atol=ATOL, equal_nan=True)
        assert np.isnan(scores[ids < 0]).all()
        for row, (r_ids, r_scores) in enumerate(zip(ids, scores, strict=True)):
            found = r_ids[r_ids >= 0]
            assert len(set(found.tolist())) == found.size
            np.testing.assert_allclose(cos[row, found], r_scores[r_ids >= 0], atol=ATOL)
        differ = ids != ref_ids
        np.testing.assert_allclose(scores[differ], ref_scores[differ], atol=ATOL)


def _recall(got: npt.NDArray[np.int64], want: npt.NDArray[np.int64]) -> float:
    hits = sum(len(set(g.tolist()) & set(w.tolist())) for g, w in zip(got, want, strict=True))
    return hits / want.size


@pytest.mark.parametrize(
    ("n", "d", "b", "k_near", "k_far"),
    [
        (1000, 32, 5, 16, 16),
        (2000, 128, 64, 10, 5),
        (257, 7, 1, 3, 20),
        (50, 64, 33, 64, 100),  # k > N: padded with -1 / NaN
        (3, 4, 2, 5, 0),
        (100, 16, 0, 4, 4),
    ],
)
def test_flat_equals_exact_core(n: int, d: int, b: int, k_near: int, k_far: int) -> None:
    x, q = _random(n, d, b, seed=n + d + b)
    got = FaissIndex(x, "Flat").search(q, k_near, k_far)
    want = FlatIndex(x).search(q, k_near, k_far)
    assert got.near_ids.shape == (b, k_near)
    assert got.far_ids.shape == (b, k_far)
    _assert_same(got, want, x, q)


@pytest.mark.parametrize(
    "ranges",
    [
        [(100, 300)],
        [(0, 10), (500, 520), (990, 1000)],
        [(50, 80), (10, 60)],  # unsorted, overlapping
        [(40, 45), (45, 50)],  # adjacent
        [(5, 5), (7, 9)],  # an empty piece next to a real one
        [(0, 1)],
        [(999, 1000)],
        [(0, 1000)],
        np.array([[200, 212], [600, 604]], dtype=np.int32),
    ],
)
def test_row_ranges_equal_exact_core(ranges: object) -> None:
    x, q = _random(1000, 24, 7, seed=3)
    got = FaissIndex(x).search(q, 16, 16, row_ranges=ranges)  # type: ignore[arg-type]
    want = FlatIndex(x).search(q, 16, 16, row_ranges=ranges)  # type: ignore[arg-type]
    _assert_same(got, want, x, q)


@pytest.mark.parametrize("ranges", [[(3, 3)], [], [(0, 0), (7, 7)]])
def test_empty_restriction_is_an_error(ranges: list[tuple[int, int]]) -> None:
    x, q = _random(100, 8, 2, seed=4)
    for index in (FaissIndex(x), FlatIndex(x)):
        with pytest.raises(ValueError, match="selects no rows"):
            index.search(q, row_ranges=ranges)


@pytest.mark.parametrize("ranges", [[(0, 101)], [(-1, 5)], [(10, 5)]])
def test_out_of_bounds_ranges_are_errors(ranges: list[tuple[int, int]]) -> None:
    x, q = _random(100, 8, 2, seed=5)
    for index in (FaissIndex(x), FlatIndex(x)):
        with pytest.raises(ValueError, match="row range 0"):
            index.search(q, row_ranges=ranges)


def test_exhaustive_ivf_equals_exact_core() -> None:
    x, q = _random(2000, 32, 20, seed=6)
    ivf = FaissIndex(x, "IVF16,Flat", nprobe=16)
    exact = FlatIndex(x)
    _assert_same(ivf.search(q, 16, 16), exact.search(q, 16, 16), x, q)
    ranges = [(10, 400), (1500, 1530)]
    _assert_same(ivf.search(q, 8, 40, row_ranges=ranges), exact.search(q, 8, 40, row_ranges=ranges), x, q)


def test_hnsw_recall_near_and_far() -> None:
    x, q = _clustered(5000, 32, 64, seed=7)
    hnsw = FaissIndex(x, "HNSW32", efSearch=256)
    assert hnsw.index.hnsw.efSearch == 256
    got, want = hnsw.search(q, 16, 16), FlatIndex(x).search(q, 16, 16)
    assert _recall(got.near_ids, want.near_ids) > 0.9
    assert _recall(got.far_ids, want.far_ids) > 0.9
    np.testing.assert_array_less(np.diff(got.near_scores, axis=1), 1e-7)
    np.testing.assert_array_less(-1e-7, np.diff(got.far_scores, axis=1))


def test_one_faiss_call_on_the_stacked_batch() -> None:
    x, q = _random(300, 16, 4, seed=8)
    index = FaissIndex(x)
    calls: list[tuple[tuple[int, ...], int]] = []
    real = index.index

    class Spy:
        ntotal = real.ntotal

        def search(self, batch: npt.NDArray[np.float32], k: int, **kw: object) -> object:
            calls.append((batch.shape, k))
            np.testing.assert_array_equal(batch[4:], -batch[:4])
            return real.search(batch, k, **kw)

    index._index = Spy()
    index.search(q, 5, 9)
    assert calls == [((8, 16), 9)]


def test_bad_inputs() -> None:
    x, q = _random(50, 8, 3, seed=9)
    index = FaissIndex(x)
    with pytest.raises(TypeError, match="float32"):
        index.search(q.astype(np.float64))
    with pytest.raises(TypeError, match="numpy array"):
        index.search(q.tolist())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="2-D"):
        index.search(q[0])
    with pytest.raises(ValueError, match="dimension 7 but the index has dimension 8"):
        index.search(q[:, :7].copy())
    bad = q.copy()
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match="query 2 has a NaN/Inf"):
        index.search(bad)
    bad = q.copy()
    bad[1] = 0.0
    with pytest.raises(ValueError, match="query 1 has zero norm"):
        index.search(bad)
    with pytest.raises(ValueError, match="k_near must be >= 0"):
        index.search(q, -1)
    with pytest.raises(ValueError, match="k_far must be >= 0"):
        index.search(q, 3, -2)
    with pytest.raises(TypeError, match="k_near must be an int"):
        index.search(q, 1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="row_ranges must hold integers"):
        index.search(q, row_ranges=[(0.0, 3.0)])  # type: ignore[list-item]


def test_bad_database() -> None:
    x, _ = _random(40000, 4, 0, seed=10)  # spans several build chunks
    with pytest.raises(TypeError, match="float32"):
        FaissIndex(x.astype(np.float16))
    with pytest.raises(ValueError, match="2-D"):
        FaissIndex(x[0])
    for row, value in ((37000, 0.0), (20001, np.inf)):
        bad = x.copy()
        bad[row] = value
        with pytest.raises(ValueError, match=f"database row {row} has zero norm or a NaN/Inf"):
            FaissIndex(bad)
    with pytest.raises(ValueError, match="nprobe does not apply"):
        FaissIndex(x[:100], "HNSW8", nprobe=4)
    with pytest.raises(ValueError, match="faiss cannot build"):
        FaissIndex(x[:100], "NoSuchIndex42")
    with pytest.raises(ValueError, match="could not train"):
        FaissIndex(x[:10], "IVF64,Flat")


def test_empty_database_pads() -> None:
    index = FaissIndex(np.zeros((0, 8), dtype=np.float32))
    res = index.search(np.ones((2, 8), dtype=np.float32), 3, 2)
    assert (res.near_ids == -1).all()
    assert res.far_ids.shape == (2, 2)
    assert np.isnan(res.far_scores).all()


def test_save_load_round_trip(tmp_path: Path) -> None:
    x, q = _random(500, 16, 6, seed=11)
    index = FaissIndex(x, "IVF8,Flat", nprobe=3)
    path = tmp_path / "index.faiss"
    digest = index.save(path)
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    assert [p.name for p in tmp_path.iterdir()] == ["index.faiss"]
    loaded = FaissIndex.load(path, digest.upper())
    assert (loaded.ntotal, loaded.dim) == (500, 16)
    before, after = index.search(q, 7, 7), loaded.search(q, 7, 7)
    np.testing.assert_array_equal(after.near_ids, before.near_ids)
    np.testing.assert_array_equal(after.far_ids, before.far_ids)
    np.testing.assert_array_equal(after.far_scores, before.far_scores)


def test_load_refuses_a_wrong_or_tampered_file(tmp_path: Path) -> None:
    x, _ = _random(100, 8, 0, seed=12)
    path = tmp_path / "index.faiss"
    digest = FaissIndex(x).save(path)
    with pytest.raises(GeoRagError, match="refusing to load"):
        FaissIndex.load(path, "0" * 64)
    with pytest.raises(GeoRagError, match="64 hex digits"):
        FaissIndex.load(path, "not-a-checksum")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(GeoRagError, match="SHA-256"):
        FaissIndex.load(path, digest)


def test_load_refuses_an_l2_index(tmp_path: Path) -> None:
    path = tmp_path / "l2.faiss"
    faiss.write_index(faiss.IndexFlatL2(4), str(path))
    with pytest.raises(GeoRagError, match="inner-product"):
        FaissIndex.load(path, hashlib.sha256(path.read_bytes()).hexdigest())


def test_missing_faiss_and_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    x, _ = _random(20, 4, 0, seed=13)
    with pytest.raises(MissingDependencyError, match=r"GPU|CUDA"):
        FaissIndex(x, use_gpu=True)
    monkeypatch.setitem(sys.modules, "faiss", None)  # makes `import faiss` fail
    with pytest.raises(MissingDependencyError, match="pip install faiss-cpu"):
        FaissIndex(x)


def test_import_georag_does_not_import_faiss() -> None:
    code = "import sys, georag; assert 'faiss' not in sys.modules, 'faiss imported eagerly'"
    subprocess.run([sys.executable, "-c", code], check=True)
