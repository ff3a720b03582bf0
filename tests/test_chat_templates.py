"""Tests georag.llm.chat_templates: the exact raw chat text rendered for each model family."""

from __future__ import annotations

import pytest

from georag.errors import ConfigError
from georag.llm.chat_templates import CHAT_FORMATS, known_families, render_chat
from georag.types import Prompt

PROMPT = Prompt(system="You locate photos.", user="Where was this taken?", image=b"\xff\xd8jpeg")

QWEN_VL = (
    "<|im_start|>system\nYou locate photos.<|im_end|>\n"
    "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Where was this taken?<|im_end|>\n"
    "<|im_start|>assistant\n"
)
INTERNVL = (
    "<|im_start|>system\nYou locate photos.<|im_end|>\n"
    "<|im_start|>user\n<image>\nWhere was this taken?<|im_end|>\n"
    "<|im_start|>assistant\n"
)


@pytest.mark.parametrize(
    ("family", "expected"),
    [("qwen2-vl", QWEN_VL), ("qwen2.5-vl", QWEN_VL), ("internvl2", INTERNVL), ("internvl2.5", INTERNVL)],
)
def test_renders_the_family_format(family: str, expected: str) -> None:
    assert render_chat(PROMPT, family) == expected


def test_family_names_ignore_case_and_spaces() -> None:
    assert render_chat(PROMPT, " Qwen2.5-VL ") == QWEN_VL


def test_qwen_without_system_gets_the_template_default() -> None:
    prompt = Prompt(system="", user="Where?", image=b"x")
    assert render_chat(prompt, "qwen2-vl") == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Where?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_internvl_without_system_has_no_system_turn() -> None:
    prompt = Prompt(system="  ", user="Where?", image=b"x")
    assert (
        render_chat(prompt, "internvl2")
        == "<|im_start|>user\n<image>\nWhere?<|im_end|>\n<|im_start|>assistant\n"
    )


def test_braces_and_newlines_pass_through() -> None:
    user = 'Answer as {"latitude": <deg>, "longitude": <deg>}\nNeighbors: {0} {name}'
    prompt = Prompt(system="sys {x}", user=user, image=b"x")
    rendered = render_chat(prompt, "qwen2-vl")
    assert user + "<|im_end|>\n" in rendered
    assert "system\nsys {x}<|im_end|>" in rendered


def test_unknown_family_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="unknown model family 'llava'") as info:
        render_chat(PROMPT, "llava")
    for family in ("qwen2-vl", "qwen2.5-vl", "internvl2", "internvl2.5"):
        assert family in str(info.value)


def test_known_families_are_the_table_keys() -> None:
    assert known_families() == tuple(sorted(CHAT_FORMATS))
    assert known_families() == ("internvl2", "internvl2.5", "qwen2-vl", "qwen2.5-vl")
