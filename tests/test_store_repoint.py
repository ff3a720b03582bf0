"""A store built with a model in one folder accepts an identical copy elsewhere once re-pointed
(`georag index set-encoder`), and never a different model (the store used to know its encoder by path)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from georag.cli import main
from georag.errors import StoreError
from georag.store.build import BuildRequest, build_source
from georag.store.store import GeoStore

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from encoder_fixtures import make_tiny_siglip

    root = tmp_path_factory.mktemp("models")
    a = make_tiny_siglip(root / "a")
    b = root / "copy-of-a"
    shutil.copytree(a, b)
    return {"a": a, "copy": b, "other": make_tiny_siglip(root / "other", seed=1)}


def _store(tmp_path: Path, encoder: Path) -> Path:
    n = 40
    rng = np.random.default_rng(0)
    meta = tmp_path / "meta.csv"
    meta.write_text("id,lat,lon\n" + "".join(f"img{i},{i % 80},{i % 170}\n" for i in range(n)))
    np.save(tmp_path / "emb.npy", rng.standard_normal((n, 32)).astype(np.float32))
    from georag.datasets import ColumnMap

    req = BuildRequest(
        store=tmp_path / "store",
        dataset="generic",
        metadata=meta,
        encoder=str(encoder),
        embeddings=tmp_path / "emb.npy",
        columns=ColumnMap(image_id="id", lat="lat", lon="lon"),
    )
    build_source(req, add=False)
    return tmp_path / "store"


def _set(store: Path, model: Path | str, *extra: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["index", "set-encoder", str(store), "--encoder", str(model), *extra])
    return result.exit_code, result.output


def test_a_copy_is_accepted_after_re_pointing_and_another_model_never(
    tmp_path: Path, models: dict[str, Path]
) -> None:
    store = _store(tmp_path, models["a"])
    assert GeoStore.open(store).manifest.encoder_fingerprint.startswith("sha256:")
    with pytest.raises(StoreError, match="georag index set-encoder"):
        GeoStore.open(store, encoder=str(models["copy"]))
    code, out = _set(store, models["other"])
    assert code == 1 and "their files differ" in out
    assert GeoStore.open(store).encoder == str(models["a"])  # unchanged
    code, out = _set(store, models["copy"])
    assert code == 0, out
    opened = GeoStore.open(store, encoder=str(models["copy"]))
    assert opened.encoder == str(models["copy"].resolve())
    assert CliRunner().invoke(main, ["index", "verify", str(store)]).exit_code == 0  # still a sound store


def test_a_store_without_a_fingerprint_compares_with_its_old_folder_or_needs_force(
    tmp_path: Path, models: dict[str, Path]
) -> None:
    gone = tmp_path / "gone-model"
    shutil.copytree(models["a"], gone)
    store = _store(tmp_path, gone)
    manifest = json.loads((store / "manifest.json").read_text())
    manifest["encoder_fingerprint"] = ""  # as stores made before georag recorded one
    (store / "manifest.json").write_text(json.dumps(manifest))
    assert _set(store, models["other"])[0] == 1  # compared with the old folder's files: differ
    shutil.rmtree(gone)
    code, out = _set(store, models["copy"])
    assert code == 1 and "--force" in out
    code, out = _set(store, models["copy"], "--force")
    assert code == 0, out
    assert GeoStore.open(store).manifest.encoder_fingerprint.startswith("sha256:")
