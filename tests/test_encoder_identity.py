"""An encoder's identity is its files, not its path: copies share a fingerprint, other checkpoints do not."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest

from georag.encoder.identity import folder_fingerprint, model_fingerprint

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from encoder_fixtures import make_tiny_siglip

    return make_tiny_siglip(tmp_path_factory.mktemp("tiny-siglip"))


def test_a_copy_elsewhere_is_the_same_model_and_a_changed_weight_is_not(tiny: Path, tmp_path: Path) -> None:
    copy = tmp_path / "elsewhere" / "model"
    shutil.copytree(tiny, copy)
    assert folder_fingerprint(copy) == folder_fingerprint(tiny) == model_fingerprint(str(copy))
    weights = next(copy.glob("*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0x01  # one bit of the last tensor
    weights.write_bytes(bytes(data))
    assert folder_fingerprint(copy) != folder_fingerprint(tiny)


def test_another_checkpoint_or_preprocessing_differs(tiny: Path, tmp_path: Path) -> None:
    from encoder_fixtures import make_tiny_siglip

    other = make_tiny_siglip(tmp_path / "other", seed=1)
    assert folder_fingerprint(other) != folder_fingerprint(tiny)
    copy = tmp_path / "copy"
    shutil.copytree(tiny, copy)
    spec = json.loads((copy / "preprocessor_config.json").read_text())
    spec["image_mean"] = [0.0, 0.0, 0.0]
    (copy / "preprocessor_config.json").write_text(json.dumps(spec))
    assert folder_fingerprint(copy) != folder_fingerprint(tiny)


def _safetensors(path: Path, shape: tuple[int, int], fill: int) -> None:
    n = shape[0] * shape[1] * 2
    header = json.dumps({"w": {"dtype": "F16", "shape": list(shape), "data_offsets": [0, n]}}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + bytes([fill]) * n)


def test_large_weights_are_sampled_with_their_header(tmp_path: Path) -> None:
    a, b, c = (tmp_path / x for x in "abc")
    for folder in (a, b, c):
        folder.mkdir()
        (folder / "config.json").write_text("{}")
    _safetensors(a / "model.safetensors", (1024, 2048), 7)  # 4 MiB: sampled, not read whole
    _safetensors(b / "model.safetensors", (2048, 1024), 7)  # same bytes, another shape
    _safetensors(c / "model.safetensors", (1024, 2048), 9)  # same shape, other values
    fingerprints = {folder_fingerprint(f) for f in (a, b, c)}
    assert len(fingerprints) == 3


def test_a_folder_without_weights_and_an_absent_hub_id(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="holds no model weights"):
        folder_fingerprint(tmp_path)
    assert model_fingerprint("georag-test/never-downloaded") is None  # a hub id whose files are not here
