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

Exclusions (`georag.locate.exclusion`) apply inside the submap too: the restricted search over-fetches and
drops excluded rows until it holds ``rerank_k`` allowed rows or has seen the whole submap.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from georag.errors import GeoRagError
from georag.geo.coords import haversine_km
from georag.llm.client import LLMClient, Sampling
from georag.llm.prior import Prior, ask_prior
from georag.locate.prediction import Prediction
from georag.strategies.rag import RagConfig, rag_predict
from georag.strategies.retrieved import Retrieved

if TYPE_CHECKING:
    from georag.locate.exclusion import ExcludingSearch, QueryTruth
    from georag.store.store import GeoStore
    from georag.store.submaps import Submaps

log = logging.getLogger(__name__)

VPR = "vpr-guided"
HALF_CIRCUMFERENCE_KM = 20037.5
"""Half the Earth's (equatorial) circumference: the distance that maps to 1 in the re-ranking score."""


@dataclass(frozen=True)
class VprConfig:
    """How the vpr-guided route asks for its prior, restricts the search and re-ranks."""

    submap_by: str = "country"
    """The store's submap partition to restrict to: "country" (default) or a k-means one ("kmeans100")."""
    clusters: int = 1
    """k-means partitions: how many clusters nearest to the prior are searched (their union); default 1."""
    min_submap_rows: int = 100
    """A submap with fewer rows is not trusted: the global search stands in; default 100."""
    rerank_k: int = 16
    """Visual candidates retrieved and re-ranked; default 16."""
    prior_weight: float = 0.5
    """w in [0, 1] of the re-ranking score (0: retrieval order, 1: nearest to the prior); default 0.5."""
    sampling: Sampling = field(default_factory=lambda: Sampling(n=5))
    """Sampling of the prior request; default 5 samples at temperature 0.7 (they vote)."""
    hybrid: bool = False
    """Hand the re-ranked candidates to the RAG prompt as its similar set; default False."""

    def __post_init__(self) -> None:
        if not self.submap_by:
            raise GeoRagError("submap_by must name a submap partition of the store (e.g. country)")
        if self.clusters < 1 or self.min_submap_rows < 1 or self.rerank_k < 1:
            raise GeoRagError("clusters, min_submap_rows and rerank_k must be >= 1")
        if not 0.0 <= self.prior_weight <= 1.0:
            raise GeoRagError(f"prior_weight must lie in [0, 1], got {self.prior_weight}")


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


class VprRoute:
    """The vpr-guided route over one store; resolved once (the partition is checked up front)."""

    def __init__(
        self, store: GeoStore, config: VprConfig, *, excluding: ExcludingSearch | None = None
    ) -> None:
        """Raises GeoRagError when the store has no usable partition ``config.submap_by``."""
        self.store, self.config, self.excluding = store, config, excluding
        name = config.submap_by
        if name not in store.manifest.submaps:
            have = sorted(store.manifest.submaps) or "none"
            raise GeoRagError(
                f"{store.path} has no submap partition {name!r} for --submap-by (it has {have}); make one "
                f"with `georag index submaps {store.path} --by country` or `--by kmeans --k 100`"
            )
        self.submaps: Submaps = store.submaps(name)
        scheme = self.submaps.scheme
        if scheme == "country":
            if config.clusters != 1:
                raise GeoRagError(
                    f"--clusters picks k-means clusters; partition {name!r} is by country (use --clusters 1)"
                )
        elif scheme == "kmeans":
            if self.submaps.centroids is None:
                raise GeoRagError(f"k-means partition {name!r} has no cluster centres; recompute it")
            if config.clusters > len(self.submaps):
                raise GeoRagError(
                    f"--clusters {config.clusters} but partition {name!r} has {len(self.submaps)} clusters"
                )
        else:
            raise GeoRagError(f"partition {name!r} is by {scheme!r}; vpr-guided needs country or kmeans")
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

    def search(
        self,
        embedding: npt.NDArray[np.float32],
        ranges: npt.NDArray[np.int64],
        rows: int,
        truth: QueryTruth | None = None,
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32], int]:
        """The top ``rerank_k`` rows of ``ranges`` (``rows`` rows) for one photo: ids, cosines, and how
        many fetched rows the exclusions dropped. With exclusions it over-fetches (2k + 16, doubling) until
        k rows are allowed or the whole submap was seen, so the answer is the exact top k allowed."""
        k = self.config.rerank_k
        q = np.ascontiguousarray(np.asarray(embedding, dtype=np.float32).reshape(1, -1))
        index = self.store.flat_index()
        if self.excluding is None or truth is None:
            res = index.search(q, k, 0, row_ranges=ranges)
            return res.near_ids[0], res.near_scores[0], 0
        fetch = 2 * k + 16
        while True:
            fetch = min(fetch, rows)
            res = index.search(q, fetch, 0, row_ranges=ranges)
            ids, scores = res.near_ids[0], res.near_scores[0]
            keep = (ids >= 0) & ~self.excluding.excluded(ids, truth)
            if int(keep.sum()) >= k or fetch >= rows:
                dropped = int(((ids >= 0) & ~keep).sum())
                return ids[keep][:k], scores[keep][:k], dropped
            fetch *= 2

    def predict(
        self,
        found: Retrieved,
        image: bytes,
        image_mime: str,
        llm: LLMClient,
        rag: RagConfig | None = None,
        truth: QueryTruth | None = None,
    ) -> Prediction:
        """The route for one photo whose global search is ``found`` (its fallback; it must carry the
        embedding). ``rag``: the RAG settings of the hybrid; ``truth``: for the exclusions. Timings per
        stage are in ``evidence["timings"]``."""
        cfg = self.config
        if found.embedding is None:
            raise GeoRagError("the vpr-guided route needs the photo's embedding (Retrieved.embedding)")
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        prior = ask_prior(llm, image, image_mime, cfg.sampling)
        timings["prior_s"] = round(time.perf_counter() - t0, 4)
        choice = self.choose(prior)
        ids: npt.NDArray[np.int64] | None = None
        evidence: dict[str, Any] = {"prior": prior.evidence()}
        submap_ev = {"partition": cfg.submap_by, **choice.evidence()}
        if choice.ranges is not None:
            t1 = time.perf_counter()
            ids, cos, dropped = self.search(found.embedding, choice.ranges, choice.rows, truth)
            timings["submap_search_s"] = round(time.perf_counter() - t1, 5)
            if dropped:
                submap_ev["excluded_rows"] = dropped
            if not (ids >= 0).any():
                ids = None
                choice = SubmapChoice(
                    choice.names,
                    rows=choice.rows,
                    fallback=f"every row of submap {'+'.join(choice.names)} is excluded for this photo",
                    country_from=choice.country_from,
                )
                submap_ev["fallback"] = choice.fallback
        if ids is None:
            # The pipeline's global search (exclusions already applied) is the fallback's candidate list.
            k = cfg.rerank_k
            ids, cos = found.near_ids[:k], found.near_scores[:k]
        route = VPR if choice.fallback is None else f"{VPR}>global"
        fallback = None if choice.fallback is None else f"{choice.fallback}; searched the whole store"
        submap_ev["rows_searched"] = choice.rows if choice.fallback is None else self.store.ntotal
        evidence["submap"] = submap_ev
        valid = ids >= 0
        ids, cos = ids[valid], np.asarray(cos, dtype=np.float32)[valid]
        if ids.size == 0:
            return Prediction(
                found.id, strategy=route, error="no neighbours: the store returned no rows",
                fallback=fallback, evidence={**evidence, "timings": timings},
            )  # fmt: skip
        t2 = time.perf_counter()
        lat, lon = self.store.coordinates(ids)
        if prior.lat is not None and prior.lon is not None:
            dist = haversine_km(lat, lon, prior.lat, prior.lon)
            order = rerank_order(cos, dist, cfg.prior_weight)
        else:
            dist = np.full(ids.size, np.nan)
            order = np.arange(ids.size)
            evidence["rerank_note"] = "no prior coordinates: the visual order stands"
        scores = rerank_scores(cos, dist, cfg.prior_weight)
        timings["rerank_s"] = round(time.perf_counter() - t2, 6)
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
            found.id,
            lat=float(lat[best]),
            lon=float(lon[best]),
            confidence=prior.agreement,
            strategy=route,
            fallback=fallback,
            evidence=evidence,
        )
        if cfg.hybrid:
            ranked = Retrieved(
                found.id, found.path, ids[order], cos[order], lat[order], lon[order],
                found.far_ids, found.far_scores, found.far_lat, found.far_lon,
            )  # fmt: skip
            t3 = time.perf_counter()
            answer = rag_predict(ranked, image, image_mime, llm, rag or RagConfig())
            timings["llm_s"] = round(time.perf_counter() - t3, 4)
            evidence["rag"] = answer.evidence
            if answer.error is None and answer.fallback is None:
                pred.lat, pred.lon, pred.confidence = answer.lat, answer.lon, answer.confidence
                pred.strategy = f"{route}+rag"
            else:
                why = f"hybrid: {answer.fallback or answer.error}; the best re-ranked candidate stands"
                pred.fallback = why if fallback is None else f"{fallback}; {why}"
        if pred.fallback is not None:
            pred.confidence = 0.0  # as for every fallback (see Prediction.confidence)
        pred.evidence["timings"] = timings
        return pred


def _finite(x: float, digits: int) -> float | None:
    """JSON has no NaN: None stands for a missing value."""
    return round(float(x), digits) if math.isfinite(x) else None
