"""The RAG route (Bicakci et al.; Img2Loc): the LLM sees neighbours' coordinates; parse; pick the medoid."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from georag.errors import LLMError
from georag.llm.client import LLMClient, Sampling
from georag.llm.parse import parse_coordinates
from georag.llm.prompts import PromptVariant, build_prompt
from georag.locate.prediction import Prediction
from georag.strategies.knn import as_fallback
from georag.strategies.retrieved import Retrieved
from georag.strategies.select import agreement, medoid

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RagConfig:
    """How the RAG route asks and chooses."""

    variants: tuple[PromptVariant, ...] = (PromptVariant("rag", 16, 16),)
    """Prompt variants, each one request; default one, rag:16:16."""
    sampling: Sampling = field(default_factory=lambda: Sampling(n=5))
    """Sampling per request; default 5 answers at temperature 0.7 (the candidates of the medoid)."""
    with_neighbors: bool = False
    """Also weigh the top-k similar neighbours' coordinates into the medoid (the answer is still one of the
    LLM's candidates); default False."""


def rag_predict(item: Retrieved, image: bytes, image_mime: str, llm: LLMClient, cfg: RagConfig) -> Prediction:
    """Asks ``llm`` every variant for ``item``, parses every answer, and picks the geodesic medoid.

    Candidates are the parsed answers of all variants and samples. Confidence = the share of all requested
    samples that answered within 100 km of the pick. When no answer parses (refusals, garbage, every
    request failed), the prediction falls back to the top-1 neighbour and says so in ``fallback``.
    """
    answers: list[dict[str, Any]] = []
    cand_lat: list[float] = []
    cand_lon: list[float] = []
    errors: list[str] = []
    t0 = time.perf_counter()
    for variant in cfg.variants:
        prompt = build_prompt(
            variant,
            image,
            near_lat=item.near_lat,
            near_lon=item.near_lon,
            far_lat=item.far_lat,
            far_lon=item.far_lon,
            image_mime=image_mime,
        )
        try:
            done = llm.generate(prompt, cfg.sampling)
        except LLMError as exc:
            errors.append(f"{variant}: {exc}")
            continue
        for text in done.texts:
            coords = parse_coordinates(text, prompt=prompt.user)
            answers.append(
                {
                    "variant": str(variant),
                    "text": text,
                    "parsed": list(coords) if coords else None,
                    "echoed": done.echoed,
                }
            )
            if coords is not None:
                cand_lat.append(coords[0])
                cand_lon.append(coords[1])
    asked = len(cfg.variants) * cfg.sampling.n
    evidence: dict[str, Any] = {
        "variants": [str(v) for v in cfg.variants],
        "answers": answers,
        "llm_errors": errors,
        "llm_seconds": round(time.perf_counter() - t0, 4),
    }
    if not cand_lat:
        reason = (
            f"every LLM request failed ({errors[0]})"
            if errors and not answers
            else f"none of the {len(answers)} LLM answers stated coordinates"
        )
        pred = as_fallback(item, reason, "rag")
        pred.evidence.update(evidence)
        return pred
    lat, lon = np.array(cand_lat), np.array(cand_lon)
    if cfg.with_neighbors:
        valid = item.valid_near()
        chosen = medoid(lat, lon, also_lat=item.near_lat[valid], also_lon=item.near_lon[valid])
    else:
        chosen = medoid(lat, lon)
    evidence["candidates"] = [[float(a), float(b)] for a, b in zip(lat, lon, strict=True)]
    evidence["chosen"] = chosen
    return Prediction(
        item.id,
        lat=float(lat[chosen]),
        lon=float(lon[chosen]),
        confidence=agreement(lat, lon, chosen, asked),
        strategy="rag",
        evidence=evidence,
    )
