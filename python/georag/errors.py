"""The exception hierarchy: every error georag raises on purpose derives from GeoRagError."""

from __future__ import annotations


class GeoRagError(Exception):
    """Base class of georag's own errors."""


class InputError(GeoRagError, ValueError):
    """An argument or input array has the wrong shape, type or range (the message says which and why)."""


class ConfigError(GeoRagError, ValueError):
    """A configuration value, file or option is wrong; the message names the key and what it accepts."""


class MissingDependencyError(GeoRagError, ImportError):
    """An optional package or a hardware feature needed by the requested path is not available."""


DISTRIBUTION = "georag-vlm"
"""The distribution's name (``import georag``, command ``georag``): a project named georag on the package
index is unrelated, so no hint ever names that one."""


def extra_hint(extra: str, packages: str) -> str:
    """How to install what the optional extra ``extra`` brings: its packages by name, or the extra from a
    checkout (both work without the package index knowing this project)."""
    return f"pip install {packages} (or, in georag's source folder, pip install '.[{extra}]')"


class ModelLoadError(GeoRagError):
    """A model id or folder could not be resolved or loaded safely (safetensors only, no remote code)."""


class EncoderError(GeoRagError):
    """An encoder backend failed or was misconfigured."""


class EncoderInputError(EncoderError, ValueError):
    """Pixels handed to an encoder backend have the wrong shape, dtype or non-finite values."""


class ExportError(GeoRagError):
    """Exporting an encoder (ONNX, TensorRT) or its parity check failed."""


class ImageLoadError(GeoRagError):
    """An input image could not be read, decoded or accepted (missing, corrupt, unsupported, too large)."""


class PreprocessorConfigError(GeoRagError):
    """A preprocessor_config.json is missing, unreadable, or asks for preprocessing georag does not do."""


class StoreError(GeoRagError):
    """A GeoStore is missing, damaged, incomplete, or does not match what was asked (encoder, dimension)."""


class DatasetError(GeoRagError, ValueError):
    """A dataset metadata file or image collection cannot be read as the chosen format."""


class LLMError(GeoRagError):
    """A multimodal LLM request failed (server down, timed out, refused, or answered something unusable)."""


class OutputError(GeoRagError):
    """A run's output files cannot be written as asked: locked by another run, written with other settings,
    not georag's, or named wrongly; the message says what to do (another --out, --overwrite)."""


class EvaluationError(GeoRagError, ValueError):
    """Predictions or truth cannot be read, joined or scored as asked; the message says what to change."""
