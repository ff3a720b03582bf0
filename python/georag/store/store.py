"""GeoStore: open a built store (checked against its manifest), and search it with coordinates attached."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from georag.errors import GeoRagError, MissingDependencyError, StoreError
from georag.store.manifest import Manifest, Verify
from georag.store.metadata import empty_table, read_checked, shard_table_problem, split_row_crc32
from georag.store.partitions import StorePartitions
from georag.store.rowcheck import RowChecksums, ServedRows, sample_error
from georag.types import Neighbors

if TYPE_CHECKING:
    from georag.search.cuda import CudaFlatIndex
    from georag.search.faiss_index import FaissIndex
    from georag.search.flat import FlatIndex
    from georag.search.protocol import Index, IndexBase
    from georag.search.validate import RowRanges
    from georag.store.background import BackgroundVerify
    from georag.store.submaps import Submaps

log = logging.getLogger(__name__)


EXACT = "exact"
"""The exact index on the CPU (the C++ core): what restricted and default searches use."""
BUILTIN_INDEXES = (EXACT, "cuda")
"""Index names every store answers: "exact" (the C++ core on the CPU) and "cuda" (the exact search on a GPU).
Any other name is a faiss index of the store (`georag index build-ann`); these two names cannot be one."""


class GeoStore:
    """A built store opened for search: memory-mapped embeddings, metadata in memory, lazy indexes.

    Open with :meth:`open`. Embeddings stay on disk (memory-mapped, read through the page cache); each index
    (:meth:`index`: "exact", "cuda" or a faiss index of the store) is built or read on first use, then kept.
    The exact index searches the shard files in place (no copy); "cuda" copies them to the GPU.
    :meth:`search` uses the index named when the store was opened (``index_name``).
    """

    def __init__(
        self,
        path: Path,
        manifest: Manifest,
        metadata: pa.Table,
        shards: list[npt.NDArray[Any]],
        index_name: str = "exact",
        row_checksums: RowChecksums | None = None,
    ) -> None:
        """Use :meth:`open`."""
        self.path = path
        self.manifest = manifest
        self.metadata = metadata
        self._shards = shards
        self.row_checksums = row_checksums or RowChecksums([(len(a), None) for a in shards])
        """The CRC32 of each row as written, where its shard's metadata records one (searches check them)."""
        self._flat: FlatIndex | None = None
        self._cuda: CudaFlatIndex | None = None
        self._ann: dict[str, FaissIndex] = {}
        self._partitions = StorePartitions(path, manifest)
        self._verified: Verify = "none"
        self._background: BackgroundVerify | None = None
        self._served = ServedRows(self)
        self.index_name = self._check_index_name(index_name)
        """The index :meth:`search` and :meth:`index` use unless told another."""

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        encoder: str | None = None,
        dim: int | None = None,
        verify: Verify = "quick",
        index: str = "exact",
    ) -> GeoStore:
        """Opens the store at ``path`` and checks it against its manifest.

        ``encoder`` / ``dim``: refuse a store built with another encoder model or dimension (StoreError
        naming both). ``verify``: "quick" (default) checks every file's size and a fingerprint of 16 spread
        blocks, and the full SHA-256 of the metadata (which is read anyway); "full" hashes everything
        (minutes for a 10M-row store; `georag index verify` does it with a report); "none" only checks
        sizes. faiss files are always fully hashed before they are parsed, when first used. Whatever
        ``verify``, every cross-reference of the manifest is checked (`georag.store.references`) and each
        shard's metadata rows are matched to the shard (row ids from its first row, its row count, its
        source). A long-running reader that opened with "quick" can hash the rest later:
        :meth:`verify_in_background`; :meth:`integrity` says what was checked. The CRC32 of every row the
        metadata records (stores of format version 2 on) is kept, and compared with each row a search serves.

        ``index``: what :meth:`search` uses by default (``store.index_name``): "exact" (default; the C++ core
        on the CPU), "cuda" (the exact search on a GPU) or the name of a faiss index of the store. Only the
        name is checked here (StoreError naming the indexes there are); the index is built or read, and
        "cuda" checked for a device, on first use.
        """
        root = Path(path)
        manifest = Manifest.load(root)
        if encoder is not None and encoder != manifest.encoder:
            raise StoreError(
                f"{root} was built with encoder {manifest.encoder!r}, not {encoder!r}: "
                "its embeddings are not comparable with this encoder's; build a store with this encoder or "
                "use the store's (a copy of it elsewhere: `georag index set-encoder`)"
            )
        if dim is not None and dim != manifest.dim:
            raise StoreError(f"{root} holds {manifest.dim}-dimensional embeddings, not {dim}")
        unfinished = [s for s in manifest.sources if not s.complete]
        if unfinished:
            s = unfinished[0]
            raise StoreError(
                f"source {s.name!r} of {root} is not finished ({s.next_input} of {s.input_rows} items): "
                "re-run "
                "its build command to resume it"
            )
        if verify not in ("quick", "full", "none"):
            raise StoreError(f"verify must be 'quick', 'full' or 'none', got {verify!r}")
        # ANN indexes and submaps are optional: they are checked when first used, so a damaged one never
        # blocks the exact search.
        for rel in manifest.files:
            if rel.startswith(("shards/", "sources/")):
                manifest.check_file(root, rel, "none" if rel.endswith(".parquet") else verify)
        metadata, checksums = _read_metadata(root, manifest)
        shards = [_open_shard(root, manifest, i) for i in range(len(manifest.shards))]
        store = cls(root, manifest, metadata, shards, index, checksums)
        store._verified = verify
        return store

    @property
    def ntotal(self) -> int:
        """Rows in the store."""
        return self.manifest.num_rows

    def __len__(self) -> int:
        return self.ntotal

    @property
    def dim(self) -> int:
        """Embedding dimension."""
        return self.manifest.dim

    @property
    def encoder(self) -> str:
        """Model id of the encoder the store was built with."""
        return self.manifest.encoder

    def verify_in_background(self) -> BackgroundVerify:
        """Starts (once; later calls return the same) the full check of every file against the manifest the
        store was opened with, in a daemon thread: see `georag.store.background.BackgroundVerify`."""
        if self._background is None:
            from georag.store.background import BackgroundVerify

            self._background = BackgroundVerify(self.path, self.manifest)
        return self._background

    def integrity(self) -> dict[str, Any]:
        """What was checked of the store's files, JSON-ready for a readiness answer: ``check`` "quick",
        "full" or "none" (the open's ``verify``) and ``state`` "passed"; or, once :meth:`verify_in_background`
        ran, its status (``check`` "full", ``state`` "running" / "passed" / "failed", bytes, problems). Then
        ``row_checksums``: True when every row has one (a search compares each row it serves with it);
        False with a ``note`` for a store (or rows) built before row checksums."""
        if self._background is not None:
            status = self._background.status()
        else:
            status = {"check": self._verified, "state": "passed"}
        note = self.row_checksums.note()
        return {**status, "row_checksums": note is None, **({"note": note} if note else {})}

    def __repr__(self) -> str:
        sources = ", ".join(f"{s.name}={s.rows}" for s in self.manifest.sources)
        return (
            f"GeoStore({str(self.path)!r}, rows={self.ntotal}, dim={self.dim}, dtype={self.manifest.dtype}, "
            f"encoder={self.encoder!r}, sources: {sources or 'none'})"
        )

    @cached_property
    def lat(self) -> npt.NDArray[np.float64]:
        """(N,) latitude of every row, degrees."""
        return self.metadata.column("lat").to_numpy()

    @cached_property
    def lon(self) -> npt.NDArray[np.float64]:
        """(N,) longitude of every row, degrees."""
        return self.metadata.column("lon").to_numpy()

    def embedding_shards(self) -> Iterator[npt.NDArray[Any]]:
        """The stored (L2-normalized) embeddings: one memory-mapped (rows, d) array per shard, in order."""
        yield from self._shards

    def embeddings(self, rows: npt.ArrayLike) -> npt.NDArray[np.float32]:
        """The float32 embeddings of the given row ids (any order, repeats allowed)."""
        return self._gather(rows, np.dtype(np.float32))

    def stored_rows(self, rows: npt.ArrayLike) -> npt.NDArray[Any]:
        """The given rows as stored: the store's dtype, the shard files' bytes (what row checksums cover)."""
        return self._gather(rows, np.dtype(self.manifest.dtype))

    def _gather(self, rows: npt.ArrayLike, dtype: np.dtype[Any]) -> npt.NDArray[Any]:
        ids = np.asarray(rows, dtype=np.int64).ravel()
        if ids.size and (ids.min() < 0 or ids.max() >= self.ntotal):
            raise StoreError(f"row ids must be in [0, {self.ntotal}), got {ids.min()}..{ids.max()}")
        starts = np.array([s.first_row for s in self.manifest.shards], dtype=np.int64)
        shard = np.searchsorted(starts, ids, side="right") - 1
        out = np.empty((ids.size, self.dim), dtype=dtype)
        for j in np.unique(shard):
            sel = np.flatnonzero(shard == j)
            out[sel] = self._shards[int(j)][ids[sel] - starts[j]]
        return out

    def flat_index(self, *, num_threads: int = 0) -> FlatIndex:
        """The exact index over all rows: the memory-mapped shards searched in place (then cached).

        Nothing is copied: opening is instant and the index's resident memory is the page cache of the
        shard files plus per-search buffers. float16 shards are searched in float16 (half the bytes of a
        float32 copy); a sample of rows is checked for normalization (see `FlatIndex.from_normalized`).
        """
        if self._flat is None:
            from georag.search.flat import FlatIndex

            if self.ntotal == 0:
                self._flat = FlatIndex.reserve(0, self.dim, num_threads=num_threads)
                return self._flat
            try:
                self._flat = FlatIndex.from_normalized(self._shards, num_threads=num_threads)
            except ValueError as exc:
                raise sample_error(self, exc) from exc
        return self._flat

    def ann_index(self, name: str) -> FaissIndex:
        """The faiss index ``name`` (from `georag index build-ann`), read only after its SHA-256 matched."""
        if name not in self._ann:
            from georag.search.faiss_index import FaissIndex

            info = self.manifest.ann.get(name)
            if info is None:
                raise StoreError(
                    f"{self.path} has no ANN index {name!r}; it has {sorted(self.manifest.ann) or 'none'}"
                )
            if info.rows != self.ntotal:
                raise StoreError(
                    f"ANN index {name!r} covers {info.rows} rows but the store has {self.ntotal}: "
                    "rebuild it with "
                    f"`georag index build-ann {self.path} --factory '{info.factory}' --name {name}`"
                )
            self.manifest.check_file(self.path, info.file, "none")
            try:
                index = FaissIndex.load(self.path / info.file, self.manifest.files[info.file].sha256)
            except GeoRagError as exc:
                raise StoreError(str(exc)) from exc
            except (RuntimeError, ValueError, MemoryError) as exc:  # what faiss raises for a non-index
                raise StoreError(
                    f"{self.path / info.file} is not a faiss index ({type(exc).__name__}); the store is "
                    f"damaged: run `georag index verify {self.path}`, then `georag index build-ann`"
                ) from exc
            if (index.ntotal, index.dim) != (self.ntotal, self.dim):
                raise StoreError(
                    f"{self.path / info.file} indexes {index.ntotal} rows of dimension {index.dim}, the "
                    f"store has {self.ntotal} of {self.dim}: it is another store's index; rebuild it with "
                    f"`georag index build-ann {self.path} --factory '{info.factory}' --name {name}`"
                )
            index.factory = info.factory
            self._ann[name] = index
        return self._ann[name]

    def submap_names(self) -> list[str]:
        """The names of the store's submap partitions (`georag index submaps`), sorted."""
        return self._partitions.names()

    def submaps(self, name: str) -> Submaps:
        """The submap partition ``name`` (e.g. "country", "kmeans100"), checked against its checksum."""
        return self._partitions.get(name)

    def index(self, name: str | None = None) -> Index:
        """The index ``name``, built or read on first use and then kept; None: ``index_name``.

        "exact": :meth:`flat_index`. "cuda": a `CudaFlatIndex` on GPU 0 (see :meth:`cuda_index`). Any other
        name: the faiss index of the store (:meth:`ann_index`). StoreError for a name the store has no index
        of (naming those it has); MissingDependencyError for "cuda" without a CUDA build or device.
        """
        return self._index(name)

    def _index(self, name: str | None) -> IndexBase:
        name = self._check_index_name(self.index_name if name is None else name)
        if name == "exact":
            return self.flat_index()
        if name == "cuda":
            return self.cuda_index()
        return self.ann_index(name)

    def cuda_index(self) -> CudaFlatIndex:
        """The exact index on GPU 0, built on first call (then cached); NOT YET RUN ON A GPU.

        The rows are converted to float32 shard by shard into one host array that is uploaded, then freed:
        host memory N x d x 4 bytes while it is built, device memory the same for as long as the store is
        open. MissingDependencyError (before anything is read) when ``georag._core`` was built without CUDA
        or sees no device.
        """
        if self._cuda is None:
            from georag.search.cuda import CudaFlatIndex, cuda_core

            try:
                cuda_core()
            except MissingDependencyError as exc:
                raise MissingDependencyError(
                    f"{self.path}: the 'cuda' index is not available here ({exc}); search with the 'exact' "
                    "index (the C++ core on the CPU) instead"
                ) from exc
            rows = np.empty((self.ntotal, self.dim), dtype=np.float32)
            for info, shard in zip(self.manifest.shards, self._shards, strict=True):
                rows[info.first_row : info.first_row + info.rows] = shard
            self._cuda = CudaFlatIndex(rows, normalize=False)  # stored normalized: scored as the exact index
        return self._cuda

    def search(
        self,
        queries: npt.NDArray[np.float32],
        k_near: int = 16,
        k_far: int = 16,
        *,
        row_ranges: RowRanges | None = None,
        submap: tuple[str, str] | None = None,
        index: str | None = None,
        num_threads: int | None = None,
    ) -> Neighbors:
        """The ``k_near`` most and ``k_far`` least similar rows of each raw query, with their coordinates.

        Same contract as `georag.search.protocol.Index.search`, over the stored rows as they are: they were
        normalized before being stored, so a score is the cosine similarity to within the rounding of the
        stored float16 values (2^-11 relative). The result's near/far lat/lon are filled
        ((B, k) degrees, NaN for padding). ``row_ranges``: search only these [start, end) rows;
        ``submap=(partition, name)``, e.g. ``("country", "FR")``: only that submap's rows (not with
        ``row_ranges``). ``index``: the index by name (see :meth:`index`); default ``index_name``.
        ``num_threads``: worker threads of the exact index for this call (None: its default); the other
        indexes refuse it (TypeError). Every row returned is checked (finite, unit norm, its recorded CRC32):
        a damaged one is a StoreError naming its shard file (`georag.store.rowcheck`), never an answer.
        """
        if submap is not None:
            if row_ranges is not None:
                raise StoreError("give row_ranges or submap, not both")
            row_ranges = self.submaps(submap[0]).ranges(submap[1])
        res = self._index(index).search(
            queries, k_near, k_far, row_ranges=row_ranges, num_threads=num_threads
        )
        self._served.check(np.concatenate([res.near_ids.ravel(), res.far_ids.ravel()]))
        return res.with_coordinates(self.coordinates(res.near_ids), self.coordinates(res.far_ids))

    def _check_index_name(self, name: str) -> str:
        """``name`` if the store answers it, else StoreError naming the indexes it has."""
        if name in BUILTIN_INDEXES or name in self.manifest.ann:
            return name
        ann = ", ".join(repr(n) for n in sorted(self.manifest.ann)) or "none"
        raise StoreError(
            f"{self.path} has no index {name!r}: use 'exact' (the C++ core on the CPU), 'cuda' (a GPU) or "
            f"one of its faiss indexes ({ann}; build one with `georag index build-ann`)"
        )

    def coordinates(
        self, ids: npt.NDArray[np.int64]
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """Latitude and longitude of row ids of any shape; NaN where an id is -1 (padding)."""
        ids = np.asarray(ids, dtype=np.int64)
        valid = ids >= 0
        safe = np.where(valid, ids, 0)
        if self.ntotal == 0:
            return np.full(ids.shape, np.nan), np.full(ids.shape, np.nan)
        return np.where(valid, self.lat[safe], np.nan), np.where(valid, self.lon[safe], np.nan)

    def rows(self, ids: npt.ArrayLike) -> pa.Table:
        """The metadata rows of the given row ids, in that order."""
        return self.metadata.take(pa.array(np.asarray(ids, dtype=np.int64).ravel()))


def check_encoder(store: GeoStore, model_id: str, dim: int) -> None:
    """Raises StoreError unless the encoder ``model_id`` making ``dim``-d embeddings is the store's own."""
    if model_id != store.encoder or dim != store.dim:
        raise StoreError(
            f"the store was built with {store.encoder!r} (d={store.dim}) but the encoder is "
            f"{model_id!r} (d={dim}); use the store's encoder (if {model_id!r} is a copy of it in another "
            f"place, `georag index set-encoder {store.path} --encoder {model_id}` re-points the store after "
            "comparing their files)"
        )


def _read_metadata(root: Path, manifest: Manifest) -> tuple[pa.Table, RowChecksums]:
    """Every shard's metadata (`georag.store.metadata.SCHEMA`) in row order, and the rows' checksums."""
    read = [split_row_crc32(_read_shard_table(root, manifest, i)) for i in range(len(manifest.shards))]
    metadata = pa.concat_tables([table for table, _ in read]) if read else empty_table()
    checksums = RowChecksums([(table.num_rows, crc) for table, crc in read])
    if checksums.missing:
        log.info("%s: %s", root, checksums.note())
    return metadata, checksums


def _read_shard_table(root: Path, manifest: Manifest, i: int) -> pa.Table:
    """Shard ``i``'s metadata file, hashed, parsed and matched to the shard (StoreError naming the file)."""
    info = manifest.shards[i]
    table = read_checked(root / info.metadata, manifest.files[info.metadata].sha256)
    sha = manifest.files[info.embeddings].sha256
    problem = shard_table_problem(table, info.first_row, info.rows, info.source, sha)
    if problem is not None:
        raise StoreError(
            f"{root / info.metadata} {problem}; the store is damaged: run `georag index verify {root}`"
        )
    return table.replace_schema_metadata(None)


def _open_shard(root: Path, manifest: Manifest, i: int) -> npt.NDArray[Any]:
    info = manifest.shards[i]
    try:
        # An empty array cannot be memory-mapped; it is a header only.
        mode: Literal["r"] | None = "r" if info.rows else None
        arr = np.load(root / info.embeddings, mmap_mode=mode, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise StoreError(
            f"{root / info.embeddings} is not a readable .npy ({exc}); the store is damaged"
        ) from exc
    if arr.shape != (info.rows, manifest.dim) or arr.dtype != np.dtype(manifest.dtype):
        raise StoreError(
            f"{root / info.embeddings} holds {arr.dtype} {arr.shape}, the manifest says "
            f"{manifest.dtype} ({info.rows}, {manifest.dim}); the store is damaged"
        )
    return arr
