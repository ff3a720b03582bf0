"""Encoder backends: each turns (n, 3, H, W) float32 pixels into (n, d) float32 raw embeddings."""

from __future__ import annotations

from georag.encoder.backends.base import Backend
from georag.encoder.backends.onnx_backend import OnnxBackend
from georag.encoder.backends.tensorrt_backend import TensorRTBackend
from georag.encoder.backends.torch_backend import TorchBackend

__all__ = ["Backend", "OnnxBackend", "TensorRTBackend", "TorchBackend"]
