"""Renders a `Prompt` into the raw chat text a model family expects, image placeholder included.

Servers that take raw text (the Triton vLLM backend applies no chat template) need the model's own chat
format, written here per family. Each entry reproduces what the family's Hugging Face chat template renders
for one system message, one user turn holding the image followed by the text, and the generation prompt:

- ``qwen2-vl``, ``qwen2.5-vl``: ChatML with the vision block before the user text, as rendered by the
  ``chat_template`` of Qwen2-VL-*-Instruct / Qwen2.5-VL-*-Instruct (the two are identical for this shape).
  Without a system message the template inserts ``You are a helpful assistant.``; so does this table.
- ``internvl2``, ``internvl2.5``: ChatML (``internlm2-chat`` / ``Hermes-2`` in InternVL's own conversation
  table) with ``<image>\\n`` before the question, the form vLLM's InternVL examples feed through the
  tokenizer's chat template. vLLM expands ``<image>`` into the image tiles' tokens. No default system
  message (the tokenizer template has none).

No BOS token is written: vLLM adds the tokenizer's BOS itself when it tokenizes a text prompt.
"""

from __future__ import annotations

from dataclasses import dataclass

from georag.errors import ConfigError
from georag.types import Prompt


@dataclass(frozen=True)
class ChatFormat:
    """One family's single-turn chat format; the parts are joined around the prompt's texts."""

    system_open: str
    """Text before the system message."""
    system_close: str
    """Text after the system message."""
    user_open: str
    """Text before the user turn (the image placeholder follows it)."""
    image: str
    """The image placeholder the server expands into image tokens."""
    user_close: str
    """Text after the user text."""
    generation: str
    """The assistant header the model continues from."""
    default_system: str | None = None
    """System message written when the prompt has none; None: leave the system turn out. Default None."""


_CHATML_QWEN_VL = ChatFormat(
    system_open="<|im_start|>system\n",
    system_close="<|im_end|>\n",
    user_open="<|im_start|>user\n",
    image="<|vision_start|><|image_pad|><|vision_end|>",
    user_close="<|im_end|>\n",
    generation="<|im_start|>assistant\n",
    default_system="You are a helpful assistant.",
)

_CHATML_INTERNVL = ChatFormat(
    system_open="<|im_start|>system\n",
    system_close="<|im_end|>\n",
    user_open="<|im_start|>user\n",
    image="<image>\n",
    user_close="<|im_end|>\n",
    generation="<|im_start|>assistant\n",
)

CHAT_FORMATS: dict[str, ChatFormat] = {
    "qwen2-vl": _CHATML_QWEN_VL,
    "qwen2.5-vl": _CHATML_QWEN_VL,
    "internvl2": _CHATML_INTERNVL,
    "internvl2.5": _CHATML_INTERNVL,
}
"""The known model families (lower case) and their chat formats."""


def known_families() -> tuple[str, ...]:
    """The family names `render_chat` accepts, sorted."""
    return tuple(sorted(CHAT_FORMATS))


def chat_format(family: str) -> ChatFormat:
    """The chat format of ``family`` (case-insensitive), or `ConfigError` naming the known families."""
    found = CHAT_FORMATS.get(family.strip().lower())
    if found is None:
        raise ConfigError(f"unknown model family {family!r}; known: {', '.join(known_families())}")
    return found


def render_chat(prompt: Prompt, family: str) -> str:
    """The raw text ``family``'s model expects for ``prompt``: system turn, image then user text, assistant.

    The texts are joined, never formatted, so braces or other markup in them pass through unchanged.
    """
    fmt = chat_format(family)
    system = prompt.system if prompt.system.strip() else fmt.default_system
    parts = []
    if system is not None:
        parts += [fmt.system_open, system, fmt.system_close]
    parts += [fmt.user_open, fmt.image, prompt.user, fmt.user_close, fmt.generation]
    return "".join(parts)
