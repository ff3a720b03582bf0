"""Approximate (faiss) indexes over a store: built from the shards chunk by chunk, saved with a checksum."""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from georag.errors import StoreError
from georag.store.build import store_lock
from georag.store.files import quick_fingerprint
from georag.store.manifest import AnnInfo, FileEntry, Manifest

if TYPE_CHECKING:
    from georag.store.store import GeoStore

log = logging.getLogger(__name__)

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


class ShardedRows:
    """A store's shards seen as one read-only (N, d) float32 matrix (a `RowSource`): no full copy is made."""

    def __init__(self, store: GeoStore) -> None:
        self._store = store
        self._starts = np.array([s.first_row for s in store.manifest.shards] + [store.ntotal], dtype=np.int64)
        self._shards = list(store.embedding_shards())

    @property
    def shape(self) -> tuple[int, int]:
        return (self._store.ntotal, self._store.dim)

    @property
    def dtype(self) -> np.dtype[Any]:
        return np.dtype(np.float32)

    @property
    def ndim(self) -> int:
        return 2

    def __getitem__(self, rows: slice | npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        if isinstance(rows, slice):
            start, stop, step = rows.indices(self._store.ntotal)
            if step != 1:
                raise ValueError("ShardedRows takes contiguous slices")
            out = np.empty((max(stop - start, 0), self._store.dim), dtype=np.float32)
            for j, shard in enumerate(self._shards):
                lo, hi = max(start, self._starts[j]), min(stop, self._starts[j + 1])
                if lo < hi:
                    out[lo - start : hi - start] = shard[lo - self._starts[j] : hi - self._starts[j]]
            return out
        return self._store.embeddings(rows)


def build_ann(
    store: GeoStore,
    factory: str,
    *,
    name: str | None = None,
    train_size: int | None = None,
    seed: int = 1234,
) -> AnnInfo:
    """Builds a faiss ``factory`` index (inner product on the normalized rows) and registers it.

    The file is written atomically to ``ann/<name>.faiss`` and its SHA-256 recorded in the manifest, so it
    is only ever deserialized after the checksum matched. ``name`` defaults to the factory string made
    filename-safe. Memory: the index itself, the training sample and one 16384-row chunk.
    """
    from georag.search.faiss_index import FaissIndex

    name = name or re.sub(r"[^A-Za-z0-9_.-]+", "_", factory).strip("_.-") or "ann"
    if not _NAME.fullmatch(name):
        raise StoreError(f"index name {name!r} must be 1-64 letters, digits, '_', '.', '-'")
    if store.ntotal == 0:
        raise StoreError(f"{store.path} has no rows to index")
    try:
        index = FaissIndex(ShardedRows(store), factory, train_size=train_size, seed=seed)
    except ValueError as exc:
        raise StoreError(str(exc)) from exc
    rel = f"ann/{name}.faiss"
    with store_lock(store.path):
        manifest = Manifest.load(store.path)
        if manifest.num_rows != store.ntotal:
            raise StoreError(f"{store.path} changed while the index was built; run build-ann again")
        (store.path / "ann").mkdir(exist_ok=True)
        sha = index.save(store.path / rel)
        size = (store.path / rel).stat().st_size
        manifest.files[rel] = FileEntry(sha256=sha, bytes=size, quick=quick_fingerprint(store.path / rel))
        info = AnnInfo(file=rel, factory=factory, rows=store.ntotal)
        manifest.ann[name] = info
        manifest.save(store.path)
    store.manifest = manifest
    log.info("built %s (%s) over %d rows: %d bytes", name, factory, store.ntotal, size)
    return info
