"""The vpr-guided route (Waheed et al. 2025): LLM prior, retrieval inside its submap, geographic re-ranking.

Per photo:

1. **Prior.** One request of ``sampling.n`` samples asks for the country (ISO code) and a coordinate guess;
   the samples vote (`georag.llm.prior`).
2. **Submap.** A country partition: the voted country's submap (when no sample named a country, the
   country at the prior's coordinates, by offline reverse geocoding). A k-means partition: the ``clusters``
   clusters whose centres are nearest to the prior's coordinates, their row ranges united. The exact index
   is searched over those rows only (``FlatIndex.search(row_ranges=...)``) for the top ``rerank_k``.
   No usable prior, a country the store has no rows of, or a submap of fewer than ``min_submap_rows``
   rows: the global search of the pipeline stands in, and the prediction says so (strategy
   ``vpr-guided>global``, the reason in ``fallback``); its top ``rerank_k`` are re-ranked the same way.
3. **Re-ranking.** The candidates (in visual order) are re-ranked by::

       score = (1 - w) * cos - w * d_km / 20037.5

   ``cos`` is the cosine similarity of the photo and the candidate (the search score, in [-1, 1]), ``d_km``
   the great-circle distance from the candidate to the prior's coordinates, 20,037.5 km half the Earth's
   circumference (so the distance term lies in [0, 1]), ``w`` = ``prior_weight``. w = 0 keeps the
   retrieval order, w = 1 orders by distance to the prior; ties keep the visual order. At w = 0.5 a
   candidate 1,000 km nearer the prior outranks one whose cosine is 0.05 higher. Without prior
   coordinates the visual order stands. The prediction is the best candidate's coordinates.
4. **Confidence** = the prior's agreement: the share of the requested prior samples whose coordinates lie
   within 100 km of the prior's medoid (0 when no sample stated coordinates). It says how sure the LLM
   was of the region the answer was looked for in.
5. **Hybrid** (optional): the re-ranked candidates become the "similar" set of the RAG prompt (the
   dissimilar set comes from the global search) and the RAG route answers (strategy ``vpr-guided+rag``,
   its own confidence); when none of its answers parses, the best re-ranked candidate stands.

The route does no I/O: it yields the prior request and the submap search (`georag.strategies.route`); the
driver answers them, applying its exclusions (`georag.locate.exclusion`) inside the submap too.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt

from georag.config import RagConfig, VprConfig
from georag.errors import ConfigError, InputError
from georag.geo.coords import haversine_km
from georag.llm.prior import build_prior_prompt
from georag.strategies.prior import Prior, prior_of
from georag.strategies.rag import rag_route
from georag.strategies.route import Ask, Found, Route, Search
from georag.types import Photo, Prediction, Retrieved

if TYPE_CHECKING:
    from georag.store.submaps import Submaps

VPR = "vpr-guided"
HALF_CIRCUMFERENCE_KM = 20037.5
"""Half the Earth's (equatorial) circumference: the distance that maps to 1 in the re-ranking score."""


def rerank_scores(cos: npt.ArrayLike, distance_km: npt.ArrayLike, weight: float) -> npt.NDArray[np.float64]:
    """``(1 - w) * cos - w * distance_km / 20037.5`` for each candidate (see the module docstring)."""
    c = np.asarray(cos, dtype=np.float64)
    d = np.asarray(distance_km, dtype=np.float64)
    return (1.0 - weight) * c - weight * (d / HALF_CIRCUMFERENCE_KM)


def rerank_order(cos: npt.ArrayLike, distance_km: npt.ArrayLike, weight: float) -> npt.NDArray[np.int64]:
    """Candidate indices by descending score; candidates must come in visual order, which breaks ties."""
    scores = rerank_scores(cos, distance_km, weight)
    return np.argsort(-scores, kind="stable").astype(np.int64)


@dataclass(frozen=True)
class SubmapChoice:
    """Where the restricted search runs for one photo, or why the global search stands in."""

    names: tuple[str, ...] = ()
    """The chosen submaps (a country code, or k-means cluster names)."""
    ranges: npt.NDArray[np.int64] | None = None
    """Their row ranges, (m, 2) [start, end); None: search the whole store."""
    rows: int = 0
    """Rows in those submaps."""
    fallback: str | None = None
    """Why the whole store is searched instead (None when restricted)."""
    country_from: str | None = None
    """Country partitions: "prior" (the samples named it) or "coordinates" (reverse geocoded)."""

    def evidence(self) -> dict[str, Any]:
        out: dict[str, Any] = {"chosen": list(self.names), "rows": self.rows}
        if self.country_from is not None:
            out["country_from"] = self.country_from
        if self.fallback is not None:
            out["fallback"] = self.fallback
        return out


class SubmapSource(Protocol):
    """Where the route finds its partition (a `GeoStore` is one)."""

    @property
    def path(self) -> Any:
        """Shown in messages."""
        ...

    @property
    def ntotal(self) -> int:
        """Rows of the whole store."""
        ...

    def submap_names(self) -> list[str]:
        """The partitions the store has."""
        ...

    def submaps(self, name: str) -> Submaps:
        """The partition ``name``."""
        ...


class VprGuided:
    """The vpr-guided strategy over one store's partition, checked once, up front."""

    name = VPR
    needs_llm = True
    needs_embedding = True

    def __init__(self, config: VprConfig, rag: RagConfig, store: SubmapSource) -> None:
        """Raises ConfigError when the store has no usable partition ``config.submap_by``."""
        self.config, self.rag, self.ntotal = config, rag, store.ntotal
        self.k_near = config.rerank_k
        name = config.submap_by
        have = store.submap_names()
        if name not in have:
            raise ConfigError(
                f"{store.path} has no submap partition {name!r} for --submap-by (it has "
                f"{sorted(have) or 'none'}); make one with `georag index submaps {store.path} --by country` "
                "or `--by kmeans --k 100`"
            )
        self.submaps: Submaps = store.submaps(name)
        scheme = self.submaps.scheme
        if scheme == "country":
            if config.clusters != 1:
                raise ConfigError(
                    f"--clusters picks k-means clusters; partition {name!r} is by country (use --clusters 1)"
                )
        elif scheme == "kmeans":
            if self.submaps.centroids is None:
                raise ConfigError(f"k-means partition {name!r} has no cluster centres; recompute it")
            if config.clusters > len(self.submaps):
                raise ConfigError(
                    f"--clusters {config.clusters} but partition {name!r} has {len(self.submaps)} clusters"
                )
        else:
            raise ConfigError(f"partition {name!r} is by {scheme!r}; vpr-guided needs country or kmeans")
        self._names = frozenset(self.submaps.names)

    def choose(self, prior: Prior) -> SubmapChoice:
        """The submap(s) ``prior`` points to, or the reason to search the whole store."""
        cfg, part = self.config, self.config.submap_by
        if not prior.parsed:
            why = (
                f"the prior request failed ({prior.errors[0]})"
                if prior.errors
                else f"none of the {len(prior.answers)} prior answers stated a country or coordinates"
            )
            return SubmapChoice(fallback=f"no usable prior: {why}")
        country_from = None
        if self.submaps.scheme == "country":
            code, country_from = prior.country, "prior"
            if code is None:
                from georag.geo.countries import countries_at

                assert prior.lat is not None and prior.lon is not None
                code, country_from = str(countries_at([prior.lat], [prior.lon])[0]), "coordinates"
            if code not in self._names:
                return SubmapChoice(
                    (code,),
                    fallback=f"the store has no rows in country {code} (partition {part!r})",
                    country_from=country_from,
                )
            names: tuple[str, ...] = (code,)
        else:
            if prior.lat is None or prior.lon is None:
                return SubmapChoice(
                    fallback="the prior states no coordinates, which choosing a k-means cluster needs"
                )
            names = tuple(self.submaps.nearest_clusters(prior.lat, prior.lon, cfg.clusters))
        rows = sum(self.submaps.size(n) for n in names)
        label = "+".join(names)
        if rows < cfg.min_submap_rows:
            return SubmapChoice(
                names,
                rows=rows,
                fallback=f"submap {label} of {part!r} holds {rows} rows, fewer than min_submap_rows "
                f"{cfg.min_submap_rows}",
                country_from=country_from,
            )
        ranges = np.concatenate([self.submaps.ranges(n) for n in names], axis=0)
        return SubmapChoice(names, ranges, rows, country_from=country_from)

    def route(self, item: Retrieved, image: Photo | None) -> Route:
        """The route for one photo whose global search is ``item`` (its fallback; it must carry the
        embedding)."""
        cfg = self.config
        if image is None:
            raise InputError("the vpr-guided route needs the photo")
        if item.embedding is None:
            raise InputError("the vpr-guided route needs the photo's embedding (Retrieved.embedding)")
        prompt = build_prior_prompt(image.data, image.mime)
        (done,) = yield Ask((prompt,), cfg.sampling, stage="prior")
        prior = prior_of(done, prompt, cfg.sampling.n)
        choice = self.choose(prior)
        found: Found | None = None
        evidence: dict[str, Any] = {"prior": prior.evidence()}
        submap_ev = {"partition": cfg.submap_by, **choice.evidence()}
        if choice.ranges is not None:
            found = yield Search(item.embedding, cfg.rerank_k, choice.ranges, choice.rows)
            if found.excluded:
                submap_ev["excluded_rows"] = found.excluded
            if found.ids.size == 0:
                found = None
                choice = SubmapChoice(
                    choice.names,
                    rows=choice.rows,
                    fallback=f"every row of submap {'+'.join(choice.names)} is excluded for this photo",
                    country_from=choice.country_from,
                )
                submap_ev["fallback"] = choice.fallback
        if found is None:
            # The driver's global search (its exclusions already applied) is the fallback's candidate list.
            k = cfg.rerank_k
            keep = item.near_ids[:k] >= 0
            found = Found(
                item.near_ids[:k][keep], item.near_scores[:k][keep], item.near_lat[:k][keep],
                item.near_lon[:k][keep],
            )  # fmt: skip
        route = VPR if choice.fallback is None else f"{VPR}>global"
        fallback = None if choice.fallback is None else f"{choice.fallback}; searched the whole store"
        submap_ev["rows_searched"] = choice.rows if choice.fallback is None else self.ntotal
        evidence["submap"] = submap_ev
        ids, cos = found.ids, np.asarray(found.scores, dtype=np.float32)
        if ids.size == 0:
            return Prediction(
                item.id, strategy=route, error="no neighbors: the store returned no rows",
                fallback=fallback, evidence=evidence,
            )  # fmt: skip
        t2 = time.perf_counter()
        lat, lon = found.lat, found.lon
        if prior.lat is not None and prior.lon is not None:
            dist = haversine_km(lat, lon, prior.lat, prior.lon)
            order = rerank_order(cos, dist, cfg.prior_weight)
        else:
            dist = np.full(ids.size, np.nan)
            order = np.arange(ids.size)
            evidence["rerank_note"] = "no prior coordinates: the visual order stands"
        scores = rerank_scores(cos, dist, cfg.prior_weight)
        timings = {"rerank_s": time.perf_counter() - t2}
        evidence["rerank"] = {"weight": cfg.prior_weight, "k": cfg.rerank_k}
        evidence["candidates"] = [
            {
                "row": int(ids[i]),
                "lat": float(lat[i]),
                "lon": float(lon[i]),
                "cos": round(float(cos[i]), 6),
                "distance_km": _finite(dist[i], 3),
                "score": _finite(scores[i], 6),
                "visual_rank": int(i),
            }
            for i in order
        ]
        best = int(order[0])
        pred = Prediction(
            item.id,
            lat=float(lat[best]),
            lon=float(lon[best]),
            confidence=prior.agreement,
            strategy=route,
            fallback=fallback,
            evidence=evidence,
        )
        if cfg.hybrid:
            ranked = Retrieved(
                item.id, ids[order], cos[order], lat[order], lon[order],
                item.far_ids, item.far_scores, item.far_lat, item.far_lon,
            )  # fmt: skip
            rag = yield from rag_route(ranked, image, self.rag)
            evidence["rag"] = rag.evidence
            if rag.error is None and rag.fallback is None:
                pred.lat, pred.lon, pred.confidence = rag.lat, rag.lon, rag.confidence
                pred.strategy = f"{route}+rag"
            else:
                why = f"hybrid: {rag.fallback or rag.error}; the best re-ranked candidate stands"
                pred.fallback = why if fallback is None else f"{fallback}; {why}"
        if pred.fallback is not None:
            pred.confidence = 0.0  # as for every fallback (see Prediction.confidence)
        pred.evidence["timings"] = timings
        return pred


def _finite(x: float, digits: int) -> float | None:
    """JSON has no NaN: None stands for a missing value."""
    return round(float(x), digits) if math.isfinite(x) else None
