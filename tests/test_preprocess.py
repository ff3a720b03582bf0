"""Tests for georag.encoder.preprocess: ProcessorSpec loading, and bit parity with transformers (PIL)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from georag.encoder.images import load_image
from georag.encoder.preprocess import ProcessorSpec
from georag.errors import PreprocessorConfigError

REAL_IMAGES = Path("/work/shared/data/im2gps3k/images")
N_REAL = 40


def _hf_processor(tmp_path: Path, size: int) -> Any:
    """transformers' slow (PIL) SigLIP processor, saved and loaded back like a checkpoint's."""
    transformers = pytest.importorskip("transformers")
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    folder = tmp_path / f"siglip{size}"
    SiglipImageProcessorPil(size={"height": size, "width": size}).save_pretrained(folder)
    processor = transformers.AutoImageProcessor.from_pretrained(folder, use_fast=False)
    assert isinstance(processor, SiglipImageProcessorPil)
    return processor


def _reference(processor: Any, image: Image.Image) -> np.ndarray:
    return np.asarray(processor(images=image, return_tensors="np")["pixel_values"][0])


def test_siglip_defaults() -> None:
    spec = ProcessorSpec.for_siglip()
    assert (spec.height, spec.width) == (224, 224)
    assert spec.resample == Image.Resampling.BICUBIC
    assert spec.rescale_factor == 1 / 255
    assert spec.image_mean == spec.image_std == (0.5, 0.5, 0.5)
    assert spec.do_resize and spec.do_rescale and spec.do_normalize and spec.do_convert_rgb
    assert ProcessorSpec.for_siglip(384) == ProcessorSpec(height=384, width=384)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"height": 0}, "height and width"),
        ({"resample": 42}, "resample"),
        ({"image_mean": (0.5, 0.5)}, "image_mean"),
        ({"image_std": (0.5, 0.0, 0.5)}, "image_std"),
    ],
)
def test_spec_validation(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ProcessorSpec(**kwargs)


def test_from_pretrained_local_folder_and_file(tmp_path: Path) -> None:
    processor = _hf_processor(tmp_path, 384)
    folder = tmp_path / "siglip384"
    assert ProcessorSpec.from_pretrained(folder) == ProcessorSpec.for_siglip(384)
    assert ProcessorSpec.from_pretrained(
        str(folder / "preprocessor_config.json")
    ) == ProcessorSpec.for_siglip(384)
    assert processor.size["height"] == 384


def test_from_config_variants() -> None:
    spec = ProcessorSpec.from_config(
        {"size": 256, "resample": 2, "image_mean": 0.25, "image_std": [1, 2, 4], "do_convert_rgb": None}
    )
    assert (spec.height, spec.width, spec.resample) == (256, 256, 2)
    assert spec.image_mean == (0.25, 0.25, 0.25) and spec.image_std == (1.0, 2.0, 4.0)
    assert spec.do_convert_rgb


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"do_center_crop": True}, "do_center_crop"),
        ({"do_pad": True}, "do_pad"),
        ({"size": {"shortest_edge": 224}}, "size"),
        ({"image_mean": [0.5, 0.5]}, "three"),
    ],
)
def test_unsupported_configs(config: dict[str, Any], message: str) -> None:
    with pytest.raises(PreprocessorConfigError, match=message):
        ProcessorSpec.from_config(config)


def test_bad_config_files(tmp_path: Path) -> None:
    with pytest.raises(PreprocessorConfigError, match="not found"):
        ProcessorSpec.from_pretrained(tmp_path)  # a folder without the file
    bad = tmp_path / "preprocessor_config.json"
    bad.write_text("{not json")
    with pytest.raises(PreprocessorConfigError, match="cannot read"):
        ProcessorSpec.from_pretrained(tmp_path)
    bad.write_text(json.dumps([1, 2]))
    with pytest.raises(PreprocessorConfigError, match="JSON object"):
        ProcessorSpec.from_pretrained(tmp_path)
    bad.write_text(json.dumps({"resample": 99}))
    with pytest.raises(PreprocessorConfigError, match="resample"):
        ProcessorSpec.from_pretrained(tmp_path)
    with pytest.raises(PreprocessorConfigError, match="no such model folder"):
        ProcessorSpec.from_pretrained(tmp_path / "missing")


def test_hub_id_goes_through_hf_hub_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    huggingface_hub = pytest.importorskip("huggingface_hub")
    config = tmp_path / "cached.json"
    config.write_text(json.dumps({"size": {"height": 384, "width": 384}}))
    calls: list[tuple[str, str]] = []

    def fake_download(repo_id: str, filename: str) -> str:
        calls.append((repo_id, filename))
        if repo_id == "nobody/offline":
            raise OSError("network is unreachable")
        return str(config)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    spec = ProcessorSpec.from_pretrained("google/siglip-so400m-patch14-384")
    assert spec == ProcessorSpec.for_siglip(384)
    assert calls == [("google/siglip-so400m-patch14-384", "preprocessor_config.json")]
    with pytest.raises(PreprocessorConfigError, match="network is unreachable"):
        ProcessorSpec.from_pretrained("nobody/offline")


def test_output_shape_dtype_and_switches() -> None:
    image = Image.new("RGB", (50, 30), (255, 0, 51))
    out = ProcessorSpec.for_siglip(64)(image)
    assert out.shape == (3, 64, 64) and out.dtype == np.float32 and out.flags.c_contiguous
    assert np.allclose(out[:, 10, 10], [1.0, -1.0, 51 / 127.5 - 1.0], atol=1e-6)
    raw = ProcessorSpec(height=30, width=50, do_resize=False, do_rescale=False, do_normalize=False)(image)
    assert raw.shape == (3, 30, 50) and raw[:, 0, 0].tolist() == [255.0, 0.0, 51.0]
    with pytest.raises(ValueError, match="do_convert_rgb"):
        ProcessorSpec(do_convert_rgb=False)(Image.new("L", (8, 8)))


@pytest.mark.parametrize("size", [224, 384])
def test_parity_with_transformers_on_real_images(tmp_path: Path, size: int) -> None:
    if not REAL_IMAGES.is_dir():
        pytest.skip(f"{REAL_IMAGES} is absent: no real images to compare on")
    files = sorted(p for p in REAL_IMAGES.iterdir() if p.is_file())[:N_REAL]
    if not files:
        pytest.skip(f"{REAL_IMAGES} holds no images")
    processor = _hf_processor(tmp_path, size)
    spec = ProcessorSpec.from_pretrained(tmp_path / f"siglip{size}")
    worst = 0.0
    for path in files:
        image = load_image(path)
        ours = spec(image)
        assert ours.shape == (3, size, size)
        worst = max(worst, float(np.abs(ours - _reference(processor, image)).max()))
    assert worst <= 1e-5, worst


def _odd_mode_images() -> dict[str, Image.Image]:
    rng = np.random.default_rng(7)
    rgba = Image.fromarray(rng.integers(0, 256, (37, 53, 4), dtype=np.uint8), "RGBA")
    palette = rgba.convert("RGB").quantize(16)
    palette.info["transparency"] = 3
    return {
        "RGB": rgba.convert("RGB"),
        "L": Image.fromarray(rng.integers(0, 256, (301, 17), dtype=np.uint8), "L"),
        "1": rgba.convert("1"),
        "CMYK": rgba.convert("RGB").convert("CMYK"),
        "RGBA": rgba,
        "LA": rgba.convert("LA"),
        "P+transparency": palette,
    }


@pytest.mark.parametrize("name", list(_odd_mode_images()))
def test_parity_with_transformers_on_synthetic_modes(tmp_path: Path, name: str) -> None:
    image = _odd_mode_images()[name]
    processor = _hf_processor(tmp_path, 224)
    ours = ProcessorSpec.for_siglip(224)(image)  # the raw mode: both sides convert to RGB themselves
    assert float(np.abs(ours - _reference(processor, image)).max()) <= 1e-5


def test_16bit_differs_from_transformers_on_purpose() -> None:
    # transformers converts I;16 with Pillow, which clips at 255 (all white); georag scales by 1/257.
    image = Image.fromarray(np.full((8, 8), 32896, dtype=np.uint16))
    out = ProcessorSpec(height=8, width=8)(image)
    assert np.allclose(out, 128 / 255 / 0.5 - 1.0, atol=1e-6)
