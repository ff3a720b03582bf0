"""ProcessorSpec: a SigLIP image preprocessing recipe (resize, rescale, normalize) applied to PIL images.

The arithmetic reproduces transformers' PIL image processor (``SiglipImageProcessorPil``, the
``use_fast=False`` one) step for step, so that the float32 tensors match it to the last bit:
resize the 8-bit RGB image with Pillow (the configured filter, ``reducing_gap=None``), rescale as
``(uint8 -> float64) * factor -> float32``, then normalize in float32 as ``(x - mean) / std``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from georag.encoder.images import to_rgb
from georag.errors import PreprocessorConfigError

logger = logging.getLogger(__name__)

CONFIG_NAME = "preprocessor_config.json"
"""The file a Hugging Face checkpoint describes its image preprocessing in."""

_RESAMPLE_FILTERS = frozenset(int(f) for f in Image.Resampling)


@dataclass(frozen=True)
class ProcessorSpec:
    """How one image becomes a float32 (3, height, width) array for a SigLIP vision tower."""

    height: int = 224
    """Output height in pixels (default 224)."""
    width: int = 224
    """Output width in pixels (default 224)."""
    resample: int = int(Image.Resampling.BICUBIC)
    """Pillow resampling filter used by the resize (default 3, ``Image.Resampling.BICUBIC``)."""
    do_resize: bool = True
    """Resize to (height, width), ignoring the aspect ratio as SigLIP does (default True)."""
    do_rescale: bool = True
    """Multiply the 8-bit values by ``rescale_factor`` (default True)."""
    rescale_factor: float = 1 / 255
    """The rescale multiplier (default 1/255)."""
    do_normalize: bool = True
    """Subtract ``image_mean`` and divide by ``image_std``, per channel (default True)."""
    image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    """Per-channel mean, RGB order (default 0.5 each)."""
    image_std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    """Per-channel standard deviation, RGB order (default 0.5 each)."""
    do_convert_rgb: bool = True
    """Convert non-RGB input with ``georag.encoder.images.to_rgb`` (default True); when False, a
    non-RGB image is refused with a ValueError."""

    def __post_init__(self) -> None:
        if self.height < 1 or self.width < 1:
            raise ValueError(f"height and width must be >= 1, got {self.height}x{self.width}")
        if self.resample not in _RESAMPLE_FILTERS:
            filters = sorted(_RESAMPLE_FILTERS)
            raise ValueError(f"resample must be a Pillow filter {filters}, got {self.resample}")
        for name in ("image_mean", "image_std"):
            value = getattr(self, name)
            if len(value) != 3:
                raise ValueError(f"{name} must have 3 values (R, G, B), got {value!r}")
        if any(s == 0 for s in self.image_std):
            raise ValueError(f"image_std must not contain 0, got {self.image_std!r}")

    @classmethod
    def for_siglip(cls, size: int = 224) -> ProcessorSpec:
        """The SigLIP defaults at ``size`` x ``size``: bicubic, 1/255, mean = std = 0.5."""
        return cls(height=size, width=size)

    @classmethod
    def from_pretrained(cls, model: str | os.PathLike[str]) -> ProcessorSpec:
        """Read ``preprocessor_config.json`` from a local folder (or the file itself), else a hub id.

        A hub id goes through ``huggingface_hub.hf_hub_download``, i.e. the local Hugging Face cache
        first and the network when allowed.
        """
        path = Path(model)
        if path.is_dir():
            return cls.from_config_file(path / CONFIG_NAME)
        if path.is_file():
            return cls.from_config_file(path)
        text = os.fspath(model)
        if path.is_absolute() or text.startswith((".", "~")) or text.count("/") > 1:
            raise PreprocessorConfigError(f"no such model folder: {text}")
        return cls.from_config_file(_hub_download(text))

    @classmethod
    def from_config_file(cls, path: str | os.PathLike[str]) -> ProcessorSpec:
        """Read a ``preprocessor_config.json`` file."""
        try:
            with open(path, encoding="utf-8") as fh:
                config = json.load(fh)
        except FileNotFoundError as exc:
            raise PreprocessorConfigError(f"{CONFIG_NAME} not found: {path}") from exc
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise PreprocessorConfigError(f"cannot read {path}: {exc}") from exc
        if not isinstance(config, dict):
            raise PreprocessorConfigError(f"{path}: expected a JSON object, got {type(config).__name__}")
        try:
            return cls.from_config(config)
        except (PreprocessorConfigError, ValueError, TypeError) as exc:
            raise PreprocessorConfigError(f"{path}: {exc}") from exc

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ProcessorSpec:
        """Build from the parsed ``preprocessor_config.json`` mapping (missing keys take the defaults)."""
        if config.get("do_center_crop"):
            raise PreprocessorConfigError("do_center_crop is not supported (SigLIP does not crop)")
        if config.get("do_pad"):
            raise PreprocessorConfigError("do_pad is not supported (SigLIP does not pad)")
        defaults = cls()
        height, width = _size(config.get("size"), defaults)
        return cls(
            height=height,
            width=width,
            resample=int(_get(config, "resample", defaults.resample)),
            do_resize=bool(_get(config, "do_resize", defaults.do_resize)),
            do_rescale=bool(_get(config, "do_rescale", defaults.do_rescale)),
            rescale_factor=float(_get(config, "rescale_factor", defaults.rescale_factor)),
            do_normalize=bool(_get(config, "do_normalize", defaults.do_normalize)),
            image_mean=_triple(_get(config, "image_mean", defaults.image_mean)),
            image_std=_triple(_get(config, "image_std", defaults.image_std)),
            do_convert_rgb=bool(_get(config, "do_convert_rgb", defaults.do_convert_rgb)),
        )

    def __call__(self, image: Image.Image) -> np.ndarray:
        """Preprocess one image into a C-contiguous float32 array of shape (3, H, W)."""
        if image.mode != "RGB" or "transparency" in image.info:
            if not self.do_convert_rgb:
                raise ValueError(f"expected an RGB image (do_convert_rgb is off), got mode {image.mode!r}")
            image = to_rgb(image)
        if self.do_resize:
            image = image.resize((self.width, self.height), resample=self.resample, reducing_gap=None)
        pixels = np.asarray(image)  # (H, W, 3) uint8
        if self.do_rescale:
            values = (pixels.astype(np.float64) * self.rescale_factor).astype(np.float32)
        else:
            values = pixels.astype(np.float32)
        if self.do_normalize:
            mean = np.asarray(self.image_mean, dtype=np.float32)
            std = np.asarray(self.image_std, dtype=np.float32)
            values = (values - mean) / std
        return np.ascontiguousarray(values.transpose(2, 0, 1))


def _get(config: Mapping[str, Any], key: str, default: Any) -> Any:
    """``config[key]``, or ``default`` when the key is absent or null."""
    value = config.get(key)
    return default if value is None else value


def _size(size: Any, defaults: ProcessorSpec) -> tuple[int, int]:
    """(height, width) from a ``size`` entry: {"height", "width"}, a single int, or absent."""
    if size is None:
        return defaults.height, defaults.width
    if isinstance(size, int):
        return size, size
    if isinstance(size, Mapping) and "height" in size and "width" in size:
        return int(size["height"]), int(size["width"])
    raise PreprocessorConfigError(
        f"size {size!r} is not supported: SigLIP resizes to a fixed {{'height': H, 'width': W}}"
    )


def _triple(value: Any) -> tuple[float, float, float]:
    """A per-channel value: a number (same for R, G, B) or a sequence of three numbers."""
    if isinstance(value, (int, float)):
        return (float(value),) * 3
    if isinstance(value, Sequence) and len(value) == 3:
        return (float(value[0]), float(value[1]), float(value[2]))
    raise PreprocessorConfigError(f"expected one number or three, got {value!r}")


def _hub_download(repo_id: str) -> str:
    """Fetch ``preprocessor_config.json`` of a hub model through the Hugging Face cache."""
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as exc:  # pragma: no cover - installed with transformers
        raise PreprocessorConfigError(
            f"{repo_id!r} is not a local folder and huggingface_hub is not installed"
        ) from exc
    try:
        return str(hf_hub_download(repo_id, CONFIG_NAME))
    except Exception as exc:  # offline, unknown repo, gated repo, invalid id: all end the same way
        raise PreprocessorConfigError(
            f"cannot get {CONFIG_NAME} of {repo_id!r} from the Hugging Face cache or hub: {exc}"
        ) from exc
