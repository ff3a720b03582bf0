"""The RAG route (Bicakci et al.; Img2Loc): the LLM sees neighbors' coordinates; parse; choose by a rule."""

from __future__ import annotations

from typing import Any

import numpy as np

from georag.config import RagConfig
from georag.errors import InputError
from georag.geo.clusters import regions
from georag.geo.select import agreement_at
from georag.geo.selection import Candidates, choose
from georag.llm.parse import parse_coordinates
from georag.llm.prompts import build_prompt
from georag.strategies.knn import as_fallback
from georag.strategies.route import Answers, Ask, Route
from georag.types import Completion, Photo, Prediction, Prompt, Retrieved


def rag_route(item: Retrieved, image: Photo, cfg: RagConfig) -> Route:
    """Asks every variant for ``item`` in one round, then chooses (`rag_choose`)."""
    prompts = tuple(
        build_prompt(
            variant,
            image.data,
            near_lat=item.near_lat,
            near_lon=item.near_lon,
            far_lat=item.far_lat,
            far_lon=item.far_lon,
            image_mime=image.mime,
        )
        for variant in cfg.variants
    )
    answers = yield Ask(prompts, cfg.sampling)
    return rag_choose(item, prompts, answers, cfg)


def rag_choose(item: Retrieved, prompts: tuple[Prompt, ...], answers: Answers, cfg: RagConfig) -> Prediction:
    """Parses every answer and chooses among the coordinates they state by ``cfg.select``
    (`georag.geo.selection`; default the geodesic medoid).

    Candidates are the parsed answers of all variants and samples. Confidence = the share of all requested
    samples that answered within 100 km of the pick (`georag.geo.select.agreement_at`; a calibration file
    turns it into a probability, `georag.geo.calibration`). The evidence holds the candidates, the rule,
    and up to ``cfg.regions`` regions of the answers (`georag.geo.clusters.regions`). When no answer
    parses (refusals, garbage, every request failed), the prediction falls back to the top-1 neighbor and
    says so in ``fallback``.
    """
    records: list[dict[str, Any]] = []
    cand_lat: list[float] = []
    cand_lon: list[float] = []
    errors: list[str] = []
    for variant, prompt, done in zip(cfg.variants, prompts, answers, strict=True):
        if not isinstance(done, Completion):
            errors.append(f"{variant}: {done}")
            continue
        for text in done.texts:
            coords = parse_coordinates(text, prompt=prompt.user)
            records.append(
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
        "answers": records,
        "llm_errors": errors,
        "asked": asked,
    }
    if not cand_lat:
        reason = (
            f"every LLM request failed ({errors[0]})"
            if errors and not records
            else f"none of the {len(records)} LLM answers stated coordinates"
        )
        pred = as_fallback(item, reason, "rag")
        pred.evidence.update(evidence)
        return pred
    lat, lon = np.array(cand_lat), np.array(cand_lon)
    valid = item.valid_near()
    cands = Candidates.of(lat, lon, item.near_lat[valid], item.near_lon[valid])
    pick = choose(cfg.select, cands, radius_km=cfg.select_km, with_neighbors=cfg.with_neighbors)
    evidence["candidates"] = [[float(a), float(b)] for a, b in zip(lat, lon, strict=True)]
    evidence["chosen"] = pick.index
    evidence["select"] = {"rule": pick.rule, "radius_km": cfg.select_km}
    if pick.note is not None:
        evidence["select"]["note"] = pick.note
    found = regions(lat, lon, asked, k=cfg.regions, radius_km=cfg.select_km)
    evidence["regions"] = [r.record() for r in found]
    return Prediction(
        item.id,
        lat=pick.lat,
        lon=pick.lon,
        confidence=agreement_at(lat, lon, pick.lat, pick.lon, asked),
        strategy="rag",
        evidence=evidence,
    )


class Rag:
    """The rag strategy."""

    name = "rag"
    needs_llm = True
    needs_embedding = False

    def __init__(self, config: RagConfig) -> None:
        self.config = config
        self.k_near = max(v.k_near for v in config.variants)

    def route(self, item: Retrieved, image: Photo | None) -> Route:
        """Ask, parse, choose."""
        if image is None:
            raise InputError("the rag route needs the photo")
        return rag_route(item, image, self.config)
