"""GeoStore writers under interruption and hostile input: a step commits once or leaves the store as is."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from georag.errors import StoreError
from georag.store.ann import build_ann
from georag.store.build import BuildRequest, build_source
from georag.store.inspect import verify_store
from georag.store.manifest import Manifest
from georag.store.partition import make_submaps
from georag.store.store import GeoStore
from store_fixtures import write_csv

D = 16


def _rows(n: int, seed: int) -> list[dict[str, str]]:
    rng = np.random.default_rng(seed)
    lat, lon = rng.uniform(-60, 70, n), rng.uniform(-180, 180, n)
    return [
        {"IMG_ID": f"s{seed}-{i}.jpg", "AUTHOR": "a", "LAT": f"{lat[i]:.5f}", "LON": f"{lon[i]:.5f}"}
        for i in range(n)
    ]


def _source(tmp_path: Path, n: int = 64, seed: int = 0) -> tuple[Path, Path]:
    folder = tmp_path / f"src{seed}"
    folder.mkdir(exist_ok=True)
    meta = write_csv(folder / "meta.csv", _rows(n, seed))
    np.save(folder / "emb.npy", np.random.default_rng(seed).standard_normal((n, D)).astype(np.float32))
    return meta, folder / "emb.npy"


def _build(store: Path, meta: Path, emb: Path, *, add: bool = False, **kw: object) -> object:
    fields = {"dataset": "im2gps3k", "encoder": "toy/model", "shard_rows": None if add else 16, **kw}
    return build_source(BuildRequest(store=store, metadata=meta, embeddings=emb, **fields), add=add)  # type: ignore[arg-type]


@pytest.fixture
def store(tmp_path: Path) -> Path:
    meta, emb = _source(tmp_path)
    _build(tmp_path / "store", meta, emb)
    return tmp_path / "store"


class Crash(Exception):
    """Stands in for a kill at the commit point."""


def _crash_on_save(monkeypatch: pytest.MonkeyPatch, after: int = 0) -> None:
    calls = {"n": 0}
    real = Manifest.save

    def save(self: Manifest, root: Path) -> None:
        calls["n"] += 1
        if calls["n"] > after:
            raise Crash
        real(self, root)

    monkeypatch.setattr(Manifest, "save", save)


def _snapshot(path: Path) -> tuple[str, np.ndarray, np.ndarray]:
    s = GeoStore.open(path, verify="full")
    q = s.embeddings([0, 5, 9]) + np.float32(0.01)
    return (
        (path / "manifest.json").read_text(),
        s.search(q, 5, 5).near_ids,
        s.embeddings(np.arange(s.ntotal)),
    )


def test_an_interrupted_reorder_leaves_the_store_as_it_was(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("faiss")
    make_submaps(store, "country")
    build_ann(GeoStore.open(store), "Flat", name="flat")
    before = _snapshot(store)
    with monkeypatch.context() as m:
        _crash_on_save(m)
        with pytest.raises(Crash):
            make_submaps(store, "kmeans", k=4, reorder=True)
    after = _snapshot(store)
    assert after[0] == before[0]
    np.testing.assert_array_equal(after[1], before[1])
    np.testing.assert_array_equal(after[2], before[2])
    assert GeoStore.open(store).ann_index("flat").ntotal == 64
    assert verify_store(store).unlisted  # the new shards it wrote are leftovers...
    make_submaps(store, "kmeans", k=4, reorder=True)
    report = verify_store(store)
    assert report.ok and not report.unlisted  # ...removed by the next writer, and the reorder committed
    reordered = GeoStore.open(store)
    assert reordered.manifest.submaps["kmeans4"].contiguous and "country" in reordered.manifest.submaps
    assert not reordered.manifest.ann


def test_rebuilding_an_ann_index_interrupted_keeps_the_old_one(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("faiss")
    build_ann(GeoStore.open(store), "Flat", name="main")
    with monkeypatch.context() as m:
        _crash_on_save(m)
        with pytest.raises(Crash):
            build_ann(GeoStore.open(store), "IVF2,Flat", name="main")
    s = GeoStore.open(store)
    assert s.manifest.ann["main"].factory == "Flat" and s.ann_index("main").ntotal == 64
    build_ann(s, "IVF2,Flat", name="main")
    s = GeoStore.open(store)
    assert s.manifest.ann["main"].factory == "IVF2,Flat"
    assert len(list((store / "ann").iterdir())) == 1  # the replaced index was deleted after the commit


def test_an_interrupted_first_registration_can_be_resumed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    meta, _ = _source(tmp_path)
    # One rejected row first, so the registration writes a rejections file before its first commit.
    bad = tmp_path / "bad.csv"
    bad.write_text("IMG_ID,AUTHOR,LAT,LON,S3_Label\nx.jpg,a,95,0,0\n" + meta.read_text().split("\n", 1)[1])
    emb = tmp_path / "emb65.npy"
    np.save(emb, np.random.default_rng(5).standard_normal((65, D)).astype(np.float32))
    with monkeypatch.context() as m:
        _crash_on_save(m)
        with pytest.raises(Crash):
            _build(tmp_path / "s", bad, emb)
    assert not (tmp_path / "s" / "manifest.json").exists()
    assert (tmp_path / "s" / "sources" / "im2gps3k.rejected.jsonl").exists()
    report = _build(tmp_path / "s", bad, emb)
    assert report.added_rows == 64 and report.rejected == {"lat out of range": 1}  # type: ignore[attr-defined]
    assert verify_store(tmp_path / "s").ok


def test_added_sources_never_collide_with_reordered_shards(store: Path, tmp_path: Path) -> None:
    pytest.importorskip("faiss")
    make_submaps(store, "kmeans", k=3, reorder=True)
    for name in ("r1", "_r000000", "r000000"):
        meta, emb = _source(tmp_path, 20, seed=len(name))
        if name.startswith("_"):
            with pytest.raises(StoreError, match="source name"):
                _build(store, meta, emb, add=True, source=name)
            continue
        _build(store, meta, emb, add=True, source=name)
    s = GeoStore.open(store, verify="full")
    assert s.ntotal == 64 + 40 and s.metadata.column("row_id").to_pylist() == list(range(104))


def test_a_manifest_naming_files_outside_the_store_is_refused(store: Path) -> None:
    raw = json.loads((store / "manifest.json").read_text())
    for evil in ("../outside.npy", "/etc/passwd", "shards/../../x", "elsewhere/x.npy"):
        bad = json.loads(json.dumps(raw))
        bad["files"][evil] = next(iter(raw["files"].values()))
        (store / "manifest.json").write_text(json.dumps(bad))
        with pytest.raises(StoreError, match="not inside the store's folders"):
            GeoStore.open(store)
    bad = json.loads(json.dumps(raw))
    bad["ann"]["x"] = {"file": "ann/x.faiss", "factory": "Flat", "rows": 64}
    (store / "manifest.json").write_text(json.dumps(bad))
    with pytest.raises(StoreError, match="has no checksum"):
        GeoStore.open(store)
    for field, value in (("rows", "64"), ("first_row", None), ("rows", True)):
        bad = json.loads(json.dumps(raw))
        bad["shards"][0][field] = value
        (store / "manifest.json").write_text(json.dumps(bad))
        with pytest.raises(StoreError, match="malformed"):
            GeoStore.open(store)
    with pytest.raises(StoreError, match="submaps name"):
        make_submaps(store, "country", name="../escaped")


def test_a_taken_source_name_with_other_inputs_is_refused(store: Path, tmp_path: Path) -> None:
    meta, emb = _source(tmp_path, 30, seed=7)
    with pytest.raises(StoreError, match="another --source name"):
        _build(store, meta, emb, add=True, source="im2gps3k")
    with pytest.raises(StoreError, match="uses dtype 'float16', not 'float32'"):
        _build(store, meta, emb, add=True, source="other", dtype="float32")


def test_a_regenerated_embeddings_file_is_not_resumed(tmp_path: Path) -> None:
    meta, emb = _source(tmp_path)
    _build(tmp_path / "s", meta, emb)
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    manifest["sources"][0]["complete"] = False
    (tmp_path / "s" / "manifest.json").write_text(json.dumps(manifest))
    np.save(emb, np.random.default_rng(99).standard_normal((64, D)).astype(np.float32))
    with pytest.raises(StoreError, match="embeddings content"):
        _build(tmp_path / "s", meta, emb)


def test_a_relative_local_encoder_folder_is_recorded_resolved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    meta, emb = _source(tmp_path)
    (tmp_path / "models" / "tiny").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    _build(tmp_path / "s", meta, emb, encoder="models/tiny")
    assert GeoStore.open(tmp_path / "s").encoder == str((tmp_path / "models" / "tiny").resolve())
    meta2, emb2 = _source(tmp_path, 10, seed=3)
    monkeypatch.chdir(tmp_path / "models")
    _build(tmp_path / "s", meta2, emb2, add=True, source="more", encoder="tiny")
    assert GeoStore.open(tmp_path / "s").ntotal == 74
