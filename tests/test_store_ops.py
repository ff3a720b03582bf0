"""GeoStore from precomputed embeddings: sources, corruption and swap detection, ANN indexes, submaps, CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from georag.cli import main
from georag.errors import StoreError
from georag.geo.countries import countries_at
from georag.search.flat import FlatIndex
from georag.store.ann import build_ann
from georag.store.build import BuildRequest, build_source
from georag.store.inspect import verify_store
from georag.store.metadata import row_crc32
from georag.store.partition import make_submaps
from georag.store.store import GeoStore
from reference import check_neighbors
from store_fixtures import real_rows, unit_rows, without_row_checksums, write_csv

D = 24


def _dataset(
    tmp_path: Path, n: int = 400, seed: int = 0
) -> tuple[Path, Path, np.ndarray, list[dict[str, str]]]:
    """A metadata CSV of real IM2GPS3k rows (synthetic where the shared data is absent) and embeddings."""
    rng = np.random.default_rng(seed)
    try:
        rows = real_rows()[:n]
    except FileNotFoundError:
        lat, lon = rng.uniform(-60, 70, n), rng.uniform(-180, 180, n)
        rows = [
            {"IMG_ID": f"img{i}.jpg", "AUTHOR": f"a{i % 7}", "LAT": f"{lat[i]:.6f}", "LON": f"{lon[i]:.6f}"}
            for i in range(n)
        ]
    meta = write_csv(tmp_path / f"meta{seed}.csv", rows)
    emb = rng.standard_normal((len(rows), D)).astype(np.float32)
    np.save(tmp_path / f"emb{seed}.npy", emb)
    return meta, tmp_path / f"emb{seed}.npy", emb, rows


def _from_embeddings(store: Path, meta: Path, emb: Path, *, add: bool = False, **kw: object) -> object:
    fields = {"encoder": "toy/siglip", "dataset": "im2gps3k", **kw}
    req = BuildRequest(store=store, metadata=meta, embeddings=emb, **fields)  # type: ignore[arg-type]
    return build_source(req, add=add)


@pytest.fixture
def built(tmp_path: Path) -> tuple[Path, np.ndarray, list[dict[str, str]]]:
    meta, emb_path, emb, rows = _dataset(tmp_path)
    _from_embeddings(tmp_path / "store", meta, emb_path, shard_rows=150)
    return tmp_path / "store", emb, rows


def test_from_embeddings_stores_normalized_rows_in_shards(built: tuple[Path, np.ndarray, list]) -> None:
    path, emb, rows = built
    store = GeoStore.open(path)
    assert (store.ntotal, store.dim, store.manifest.dtype, len(store.manifest.shards)) == (
        400,
        D,
        "float16",
        3,
    )
    np.testing.assert_allclose(store.embeddings(np.arange(400)), unit_rows(emb), atol=1e-3)
    np.testing.assert_array_equal(store.lat, [float(r["LAT"]) for r in rows])
    shard = next(store.embedding_shards())
    assert isinstance(shard, np.memmap) and shard.dtype == np.float16


def test_the_exact_index_searches_the_memory_mapped_shards_in_place(
    built: tuple[Path, np.ndarray, list],
) -> None:
    path, emb, _ = built
    store = GeoStore.open(path)
    index = store.flat_index()
    assert index.in_place and index.nbytes == 0 and index.dtype == "float16"
    stored = store.embeddings(np.arange(store.ntotal))
    same = FlatIndex(stored, normalize=False)  # a float32 copy of the stored values
    q = emb[[3, 160, 399]] + np.float32(0.05)
    for amx in (1, 10**9):  # AMX tiles and the streaming float16 kernel: both exact
        got = index.search_raw(q, 6, 6, amx_min_batch=amx)
        want = same.search_raw(q, 6, 6, blas_min_batch=10**9)
        for a, b in zip(got[:4], want[:4], strict=True):
            np.testing.assert_array_equal(a, b)
    check_neighbors(store.search(q, 6, 6), stored, q, 6, 6, normalize_db=False)


def test_bad_embedding_rows_are_failures_and_float32_is_kept(tmp_path: Path) -> None:
    meta, emb_path, emb, _ = _dataset(tmp_path, n=50)
    emb[3] = 0
    emb[9, 2] = np.nan
    np.save(emb_path, emb)
    report = _from_embeddings(tmp_path / "s", meta, emb_path, dtype="float32", shard_rows=16)
    assert (report.added_rows, report.failed) == (48, 2)  # type: ignore[attr-defined]
    store = GeoStore.open(tmp_path / "s")
    assert store.manifest.dtype == "float32"
    keep = np.setdiff1d(np.arange(50), [3, 9])
    np.testing.assert_allclose(store.embeddings(np.arange(48)), unit_rows(emb[keep]), atol=1e-6)
    assert store.metadata.column("source_row").to_numpy().tolist() == keep.tolist()


def test_embeddings_must_align_with_the_metadata_rows(tmp_path: Path) -> None:
    meta, emb_path, emb, _ = _dataset(tmp_path, n=30)
    np.save(emb_path, emb[:29])
    with pytest.raises(StoreError, match="has 29 rows but the metadata file has 30"):
        _from_embeddings(tmp_path / "s", meta, emb_path)
    np.save(emb_path, np.zeros((30, 3), dtype=object), allow_pickle=True)
    with pytest.raises(StoreError, match="cannot read embeddings"):
        _from_embeddings(tmp_path / "s", meta, emb_path)


def test_add_a_second_source_keeps_row_ids_contiguous(
    built: tuple[Path, np.ndarray, list], tmp_path: Path
) -> None:
    path, _, _ = built
    (tmp_path / "second").mkdir()
    meta2, emb2_path, emb2, _ = _dataset(tmp_path / "second", 60, 1)
    _from_embeddings(path, meta2, emb2_path, add=True, source="extra")
    store = GeoStore.open(path)
    assert store.ntotal == 460
    assert store.metadata.column("row_id").to_pylist() == list(range(460))
    assert store.metadata.column("source").to_pylist() == ["im2gps3k"] * 400 + ["extra"] * 60
    np.testing.assert_allclose(store.embeddings(np.arange(400, 460)), unit_rows(emb2), atol=1e-3)
    with pytest.raises(StoreError, match="a store mixes no encoders"):
        _from_embeddings(path, meta2, emb2_path, add=True, source="third", encoder="other/model")
    np.save(emb2_path, np.ones((60, D + 1), dtype=np.float32))
    with pytest.raises(StoreError, match=rf"\(d={D}\).*\(d={D + 1}\)"):
        _from_embeddings(path, meta2, emb2_path, add=True, source="fourth")


def test_a_changed_embeddings_file_is_detected(built: tuple[Path, np.ndarray, list]) -> None:
    path, _, _ = built
    shard = path / GeoStore.open(path).manifest.shards[1].embeddings
    data = bytearray(shard.read_bytes())
    data[len(data) // 2 + 7] ^= 0x40  # one flipped bit in the middle of the rows
    shard.write_bytes(bytes(data))
    report = verify_store(path)
    assert not report.ok and len(report.problems) == 1 and "content changed" in report.problems[0]
    with pytest.raises(StoreError, match="changed after the store was written"):
        GeoStore.open(path, verify="full")
    # A truncated file is refused by the default quick check.
    shard.write_bytes(bytes(data[:-64]))
    with pytest.raises(StoreError, match="truncated"):
        GeoStore.open(path)
    result = CliRunner().invoke(main, ["index", "verify", str(path)])
    assert result.exit_code == 1 and "CORRUPT" in result.output and "DAMAGED" in result.output


def test_quick_open_catches_an_overwritten_block(built: tuple[Path, np.ndarray, list]) -> None:
    path, _, _ = built
    shard = path / GeoStore.open(path).manifest.shards[0].embeddings
    data = bytearray(shard.read_bytes())
    data[200:216] = bytes(16)  # inside the first fingerprint block
    shard.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="fingerprint"):
        GeoStore.open(path)


def test_changed_metadata_is_detected_on_open(built: tuple[Path, np.ndarray, list]) -> None:
    path, _, _ = built
    meta = path / GeoStore.open(path).manifest.shards[2].metadata
    data = bytearray(meta.read_bytes())
    data[len(data) // 2] ^= 1
    meta.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="changed after the store was written"):
        GeoStore.open(path, verify="none")


def test_ann_index_matches_exact_search_and_a_swapped_file_is_refused(
    built: tuple[Path, np.ndarray, list],
) -> None:
    pytest.importorskip("faiss")
    path, emb, _ = built
    store = GeoStore.open(path)
    build_ann(store, "Flat", name="flat")
    build_ann(store, "IVF4,Flat", name="ivf")
    store = GeoStore.open(path)
    q = emb[:5] + np.float32(0.05)
    db = store.embeddings(np.arange(store.ntotal))
    check_neighbors(store.search(q, 6, 6, index="flat"), db, q, 6, 6, normalize_db=False)
    check_neighbors(store.search(q, 6, 6), db, q, 6, 6, normalize_db=False)
    ann = store.manifest.ann
    a, b = path / ann["flat"].file, path / ann["ivf"].file
    tmp = a.with_suffix(".swap")
    shutil.move(a, tmp)
    shutil.move(b, a)
    shutil.move(tmp, b)
    swapped = GeoStore.open(path)  # optional files are checked when used: the exact search still works
    with pytest.raises(StoreError, match="changed or truncated"):
        swapped.ann_index("flat")
    check_neighbors(swapped.search(q, 6, 6), db, q, 6, 6, normalize_db=False)
    shutil.move(a, tmp)
    shutil.move(b, a)
    shutil.move(tmp, b)
    # Same size, other content: the whole file is hashed before faiss parses it.
    data = bytearray(a.read_bytes())
    data[-5] ^= 0xFF
    a.write_bytes(bytes(data))
    fresh = GeoStore.open(path, verify="none")
    with pytest.raises(StoreError, match="refusing to load faiss index"):
        fresh.ann_index("flat")
    with pytest.raises(StoreError, match="no ANN index 'nope'"):
        fresh.ann_index("nope")


def test_country_submaps_match_reverse_geocoding_and_restrict_the_search(
    built: tuple[Path, np.ndarray, list],
) -> None:
    path, emb, _ = built
    make_submaps(path, "country")
    store = GeoStore.open(path)
    sub = store.submaps("country")
    codes = countries_at(store.lat, store.lon)
    for name in sub.names:
        rows = np.concatenate([np.arange(s, e) for s, e in sub.ranges(name)])
        np.testing.assert_array_equal(np.sort(rows), np.flatnonzero(codes == name))
    biggest = max(sub.sizes(), key=sub.sizes().get)  # type: ignore[arg-type]
    allowed = np.flatnonzero(codes == biggest)
    q = emb[:3]
    res = store.search(q, 4, 4, submap=("country", biggest))
    check_neighbors(
        res, store.embeddings(np.arange(store.ntotal)), q, 4, 4, allowed=allowed, normalize_db=False
    )
    assert set(countries_at(res.near_lat.ravel(), res.near_lon.ravel())) == {biggest}


def test_reorder_makes_each_submap_one_range_and_keeps_every_row(
    built: tuple[Path, np.ndarray, list],
) -> None:
    pytest.importorskip("faiss")
    path, _, _ = built
    before = GeoStore.open(path)
    pairs_before = _pairs(before)
    make_submaps(path, "country")
    build_ann(before, "Flat", name="flat")
    sub = make_submaps(path, "kmeans", k=8, reorder=True)
    after = GeoStore.open(path, verify="full")
    assert all(len(sub.ranges(n)) == 1 for n in sub.names)
    assert (
        after.manifest.submaps["kmeans8"].contiguous and not after.manifest.ann
    )  # the ANN index was dropped
    assert after.metadata.column("row_id").to_pylist() == list(range(400))
    assert _pairs(after) == pairs_before
    # The country partition was recomputed for the new order.
    codes = countries_at(after.lat, after.lon)
    country = after.submaps("country")
    assert all(set(codes[s:e]) == {n} for n in country.names for s, e in country.ranges(n))
    assert verify_store(path).ok and not verify_store(path).unlisted


def test_reorder_moves_each_rows_checksum_with_it_and_gives_an_old_store_checksums(
    built: tuple[Path, np.ndarray, list], tmp_path: Path
) -> None:
    path, _, _ = built
    old = tmp_path / "old"
    shutil.copytree(path, old)
    without_row_checksums(old)
    before = GeoStore.open(path)
    assert before.row_checksums.missing == 0
    crc_of = dict(
        zip(before.metadata.column("image_id").to_pylist(), before.row_checksums.values, strict=True)
    )
    for store in (path, old):
        make_submaps(store, "kmeans", k=8, reorder=True)
        after = GeoStore.open(store)
        assert after.manifest.format_version == 2 and after.row_checksums.missing == 0
        moved = [crc_of[i] for i in after.metadata.column("image_id").to_pylist()]
        assert np.array_equal(after.row_checksums.values, moved)  # each row's checksum moved with it
        assert np.array_equal(row_crc32(after.stored_rows(np.arange(after.ntotal))), moved)
        report = verify_store(store)
        assert report.ok and not report.notes and after.integrity()["row_checksums"] is True


def _pairs(store: GeoStore) -> set[tuple[str, tuple[float, ...]]]:
    ids = store.metadata.column("image_id").to_pylist()
    rows = store.embeddings(np.arange(store.ntotal)).tolist()
    return {(i, tuple(v)) for i, v in zip(ids, rows, strict=True)}


def test_adding_rows_makes_submaps_stale(built: tuple[Path, np.ndarray, list], tmp_path: Path) -> None:
    path, _, _ = built
    make_submaps(path, "country")
    (tmp_path / "b").mkdir()
    meta2, emb2, _, _ = _dataset(tmp_path / "b", 10, 3)
    _from_embeddings(path, meta2, emb2, add=True, source="more")
    with pytest.raises(StoreError, match="recompute them"):
        GeoStore.open(path).submaps("country")


def test_cli_build_info_submaps_ann_and_verify(tmp_path: Path) -> None:
    pytest.importorskip("faiss")
    meta, emb_path, _, _ = _dataset(tmp_path, n=120)
    store = tmp_path / "store"
    run = CliRunner().invoke
    args = [
        "index",
        "build",
        "--dataset",
        "im2gps3k",
        "--metadata",
        str(meta),
        "--from-embeddings",
        str(emb_path),
    ]
    r = run(main, [*args, "--encoder", "toy/siglip", "--out", str(store), "--shard-rows", "50"])
    assert r.exit_code == 0, r.output
    assert "added 120 rows" in r.output
    r = run(main, [*args, "--encoder", "toy/siglip", "--out", str(store)])
    assert r.exit_code == 0 and "already complete" in r.output
    r = run(main, ["index", "submaps", str(store), "--by", "kmeans", "--k", "5"])
    assert r.exit_code == 0 and "5 submaps by kmeans" in r.output, r.output
    r = run(main, ["index", "build-ann", str(store), "--factory", "IVF2,Flat"])
    assert r.exit_code == 0 and "IVF2_Flat" in r.output, r.output
    r = run(main, ["index", "info", str(store)])
    assert r.exit_code == 0 and "120 rows" in r.output and "kmeans5" in r.output and "IVF2,Flat" in r.output
    info = json.loads(run(main, ["index", "info", str(store), "--json"]).output)
    assert info["rows"] == 120 and info["sources"][0]["rows"] == 120 and info["dim"] == D
    r = run(main, ["index", "verify", str(store)])
    assert r.exit_code == 0 and "OK" in r.output
    assert "STALE" not in run(main, ["index", "info", str(store)]).output
    # Rows added after the partition was computed: info says the submaps are stale and how to mend them.
    (tmp_path / "more").mkdir()
    meta2, emb2, _, _ = _dataset(tmp_path / "more", n=30, seed=1)
    add = ["index", "add", str(store), "--dataset", "im2gps3k", "--metadata", str(meta2)]
    r = run(main, [*add, "--from-embeddings", str(emb2), "--source", "more", "--encoder", "toy/siglip"])
    assert r.exit_code == 0, r.output
    r = run(main, ["index", "info", str(store)])
    assert "STALE: covers 120 rows but the store has 150" in r.output, r.output
    assert "georag index submaps" in r.output
    r = run(
        main,
        ["index", "build", "--dataset", "im2gps3k", "--metadata", str(meta), "--encoder", "x", "--out", "y"],
    )
    assert r.exit_code != 0 and "--images" in r.output
    r = run(main, ["index", "info", str(tmp_path)])
    assert r.exit_code != 0 and "not a georag store" in r.output
