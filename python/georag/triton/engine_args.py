"""The vLLM engine arguments that depend on the LLM's family: one table, `FAMILY_ENGINE_ARGS`.

Written into ``mllm/1/model.json`` (the vLLM backend passes its keys to vLLM's ``AsyncEngineArgs``) over
the template's family-neutral arguments. Sources (vLLM's own examples and processors):

* Qwen2-VL / Qwen2.5-VL are in transformers and vLLM: ``trust_remote_code`` false; the image budget is the
  Qwen processor's ``min_pixels`` / ``max_pixels`` (``mm_processor_kwargs``), 28 x 28 pixels a visual
  token (examples/offline_inference/vision_language.py ``run_qwen2_vl``).
* InternVL2 / InternVL2.5 load their config and tokenizer from the model's own code: vLLM's example
  passes ``trust_remote_code=True`` (``run_internvl``). Their processor takes no pixel limits: it tiles
  the image into 448 x 448 tiles (256 visual tokens each, plus a thumbnail tile), at most
  ``max_dynamic_patch`` of them (``mm_processor_kwargs``; vllm/model_executor/models/internvl.py
  ``BaseInternVLProcessor(min_dynamic_patch, max_dynamic_patch, dynamic_image_size)``).

The repository's one image budget, ``max_pixels``, is written as each family's own limit: as is for Qwen,
as whole 448 x 448 tiles (at least one) for InternVL; the default (1280 Qwen tokens, 1003520 pixels)
gives 5 tiles, the same 1280 tokens.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from georag.errors import ConfigError

QWEN_PIXEL = 28 * 28
"""Pixels per Qwen2-VL visual token (14 px patches merged 2 x 2)."""
QWEN_MIN_PIXELS = 4 * QWEN_PIXEL
"""The Qwen processor's own default lower bound (4 visual tokens)."""
INTERNVL_TILE_PIXELS = 448 * 448
"""Pixels of one InternVL2 tile (its vision encoder's input size)."""


@dataclass(frozen=True)
class FamilyEngineArgs:
    """One family's engine arguments."""

    trust_remote_code: bool
    """Whether vLLM must run the model repository's own Python code (config, tokenizer)."""
    processor_kwargs: Callable[[int], dict[str, int]]
    """``mm_processor_kwargs`` for an image budget of ``max_pixels`` pixels."""

    def args(self, max_pixels: int) -> dict[str, Any]:
        """The ``model.json`` keys of this family for ``max_pixels``."""
        return {
            "trust_remote_code": self.trust_remote_code,
            "mm_processor_kwargs": self.processor_kwargs(max_pixels),
        }


def _qwen_pixels(max_pixels: int) -> dict[str, int]:
    return {"min_pixels": min(QWEN_MIN_PIXELS, max_pixels), "max_pixels": max_pixels}


def _internvl_tiles(max_pixels: int) -> dict[str, int]:
    return {"max_dynamic_patch": max(1, max_pixels // INTERNVL_TILE_PIXELS)}


_QWEN_VL = FamilyEngineArgs(trust_remote_code=False, processor_kwargs=_qwen_pixels)
_INTERNVL = FamilyEngineArgs(trust_remote_code=True, processor_kwargs=_internvl_tiles)

FAMILY_ENGINE_ARGS: dict[str, FamilyEngineArgs] = {
    "qwen2-vl": _QWEN_VL,
    "qwen2.5-vl": _QWEN_VL,
    "internvl2": _INTERNVL,
    "internvl2.5": _INTERNVL,
}
"""The engine arguments of every chat family (`georag.llm.chat_templates.known_families`)."""


def family_engine_args(family: str, max_pixels: int) -> dict[str, Any]:
    """``family``'s ``model.json`` keys for an image budget of ``max_pixels``; ConfigError if unknown."""
    try:
        entry = FAMILY_ENGINE_ARGS[family.lower()]
    except KeyError:
        known = ", ".join(sorted(FAMILY_ENGINE_ARGS))
        raise ConfigError(f"no vLLM engine arguments for the family {family!r}; known: {known}") from None
    return entry.args(max_pixels)
