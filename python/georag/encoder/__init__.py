"""SigLIP image encoder: preprocessing, torch / onnxruntime / tensorrt backends, ONNX and TensorRT export."""

from __future__ import annotations

from georag.encoder.encoder import BACKENDS, Encoder, load_encoder, load_encoder_from
from georag.encoder.export import export_onnx
from georag.encoder.parity import ParityReport, parity_check, parity_pixels
from georag.encoder.preprocess import ProcessorSpec
from georag.encoder.result import EncodeResult
from georag.encoder.tensorrt_build import build_tensorrt_engine

__all__ = [
    "BACKENDS",
    "EncodeResult",
    "Encoder",
    "ParityReport",
    "ProcessorSpec",
    "build_tensorrt_engine",
    "export_onnx",
    "load_encoder",
    "load_encoder_from",
    "parity_check",
    "parity_pixels",
]
