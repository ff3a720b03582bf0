"""Submaps of a store: compute a partition of its rows (country, k-means), optionally reorder rows by it."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from georag.errors import StoreError
from georag.store.build import store_lock
from georag.store.files import quick_fingerprint, write_bytes, write_npy
from georag.store.manifest import FileEntry, Manifest, ShardInfo, SubmapInfo
from georag.store.metadata import SCHEMA, to_parquet_bytes
from georag.store.store import GeoStore
from georag.store.submaps import (
    Submaps,
    country_submaps,
    kmeans_submaps,
    reorder_permutation,
    save_submaps,
    submaps_from_labels,
)

log = logging.getLogger(__name__)

SCHEMES = ("country", "kmeans")


def make_submaps(
    store_path: str | Path,
    by: str,
    *,
    k: int = 100,
    seed: int = 1234,
    name: str | None = None,
    reorder: bool = False,
) -> Submaps:
    """Partitions the store's rows by ``by`` ("country" or "kmeans" with ``k`` clusters) and saves it.

    Country codes come from offline reverse geocoding of each row's coordinates (one scheme for every
    source of a hybrid store, whatever labels the datasets carry); k-means runs on the coordinates as 3D
    unit vectors. With ``reorder``, the store's rows are first rewritten in submap order so that each
    submap is ONE contiguous row range (fast restricted search); row ids change, so the store's other
    submaps are recomputed and its ANN indexes dropped (rebuild them). Returns the new partition.
    """
    if by not in SCHEMES:
        raise StoreError(f"--by must be one of {SCHEMES}, got {by!r}")
    name = name or ("country" if by == "country" else f"kmeans{k}")
    store = GeoStore.open(store_path)
    sub = _compute(store, by, k, seed)
    with store_lock(store.path):
        manifest = Manifest.load(store.path)
        if manifest.num_rows != store.ntotal:
            raise StoreError(f"{store.path} changed while submaps were computed; run the command again")
        if reorder:
            perm = reorder_permutation(sub.labels)
            _rewrite_rows(store, manifest, perm)
            sub = submaps_from_labels(sub.scheme, sub.names, sub.labels[perm], sub.centroids)
            others = {n: i for n, i in manifest.submaps.items() if n != name}
            for n in list(manifest.submaps):
                _drop(store.path, manifest, manifest.submaps.pop(n).file)
            for n in list(manifest.ann):
                log.warning("ANN index %s indexed the old row order; dropped: rebuild it with build-ann", n)
                _drop(store.path, manifest, manifest.ann.pop(n).file)
            manifest.save(store.path)
            reopened = GeoStore.open(store.path, verify="none")
            for n, info in others.items():
                old_k = info.count if info.scheme == "kmeans" else k
                _save(store.path, manifest, n, _compute(reopened, info.scheme, old_k, seed), contiguous=False)
        _save(store.path, manifest, name, sub, contiguous=reorder)
        manifest.save(store.path)
    return sub


def _compute(store: GeoStore, by: str, k: int, seed: int) -> Submaps:
    if store.ntotal == 0:
        raise StoreError(f"{store.path} has no rows to partition")
    if by == "country":
        return country_submaps(store.lat, store.lon)
    return kmeans_submaps(store.lat, store.lon, k, seed=seed)


def _save(root: Path, manifest: Manifest, name: str, sub: Submaps, *, contiguous: bool) -> None:
    rel = f"submaps/{name}.npz"
    (root / "submaps").mkdir(exist_ok=True)
    save_submaps(root / rel, sub)
    from georag.store.files import sha256_file

    manifest.files[rel] = FileEntry(
        sha256=sha256_file(root / rel), bytes=(root / rel).stat().st_size, quick=quick_fingerprint(root / rel)
    )
    manifest.submaps[name] = SubmapInfo(
        file=rel, scheme=sub.scheme, count=len(sub), rows=sub.num_rows, contiguous=contiguous
    )


def _drop(root: Path, manifest: Manifest, rel: str) -> None:
    manifest.files.pop(rel, None)
    (root / rel).unlink(missing_ok=True)


def _rewrite_rows(store: GeoStore, manifest: Manifest, perm: npt.NDArray[np.int64]) -> None:
    """Rewrites every shard so that new row i is old row perm[i]; commits with one manifest write.

    New shard files are written under new names first; the manifest switch is atomic, so an interruption
    leaves the old store intact (the new files are leftovers the next build removes).
    """
    generation = 1 + max((_generation(s.embeddings) for s in manifest.shards), default=0)
    rows_per = manifest.shard_rows
    new_shards: list[ShardInfo] = []
    new_files: dict[str, FileEntry] = {}
    for j, start in enumerate(range(0, len(perm), rows_per)):
        take = perm[start : start + rows_per]
        stem = f"shards/r{generation}-{j:06d}"
        emb = store.embeddings(take).astype(manifest.dtype)
        meta = (
            store.rows(take)
            .set_column(0, "row_id", pa.array(np.arange(start, start + len(take), dtype=np.int64)))
            .cast(SCHEMA)
        )
        for rel, (sha, size) in (
            (f"{stem}.npy", write_npy(store.path / f"{stem}.npy", emb)),
            (f"{stem}.parquet", write_bytes(store.path / f"{stem}.parquet", to_parquet_bytes(meta))),
        ):
            new_files[rel] = FileEntry(sha, size, quick_fingerprint(store.path / rel))
        new_shards.append(
            ShardInfo(
                source="*",
                first_row=start,
                rows=len(take),
                input_start=-1,
                input_end=-1,
                embeddings=f"{stem}.npy",
                metadata=f"{stem}.parquet",
            )
        )
    old = [p for s in manifest.shards for p in (s.embeddings, s.metadata)]
    for rel in old:
        manifest.files.pop(rel, None)
    manifest.files.update(new_files)
    manifest.shards = new_shards
    manifest.save(store.path)
    for rel in old:
        (store.path / rel).unlink(missing_ok=True)


def _generation(rel: str) -> int:
    stem = Path(rel).stem
    if stem.startswith("r") and "-" in stem and stem[1 : stem.index("-")].isdigit():
        return int(stem[1 : stem.index("-")])
    return 0
