"""Geolocation prompts from template files: the photo, k similar and k dissimilar neighbors' coordinates.

The templates live in ``georag/llm/templates/*.txt`` (``string.Template`` syntax, ``$name``), not in code:
``system.txt`` (the role), ``rag.txt`` with ``rag_similar.txt`` / ``rag_dissimilar.txt`` (Bicakci et al. /
Img2Loc: coordinates of similar images, then of dissimilar ones the answer should be far from, then a strict
JSON answer format), and ``zero_shot.txt`` (no references). A variant is a template with a number of similar
and dissimilar references, written ``rag:16:16`` (the default), ``rag:5:0``, or ``zero``; G3's ablation of
0 / 5 / 10 / 15 references is ``zero,rag:5:5,rag:10:10,rag:15:15``.
"""

from __future__ import annotations

import math
from functools import cache
from importlib import resources
from string import Template

import numpy as np
import numpy.typing as npt

from georag.config import PromptVariant
from georag.types import Prompt


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
    """The prompt of ``variant`` for one photo and its neighbors' coordinates (most similar first).

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
