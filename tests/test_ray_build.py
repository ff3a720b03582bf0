"""A store built with Ray Data on a real two-node cluster equals the local build of the same inputs.

Inputs: real IM2GPS3k rows and shared photos (a folder, and the same photos as a WebDataset tar), with a
missing photo, a corrupt one, a row with invalid coordinates and a repeated id. The reference is the
local build (`build_source`) of the same request: the same rows in the same order, the same metadata,
manifest shards, failure and rejection files, embeddings equal to float16 rounding.
"""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from georag.store.build import BuildRequest, build_source
from georag.store.manifest import Manifest
from georag.store.store import GeoStore
from store_fixtures import need_shared, rows_with_images, write_csv

pytest.importorskip("torch")

SHARD_ROWS = 16
IMAGES = 120


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A tiny SigLIP, the metadata, the photos as a folder and as a tar, and the local builds of both."""
    from encoder_fixtures import SHARED_IMAGES, make_tiny_siglip
    from georag.encoder import load_encoder

    need_shared()
    root = tmp_path_factory.mktemp("raybuild")
    tiny = make_tiny_siglip(root / "tiny")
    rows = rows_with_images(IMAGES)
    folder = root / "photos"
    folder.mkdir()
    for r in rows:
        shutil.copyfile(SHARED_IMAGES / r["IMG_ID"], folder / r["IMG_ID"])
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    extra = [
        {"IMG_ID": "missing.jpg", "AUTHOR": "a", "LAT": "10", "LON": "20"},
        {"IMG_ID": "corrupt.jpg", "AUTHOR": "b", "LAT": "11", "LON": "21"},
        {"IMG_ID": "nowhere.jpg", "AUTHOR": "c", "LAT": "95", "LON": "0"},  # rejected: latitude
        {**rows[3]},  # rejected: repeated id
    ]
    meta = write_csv(root / "meta.csv", rows[:40] + extra + rows[40:])
    tar = root / "shards" / "photos-000000.tar"
    tar.parent.mkdir()
    with tarfile.open(tar, "w") as archive:
        for p in sorted(folder.iterdir()):
            archive.add(p, arcname=f"photos/{p.name}")
    made = {"root": root, "tiny": tiny, "meta": meta, "folder": folder, "tar": tar}
    for kind, images in (("folder", folder), ("tar", tar)):
        req = _request(made, root / f"local-{kind}", images)
        build_source(req, add=False, encoder_factory=lambda: load_encoder(tiny))
    return made


def _request(inputs: dict[str, Any], store: Path, images: Path) -> BuildRequest:
    return BuildRequest(
        store=store,
        dataset="im2gps3k",
        metadata=inputs["meta"],
        encoder=str(inputs["tiny"]),
        images=(images,),
        shard_rows=SHARD_ROWS,
    )


@pytest.fixture(scope="module")
def cluster(inputs: dict[str, Any]) -> Any:
    from ray_cluster import RayCluster, skip_unless_possible

    skip_unless_possible()
    running = RayCluster(inputs["root"])
    yield running
    running.close()


def _ray_build(cluster: Any, inputs: dict[str, Any], name: str, images: Path, **job: Any) -> tuple[Any, Any]:
    """Runs ray_driver_build.py; (the process, its report or None)."""
    spec = {
        "address": cluster.address,
        "store": str(inputs["root"] / name),
        "metadata": str(inputs["meta"]),
        "images": [str(images)],
        "encoder": str(inputs["tiny"]),
        "shard_rows": SHARD_ROWS,
        "batch_size": 4,
        **job,
    }
    path = inputs["root"] / f"{name}-{len(list(inputs['root'].glob(name + '-*.json')))}.json"
    path.write_text(json.dumps(spec))
    done = cluster.run(str(Path(__file__).with_name("ray_driver_build.py")), str(path), timeout=240)
    lines = done.stdout.strip().splitlines()
    report = json.loads(lines[-1]) if done.returncode == 0 and lines else None
    return done, report


def _assert_same_store(built: Path, local: Path) -> None:
    """The Ray build equals the local build (embeddings to float16 rounding, all else exactly)."""
    a, b = GeoStore.open(built, verify="full"), GeoStore.open(local, verify="full")
    assert a.metadata.equals(b.metadata)
    assert a.manifest.encoder == b.manifest.encoder and a.manifest.dim == b.manifest.dim
    shards = [(s.first_row, s.rows, s.input_start, s.input_end, s.failed) for s in a.manifest.shards]
    assert shards == [(s.first_row, s.rows, s.input_start, s.input_end, s.failed) for s in b.manifest.shards]
    ea, eb = (np.concatenate(list(s.embedding_shards())).astype(np.float32) for s in (a, b))
    np.testing.assert_allclose(ea, eb, rtol=0, atol=2**-10)
    for src_a, src_b in zip(a.manifest.sources, b.manifest.sources, strict=True):
        counts = ("rows", "failed", "rejected", "input_rows", "next_input", "complete", "failure_files")
        assert {k: getattr(src_a, k) for k in counts} == {k: getattr(src_b, k) for k in counts}
        for rel in (*src_a.failure_files, src_a.rejections_file):
            assert rel is not None and (built / rel).read_bytes() == (local / rel).read_bytes(), rel


def test_local_reference_has_failures_and_rejections(inputs: dict[str, Any]) -> None:
    src = Manifest.load(inputs["root"] / "local-folder").sources[0]
    assert (src.rows, src.failed, sum(src.rejected.values())) == (IMAGES, 2, 2)


def test_ray_build_from_tar_equals_local_build_despite_a_killed_worker(
    cluster: Any, inputs: dict[str, Any]
) -> None:
    from ray_cluster import tail

    done, report = _ray_build(cluster, inputs, "ray-tar", inputs["tar"], kill_worker=True)
    assert report is not None, tail(done)
    assert report["killed"], "the encoder actor was not found to kill"
    assert (report["added_rows"], report["failed"], report["resumed_at"]) == (IMAGES, 2, 0)
    _assert_same_store(inputs["root"] / "ray-tar", inputs["root"] / "local-tar")


def test_a_killed_driver_resumes_at_the_first_uncommitted_shard(cluster: Any, inputs: dict[str, Any]) -> None:
    from ray_cluster import tail

    store = inputs["root"] / "ray-folder"
    done, report = _ray_build(cluster, inputs, "ray-folder", inputs["folder"], die_after=2)
    assert report is None and done.returncode != 0, tail(done)
    crashed = Manifest.load(store)
    assert [s.input_start for s in crashed.shards] == [0, SHARD_ROWS]
    assert not crashed.sources[0].complete
    kept = {rel: crashed.files[rel].sha256 for s in crashed.shards for rel in (s.embeddings, s.metadata)}

    done, report = _ray_build(cluster, inputs, "ray-folder", inputs["folder"])
    assert report is not None, tail(done)
    items = IMAGES + 2  # the photos, the missing one and the corrupt one (the rejected rows are not items)
    assert report["resumed_at"] == 2 * SHARD_ROWS
    assert report["added_rows"] + report["failed"] == items - 2 * SHARD_ROWS  # only the rest was encoded
    final = Manifest.load(store)
    assert {rel: final.files[rel].sha256 for rel in kept} == kept  # committed shards untouched
    _assert_same_store(store, inputs["root"] / "local-folder")


def test_an_encoder_that_does_not_load_fails_with_its_own_message(
    cluster: Any, inputs: dict[str, Any]
) -> None:
    not_a_model = inputs["folder"]
    done, report = _ray_build(cluster, inputs, "ray-bad", inputs["folder"], encoder=str(not_a_model))
    assert report is None
    last = done.stderr.strip().splitlines()[-1]
    assert (
        last
        == f"georag.errors.ModelLoadError: {not_a_model} has no config.json: not a saved transformers model"
    )
    assert not (inputs["root"] / "ray-bad" / "manifest.json").exists()  # nothing was committed
