"""The onnxruntime backend (the CPU serving default): runs an exported encoder .onnx file."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from georag.encoder.backends.base import CPU_MICRO_BATCH, check_embeddings, check_pixels
from georag.errors import EncoderError, MissingDependencyError, extra_hint

log = logging.getLogger(__name__)

INPUT_NAME = "pixel_values"
OUTPUT_NAME = "embeddings"
META_MODEL_ID = "georag.model_id"
DEFAULT_ONNX_NAME = "encoder.onnx"

_DEVICE_PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}


def find_onnx(model: str | os.PathLike[str]) -> Path:
    """The .onnx file named by `model`: the file itself, or the single .onnx in an export folder."""
    path = Path(model).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        found = sorted(path.glob("*.onnx"))
        if len(found) == 1:
            return found[0]
        if (path / DEFAULT_ONNX_NAME).is_file():
            return path / DEFAULT_ONNX_NAME
        raise EncoderError(
            f"{path} holds {len(found)} .onnx files; export one with `georag encoder export --format onnx`"
        )
    raise EncoderError(f"no ONNX model at {path}")


class OnnxBackend:
    """Embeds pixels with onnxruntime. Input "pixel_values" (batch, 3, H, W), output "embeddings" (batch, d).

    `device` picks the execution providers: "cpu" (default), "cuda" or "tensorrt" (onnxruntime's
    TensorRT EP; both GPU EPs NOT YET RUN here); `providers` overrides that list.
    """

    name = "onnxruntime"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        device: str = "cpu",
        providers: list[str] | None = None,
        intra_op_threads: int = 0,
    ) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise MissingDependencyError(
                f"the onnxruntime backend needs onnxruntime: {extra_hint('onnx', 'onnxruntime')}"
            ) from exc
        self.path = find_onnx(path)
        if providers is None:
            if device not in _DEVICE_PROVIDERS:
                raise EncoderError(
                    f"onnxruntime device must be one of {sorted(_DEVICE_PROVIDERS)}, got {device!r}"
                )
            providers = _DEVICE_PROVIDERS[device]
        available = set(ort.get_available_providers())
        missing = [p for p in providers if p not in available and p != "CPUExecutionProvider"]
        if missing:
            raise MissingDependencyError(
                f"onnxruntime execution providers {missing} are not available (have {sorted(available)})"
            )
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session: Any = ort.InferenceSession(str(self.path), options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own non-exported exception types
            raise EncoderError(f"onnxruntime cannot load {self.path}: {exc}") from exc
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if [i.name for i in inputs] != [INPUT_NAME] or OUTPUT_NAME not in [o.name for o in outputs]:
            raise EncoderError(
                f"{self.path}: expected input {INPUT_NAME!r} and output {OUTPUT_NAME!r}, got "
                f"{[i.name for i in inputs]} -> {[o.name for o in outputs]}"
            )
        shape = inputs[0].shape
        out_shape = next(o.shape for o in outputs if o.name == OUTPUT_NAME)
        if (
            len(shape) != 4
            or not all(isinstance(s, int) for s in shape[1:])
            or not isinstance(out_shape[-1], int)
        ):
            raise EncoderError(
                f"{self.path}: input shape {shape} / output {out_shape} lack static C, H, W, d"
            )
        self.height, self.width = int(shape[2]), int(shape[3])
        self.dim = int(out_shape[-1])
        on_cpu = self.session.get_providers() == ["CPUExecutionProvider"]
        self.preferred_micro_batch = CPU_MICRO_BATCH if on_cpu else None
        meta = self.session.get_modelmeta().custom_metadata_map
        self.model_id = str(meta.get(META_MODEL_ID, self.path))
        log.info("onnxruntime %s on %s (d=%d)", self.path, self.session.get_providers(), self.dim)

    def embed(self, pixels: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """(n, 3, H, W) float32 -> (n, d) float32 raw embeddings."""
        x = check_pixels(pixels, self.height, self.width)
        if x.shape[0] == 0:
            return np.zeros((0, self.dim), np.float32)
        (out,) = self.session.run([OUTPUT_NAME], {INPUT_NAME: x})
        return check_embeddings(np.asarray(out), x.shape[0], self.dim, self.name)
