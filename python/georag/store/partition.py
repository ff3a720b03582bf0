"""Submaps of a store: compute a partition of its rows (country, k-means), optionally reorder rows by it."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from georag.errors import StoreError
from georag.store.files import quick_fingerprint, sha256_file, write_bytes, write_npy
from georag.store.manifest import FORMAT_VERSION, FileEntry, Manifest, ShardInfo, SubmapInfo, check_name
from georag.store.metadata import to_parquet_bytes, with_row_crc32
from georag.store.rowcheck import check_crc32
from georag.store.store import GeoStore
from georag.store.submaps import (
    Submaps,
    country_submaps,
    kmeans_submaps,
    reorder_permutation,
    save_submaps,
    submaps_from_labels,
)
from georag.store.writing import delete_unlisted, fresh_name, remove_leftovers, store_lock, sync_folder

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
    unit vectors. With ``reorder``, the store's rows are rewritten in submap order so that each submap is
    ONE contiguous row range (fast restricted search). Row ids change: the store's other partitions are
    carried over (their labels permuted with the rows) and its ANN indexes dropped (rebuild them). Everything
    switches in one manifest commit, so an interruption leaves the store as it was. Returns the partition.
    """
    if by not in SCHEMES:
        raise StoreError(f"--by must be one of {SCHEMES}, got {by!r}")
    name = check_name(name or ("country" if by == "country" else f"kmeans{k}"), "submaps name")
    store = GeoStore.open(store_path)
    if store.ntotal == 0:
        raise StoreError(f"{store.path} has no rows to partition")
    rows_seen = store.manifest.shard_files()
    sub = (
        country_submaps(store.lat, store.lon)
        if by == "country"
        else kmeans_submaps(store.lat, store.lon, k, seed=seed)
    )
    with store_lock(store.path):
        manifest = Manifest.load(store.path)
        if manifest.shard_files() != rows_seen:
            raise StoreError(f"{store.path} changed while submaps were computed; run the command again")
        remove_leftovers(store.path, manifest)
        replaced = [manifest.submaps[name].file] if name in manifest.submaps else []
        partitions: dict[str, Submaps] = {name: sub}
        if reorder:
            perm = reorder_permutation(sub.labels)
            replaced += _rewrite_rows(store, manifest, perm)
            partitions = {name: _permuted(sub, perm)}
            for other, info in manifest.submaps.items():
                if other == name:
                    continue
                if info.rows == store.ntotal:
                    partitions[other] = _permuted(store.submaps(other), perm)
                else:
                    log.warning("submaps %s were stale (rows added since); dropped: recompute them", other)
                replaced.append(info.file)
            for ann_name, ann in manifest.ann.items():
                log.warning(
                    "ANN index %s indexed the old row order; dropped: rebuild it with build-ann", ann_name
                )
                replaced.append(ann.file)
            manifest.ann.clear()
            manifest.submaps.clear()
        (store.path / "submaps").mkdir(exist_ok=True)
        for part_name, part in partitions.items():
            _add_partition(store.path, manifest, part_name, part)
        sync_folder(store.path, "submaps")
        for rel in replaced:
            manifest.files.pop(rel, None)
        manifest.save(store.path)
        delete_unlisted(store.path, manifest, replaced)
    return partitions[name]


def _permuted(sub: Submaps, perm: npt.NDArray[np.int64]) -> Submaps:
    """The same partition after the rows were reordered by ``perm`` (new row i = old row perm[i])."""
    return submaps_from_labels(sub.scheme, sub.names, sub.labels[perm], sub.centroids)


def _add_partition(root: Path, manifest: Manifest, name: str, sub: Submaps) -> None:
    rel = fresh_name(manifest, "submaps", name, ".npz")
    save_submaps(root / rel, sub)
    path = root / rel
    manifest.files[rel] = FileEntry(
        sha256=sha256_file(path), bytes=path.stat().st_size, quick=quick_fingerprint(path)
    )
    manifest.submaps[name] = SubmapInfo(
        file=rel, scheme=sub.scheme, count=len(sub), rows=sub.num_rows, contiguous=len(sub.starts) <= len(sub)
    )


def _rewrite_rows(store: GeoStore, manifest: Manifest, perm: npt.NDArray[np.int64]) -> list[str]:
    """Writes new shards so that new row i is old row perm[i]; switches the manifest's shard list to them.

    Nothing is committed here (the caller saves the manifest once); returns the old shard files, which the
    caller deletes after its commit. New shards are named ``_r-<random>`` ("_" cannot start a source name,
    so no later build can collide with them). Each row's bytes move unchanged with its metadata: its CRC32
    is recomputed from them, and where the old shard recorded one they must match (a row damaged where the
    open's quick check did not look is refused, not carried into the new shards with fresh checksums). A
    store of format version 1 thus gets row checksums (version 2).
    """
    new_shards: list[ShardInfo] = []
    for j, start in enumerate(range(0, len(perm), manifest.shard_rows)):
        take = perm[start : start + manifest.shard_rows]
        stem = fresh_name(manifest, "shards", f"_r{j:06d}", ".npy").removesuffix(".npy")
        emb = store.stored_rows(take)
        crc = check_crc32(store, take, emb)
        meta = store.rows(take).set_column(
            0, "row_id", pa.array(np.arange(start, start + len(take), dtype=np.int64))
        )
        npy = write_npy(store.path / f"{stem}.npy", emb)
        parquet = to_parquet_bytes(with_row_crc32(meta, crc), npy[0])
        for rel, (sha, size) in (
            (f"{stem}.npy", npy),
            (f"{stem}.parquet", write_bytes(store.path / f"{stem}.parquet", parquet)),
        ):
            manifest.files[rel] = FileEntry(sha, size, quick_fingerprint(store.path / rel))
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
    manifest.shards = new_shards
    manifest.format_version = FORMAT_VERSION
    return old
