"""Tests of georag.encoder: model loading, torch / onnxruntime / tensorrt backends, encode, export, CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from encoder_fixtures import TINY_DIM, TINY_SIZE, make_tiny_siglip, png_bytes, shared_images, write_images
from georag.cli import main
from georag.encoder import EncodeResult, ProcessorSpec, export_onnx, load_encoder, parity_check, parity_pixels
from georag.encoder.backends import OnnxBackend, TorchBackend
from georag.encoder.images import load_image
from georag.encoder.model import load_vision_model, resolve_model
from georag.errors import EncoderError, EncoderInputError, MissingDependencyError, ModelLoadError

pytest.importorskip("transformers")
pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_siglip(tmp_path_factory.mktemp("tiny-siglip"))


@pytest.fixture(scope="module")
def exported(tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_onnx(tiny, tmp_path_factory.mktemp("onnx"))


def _pixels(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, TINY_SIZE, TINY_SIZE), dtype=np.float32)


def test_torch_backend_equals_direct_transformers_forward(tiny: Path) -> None:
    import torch
    from transformers import SiglipVisionModel

    enc = load_encoder(tiny, "torch", batch_size=4)
    assert enc.dim == TINY_DIM and enc.model_id == str(tiny.resolve())
    spec = ProcessorSpec.from_pretrained(tiny)
    pixels = np.stack([spec(load_image(png_bytes(i))) for i in range(3)])
    direct = SiglipVisionModel.from_pretrained(tiny, use_safetensors=True).eval()
    with torch.no_grad():
        want = direct(pixel_values=torch.from_numpy(pixels)).pooler_output.numpy()
    got = enc.backend.embed(pixels)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    res = enc.encode([png_bytes(i) for i in range(3)], ids=["a", "b", "c"])
    np.testing.assert_allclose(res.embeddings, want, rtol=0, atol=1e-6)
    # raw, not normalized
    assert not np.allclose(np.linalg.norm(res.embeddings, axis=1), 1.0)


def test_onnxruntime_matches_torch(tiny: Path, exported: Path) -> None:
    import onnx

    proto = onnx.load(str(exported))
    assert proto.opset_import[0].version >= 17
    assert not list(exported.parent.glob("*.data")), "tiny model must be a single file"
    torch_b = TorchBackend(load_vision_model(resolve_model(tiny)))
    ort_b = OnnxBackend(exported)
    assert ort_b.dim == TINY_DIM and ort_b.model_id == str(tiny.resolve())
    for n in (1, 3, 5):
        report = parity_check(torch_b, ort_b, _pixels(n, seed=n))
        print(report)
        assert report.n == n and report.min_cosine >= 0.99999 and report.max_abs < 1e-4
    enc = load_encoder(exported.parent, "onnxruntime")
    assert enc.model_id == str(tiny.resolve()) and enc.spec == ProcessorSpec.from_pretrained(tiny)


@pytest.mark.skipif(not shared_images(1), reason="shared im2gps3k images absent")
def test_parity_on_real_images(tiny: Path, exported: Path) -> None:
    spec = ProcessorSpec.from_pretrained(tiny)
    pixels, label = parity_pixels(spec, shared_images(1)[0].parent, n=8)
    assert pixels.shape == (8, 3, TINY_SIZE, TINY_SIZE) and label != "synthetic"
    report = parity_check(TorchBackend(load_vision_model(resolve_model(tiny))), OnnxBackend(exported), pixels)
    assert report.min_cosine >= 0.99999


def test_encode_mixed_inputs_keeps_good_rows_in_order(tiny: Path, tmp_path: Path) -> None:
    good = write_images(tmp_path / "imgs", 4)
    bad_bytes = b"not an image at all"
    missing = tmp_path / "missing.jpg"
    sources = [good[0], bad_bytes, good[1], missing, good[2], good[3]]
    ids = ["g0", "bad", "g1", "missing", "g2", "g3"]
    enc = load_encoder(tiny, "torch", batch_size=4)
    res = enc.encode(sources, ids=ids)
    assert isinstance(res, EncodeResult)
    assert res.ids == ("g0", "g1", "g2", "g3")
    assert [f.id for f in res.failures] == ["bad", "missing"]
    assert all(f.reason for f in res.failures)
    assert res.embeddings.shape == (4, TINY_DIM) and res.embeddings.dtype == np.float32
    assert res.model_id == str(tiny.resolve()) and res.dim == TINY_DIM
    alone = enc.encode(good)
    np.testing.assert_allclose(res.embeddings, alone.embeddings, rtol=0, atol=1e-6)
    assert "failed=2" in repr(res) and "bad" in repr(res)


def test_encode_all_bad_gives_empty_result(tiny: Path) -> None:
    res = load_encoder(tiny, "torch").encode([b"x", b"y"], ids=["x", "y"])
    assert res.embeddings.shape == (0, TINY_DIM) and len(res.failures) == 2 and len(res) == 0


def test_folder_with_only_pickle_weights_refused(tmp_path: Path, tiny: Path) -> None:
    folder = tmp_path / "pickled"
    folder.mkdir()
    (folder / "config.json").write_text((tiny / "config.json").read_text())
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04pickle")
    with pytest.raises(ModelLoadError, match=r"no \.safetensors.*pytorch_model\.bin"):
        load_encoder(folder, "torch")


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"model": "/no/such/folder"}, ModelLoadError, "neither an existing local folder"),
        ({"model": "./nope"}, ModelLoadError, "neither"),
        ({"backend": "tpu"}, EncoderError, "unknown backend"),
        ({"batch_size": 0}, EncoderError, "batch_size"),
        ({"batch_size": 2.5}, EncoderError, "batch_size"),
        ({"precision": "fp16"}, EncoderError, "needs a CUDA device"),
    ],
)
def test_load_encoder_errors(tiny: Path, kwargs: dict[str, object], exc: type[Exception], match: str) -> None:
    args: dict[str, object] = {"model": tiny, **kwargs}
    with pytest.raises(exc, match=match):
        load_encoder(**args)  # type: ignore[arg-type]


def test_tensorrt_paths_raise_missing_dependency(tmp_path: Path, exported: Path) -> None:
    from georag.encoder import build_tensorrt_engine

    with pytest.raises(MissingDependencyError, match="TensorRT"):
        load_encoder(tmp_path, "tensorrt")
    with pytest.raises(MissingDependencyError, match="TensorRT"):
        build_tensorrt_engine(exported, tmp_path / "x.engine")
    result = CliRunner().invoke(
        main,
        [
            "encoder",
            "export",
            "--encoder",
            str(exported.parent),
            "--format",
            "tensorrt",
            "--out",
            str(tmp_path),
        ],
    )
    assert result.exit_code != 0 and "TensorRT" in result.output


@pytest.mark.parametrize(
    ("pixels", "match"),
    [
        (np.zeros((2, 3, TINY_SIZE + 1, TINY_SIZE), np.float32), "shape"),
        (np.zeros((2, TINY_SIZE, TINY_SIZE, 3), np.float32), "shape"),
        (np.zeros((3, TINY_SIZE, TINY_SIZE), np.float32), "shape"),
        (np.zeros((2, 3, TINY_SIZE, TINY_SIZE), np.float64), "float32"),
        (np.full((2, 3, TINY_SIZE, TINY_SIZE), np.nan, np.float32), "NaN"),
        ([[0.0]], "numpy array"),
    ],
)
def test_embed_rejects_bad_pixels(tiny: Path, exported: Path, pixels: object, match: str) -> None:
    for backend in (TorchBackend(load_vision_model(resolve_model(tiny))), OnnxBackend(exported)):
        with pytest.raises(EncoderInputError, match=match):
            backend.embed(pixels)  # type: ignore[arg-type]


def test_cli_export_onnx(tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli-onnx"
    result = CliRunner().invoke(
        main,
        [
            "encoder",
            "export",
            "--encoder",
            str(tiny),
            "--format",
            "onnx",
            "--out",
            str(out),
            "--images",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    assert (out / "encoder.onnx").is_file() and (out / "preprocessor_config.json").is_file()
    assert "parity onnxruntime vs torch" in result.output and "min cosine" in result.output


def test_cli_export_errors(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["encoder", "export", "--encoder", str(tmp_path / "none"), "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 1 and "Error:" in result.output


def test_full_siglip_checkpoint_loads_only_the_vision_tower(tmp_path: Path) -> None:
    """A full SigLIP (image + text) checkpoint, as the hub ids are: the vision tower's pooler_output."""
    import torch
    from transformers import SiglipConfig, SiglipImageProcessorPil, SiglipModel

    vision = {
        "hidden_size": 32,
        "intermediate_size": 37,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "image_size": 32,
        "patch_size": 8,
    }
    text = {
        "hidden_size": 32,
        "intermediate_size": 37,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "vocab_size": 99,
        "max_position_embeddings": 16,
    }
    torch.manual_seed(3)
    full = SiglipModel(SiglipConfig(text_config=text, vision_config=vision)).eval()
    folder = tmp_path / "full"
    full.save_pretrained(folder, safe_serialization=True)
    SiglipImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(folder)
    enc = load_encoder(folder, "torch")
    pixels = np.stack([ProcessorSpec.from_pretrained(folder)(load_image(png_bytes(i))) for i in range(2)])
    with torch.no_grad():
        want = full.vision_model(pixel_values=torch.from_numpy(pixels)).pooler_output.numpy()
    np.testing.assert_allclose(enc.backend.embed(pixels), want, rtol=0, atol=1e-6)


class _CountingBackend:
    """A stand-in backend: embeds each image as its mean pixel; fails on the call numbers in `fail_calls`."""

    name = "counting"
    height = width = 32
    dim = 2
    preferred_micro_batch = 3

    def __init__(self, fail_calls: tuple[int, ...] = ()) -> None:
        self.calls: list[int] = []
        self.fail_calls = fail_calls

    def embed(self, pixels: np.ndarray) -> np.ndarray:
        from georag.errors import EncoderError

        self.calls.append(len(pixels))
        if len(self.calls) in self.fail_calls:
            raise EncoderError("injected failure")
        m = pixels.reshape(len(pixels), -1).mean(axis=1)
        return np.stack([m, -m], axis=1).astype(np.float32)


def test_micro_batches_split_backend_calls_and_fail_per_chunk() -> None:
    from georag.encoder import Encoder

    spec = ProcessorSpec.for_siglip(32)
    images = [png_bytes(i) for i in range(10)]
    ids = [f"img{i}" for i in range(10)]
    whole = _CountingBackend()
    ref = Encoder(whole, spec, model_id="m", batch_size=10, micro_batch=10).encode(images, ids)
    assert whole.calls == [10]
    split = _CountingBackend()
    res = Encoder(split, spec, model_id="m", batch_size=10).encode(images, ids)  # backend prefers 3
    assert split.calls == [3, 3, 3, 1]
    np.testing.assert_array_equal(res.embeddings, ref.embeddings)
    assert res.ids == ref.ids
    failing = _CountingBackend(fail_calls=(2,))
    res = Encoder(failing, spec, model_id="m", batch_size=10).encode(images, ids)
    assert res.ids == tuple(ids[:3] + ids[6:])
    assert [f.id for f in res.failures] == ids[3:6]
    assert all("injected failure" in f.reason for f in res.failures)
    np.testing.assert_array_equal(res.embeddings, ref.embeddings[[0, 1, 2, 6, 7, 8, 9]])
