"""GeoStore builds from real images and metadata: rows, failures, resumption after SIGKILL, search."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from encoder_fixtures import SHARED_IMAGES, make_tiny_siglip
from georag.encoder import load_encoder
from georag.errors import StoreError
from georag.store.build import BuildRequest, build_source
from georag.store.store import GeoStore
from reference import check_neighbors
from store_fixtures import (
    IM2GPS3K_CSV,
    image_folder,
    need_shared,
    real_rows,
    rows_with_images,
    unit_rows,
    write_csv,
)

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_siglip(tmp_path_factory.mktemp("tiny-siglip"))


def _build(store: Path, metadata: Path, images: Path | list[Path], tiny: Path, **kw: object) -> object:
    imgs = tuple(images) if isinstance(images, list) else (images,)
    req = BuildRequest(
        store=store, dataset="im2gps3k", metadata=metadata, encoder=str(tiny), images=imgs, **kw
    )
    return build_source(req, add=False, encoder_factory=lambda: load_encoder(tiny, batch_size=8, workers=2))


@pytest.fixture(scope="module")
def real_store(tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The full real IM2GPS3k metadata (2,997 rows) over the 300 shared images."""
    need_shared()
    store = tmp_path_factory.mktemp("real") / "store"
    _build(store, IM2GPS3K_CSV, SHARED_IMAGES, tiny, shard_rows=1024)
    return store


def test_real_build_keeps_every_present_image_and_reports_the_rest(real_store: Path, tiny: Path) -> None:
    store = GeoStore.open(real_store)
    present = rows_with_images()
    assert len(present) == 300
    assert store.ntotal == 300
    src = store.manifest.sources[0]
    assert (src.total_rows, src.input_rows, src.rows, src.failed, src.complete) == (
        2997,
        2997,
        300,
        2697,
        True,
    )
    # Row order is file order; ids, coordinates and authors are the CSV's.
    meta = store.metadata
    assert meta.column("image_id").to_pylist() == [r["IMG_ID"] for r in present]
    np.testing.assert_array_equal(meta.column("lat").to_numpy(), [float(r["LAT"]) for r in present])
    np.testing.assert_array_equal(meta.column("lon").to_numpy(), [float(r["LON"]) for r in present])
    assert meta.column("author").to_pylist() == [r["AUTHOR"] for r in present]
    assert meta.column("row_id").to_pylist() == list(range(300))
    # Every missing image is a recorded failure naming it.
    failures = [
        json.loads(line) for rel in src.failure_files for line in (real_store / rel).read_text().splitlines()
    ]
    assert len(failures) == 2697
    have = {r["IMG_ID"] for r in present}
    assert {f["image_id"] for f in failures} == {r["IMG_ID"] for r in real_rows()} - have
    assert all(f["reason"].startswith("image not found") for f in failures)
    # Embeddings are the encoder's, L2-normalized, stored as float16.
    enc = load_encoder(tiny, batch_size=8, workers=2).encode(
        [SHARED_IMAGES / r["IMG_ID"] for r in present[:40]]
    )
    np.testing.assert_allclose(store.embeddings(np.arange(40)), unit_rows(enc.embeddings), atol=2e-3)


def test_store_search_matches_brute_force_with_coordinates(real_store: Path) -> None:
    store = GeoStore.open(real_store, encoder=GeoStore.open(real_store).encoder, dim=32)
    db = store.embeddings(np.arange(store.ntotal))
    queries = db[[0, 17, 299]] + np.float32(0.01)
    res = store.search(queries, 5, 4)
    check_neighbors(res, db, queries, 5, 4, normalize_db=False)  # the stored float16 rows as they are
    assert res.near_ids[0, 0] == 0 and res.near_ids[2, 0] == 299
    np.testing.assert_array_equal(res.near_lat, store.lat[res.near_ids])
    np.testing.assert_array_equal(res.far_lon, store.lon[res.far_ids])
    real = {r["IMG_ID"]: r for r in real_rows()}
    truth = real[store.rows([17]).column("image_id")[0].as_py()]
    assert (res.near_lat[1, 0], res.near_lon[1, 0]) == (float(truth["LAT"]), float(truth["LON"]))


def test_open_refuses_another_encoder_or_dimension(real_store: Path) -> None:
    with pytest.raises(StoreError, match="not 'google/siglip"):
        GeoStore.open(real_store, encoder="google/siglip-so400m-patch14-384")
    with pytest.raises(StoreError, match="32-dimensional embeddings, not 1152"):
        GeoStore.open(real_store, dim=1152)


def test_bad_rows_missing_and_corrupt_images_are_reported_and_the_build_finishes(
    tiny: Path, tmp_path: Path
) -> None:
    need_shared()
    good = rows_with_images(12)
    images = image_folder(tmp_path / "images", good)
    (images / good[3]["IMG_ID"]).write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (images / good[5]["IMG_ID"]).write_bytes(b"")
    (images / good[7]["IMG_ID"]).unlink()
    bad = [
        {**good[0], "IMG_ID": "lat.jpg", "LAT": "95.0"},
        {**good[0], "IMG_ID": "nan.jpg", "LON": "nan"},
        {**good[0], "IMG_ID": "text.jpg", "LAT": "north"},
        {**good[0], "IMG_ID": "zero.jpg", "LAT": "0", "LON": "0"},
        {**good[1]},  # a duplicate id
    ]
    meta = write_csv(tmp_path / "meta.csv", good[:6] + bad + good[6:])
    report = _build(tmp_path / "store", meta, images, tiny, shard_rows=5)
    store = GeoStore.open(tmp_path / "store")
    kept = [r["IMG_ID"] for i, r in enumerate(good) if i not in (3, 5, 7)]
    assert store.metadata.column("image_id").to_pylist() == kept
    src = store.manifest.sources[0]
    assert src.rejected == {
        "lat out of range": 1,
        "not a number": 2,
        "zero coordinates (unknown)": 1,
        "duplicate image id": 1,
    }
    assert (report.added_rows, report.failed, src.input_rows, src.total_rows) == (9, 3, 12, 17)
    rejected = [json.loads(x) for x in (tmp_path / "store" / src.rejections_file).read_text().splitlines()]
    assert sorted(r["source_row"] for r in rejected) == [6, 7, 8, 9, 10]
    failures = {
        f["image_id"]: f["reason"]
        for rel in src.failure_files
        for f in map(json.loads, (tmp_path / "store" / rel).read_text().splitlines())
    }
    assert set(failures) == {good[3]["IMG_ID"], good[5]["IMG_ID"], good[7]["IMG_ID"]}
    assert failures[good[7]["IMG_ID"]].startswith("image not found")
    assert not failures[good[3]["IMG_ID"]].startswith("image not found")


def _cli_build(store: Path, meta: Path, images: Path, tiny: Path, shard_rows: int) -> list[str]:
    return [
        sys.executable,
        "-c",
        "from georag.cli import main; main()",
        "index",
        "build",
        "--dataset",
        "im2gps3k",
        "--metadata",
        str(meta),
        "--images",
        str(images),
        "--encoder",
        str(tiny),
        "--batch-size",
        "4",
        "--workers",
        "1",
        "--shard-rows",
        str(shard_rows),
        "--out",
        str(store),
    ]


def test_sigkill_mid_build_then_resume_equals_an_uninterrupted_build(tiny: Path, tmp_path: Path) -> None:
    need_shared()
    rows = rows_with_images(120)
    meta = write_csv(tmp_path / "meta.csv", rows)
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    _build(whole, meta, SHARED_IMAGES, tiny, shard_rows=8)

    proc = subprocess.Popen(
        _cli_build(killed, meta, SHARED_IMAGES, tiny, 8), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 120
    shards = 0
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                shards = len(json.loads((killed / "manifest.json").read_text())["shards"])
            except (OSError, ValueError):
                shards = 0
            if shards >= 3:
                break
            time.sleep(0.01)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert proc.stderr is not None
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL, "the build finished before it could be killed"
    with pytest.raises(StoreError, match="re-run its build command to resume"):
        GeoStore.open(killed)
    # Leftovers of an interrupted commit: a shard file the manifest never listed, and a temp file.
    (killed / "shards" / "im2gps3k-999999.npy").write_bytes(b"junk")
    (killed / "shards" / "im2gps3k-000001.npy.tmp-1").write_bytes(b"junk")

    done = subprocess.run(_cli_build(killed, meta, SHARED_IMAGES, tiny, 8), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "resumed at item" in done.stdout
    a, b = GeoStore.open(whole, verify="full"), GeoStore.open(killed, verify="full")
    assert a.ntotal == b.ntotal == 120
    assert a.metadata.equals(b.metadata)
    np.testing.assert_array_equal(a.embeddings(np.arange(120)), b.embeddings(np.arange(120)))
    assert sorted(p.name for p in (killed / "shards").iterdir()) == sorted(
        p.name for p in (whole / "shards").iterdir()
    )
    # A third run has nothing left to do.
    again = subprocess.run(_cli_build(killed, meta, SHARED_IMAGES, tiny, 8), capture_output=True, text=True)
    assert again.returncode == 0 and "already complete" in again.stdout


def test_tar_shards_build_the_same_rows_as_the_folder(tiny: Path, tmp_path: Path) -> None:
    need_shared()
    rows = rows_with_images(20)
    meta = write_csv(tmp_path / "meta.csv", rows)
    tars = []
    for j in range(2):
        path = tmp_path / f"shard-{j:05d}.tar"
        with tarfile.open(path, "w") as tar:
            for r in rows[j::2]:
                key = r["IMG_ID"].removesuffix(".jpg")
                tar.add(SHARED_IMAGES / r["IMG_ID"], arcname=f"{key}.jpg")
                info = tarfile.TarInfo(f"{key}.json")
                payload = json.dumps({"id": key}).encode()
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
        tars.append(path)
    _build(tmp_path / "from-folder", meta, SHARED_IMAGES, tiny, shard_rows=7)
    _build(tmp_path / "from-tars", meta, tars, tiny, shard_rows=7)
    a, b = GeoStore.open(tmp_path / "from-folder"), GeoStore.open(tmp_path / "from-tars")
    assert a.metadata.equals(b.metadata)
    np.testing.assert_array_equal(a.embeddings(np.arange(20)), b.embeddings(np.arange(20)))


def test_resuming_with_changed_metadata_is_refused(tiny: Path, tmp_path: Path) -> None:
    need_shared()
    rows = rows_with_images(10)
    meta = write_csv(tmp_path / "meta.csv", rows)
    store = tmp_path / "store"
    _build(store, meta, SHARED_IMAGES, tiny, shard_rows=4)
    manifest = json.loads((store / "manifest.json").read_text())
    manifest["sources"][0]["complete"] = False  # pretend it was interrupted
    (store / "manifest.json").write_text(json.dumps(manifest))
    write_csv(meta, [*rows, {**rows[0], "IMG_ID": "extra.jpg"}])
    with pytest.raises(StoreError, match="metadata content"):
        _build(store, meta, SHARED_IMAGES, tiny, shard_rows=4)


def test_a_store_does_not_mix_encoders(tiny: Path, tmp_path: Path) -> None:
    need_shared()
    rows = rows_with_images(6)
    meta = write_csv(tmp_path / "meta.csv", rows)
    store = tmp_path / "store"
    _build(store, meta, SHARED_IMAGES, tiny)
    other = make_tiny_siglip(tmp_path / "other-model", seed=1)
    req = BuildRequest(
        store=store,
        dataset="im2gps3k",
        metadata=meta,
        encoder=str(other),
        images=(SHARED_IMAGES,),
        source="again",
    )
    with pytest.raises(StoreError, match="a store mixes no encoders"):
        build_source(req, add=True, encoder_factory=lambda: load_encoder(other))
    with pytest.raises(StoreError, match="already holds"):
        _build(store, meta, SHARED_IMAGES, tiny, source="second")


def test_metadata_is_stored_with_the_documented_schema(real_store: Path) -> None:
    import pyarrow.parquet as pq

    from georag.store.metadata import ROW_CRC32, SCHEMA, STORED_SCHEMA, row_crc32

    store = GeoStore.open(real_store)
    assert store.metadata.schema.equals(SCHEMA, check_metadata=False)
    for info in store.manifest.shards:  # the files also hold each row's CRC32, of its bytes in the .npy
        stored = pq.read_table(real_store / info.metadata)
        assert stored.schema.equals(STORED_SCHEMA, check_metadata=False)
        rows = np.load(real_store / info.embeddings)
        assert stored.column(ROW_CRC32).to_pylist() == [zlib.crc32(r.tobytes()) for r in rows]
        assert row_crc32(rows).tolist() == stored.column(ROW_CRC32).to_pylist()
    row = store.rows([5]).to_pylist()[0]
    assert row["source"] == "im2gps3k" and row["row_id"] == 5 and row["country"] is None
    assert isinstance(store.metadata, pa.Table)


def test_images_and_embeddings_of_one_relative_model_folder_share_a_store(
    tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    need_shared()
    rows = rows_with_images(6)
    meta = write_csv(tmp_path / "meta.csv", rows)
    monkeypatch.chdir(tiny.parent)
    req = BuildRequest(
        store=tmp_path / "s", dataset="im2gps3k", metadata=meta, encoder=tiny.name, images=(SHARED_IMAGES,)
    )
    build_source(req, add=False, encoder_factory=lambda: load_encoder(tiny.name))
    np.save(tmp_path / "emb.npy", np.ones((6, 32), dtype=np.float32))
    more = BuildRequest(
        store=tmp_path / "s",
        dataset="im2gps3k",
        metadata=meta,
        encoder=tiny.name,
        embeddings=tmp_path / "emb.npy",
        source="precomputed",
    )
    build_source(more, add=True)
    store = GeoStore.open(tmp_path / "s", encoder=str(tiny.resolve()))
    assert store.ntotal == 12
