"""Near-duplicates between a benchmark and a store: gallery rows whose cosine to a query photo is above a bar.

A benchmark photo with a near-copy in the gallery (the same photo re-uploaded, a burst of shots) is found at
~0 km by retrieval, which inflates street-level scores; listing those pairs shows how much of a benchmark a
gallery leaks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from georag.errors import InputError
from georag.store.store import GeoStore


@dataclass(frozen=True)
class DuplicatePair:
    """A query photo and a gallery row at least as similar as the threshold."""

    query: str
    """The query's id."""
    row: int
    """The gallery row id."""
    image_id: str
    """The gallery row's image id."""
    source: str
    """The gallery row's source."""
    author: str | None
    """The gallery row's author."""
    cosine: float
    """Cosine similarity of the two embeddings."""


def near_duplicates(
    store: GeoStore,
    embeddings: npt.NDArray[np.float32],
    ids: Sequence[str],
    threshold: float,
    *,
    k: int = 64,
) -> list[DuplicatePair]:
    """Every (query, gallery row) pair with cosine >= ``threshold``, most similar first per query.

    Searches the top ``k`` and, for a query whose k-th neighbor is still above the bar, searches again with
    twice the k until it is not (or the whole store was searched), so no pair is missed.
    """
    if not -1.0 <= threshold <= 1.0:
        raise InputError(f"the cosine threshold must be in [-1, 1], got {threshold}")
    if embeddings.shape[0] != len(ids):
        raise InputError(f"{embeddings.shape[0]} embeddings but {len(ids)} ids")
    meta = store.metadata
    image_ids, sources = meta.column("image_id").to_pylist(), meta.column("source").to_pylist()
    authors = meta.column("author").to_pylist()
    out: list[DuplicatePair] = []
    todo = np.arange(len(ids))
    kk = min(k, store.ntotal)
    while todo.size and kk > 0:
        res = store.search(embeddings[todo], kk, 0)
        again = []
        for j, q in enumerate(todo):
            row_ids, scores = res.near_ids[j], res.near_scores[j]
            if scores[-1] >= threshold and kk < store.ntotal:
                again.append(q)
                continue
            for r, s in zip(row_ids, scores, strict=True):
                if r >= 0 and s >= threshold:
                    out.append(DuplicatePair(ids[q], int(r), image_ids[r], sources[r], authors[r], float(s)))
        todo = np.array(again, dtype=np.int64)
        kk = min(2 * kk, store.ntotal)
    order = {q: i for i, q in enumerate(ids)}
    out.sort(key=lambda p: (order[p.query], -p.cosine, p.row))
    return out
