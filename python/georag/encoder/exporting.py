"""The `georag encoder export` workflow: export (ONNX, or ONNX then TensorRT), then parity vs torch."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from georag.encoder.backends.base import Backend
from georag.encoder.export import DEFAULT_OPSET, export_onnx
from georag.encoder.parity import ParityReport, parity_check, parity_pixels
from georag.encoder.preprocess import ProcessorSpec
from georag.errors import ExportError, PreprocessorConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExportOutcome:
    """What an export wrote and how well it matches torch."""

    path: Path
    """The .onnx file or the TensorRT engine; no default."""
    parity: ParityReport
    """The exported model vs the torch fp32 reference on the same pixels; no default."""


def run_export(
    model: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    fmt: str = "onnx",
    opset: int = DEFAULT_OPSET,
    batch_profile: tuple[int, int, int] = (1, 8, 32),
    images: str | os.PathLike[str] | None = None,
    parity_n: int = 8,
) -> ExportOutcome:
    """Exports `model` to `out_dir` as "onnx" or "tensorrt" (NOT YET RUN) and checks it against torch.

    The parity batch is `parity_n` real images from `images` when it holds any, else synthetic ones.
    """
    from georag.encoder.backends.torch_backend import TorchBackend
    from georag.encoder.model import load_vision_model, resolve_model

    candidate: Backend
    device = "cpu"
    if fmt == "onnx":
        from georag.encoder.backends.onnx_backend import OnnxBackend

        path = export_onnx(model, out_dir, opset)
        candidate = OnnxBackend(path)
    elif fmt == "tensorrt":
        # fail before the (slow) ONNX export when TensorRT or the GPU is missing
        from georag.encoder.backends.tensorrt_backend import TensorRTBackend
        from georag.encoder.tensorrt_build import build_tensorrt_engine, tensorrt_needs_fp16_onnx

        half = tensorrt_needs_fp16_onnx()
        onnx_path = export_onnx(model, out_dir, opset, half=half)
        lo, opt, hi = batch_profile
        path = build_tensorrt_engine(
            onnx_path, Path(out_dir) / "encoder.engine", min_batch=lo, opt_batch=opt, max_batch=hi
        )
        candidate = TensorRTBackend(path)
        device = "cuda"
    else:
        raise ExportError(f"unknown export format {fmt!r}; use 'onnx' or 'tensorrt'")
    reference = TorchBackend(load_vision_model(resolve_model(model)), device=device)
    try:
        spec = ProcessorSpec.from_pretrained(out_dir)
    except PreprocessorConfigError:
        spec = ProcessorSpec.for_siglip(reference.height)
    pixels, label = parity_pixels(spec, images, n=parity_n)
    report = parity_check(reference, candidate, pixels, images=label)
    log.info("%s", report)
    return ExportOutcome(path=path, parity=report)
