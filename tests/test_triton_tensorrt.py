"""The TensorRT engine's device, stream and build precision (NOT RUN on a GPU: TensorRT and CUDA are
stand-ins here, `tensorrt_fakes`, recording what the code asks of them).

A ``device="cuda:1"`` backend must deserialize and allocate its engine with cuda:1 current (TensorRT uses
the current device), and run every batch on a stream of its own, not the legacy default stream; the
build pins LayerNorm to fp32 and leaves softmax free (attention fusion).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tensorrt_fakes import DEFAULT_STREAM, FakeTorch, Layer, fake_tensorrt, fake_tensorrt_builder

SIZE, DIM, MAX_BATCH = 4, 8, 4


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch) -> tuple[FakeTorch, Any]:
    torch = FakeTorch()
    trt = fake_tensorrt(torch, size=SIZE, dim=DIM, max_batch=MAX_BATCH)
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    return torch, trt


def test_the_engine_is_loaded_and_run_on_its_device_and_own_stream(
    fakes: tuple[FakeTorch, Any], tmp_path: Path
) -> None:
    from georag.encoder.backends.tensorrt_backend import TensorRTBackend

    torch, trt = fakes
    (tmp_path / "encoder.engine").write_bytes(b"engine")
    backend = TensorRTBackend(tmp_path, device="cuda:1")
    assert trt.calls.deserialized_on == [1] and trt.calls.context_on == [1]
    assert torch.cuda.current == 0  # the caller's current device is left as it was
    pixels = np.random.default_rng(0).standard_normal((6, 3, SIZE, SIZE)).astype(np.float32)
    got = backend.embed(pixels)
    np.testing.assert_array_equal(got, pixels.reshape(6, -1)[:, :DIM])
    (own,) = torch.cuda.created
    assert own.device == 1 and own.cuda_stream != DEFAULT_STREAM
    # 6 images in batches of at most 4: two runs, each on cuda:1 with the backend's stream current and
    # passed, then waited for.
    assert trt.calls.executed == [(1, own.cuda_stream, own.cuda_stream)] * 2
    assert own.synchronized == 2


def test_a_device_without_index_is_the_current_one(fakes: tuple[FakeTorch, Any], tmp_path: Path) -> None:
    from georag.encoder.backends.tensorrt_backend import TensorRTBackend
    from georag.errors import EncoderError

    torch, trt = fakes
    (tmp_path / "encoder.engine").write_bytes(b"engine")
    torch.cuda.current = 2
    assert TensorRTBackend(tmp_path, device="cuda").device.index == 2
    assert trt.calls.deserialized_on == [2]
    with pytest.raises(EncoderError, match="CUDA device"):
        TensorRTBackend(tmp_path, device="cpu")


def _onnx(path: Path) -> Path:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, ["batch", 3, SIZE, SIZE])
    y = helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, ["batch", DIM])
    node = helper.make_node("Flatten", ["pixel_values"], ["embeddings"])
    model = helper.make_model(helper.make_graph([node], "g", [x], [y]))
    helper.set_model_props(model, {"georag.model_id": "tiny/siglip", "georag.dim": str(DIM)})
    onnx.save(model, str(path))
    return path


def test_the_fp16_build_pins_layernorm_only_and_records_its_tensorrt(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from georag.encoder.backends.tensorrt_backend import engine_meta_path
    from georag.encoder.tensorrt_build import build_tensorrt_engine

    layers = [Layer("NORMALIZATION"), Layer("MATRIX_MULTIPLY"), Layer("SOFTMAX"), Layer("NORMALIZATION")]
    trt = fake_tensorrt_builder(layers, version="10.8.0.43")
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    out = build_tensorrt_engine(_onnx(tmp_path / "m.onnx"), tmp_path / "e.engine", opt_batch=2, max_batch=4)
    assert out.read_bytes() == b"serialized engine"
    assert {"FP16", "OBEY_PRECISION_CONSTRAINTS"} <= trt.flags
    assert [(layer.type, layer.precision, layer.output_types) for layer in layers] == [
        ("NORMALIZATION", "float32", {0: "float32"}),
        ("MATRIX_MULTIPLY", None, {}),
        ("SOFTMAX", None, {}),  # left to fp16: attention can fuse
        ("NORMALIZATION", "float32", {0: "float32"}),
    ]
    meta = json.loads(engine_meta_path(out).read_text())
    assert (meta["tensorrt"], meta["model_id"], meta["batch"]) == ("10.8.0.43", "tiny/siglip", [1, 2, 4])
