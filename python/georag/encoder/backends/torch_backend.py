"""The torch backend: runs a SigLIP vision tower in float32, or under fp16/bf16 autocast on CUDA."""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from georag.encoder.backends.base import CPU_MICRO_BATCH, check_embeddings, check_pixels, image_hw
from georag.errors import EncoderError, MissingDependencyError

if TYPE_CHECKING:
    from transformers import SiglipVisionModel

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "bf16")


class TorchBackend:
    """Embeds pixels with a loaded `SiglipVisionModel`; returns its pooler_output, not normalized.

    fp16/bf16 autocast is CUDA only (NOT YET RUN: these machines have no GPU); fp32 runs everywhere.
    """

    name = "torch"

    def __init__(self, model: SiglipVisionModel, *, device: str = "cpu", precision: str = "fp32") -> None:
        import torch

        if precision not in PRECISIONS:
            raise EncoderError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        try:
            self.device = torch.device(device)
        except RuntimeError as exc:
            raise EncoderError(f"bad torch device {device!r}: {exc}") from exc
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise MissingDependencyError(f"device {device!r} requested but torch sees no CUDA device")
        if precision != "fp32" and self.device.type != "cuda":
            raise EncoderError(
                f"precision {precision!r} (autocast) needs a CUDA device; use fp32 on {device!r}"
            )
        self.precision = precision
        self.model = model.to(self.device).eval()
        self.height, self.width = image_hw(model.config.image_size)
        self.dim = int(model.config.hidden_size)
        self.preferred_micro_batch = CPU_MICRO_BATCH if self.device.type == "cpu" else None

    def embed(self, pixels: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """(n, 3, H, W) float32 -> (n, d) float32 raw embeddings."""
        import torch

        x = check_pixels(pixels, self.height, self.width)
        if x.shape[0] == 0:
            return np.zeros((0, self.dim), np.float32)
        autocast: contextlib.AbstractContextManager[object] = contextlib.nullcontext()
        if self.precision != "fp32":
            dtype = torch.float16 if self.precision == "fp16" else torch.bfloat16
            autocast = torch.autocast(device_type="cuda", dtype=dtype)
        with torch.inference_mode(), autocast:
            out = self.model(pixel_values=torch.from_numpy(x).to(self.device)).pooler_output
        return check_embeddings(out.float().cpu().numpy(), x.shape[0], self.dim, self.name)
