"""Approximate (faiss) indexes over a store: built from the shards chunk by chunk, saved with a checksum."""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from georag.errors import StoreError
from georag.store.files import quick_fingerprint
from georag.store.manifest import AnnInfo, FileEntry, Manifest, check_name
from georag.store.store import BUILTIN_INDEXES
from georag.store.writing import delete_unlisted, fresh_name, remove_leftovers, store_lock, sync_folder

if TYPE_CHECKING:
    from georag.store.store import GeoStore

log = logging.getLogger(__name__)


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


def default_ann_name(factory: str) -> str:
    """The factory string made filename-safe ("IVF4096,Flat" -> "IVF4096_Flat")."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", factory).strip("_.-") or "ann"


def build_ann(
    store: GeoStore,
    factory: str,
    *,
    name: str | None = None,
    train_size: int | None = None,
    seed: int = 1234,
) -> AnnInfo:
    """Builds a faiss ``factory`` index (inner product on the stored, normalized rows) and registers it as
    ``name``.

    The file gets a fresh name, is fsynced, and only then does the manifest switch to it (the index it
    replaces, if any, is deleted after that commit); its SHA-256 in the manifest means it is only ever
    deserialized after the checksum matched. ``name`` defaults to the factory string made filename-safe; it
    may not be "exact" or "cuda" (`GeoStore.index` answers those names with the exact indexes).
    Memory: the index itself, the training sample and one 16384-row chunk. The store must not change while
    the index is built (checked before the commit); reopen the store to use the new index.
    """
    from georag.search.faiss_index import FaissIndex

    name = check_name(name or default_ann_name(factory), "index name")
    if name in BUILTIN_INDEXES:
        raise StoreError(
            f"{name!r} names a built-in index of every store; give the faiss index another --name"
        )
    if store.ntotal == 0:
        raise StoreError(f"{store.path} has no rows to index")
    rows_built = store.manifest.shard_files()
    try:
        # The rows are stored normalized: indexed as they are, so faiss scores what the exact index scores.
        index = FaissIndex(ShardedRows(store), factory, train_size=train_size, seed=seed, normalize=False)
    except ValueError as exc:
        raise StoreError(str(exc)) from exc
    with store_lock(store.path):
        manifest = Manifest.load(store.path)
        if manifest.shard_files() != rows_built:
            raise StoreError(f"{store.path} changed while the index was built; run build-ann again")
        remove_leftovers(store.path, manifest)
        (store.path / "ann").mkdir(exist_ok=True)
        rel = fresh_name(manifest, "ann", name, ".faiss")
        sha = index.save(store.path / rel)
        sync_folder(store.path, "ann")
        size = (store.path / rel).stat().st_size
        manifest.files[rel] = FileEntry(sha256=sha, bytes=size, quick=quick_fingerprint(store.path / rel))
        old = manifest.ann.get(name)
        info = AnnInfo(file=rel, factory=factory, rows=store.ntotal)
        manifest.ann[name] = info
        if old is not None:
            manifest.files.pop(old.file, None)
        manifest.save(store.path)
        if old is not None:
            delete_unlisted(store.path, manifest, [old.file])
    log.info("built %s (%s) over %d rows: %d bytes", name, factory, store.ntotal, size)
    return info
