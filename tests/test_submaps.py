"""Tests of georag.store.submaps: row ranges from labels, country and k-means submaps, the .npz file."""

from __future__ import annotations

import csv
import importlib.util
import sys
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

import georag
from georag.errors import GeoRagError, MissingDependencyError
from georag.geo.coords import to_unit_vectors
from georag.store.submaps import (
    Submaps,
    country_submaps,
    kmeans_submaps,
    load_submaps,
    reorder_permutation,
    save_submaps,
    submaps_from_labels,
)

IM2GPS3K_CSV = (
    Path(__file__).resolve().parents[1].parent / "shared" / "data" / "im2gps3k" / "im2gps3k_places365.csv"
)

needs_faiss = pytest.mark.skipif(importlib.util.find_spec("faiss") is None, reason="faiss not installed")


def _names(k: int) -> list[str]:
    return [f"s{j:02d}" for j in range(k)]


def _rows(ranges: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    if ranges.size == 0:
        return np.zeros(0, dtype=np.int64)
    return np.concatenate([np.arange(a, b, dtype=np.int64) for a, b in ranges])


def _run_count(labels: npt.NDArray[np.integer], j: int) -> int:
    """Reference: maximal runs of label j, counted one row at a time."""
    runs, prev = 0, None
    for x in labels.tolist():
        if x == j and prev != j:
            runs += 1
        prev = x
    return runs


def _random_submaps(n: int = 500, k: int = 7, seed: int = 0) -> Submaps:
    labels = np.random.default_rng(seed).integers(0, k, n)
    return submaps_from_labels("kmeans", _names(k), labels, centroids=np.zeros((k, 2)))


# ---------------------------------------------------------------------------------------------- ranges


@pytest.mark.parametrize(("n", "k", "seed"), [(1, 1, 0), (50, 3, 1), (1000, 10, 2), (997, 40, 3)])
def test_ranges_reproduce_the_rows_of_each_label(n: int, k: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    # Runs of random lengths, so that both long and length-1 runs occur.
    labels = np.repeat(rng.integers(0, k, n), rng.integers(1, 4, n))[:n]
    s = submaps_from_labels("kmeans", _names(k), labels)
    assert len(s) == k and s.num_rows == n
    assert s.labels.dtype == np.int32 and s.offsets.dtype == np.int64
    np.testing.assert_array_equal(s.labels, labels)
    for j, name in enumerate(s.names):
        r = s.ranges(name)
        assert r.dtype == np.int64 and r.ndim == 2 and r.shape[1] == 2
        np.testing.assert_array_equal(_rows(r), np.flatnonzero(labels == j))
        assert r.shape[0] == _run_count(labels, j)
        assert s.size(name) == int((labels == j).sum())
    assert s.sizes() == {name: int((labels == j).sum()) for j, name in enumerate(s.names)}
    assert sum(s.sizes().values()) == n


def test_sorted_labels_give_one_range_per_submap() -> None:
    labels = np.repeat(np.arange(5), [3, 1, 7, 2, 4])
    s = submaps_from_labels("country", ["AU", "FR", "GB", "JP", "US"], labels)
    assert s.starts.size == 5
    assert [s.ranges(x).tolist() for x in s.names] == [[[0, 3]], [[3, 4]], [[4, 11]], [[11, 13]], [[13, 17]]]


def test_single_label_is_one_range() -> None:
    s = submaps_from_labels("country", ["FR"], np.zeros(123, dtype=np.int64))
    assert s.ranges("FR").tolist() == [[0, 123]]
    assert s.size("FR") == 123


def test_zero_rows_and_names_without_rows() -> None:
    s = submaps_from_labels("country", ["FR", "GB"], np.zeros(0, dtype=np.int64))
    assert len(s) == 2 and s.num_rows == 0 and s.starts.size == 0
    assert s.ranges("FR").shape == (0, 2)
    assert s.sizes() == {"FR": 0, "GB": 0}
    empty = submaps_from_labels("country", [], np.zeros(0, dtype=np.int32))
    assert len(empty) == 0 and empty.sizes() == {}
    gap = submaps_from_labels("country", ["FR", "GB", "JP"], np.array([0, 0, 2]))
    assert gap.size("GB") == 0 and gap.ranges("GB").shape == (0, 2)
    assert gap.ranges("JP").tolist() == [[2, 3]]


def test_bad_labels_are_refused() -> None:
    with pytest.raises(GeoRagError, match=r"\[0, 2\)"):
        submaps_from_labels("country", ["FR", "GB"], np.array([0, 2]))
    with pytest.raises(GeoRagError, match=r"\[0, 2\)"):
        submaps_from_labels("country", ["FR", "GB"], np.array([0, -1]))
    with pytest.raises(GeoRagError, match="integer"):
        submaps_from_labels("country", ["FR"], np.array([0.0]))
    with pytest.raises(GeoRagError, match="unique"):
        submaps_from_labels("country", ["FR", "FR"], np.array([0, 1]))
    with pytest.raises(GeoRagError, match="centroids"):
        submaps_from_labels("kmeans", ["c0"], np.array([0]), centroids=np.zeros((2, 2)))


def test_unknown_name_lists_valid_names() -> None:
    s = _random_submaps()
    with pytest.raises(GeoRagError, match=r"'XX'.*s00, s01"):
        s.ranges("XX")
    with pytest.raises(GeoRagError, match="valid names"):
        s.size("XX")


def test_repr_len_and_read_only_arrays() -> None:
    s = _random_submaps(n=300, k=4)
    text = repr(s)
    assert (
        "kmeans" in text and "submaps=4" in text and "rows=300" in text and f"ranges={s.starts.size}" in text
    )
    assert len(s) == 4
    with pytest.raises(ValueError, match="read-only"):
        s.labels[0] = 1
    with pytest.raises(ValueError, match="read-only"):
        s.starts[0] = 1


def test_direct_construction_checks_consistency() -> None:
    s = _random_submaps(n=40, k=3)
    labels = s.labels.copy()
    labels[0] = (labels[0] + 1) % 3
    with pytest.raises(GeoRagError, match="labels disagree"):
        Submaps(s.scheme, s.names, labels, s.offsets.copy(), s.starts.copy(), s.ends.copy(), None)


def test_ranges_restrict_a_flat_index_search() -> None:
    rng = np.random.default_rng(11)
    n, k = 400, 5
    labels = rng.integers(0, k, n)
    s = submaps_from_labels("kmeans", _names(k), labels)
    db = rng.standard_normal((n, 8)).astype(np.float32)
    index = georag.FlatIndex(db)
    queries = rng.standard_normal((3, 8)).astype(np.float32)
    name = s.names[2]
    result = index.search(queries, k_near=5, k_far=5, row_ranges=s.ranges(name))
    assert set(result.near_ids.ravel().tolist()) <= set(np.flatnonzero(labels == 2).tolist())
    assert set(result.far_ids.ravel().tolist()) <= set(np.flatnonzero(labels == 2).tolist())


# ------------------------------------------------------------------------------------- reorder


def test_reorder_permutation_is_stable_and_makes_single_ranges() -> None:
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 6, 300)
    perm = reorder_permutation(labels)
    assert perm.dtype == np.int64
    expected = sorted(range(labels.size), key=lambda i: (int(labels[i]), i))
    assert perm.tolist() == expected
    s = submaps_from_labels("kmeans", _names(6), labels[perm])
    assert s.starts.size == 6
    for j, name in enumerate(s.names):
        ((start, end),) = s.ranges(name).tolist()
        np.testing.assert_array_equal(perm[start:end], np.flatnonzero(labels == j))


def test_reorder_permutation_edge_cases() -> None:
    assert reorder_permutation(np.zeros(0, dtype=np.int32)).tolist() == []
    assert reorder_permutation(np.array([2, 2, 2])).tolist() == [0, 1, 2]
    with pytest.raises(GeoRagError):
        reorder_permutation(np.zeros((2, 2), dtype=np.int64))


# -------------------------------------------------------------------------------------- k-means


def _brute_force_check(s: Submaps, lat: npt.NDArray[np.float64], lon: npt.NDArray[np.float64]) -> None:
    """Every row's label is its nearest centre by 3-D inner product (float64 numpy reference)."""
    assert s.centroids is not None and s.centroids.shape == (len(s), 2)
    scores = to_unit_vectors(lat, lon) @ to_unit_vectors(s.centroids[:, 0], s.centroids[:, 1]).T
    best = scores.argmax(axis=1)
    chosen = scores[np.arange(lat.size), s.labels]
    # faiss scores in float32: a row nearly equidistant from two centres may pick either.
    np.testing.assert_array_less(scores.max(axis=1) - chosen, 1e-5)
    assert (best == s.labels).mean() > 0.99


@needs_faiss
def test_kmeans_labels_are_nearest_centroids() -> None:
    rng = np.random.default_rng(1)
    lat = np.degrees(np.arcsin(rng.uniform(-1, 1, 4000)))
    lon = rng.uniform(-180, 180, 4000)
    s = kmeans_submaps(lat, lon, k=16, seed=3)
    assert s.scheme == "kmeans" and len(s) == 16
    assert s.names == tuple(f"c{j:03d}" for j in range(16))
    assert all(size > 0 for size in s.sizes().values())
    _brute_force_check(s, lat, lon)
    for name in s.names:
        np.testing.assert_array_equal(_rows(s.ranges(name)), np.flatnonzero(s.labels == s.names.index(name)))


@needs_faiss
def test_kmeans_is_deterministic_with_a_seed() -> None:
    rng = np.random.default_rng(2)
    lat, lon = rng.uniform(-60, 60, 3000), rng.uniform(-180, 180, 3000)
    a = kmeans_submaps(lat, lon, k=10, seed=42)
    b = kmeans_submaps(lat, lon, k=10, seed=42)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.centroids is not None and b.centroids is not None
    np.testing.assert_array_equal(a.centroids, b.centroids)
    np.testing.assert_array_equal(a.starts, b.starts)


@needs_faiss
def test_kmeans_keeps_the_antimeridian_together() -> None:
    rng = np.random.default_rng(4)
    m = 200
    # One group straddling the date line, one around Greenwich: far apart on the globe.
    pacific_lat = rng.uniform(-5, 5, 2 * m)
    pacific_lon = np.concatenate([rng.uniform(179.5, 180.0, m), rng.uniform(-180.0, -179.5, m)])
    pacific_lon[0], pacific_lon[m] = 179.9, -179.9
    lat = np.concatenate([pacific_lat, rng.uniform(40, 50, m)])
    lon = np.concatenate([pacific_lon, rng.uniform(-5, 5, m)])
    s = kmeans_submaps(lat, lon, k=2, seed=0)
    assert len(s) == 2
    assert s.labels[0] == s.labels[m]  # lon 179.9 and -179.9
    assert np.unique(s.labels[: 2 * m]).size == 1
    assert np.unique(s.labels[2 * m :]).size == 1
    assert s.labels[0] != s.labels[-1]
    assert s.centroids is not None
    pacific = s.centroids[s.labels[0]]
    assert abs(abs(pacific[1]) - 180.0) < 1.0 and abs(pacific[0]) < 1.0
    _brute_force_check(s, lat, lon)

    # The same points clustered on raw degrees split the date-line group: the case this guards against.
    faiss = pytest.importorskip("faiss")
    raw = faiss.Kmeans(2, 2, niter=25, seed=0)
    raw.train(np.stack([lat, lon], axis=1).astype(np.float32))
    _, raw_labels = raw.index.search(np.stack([lat, lon], axis=1).astype(np.float32), 1)
    assert raw_labels[0, 0] != raw_labels[m, 0]


@needs_faiss
def test_kmeans_nearest_clusters() -> None:
    rng = np.random.default_rng(6)
    lat, lon = rng.uniform(-70, 70, 2000), rng.uniform(-180, 180, 2000)
    s = kmeans_submaps(lat, lon, k=12, seed=1)
    assert s.centroids is not None
    centres = to_unit_vectors(s.centroids[:, 0], s.centroids[:, 1])
    for qlat, qlon in [(48.85, 2.35), (-33.9, 151.2), (0.0, 179.99), (89.0, 0.0)]:
        dots = centres @ to_unit_vectors(qlat, qlon)[0]
        expected = [s.names[j] for j in np.argsort(-dots, kind="stable")[:3]]
        assert s.nearest_clusters(qlat, qlon, n=3) == expected
        assert s.nearest_clusters(qlat, qlon) == expected[:1]
    assert len(s.nearest_clusters(0.0, 0.0, n=len(s))) == len(s)
    with pytest.raises(GeoRagError, match="n must be"):
        s.nearest_clusters(0.0, 0.0, n=0)
    with pytest.raises(GeoRagError, match="n must be"):
        s.nearest_clusters(0.0, 0.0, n=len(s) + 1)
    with pytest.raises(GeoRagError, match="query point"):
        s.nearest_clusters(100.0, 0.0)


@needs_faiss
def test_kmeans_k_errors() -> None:
    lat = np.array([10.0, 20.0, 30.0] * 50)
    lon = np.array([1.0, 2.0, 3.0] * 50)
    with pytest.raises(GeoRagError, match="distinct"):
        kmeans_submaps(lat, lon, k=4)
    with pytest.raises(GeoRagError, match="k must be"):
        kmeans_submaps(lat, lon, k=0)
    with pytest.raises(GeoRagError, match="k must be"):
        kmeans_submaps(lat, lon, k=True)
    with pytest.raises(GeoRagError, match="distinct"):
        kmeans_submaps([], [], k=1)
    with pytest.raises(GeoRagError, match="entry 1"):
        kmeans_submaps([0.0, 95.0], [0.0, 0.0], k=1)
    s = kmeans_submaps(lat, lon, k=3)
    assert sorted(s.sizes().values()) == [50, 50, 50]


@needs_faiss
def test_kmeans_drops_empty_clusters_and_renumbers() -> None:
    # Training on a sample of k points that are all the same location leaves the other centres
    # without rows; they must be dropped, not reported as empty submaps.
    lat = np.array([10.0] * 5000 + [-40.0, 60.0])
    lon = np.array([20.0] * 5000 + [100.0, -120.0])
    s = kmeans_submaps(lat, lon, k=3, max_points_per_centroid=1, seed=0)
    assert 1 <= len(s) < 3
    assert s.names == tuple(f"c{j:03d}" for j in range(len(s)))
    assert all(size > 0 for size in s.sizes().values())
    assert sum(s.sizes().values()) == lat.size
    _brute_force_check(s, lat, lon)


@needs_faiss
def test_kmeans_name_width_follows_k() -> None:
    rng = np.random.default_rng(8)
    lat, lon = rng.uniform(-60, 60, 30000), rng.uniform(-180, 180, 30000)
    s = kmeans_submaps(lat, lon, k=1001, niter=2, max_points_per_centroid=20)
    assert all(len(name) == 5 for name in s.names) and s.names[0] == "c0000"


def test_kmeans_without_faiss_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "faiss", None)  # makes `import faiss` fail as if it were absent
    with pytest.raises(MissingDependencyError, match="pip install faiss-cpu"):
        kmeans_submaps([0.0, 10.0], [0.0, 10.0], k=2)


# -------------------------------------------------------------------------------------- countries


def test_country_submaps_known_cities() -> None:
    cities = {
        "London": (51.5074, -0.1278, "GB"),
        "Paris": (48.8566, 2.3522, "FR"),
        "Sydney": (-33.8688, 151.2093, "AU"),
        "Tokyo": (35.6762, 139.6503, "JP"),
        "New York": (40.7128, -74.0060, "US"),
        "Paris again": (48.86, 2.34, "FR"),
    }
    lat = [v[0] for v in cities.values()]
    lon = [v[1] for v in cities.values()]
    s = country_submaps(lat, lon)
    assert s.scheme == "country" and s.centroids is None
    assert s.names == ("AU", "FR", "GB", "JP", "US")
    codes = [v[2] for v in cities.values()]
    assert [s.names[j] for j in s.labels] == codes
    assert s.ranges("FR").tolist() == [[1, 2], [5, 6]]
    assert s.sizes() == dict(sorted(Counter(codes).items()))
    with pytest.raises(GeoRagError, match="cluster centres"):
        s.nearest_clusters(0.0, 0.0)


def test_country_submaps_empty_and_bad_input() -> None:
    s = country_submaps([], [])
    assert len(s) == 0 and s.num_rows == 0
    with pytest.raises(GeoRagError, match="entry 0"):
        country_submaps([91.0], [0.0])


@pytest.mark.skipif(not IM2GPS3K_CSV.exists(), reason="shared im2gps3k metadata absent")
def test_country_submaps_on_im2gps3k() -> None:
    with IM2GPS3K_CSV.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    lat = np.array([float(r["LAT"]) for r in rows])
    lon = np.array([float(r["LON"]) for r in rows])
    s = country_submaps(lat, lon)
    sizes = s.sizes()
    assert sum(sizes.values()) == lat.size == s.num_rows
    assert max(sizes, key=lambda name: sizes[name]) == "US"
    assert list(s.names) == sorted(s.names) and all(len(x) == 2 for x in s.names)
    assert all(size > 0 for size in sizes.values())
    for j, name in enumerate(s.names[:20]):
        np.testing.assert_array_equal(_rows(s.ranges(name)), np.flatnonzero(s.labels == j))


# ------------------------------------------------------------------------------------ the file


def _assert_same(a: Submaps, b: Submaps) -> None:
    assert (a.scheme, a.names) == (b.scheme, b.names)
    for attr in ("labels", "offsets", "starts", "ends"):
        np.testing.assert_array_equal(getattr(a, attr), getattr(b, attr))
        assert getattr(a, attr).dtype == getattr(b, attr).dtype
    if a.centroids is None:
        assert b.centroids is None
    else:
        assert b.centroids is not None
        np.testing.assert_array_equal(a.centroids, b.centroids)


@needs_faiss
def test_save_load_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(9)
    lat, lon = rng.uniform(-60, 60, 1500), rng.uniform(-180, 180, 1500)
    km = kmeans_submaps(lat, lon, k=8)
    path = tmp_path / "kmeans.npz"
    save_submaps(path, km)
    loaded = load_submaps(path, expected_rows=1500)
    _assert_same(km, loaded)
    assert loaded.nearest_clusters(10.0, 10.0, 2) == km.nearest_clusters(10.0, 10.0, 2)

    countries = submaps_from_labels("country", ["FR", "GB", "US"], rng.integers(0, 3, 100))
    other = tmp_path / "countries.submaps"  # a name without .npz stays as given
    save_submaps(str(other), countries)
    _assert_same(countries, load_submaps(other))
    empty = submaps_from_labels("country", [], np.zeros(0, dtype=np.int64))
    save_submaps(tmp_path / "empty.npz", empty)
    _assert_same(empty, load_submaps(tmp_path / "empty.npz", expected_rows=0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["countries.submaps", "empty.npz", "kmeans.npz"]


def test_save_overwrites_atomically(tmp_path: Path) -> None:
    path = tmp_path / "s.npz"
    first = _random_submaps(n=50, k=3, seed=1)
    second = _random_submaps(n=80, k=4, seed=2)
    save_submaps(path, first)
    save_submaps(path, second)
    _assert_same(second, load_submaps(path))
    assert [p.name for p in tmp_path.iterdir()] == ["s.npz"]  # no temp file left behind
    with pytest.raises(FileNotFoundError):
        save_submaps(tmp_path / "missing_dir" / "s.npz", first)


def _tampered(tmp_path: Path, source: Submaps, edit: str) -> Path:
    src = tmp_path / "good.npz"
    save_submaps(src, source)
    with np.load(src, allow_pickle=False) as npz:
        arrays = {key: npz[key] for key in npz.files}
    if edit == "ranges":
        # Move one boundary between two adjacent ranges: still a tiling, but rows change submap.
        ends, starts = arrays["ends"], arrays["starts"]
        i = int(np.flatnonzero(np.isin(ends, starts) & (ends - starts > 1))[0])
        nxt = int(np.flatnonzero(starts == ends[i])[0])
        ends[i] -= 1
        starts[nxt] -= 1
    elif edit == "range_outside":
        arrays["ends"][np.argmax(arrays["ends"])] += 1
    elif edit == "overlap":
        arrays["starts"][np.argmax(arrays["starts"])] -= 1
    elif edit == "labels":
        arrays["labels"][7] = (arrays["labels"][7] + 1) % len(source)
    elif edit == "labels_dtype":
        arrays["labels"] = arrays["labels"].astype(np.int64)
    elif edit == "offsets":
        arrays["offsets"][1], arrays["offsets"][2] = arrays["offsets"][2], arrays["offsets"][1]
    elif edit == "names":
        arrays["names"] = arrays["names"][:-1]
    elif edit == "duplicate_names":
        arrays["names"][1] = arrays["names"][0]
    elif edit == "centroids":
        arrays["centroids"][0, 0] = 120.0
    elif edit == "missing_key":
        del arrays["starts"]
    elif edit == "extra_key":
        arrays["extra"] = np.zeros(3)
    elif edit == "version":
        arrays["format_version"] = np.array(99)
    elif edit == "scheme":
        arrays["scheme"] = np.array([1, 2])
    elif edit == "object_names":
        arrays["names"] = np.array(list(source.names), dtype=object)
    else:
        raise AssertionError(edit)
    bad = tmp_path / f"bad_{edit}.npz"
    np.savez(bad, allow_pickle=True, **arrays)
    return bad


TAMPERING = [
    ("ranges", "labels disagree"),
    ("range_outside", "outside"),
    ("overlap", "overlap|rows in all"),
    ("labels", "labels disagree"),
    ("labels_dtype", "int64, expected int32"),
    ("offsets", "offsets"),
    ("names", "offsets has"),
    ("duplicate_names", "unique"),
    ("centroids", "centroids: entry 0"),
    ("missing_key", "missing arrays"),
    ("extra_key", "unknown arrays"),
    ("version", "format_version"),
    ("scheme", "scheme"),
    ("object_names", "pickle|[Oo]bject"),
]


@pytest.mark.parametrize(("edit", "message"), TAMPERING, ids=[t[0] for t in TAMPERING])
def test_load_rejects_tampered_files(tmp_path: Path, edit: str, message: str) -> None:
    source = _random_submaps(n=200, k=5, seed=3)
    bad = _tampered(tmp_path, source, edit)
    with pytest.raises(GeoRagError, match="corrupt submaps file") as info:
        load_submaps(bad)
    assert info.match(message)


def test_load_rejects_wrong_rows_and_unreadable_files(tmp_path: Path) -> None:
    path = tmp_path / "s.npz"
    save_submaps(path, _random_submaps(n=60, k=3))
    assert load_submaps(path, expected_rows=60).num_rows == 60
    with pytest.raises(GeoRagError, match="covers 60 rows but the store has 61"):
        load_submaps(path, expected_rows=61)
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(path.read_bytes()[:100])
    with pytest.raises(GeoRagError, match="corrupt submaps file"):
        load_submaps(truncated)
    text = tmp_path / "text.npz"
    text.write_text("not an archive")
    with pytest.raises(GeoRagError, match="corrupt submaps file"):
        load_submaps(text)
    npy = tmp_path / "plain.npy"
    np.save(npy, np.arange(3))
    with pytest.raises(GeoRagError, match=r"not an \.npz archive"):
        load_submaps(npy)
    with pytest.raises(GeoRagError, match="no submaps file"):
        load_submaps(tmp_path / "absent.npz")
    assert zipfile.is_zipfile(path)
