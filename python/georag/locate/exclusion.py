"""Leakage control: search the store without the rows a benchmark query must not see.

YFCC4k and MP-16 share photographers, and IM2GPS-style benchmarks hold series of one author's photos taken
at one spot, so a gallery can contain near-copies of a test photo: retrieving them inflates street-level
scores. Two exclusions, per query: rows by the query's author (``same_author``), and rows within
``radius_km`` of the query's TRUE location (a leakage-free ablation: nothing from the right place may help).

The core searches row ranges, not per-query masks, so the search over-fetches: it asks for k plus a margin,
drops excluded rows, and asks again with twice as many for the queries still short of k, until they have k
rows or the whole store was searched. The answer is exactly the top k of the allowed rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import numpy.typing as npt

from georag.config import ExclusionConfig
from georag.errors import ConfigError, InputError
from georag.geo.coords import haversine_km
from georag.store.store import GeoStore
from georag.types import Neighbors


@dataclass(frozen=True)
class QueryTruth:
    """What the exclusions need to know of a query photo."""

    lat: float
    """True latitude."""
    lon: float
    """True longitude."""
    author: str | None = None
    """Author / uploader id (as the gallery's metadata spells it), or None."""


class ExcludingSearch:
    """`GeoStore.search` with per-query exclusions (see the module docstring)."""

    def __init__(self, store: GeoStore, exclusion: ExclusionConfig) -> None:
        """ConfigError for a same-author exclusion over a store that records no author (it would exclude
        nothing, and a run would look leakage-controlled when it is not)."""
        self.store = store
        self.exclusion = exclusion
        if exclusion.same_author and not any(a for a in self._authors):
            raise ConfigError(
                f"--exclude-same-author: {store.path} records no author for any row (its dataset reader "
                "had no author column), so nothing would be excluded; build the store from metadata with "
                "authors, or drop the option"
            )

    @cached_property
    def _authors(self) -> npt.NDArray[np.object_]:
        return np.asarray(self.store.metadata.column("author").to_pylist(), dtype=object)

    def excluded(self, ids: npt.NDArray[np.int64], truth: QueryTruth) -> npt.NDArray[np.bool_]:
        """Which of the row ids (any shape; -1 = padding, never excluded) this query may not see."""
        out = np.zeros(ids.shape, dtype=bool)
        valid = ids >= 0
        rows = ids[valid]
        drop = np.zeros(rows.shape, dtype=bool)
        if self.exclusion.same_author and truth.author:
            drop |= self._authors[rows] == truth.author
        if self.exclusion.radius_km is not None:
            d = haversine_km(self.store.lat[rows], self.store.lon[rows], truth.lat, truth.lon)
            drop |= d <= self.exclusion.radius_km
        out[valid] = drop
        return out

    def search(
        self,
        queries: npt.NDArray[np.float32],
        truths: Sequence[QueryTruth],
        k_near: int,
        k_far: int,
        *,
        index: str | None = None,
    ) -> tuple[Neighbors, npt.NDArray[np.int64]]:
        """The top ``k_near`` / ``k_far`` ALLOWED rows of each query, with their coordinates; how many
        fetched rows were dropped per query. ``index``: the store's index by name (default its own)."""
        b = len(truths)
        if queries.shape[0] != b:
            raise InputError(f"{queries.shape[0]} queries but {b} truths")
        near_i = np.full((b, k_near), -1, dtype=np.int64)
        near_s = np.full((b, k_near), np.nan, dtype=np.float32)
        far_i = np.full((b, k_far), -1, dtype=np.int64)
        far_s = np.full((b, k_far), np.nan, dtype=np.float32)
        dropped = np.zeros(b, dtype=np.int64)
        todo = np.arange(b)
        fetch = max(k_near, k_far) * 2 + 16
        n = self.store.ntotal
        while todo.size:
            fetch = min(fetch, n)
            res = self.store.search(
                queries[todo], min(k_near and fetch, n), min(k_far and fetch, n), index=index
            )
            short = []
            for j, q in enumerate(todo):
                ok_n = self._take(res.near_ids[j], res.near_scores[j], truths[q], near_i[q], near_s[q])
                ok_f = self._take(res.far_ids[j], res.far_scores[j], truths[q], far_i[q], far_s[q])
                seen = int((res.near_ids[j] >= 0).sum())
                dropped[q] = seen - ok_n[1]
                if (ok_n[0] < k_near or ok_f[0] < k_far) and fetch < n:
                    short.append(q)
            todo = np.array(short, dtype=np.int64)
            fetch *= 2
        found = Neighbors(near_i, near_s, far_i, far_s)
        return found.with_coordinates(self.store.coordinates(near_i), self.store.coordinates(far_i)), dropped

    def _take(
        self,
        ids: npt.NDArray[np.int64],
        scores: npt.NDArray[np.float32],
        truth: QueryTruth,
        out_ids: npt.NDArray[np.int64],
        out_scores: npt.NDArray[np.float32],
    ) -> tuple[int, int]:
        """Fills the output row with the first allowed ids (score order); returns (filled, allowed seen)."""
        keep = (ids >= 0) & ~self.excluded(ids, truth)
        allowed_ids, allowed_scores = ids[keep], scores[keep]
        k = min(out_ids.size, allowed_ids.size)
        out_ids[:k] = allowed_ids[:k]
        out_scores[:k] = allowed_scores[:k]
        out_ids[k:] = -1
        out_scores[k:] = np.nan
        return k, int(allowed_ids.size)
