"""Resolve a SigLIP model reference (hub id or local folder) and load its vision tower safely."""

from __future__ import annotations

import importlib
import logging
import os
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from georag.errors import MissingDependencyError, ModelLoadError, extra_hint
from georag.progress import disabled as progress_disabled

if TYPE_CHECKING:
    from transformers import SiglipVisionModel

log = logging.getLogger(__name__)

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# model_type values whose vision tower is SiglipVisionModel (fixed-resolution SigLIP and SigLIP 2).
_SUPPORTED_TYPES = ("siglip", "siglip_vision_model")
# NaFlex SigLIP 2 takes patch sequences + spatial shapes, not (n, 3, H, W) pixels.
_NAFLEX_TYPES = ("siglip2", "siglip2_vision_model")


@dataclass(frozen=True)
class ModelSource:
    """Where a model comes from."""

    ref: str
    """What `from_pretrained` is given: the hub id, or the absolute local folder; no default."""
    model_id: str
    """The id recorded with embeddings: the hub id, or the local folder's absolute path; no default."""
    local: bool
    """True for a local folder, False for a hub id; no default."""


def resolve_model(model: str | os.PathLike[str]) -> ModelSource:
    """Decides whether `model` is a local folder (checked now) or a hub id (checked when loading).

    A local folder must hold config.json and safetensors weights; one with only pickle weights
    (pytorch_model.bin) is refused, because loading pickles can run arbitrary code.
    """
    text = os.fspath(model)
    if not text.strip():
        raise ModelLoadError("empty model reference")
    path = Path(text).expanduser()
    if path.exists():
        return _check_folder(path.resolve())
    if _HUB_ID.match(text) and not text.startswith((".", "~")):
        return ModelSource(ref=text, model_id=text, local=False)
    raise ModelLoadError(f"{text!r} is neither an existing local folder nor a hub id like 'org/name'")


def _check_folder(path: Path) -> ModelSource:
    if not path.is_dir():
        raise ModelLoadError(f"{path} is not a folder (expected a saved SigLIP model folder)")
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"{path} has no config.json: not a saved transformers model")
    if not any(path.glob("*.safetensors")):
        pickles = sorted(p.name for p in path.glob("*.bin")) + sorted(p.name for p in path.glob("*.pt*"))
        hint = f" (found only {', '.join(pickles)}; pickle weights are refused)" if pickles else ""
        raise ModelLoadError(f"{path} has no .safetensors weights{hint}")
    return ModelSource(ref=str(path), model_id=str(path), local=True)


@contextmanager
def hf_progress_follows_georag() -> Iterator[None]:
    """Turns the transformers / huggingface_hub progress bars (downloads, loading weights, writing shards)
    off while georag's own progress is off (`georag.progress.disabled`: ``--quiet``, ``TQDM_DISABLE``)."""
    hub_utils: Any = importlib.import_module("huggingface_hub.utils")
    hf_logging: Any = importlib.import_module("transformers.utils.logging")

    if not progress_disabled() or not hf_logging.is_progress_bar_enabled():
        yield
        return
    hub_was_off = hub_utils.are_progress_bars_disabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        with warnings.catch_warnings():  # huggingface_hub warns when its environment variable keeps them off
            warnings.simplefilter("ignore")
            hf_logging.enable_progress_bar()
        if hub_was_off:
            hub_utils.disable_progress_bars()


def _transformers() -> Any:
    try:
        import transformers
    except ImportError as exc:  # pragma: no cover - transformers is installed wherever torch is used
        raise MissingDependencyError(
            "the torch encoder and ONNX export need torch and transformers: "
            f"{extra_hint('encoder', 'torch transformers safetensors')}; the onnxruntime backend does not"
        ) from exc
    return transformers


def load_vision_model(source: ModelSource) -> SiglipVisionModel:
    """Loads the SigLIP vision tower of `source` in float32, eval mode, safetensors only, no remote code.

    Works for a vision-only checkpoint and for a full SigLIP (image + text) checkpoint, whose text
    tower is not loaded.
    """
    transformers = _transformers()
    if not source.local:
        from georag.encoder.hub import check_hub_reachable

        check_hub_reachable(source.ref)  # fails in seconds without a network, not after half a minute
    with hf_progress_follows_georag():  # their bars are off while ours are
        try:
            config = transformers.AutoConfig.from_pretrained(source.ref, trust_remote_code=False)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"cannot read the config of {source.ref!r}: {exc}") from exc
        model_type = getattr(config, "model_type", None)
        if model_type in _NAFLEX_TYPES:
            raise ModelLoadError(
                f"{source.ref!r} is a NaFlex SigLIP 2 model ({model_type}); only fixed-resolution SigLIP / "
                "SigLIP 2 checkpoints (model_type 'siglip') are supported"
            )
        if model_type not in _SUPPORTED_TYPES:
            raise ModelLoadError(f"{source.ref!r} has model_type {model_type!r}, not a SigLIP model")
        try:
            model = transformers.SiglipVisionModel.from_pretrained(
                source.ref, use_safetensors=True, trust_remote_code=False, dtype="float32"
            )
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"cannot load the SigLIP vision tower of {source.ref!r}: {exc}") from exc
        model.eval()
        log.info("loaded %s (d=%d)", source.model_id, model.config.hidden_size)
        return model
