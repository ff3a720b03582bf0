"""One search protocol for every index, and GeoStore choosing an index by name.

Every index kind answers `georag.search.protocol.Index`; each is checked against a numpy float64 brute force
(the same ids, in the same order), directly and through `GeoStore.index` / `GeoStore.search`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from georag import _core
from georag.errors import MissingDependencyError, StoreError
from georag.search import CudaFlatIndex, FaissIndex, FlatIndex, Index
from georag.search.protocol import IndexBase
from georag.store.ann import build_ann
from georag.store.build import BuildRequest, build_source
from georag.store.store import GeoStore
from georag.types import Neighbors
from reference import check_neighbors, data
from store_fixtures import write_csv

N, D = 500, 24
DEVICE_OK = bool(getattr(_core, "has_cuda", False)) and _core.cuda_device_available()[0]


def brute_force(
    db: npt.NDArray[np.float32], q: npt.NDArray[np.float32], k_near: int, k_far: int, rows: npt.ArrayLike = ()
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Near and far ids by float64 cosine (ties by lower id), over ``rows`` (default: all)."""
    x = db.astype(np.float64)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    qn = q.astype(np.float64)
    qn /= np.linalg.norm(qn, axis=1, keepdims=True)
    allowed = np.asarray(rows, dtype=np.int64) if np.size(rows) else np.arange(db.shape[0])
    scores = qn @ x[allowed].T
    ids = np.broadcast_to(allowed, scores.shape)
    near = np.lexsort((ids, -scores), axis=-1)[:, :k_near]
    far = np.lexsort((ids, scores), axis=-1)[:, :k_far]
    return allowed[near], allowed[far]


def assert_brute_force(
    res: Neighbors, db: np.ndarray, q: np.ndarray, kn: int, kf: int, rows: object = ()
) -> None:
    near, far = brute_force(db, q, kn, kf, rows)  # type: ignore[arg-type]
    np.testing.assert_array_equal(res.near_ids, near)
    np.testing.assert_array_equal(res.far_ids, far)


# ---- the indexes --------------------------------------------------------------------------


def test_flat_index_satisfies_the_protocol_and_matches_brute_force() -> None:
    db, q = data(N, D, 7, seed=1)
    index = FlatIndex(db)
    assert isinstance(index, Index)
    assert (index.ntotal, index.dim, len(index)) == (N, D, N)
    res = index.search(q, 16, 9)
    assert isinstance(res, Neighbors) and not res.has_coordinates
    assert_brute_force(res, db, q, 16, 9)
    ranges = [(300, 420), (10, 60)]
    rows = np.r_[10:60, 300:420]
    assert_brute_force(index.search(q, 5, 5, row_ranges=ranges), db, q, 5, 5, rows)


def test_faiss_flat_satisfies_the_protocol_and_matches_brute_force() -> None:
    pytest.importorskip("faiss")
    db, q = data(N, D, 7, seed=2)
    index = FaissIndex(db, "Flat")
    assert isinstance(index, Index)
    assert (index.ntotal, index.dim, len(index)) == (N, D, N)
    assert_brute_force(index.search(q, 16, 9), db, q, 16, 9)
    rows = np.r_[10:60, 300:420]
    assert_brute_force(index.search(q, 5, 5, row_ranges=[(300, 420), (10, 60)]), db, q, 5, 5, rows)


def test_cuda_index_implements_the_protocol() -> None:
    # Its instances need a device (see test_cuda.py and the store test below); the class is checked here.
    assert IndexBase in CudaFlatIndex.__mro__ and Index in CudaFlatIndex.__mro__
    assert CudaFlatIndex.tuning_keywords == ("tile_rows", "gemm_min_batch")


def test_an_incomplete_index_is_not_mistaken_for_none() -> None:
    assert isinstance(FlatIndex.reserve(3, 4), Index)
    assert not isinstance(np.zeros((3, 4), np.float32), Index)


def test_tuning_keywords_are_the_index_s_own() -> None:
    db, q = data(200, 8, 3, seed=3)
    flat = FlatIndex(db, num_threads=2)
    base = flat.search(q, 4, 4)
    for tuning in ({"num_threads": 1}, {"blas_min_batch": 1, "tile_rows": 64}, {"num_threads": None}):
        res = flat.search(q, 4, 4, **tuning)  # type: ignore[arg-type]
        np.testing.assert_array_equal(res.near_ids, base.near_ids)
        np.testing.assert_array_equal(res.far_ids, base.far_ids)
    with pytest.raises(TypeError, match=r"FlatIndex.search got an unexpected keyword 'tile'.*num_threads"):
        flat.search(q, 4, 4, tile=3)  # type: ignore[arg-type]
    raw = flat.search_raw(q, 4, 4, num_threads=1)
    np.testing.assert_array_equal(raw[0], base.near_ids)
    assert isinstance(raw[4], int)
    pytest.importorskip("faiss")
    ann = FaissIndex(db, "Flat")
    assert_brute_force(ann.search(q, 4, 4, num_threads=None), db, q, 4, 4)
    with pytest.raises(TypeError, match=r"FaissIndex.search got an unexpected keyword 'num_threads'.*none"):
        ann.search(q, 4, 4, num_threads=2)


@pytest.mark.parametrize("make", ["flat", "faiss"])
def test_every_index_checks_k_and_row_ranges_alike(make: str) -> None:
    db, q = data(50, 6, 2, seed=4)
    if make == "faiss":
        pytest.importorskip("faiss")
    index: Index = FlatIndex(db) if make == "flat" else FaissIndex(db, "Flat")
    with pytest.raises(ValueError, match="k_near must be >= 0, got -1"):
        index.search(q, -1, 3)
    with pytest.raises(TypeError, match="k_far must be an int, got float"):
        index.search(q, 3, 2.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="row_ranges must hold integers"):
        index.search(q, 3, 3, row_ranges=np.array([[0.0, 4.0]]))
    with pytest.raises(ValueError, match="row_ranges selects no rows"):
        index.search(q, 3, 3, row_ranges=[])


# ---- GeoStore.index and GeoStore.search ----------------------------------------------------


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 500-row store (three shards) with a faiss "Flat" index named "flat"."""
    root = tmp_path_factory.mktemp("protocol")
    rng = np.random.default_rng(0)
    lat, lon = rng.uniform(-60, 70, N), rng.uniform(-180, 180, N)
    rows = [
        {"IMG_ID": f"img{i}.jpg", "AUTHOR": f"a{i % 7}", "LAT": f"{lat[i]:.6f}", "LON": f"{lon[i]:.6f}"}
        for i in range(N)
    ]
    meta = write_csv(root / "meta.csv", rows)
    np.save(root / "emb.npy", rng.standard_normal((N, D)).astype(np.float32))
    req = BuildRequest(
        store=root / "store", metadata=meta, embeddings=root / "emb.npy",
        encoder="toy/siglip", dataset="im2gps3k", shard_rows=200,
    )  # fmt: skip
    build_source(req, add=False)
    if _has_faiss():
        build_ann(GeoStore.open(root / "store"), "Flat", name="flat")
    return root / "store"


def _has_faiss() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def _db_and_queries(store: GeoStore) -> tuple[np.ndarray, np.ndarray]:
    db = store.embeddings(np.arange(store.ntotal))
    q = db[[3, 250, 499]] + np.random.default_rng(5).normal(0, 0.2, (3, D)).astype(np.float32)
    return db, q


def test_store_index_exact_is_the_cached_flat_index(store_path: Path) -> None:
    store = GeoStore.open(store_path)
    assert store.index_name == "exact"
    index = store.index("exact")
    assert isinstance(index, FlatIndex) and isinstance(index, Index)
    assert index is store.flat_index() is store.index()
    db, q = _db_and_queries(store)
    assert_brute_force(index.search(q, 8, 8), db, q, 8, 8)


@pytest.mark.parametrize("name", ["exact", "flat"])
def test_store_search_by_index_name_matches_brute_force_with_coordinates(store_path: Path, name: str) -> None:
    if name == "flat":
        pytest.importorskip("faiss")
    store = GeoStore.open(store_path)
    db, q = _db_and_queries(store)
    res = store.search(q, 8, 6, index=name)
    assert isinstance(res, Neighbors) and res.has_coordinates
    assert_brute_force(res, db, q, 8, 6)
    check_neighbors(res, db, q, 8, 6, normalize_db=False)  # the stored rows, searched as they are
    np.testing.assert_array_equal(res.near_lat, store.lat[res.near_ids])
    np.testing.assert_array_equal(res.far_lon, store.lon[res.far_ids])
    assert len(res.retrieved(1, "q1").near_ids) == 8
    ranges = [(420, 480), (0, 100)]
    rows = np.r_[0:100, 420:480]
    restricted = store.search(q, 5, 5, index=name, row_ranges=ranges)
    assert_brute_force(restricted, db, q, 5, 5, rows)
    np.testing.assert_array_equal(restricted.near_lon, store.lon[restricted.near_ids])


def test_store_index_by_faiss_name_and_opened_with_a_default(store_path: Path) -> None:
    pytest.importorskip("faiss")
    store = GeoStore.open(store_path, index="flat")
    assert store.index_name == "flat"
    ann = store.index()
    assert isinstance(ann, FaissIndex) and isinstance(ann, Index)
    assert ann is store.index("flat") is store.ann_index("flat")
    db, q = _db_and_queries(store)
    assert_brute_force(ann.search(q, 8, 8), db, q, 8, 8)
    by_default, exact = store.search(q, 8, 8), store.search(q, 8, 8, index="exact")
    assert_brute_force(by_default, db, q, 8, 8)
    np.testing.assert_array_equal(by_default.near_ids, exact.near_ids)
    np.testing.assert_array_equal(by_default.far_lat, exact.far_lat)
    with pytest.raises(TypeError, match=r"FaissIndex\.search got an unexpected keyword 'num_threads'"):
        store.search(q, 8, 8, num_threads=2)
    res = store.search(q, 8, 8, index="exact", num_threads=2)
    np.testing.assert_array_equal(res.near_ids, exact.near_ids)


def test_an_unknown_index_name_is_refused_naming_those_there_are(store_path: Path) -> None:
    faiss_names = "'flat'" if _has_faiss() else "none"
    expected = rf"has no index 'nope': use 'exact' .*, 'cuda' .* faiss indexes \({faiss_names};"
    with pytest.raises(StoreError, match=expected):
        GeoStore.open(store_path, index="nope")
    store = GeoStore.open(store_path)
    with pytest.raises(StoreError, match=expected):
        store.index("nope")
    with pytest.raises(StoreError, match=expected):
        store.search(np.ones((1, D), np.float32), 3, 3, index="nope")


def test_submap_and_row_ranges_together_are_refused(store_path: Path) -> None:
    store = GeoStore.open(store_path)
    with pytest.raises(StoreError, match="row_ranges or submap, not both"):
        store.search(np.ones((1, D), np.float32), 3, 3, row_ranges=[(0, 5)], submap=("country", "FR"))


def test_the_built_in_names_cannot_name_a_faiss_index(store_path: Path) -> None:
    pytest.importorskip("faiss")
    for name in ("exact", "cuda"):
        with pytest.raises(StoreError, match=f"'{name}' names a built-in index"):
            build_ann(GeoStore.open(store_path), "Flat", name=name)


@pytest.mark.skipif(DEVICE_OK, reason="a CUDA device is usable here; the device test runs instead")
def test_store_cuda_index_says_what_is_missing_here(store_path: Path) -> None:
    store = GeoStore.open(store_path, index="cuda")  # the name is valid; the device is checked on use
    assert store.index_name == "cuda"
    for use in (
        lambda: store.index("cuda"),
        lambda: store.index(),
        lambda: store.search(np.ones((1, D), np.float32)),
    ):
        with pytest.raises(MissingDependencyError) as err:
            use()
        message = str(err.value)
        assert "the 'cuda' index is not available here" in message
        assert "needs a CUDA device" in message or "GEORAG_CUDA=ON" in message  # what is missing
        assert "search with the 'exact' index" in message
    assert store.search(np.ones((1, D), np.float32), 3, 3, index="exact").near_ids.shape == (1, 3)


def test_store_cuda_index_without_a_device(store_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_core, "has_cuda", True)
    monkeypatch.setattr(_core, "cuda_device_available", lambda: (False, "no driver (test)"), raising=False)
    with pytest.raises(
        MissingDependencyError, match=r"'cuda' index is not available here .*no driver \(test\)"
    ):
        GeoStore.open(store_path).index("cuda")


def test_store_cuda_index_without_a_cuda_build(store_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_core, "has_cuda", False)
    with pytest.raises(MissingDependencyError, match=r"'cuda' index is not available here .*GEORAG_CUDA=ON"):
        GeoStore.open(store_path).index("cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not DEVICE_OK, reason="needs georag._core built with CUDA and a usable CUDA device")
def test_store_cuda_index_matches_brute_force(store_path: Path) -> None:
    store = GeoStore.open(store_path, index="cuda")
    index = store.index()
    assert isinstance(index, CudaFlatIndex) and isinstance(index, Index)
    assert index is store.index("cuda") and (index.ntotal, index.dim) == (N, D)
    db, q = _db_and_queries(store)
    res = store.search(q, 8, 8)
    assert res.has_coordinates
    check_neighbors(res, db, q, 8, 8)
    exact = store.search(q, 8, 8, index="exact")
    np.testing.assert_allclose(res.near_scores, exact.near_scores, atol=1e-5)
