"""Geolocation prompts from template files: the photo, k similar and k dissimilar neighbours' coordinates.

The templates live in ``georag/llm/templates/*.txt`` (``string.Template`` syntax, ``$name``), not in code:
``system.txt`` (the role), ``rag.txt`` with ``rag_similar.txt`` / ``rag_dissimilar.txt`` (Bicakci et al. /
Img2Loc: coordinates of similar images, then of dissimilar ones the answer should be far from, then a strict
JSON answer format), and ``zero_shot.txt`` (no references). A variant is a template with a number of similar
and dissimilar references, written ``rag:16:16`` (the default), ``rag:5:0``, or ``zero``; G3's ablation of
0 / 5 / 10 / 15 references is ``zero,rag:5:5,rag:10:10,rag:15:15``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from string import Template

import numpy as np
import numpy.typing as npt

from georag.errors import GeoRagError
from georag.llm.client import Prompt

TEMPLATES = ("rag", "zero")
_VARIANT = re.compile(r"(rag):(\d{1,3}):(\d{1,3})|(zero)")


@dataclass(frozen=True)
class PromptVariant:
    """A prompt template with how many neighbours' coordinates it shows."""

    template: str
    """"rag" (similar + dissimilar references) or "zero" (none)."""
    k_near: int = 16
    """Similar images' coordinates shown; default 16 (the papers' k)."""
    k_far: int = 16
    """Dissimilar images' coordinates shown; default 16."""

    def __str__(self) -> str:
        return "zero" if self.template == "zero" else f"rag:{self.k_near}:{self.k_far}"


def parse_variants(text: str) -> tuple[PromptVariant, ...]:
    """Variants from ``"rag:16:16,zero"``; GeoRagError naming the bad part."""
    out = []
    for part in (p.strip() for p in text.split(",")):
        m = _VARIANT.fullmatch(part)
        if not m:
            raise GeoRagError(f"prompt variant {part!r}: write rag:K_NEAR:K_FAR (e.g. rag:16:16) or zero")
        out.append(PromptVariant("zero", 0, 0) if m.group(4) else PromptVariant("rag", int(m[2]), int(m[3])))
    if not out:
        raise GeoRagError("no prompt variant given")
    return tuple(out)


@cache
def _template(name: str) -> Template:
    folder = resources.files("georag.llm").joinpath("templates")
    text = folder.joinpath(f"{name}.txt").read_text(encoding="utf-8")
    return Template(text.strip())


def format_coordinates(lat: npt.ArrayLike, lon: npt.ArrayLike) -> str:
    """``(48.8566, 2.3522), (51.5074, -0.1278)``: 4 decimals (about 11 m), NaN padding skipped."""
    pairs = [
        f"({a:.4f}, {b:.4f})"
        for a, b in zip(np.ravel(lat), np.ravel(lon), strict=True)
        if math.isfinite(a) and math.isfinite(b)
    ]
    return ", ".join(pairs)


def build_prompt(
    variant: PromptVariant,
    image: bytes,
    *,
    near_lat: npt.NDArray[np.float64] | None = None,
    near_lon: npt.NDArray[np.float64] | None = None,
    far_lat: npt.NDArray[np.float64] | None = None,
    far_lon: npt.NDArray[np.float64] | None = None,
    image_mime: str = "image/jpeg",
) -> Prompt:
    """The prompt of ``variant`` for one photo and its neighbours' coordinates (most similar first).

    The first ``variant.k_near`` similar and ``variant.k_far`` dissimilar coordinates are shown; a block
    with no coordinates is left out (k = 0, or fewer rows in the store).
    """
    system = _template("system").substitute()
    if variant.template == "zero":
        return Prompt(system, _template("zero_shot").substitute(), image, image_mime)
    blocks = {"similar": "", "dissimilar": ""}
    for key, k, lat, lon in (
        ("similar", variant.k_near, near_lat, near_lon),
        ("dissimilar", variant.k_far, far_lat, far_lon),
    ):
        if k <= 0 or lat is None or lon is None:
            continue
        coords = format_coordinates(np.ravel(lat)[:k], np.ravel(lon)[:k])
        if coords:
            shown = coords.count("(")
            blocks[key] = _template(f"rag_{key}").substitute(k=shown, coordinates=coords) + "\n"
    user = _template("rag").substitute(**blocks)
    return Prompt(system, user, image, image_mime)
