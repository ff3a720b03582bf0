"""Building a store: stream one dataset's images (or precomputed embeddings) into shards, resumably.

A source's work list is the reader's accepted rows, in file order. It is cut into fixed slices of
``shard_rows`` items; each slice becomes one shard (its rows that produced an embedding) committed by a
manifest write. An interrupted build (Ctrl-C, kill -9, power loss) therefore restarts at the first
uncommitted slice: re-running the same command loses no committed row, duplicates none, and, because the
slices and their batches are the same, produces the same rows as an uninterrupted build.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from georag.datasets import ColumnMap, DatasetRecords, read_dataset
from georag.encoder.identity import model_fingerprint
from georag.errors import StoreError
from georag.progress import progress as progress_display
from georag.store.files import quick_fingerprint, sha256_file, write_bytes, write_jsonl, write_npy
from georag.store.manifest import (
    DTYPES,
    FORMAT_VERSION,
    MANIFEST,
    FileEntry,
    Manifest,
    ShardInfo,
    SourceInfo,
    check_name,
)
from georag.store.metadata import row_crc32, shard_table, to_parquet_bytes, with_row_crc32
from georag.store.writing import is_leftover_only, remove_leftovers, store_lock

if TYPE_CHECKING:
    from georag.encoder.encoder import Encoder
    from georag.store.image_catalog import ImageCatalog

log = logging.getLogger(__name__)

DEFAULT_SHARD_ROWS = 4096


@dataclass(frozen=True)
class BuildRequest:
    """What `georag index build` / `add` was asked to do; re-running the same request resumes it."""

    store: Path
    """The store directory (created by a build, must exist for an add)."""
    dataset: str
    """Reader format (see `georag.datasets.FORMATS`)."""
    metadata: Path
    """The dataset's metadata file."""
    encoder: str
    """Encoder model id (hub id or folder); with `embeddings`, the model that produced them."""
    images: tuple[Path, ...] = ()
    """An image folder, or WebDataset tar shards; empty with `embeddings`."""
    embeddings: Path | None = None
    """Precomputed (total_rows, d) embeddings .npy aligned with the metadata file's rows; default None."""
    source: str | None = None
    """Name of this source in the store; default: the dataset format."""
    columns: ColumnMap | None = None
    """Column names (required for the generic format); default: the format's own."""
    dtype: str | None = None
    """On-disk dtype of a new store: float16 (the default: half the disk and page cache) or float32; None
    for an existing store keeps its dtype (another value is refused)."""
    shard_rows: int | None = None
    """Work-list items per shard of a new store (the unit of resumption); None: 4096, or the store's."""
    zero_is_unknown: bool = True
    """Reject rows at exactly (0, 0), which Flickr-derived datasets use for "unknown"; default True."""

    @property
    def source_name(self) -> str:
        """The source name, defaulted to the dataset format."""
        return self.source or self.dataset


@dataclass
class BuildReport:
    """What one build or add call did."""

    source: str
    """The source built."""
    added_rows: int = 0
    """Rows committed by this call."""
    failed: int = 0
    """Items of this call that produced no row."""
    resumed_at: int = 0
    """Work-list position where this call started (> 0 when it resumed)."""
    input_rows: int = 0
    """Size of the work list."""
    rejected: dict[str, int] = field(default_factory=dict)
    """Rows the reader rejected, per reason."""
    store_rows: int = 0
    """Rows in the store afterwards."""
    seconds: float = 0.0
    """Wall time of this call."""
    already_complete: bool = False
    """True when there was nothing left to do."""


@dataclass
class _Slice:
    rows: npt.NDArray[np.float32]
    take: npt.NDArray[np.int64]
    failures: list[dict[str, Any]]


SliceMaker = Callable[[DatasetRecords, SourceInfo, int], Iterator[_Slice]]
"""Makes a source's slices somewhere else than this process (`georag.distributed.ray_build`): called with
the records, the source (resume at ``next_input``) and ``shard_rows``, it yields the slices of the items
from ``next_input`` on, in order, ``shard_rows`` items each (the last one shorter), made with
`slice_from_encoded`. The build still commits each one here, the only writer of the manifest."""


def build_source(
    req: BuildRequest,
    *,
    add: bool,
    encoder_factory: Callable[[], Encoder] | None = None,
    progress: bool = False,
    slices: SliceMaker | None = None,
) -> BuildReport:
    """Builds (``add=False``) or adds (``add=True``) one source, resuming an interrupted run of it.

    ``encoder_factory`` loads the encoder when images must be encoded (not called with `embeddings`, nor
    when the source is already complete). ``slices``: the images are encoded elsewhere (see `SliceMaker`;
    ``encoder_factory`` then only names the encoder and its dimension). Raises StoreError when the request
    conflicts with the store (another encoder or dimension, a changed metadata file, a build over an
    existing store).
    """
    t0 = time.perf_counter()
    _check_request(req)
    store = req.store
    if add and not (store / MANIFEST).is_file():
        raise StoreError(f"{store} is not a georag store; create it with `georag index build` first")
    if not add and store.exists() and not (store / MANIFEST).is_file() and not is_leftover_only(store):
        raise StoreError(f"{store} exists and is not a georag store; choose an empty or new directory")
    with store_lock(store):
        manifest = Manifest.load(store) if (store / MANIFEST).is_file() else None
        remove_leftovers(store, manifest)
        existing = manifest.source(req.source_name) if manifest else None
        if manifest is not None and existing is None and not add:
            raise StoreError(
                f"{store} already holds {[s.name for s in manifest.sources]}; add another source with "
                f"`georag index add {store} ...`, or build into a new directory"
            )
        if manifest is not None:
            _check_store_options(manifest, req)
        if existing is not None and existing.complete:
            _check_same_inputs(existing, req)
            return BuildReport(
                source=existing.name,
                input_rows=existing.input_rows,
                rejected=dict(existing.rejected),
                store_rows=manifest.num_rows if manifest else 0,
                seconds=time.perf_counter() - t0,
                already_complete=True,
            )
        if existing is not None:
            _check_same_inputs(existing, req)
        records = read_dataset(
            req.metadata, req.dataset, columns=req.columns, zero_is_unknown=req.zero_is_unknown
        )
        if existing is not None:
            _check_same_records(existing, records)
        emb = _open_embeddings(req.embeddings, records.total_rows) if req.embeddings else None
        encoder: Encoder | None = None
        if emb is None and (existing is None or existing.next_input < existing.input_rows):
            if encoder_factory is None:
                raise StoreError("building from images needs an encoder")
            encoder = encoder_factory()
        if manifest is None:
            model_id, dim = _identity(req, encoder, emb)
            _check_new_store_options(req)
            manifest = Manifest(
                encoder=model_id,
                dim=dim,
                dtype=req.dtype or "float16",
                shard_rows=req.shard_rows or DEFAULT_SHARD_ROWS,
                encoder_fingerprint=model_fingerprint(req.encoder) or "",
            )
        elif encoder is not None or emb is not None:
            # Resuming a source whose every slice is committed embeds nothing, so it needs no identity check.
            _check_same_encoder(manifest, *_identity(req, encoder, emb), store)
        if existing is None:
            existing = _register_source(store, manifest, req, records)
        return _run(store, manifest, existing, records, encoder, emb, progress, t0, slices)


def _identity(req: BuildRequest, encoder: Encoder | None, emb: npt.NDArray[Any] | None) -> tuple[str, int]:
    """The encoder model id and dimension this source's rows come from.

    A loaded encoder names itself (a hub id, a resolved local folder, or an export's original model id);
    with precomputed embeddings, ``req.encoder`` names the model, resolved like a local folder when it is one.
    """
    if encoder is not None:
        return encoder.model_id, encoder.dim
    assert emb is not None
    ref = Path(req.encoder).expanduser()  # as georag.encoder resolves a local folder
    return (str(ref.resolve()) if ref.exists() else req.encoder), int(emb.shape[1])


def _run(
    store: Path,
    manifest: Manifest,
    src: SourceInfo,
    records: DatasetRecords,
    encoder: Encoder | None,
    emb: npt.NDArray[Any] | None,
    progress: bool,
    t0: float,
    slices: SliceMaker | None = None,
) -> BuildReport:
    report = BuildReport(
        source=src.name, resumed_at=src.next_input, input_rows=src.input_rows, rejected=dict(src.rejected)
    )
    catalog = None
    made = slices(records, src, manifest.shard_rows) if slices is not None and emb is None else None
    if emb is None and made is None:
        from georag.store.image_catalog import open_catalog

        catalog = open_catalog(src.images)
        where = catalog.describe()  # once: describing a folder lists it
    if src.next_input:
        log.info("resuming %s at item %d of %d", src.name, src.next_input, src.input_rows)
    bar = progress_display(
        src.input_rows,
        desc=src.name,
        unit="img",
        noun="images",
        initial=src.next_input,
        enabled=progress,
        dynamic_ncols=True,
        smoothing=0.1,
    )
    bar.set_postfix(failed=src.failed)
    with bar:
        while src.next_input < src.input_rows:
            start = src.next_input
            end = min(start + manifest.shard_rows, src.input_rows)
            if made is not None:
                part = next(made)
            elif emb is not None:
                part = _slice_from_embeddings(records, emb, start, end)
            else:
                assert encoder is not None and catalog is not None
                part = _slice_from_images(records, catalog, where, encoder, start, end)
            _commit(store, manifest, src, records, part, start, end)
            report.added_rows += len(part.take)
            report.failed += len(part.failures)
            bar.set_postfix(failed=src.failed)
            bar.update(end - start)
    src.complete = True
    manifest.save(store)
    report.store_rows = manifest.num_rows
    report.seconds = time.perf_counter() - t0
    return report


def _slice_from_images(
    records: DatasetRecords, catalog: ImageCatalog, where: str, encoder: Encoder, start: int, end: int
) -> _Slice:
    table = records.table.slice(start, end - start)
    ids = table.column("image_id").to_pylist()
    names = table.column("image_name").to_pylist()
    failed: list[tuple[str, str]] = []
    present: list[int] = []
    refs = []
    for pos, (image_id, name) in enumerate(zip(ids, names, strict=True)):
        ref = catalog.locate(name)
        if ref is None:
            failed.append((image_id, f"image not found: {name} in {where}"))
        else:
            present.append(pos)
            refs.append(ref)
    read_errors: dict[str, str] = {}

    def sources() -> Iterator[Any]:
        for pos, ref in zip(present, refs, strict=True):
            try:
                yield ref.load()
            except OSError as exc:  # an unreadable file or tar member fails alone
                read_errors[ids[pos]] = f"cannot read image: {exc}"
                yield b""

    result = encoder.encode(sources(), ids=[ids[p] for p in present], progress=False)
    failed += [(f.id, read_errors.get(f.id, f.reason)) for f in result.failures]
    return slice_from_encoded(records, start, end, result.ids, result.embeddings, failed)


def slice_from_encoded(
    records: DatasetRecords,
    start: int,
    end: int,
    ids: Sequence[str],
    embeddings: npt.NDArray[np.float32],
    failed: Iterable[tuple[str, str]],
) -> _Slice:
    """The slice of work-list items [start, end) from what encoding them gave: the raw ``embeddings`` of the
    image ids ``ids`` (in item order), and an (image id, reason) pair for each other item of the slice."""
    table = records.table.slice(start, end - start)
    src = table.column("source_row").to_numpy()
    position = {image_id: pos for pos, image_id in enumerate(table.column("image_id").to_pylist())}
    failures = [_failure(start + position[i], src[position[i]], i, reason) for i, reason in failed]
    take = np.array([position[i] for i in ids], dtype=np.int64)
    rows, bad = _normalized(embeddings)
    for j in np.flatnonzero(bad):
        failures.append(
            _failure(
                start + int(take[j]),
                src[take[j]],
                ids[int(j)],
                "the encoder returned a zero or non-finite embedding",
            )
        )
    failures.sort(key=lambda f: f["item"])
    return _Slice(rows[~bad], take[~bad] + start, failures)


def _slice_from_embeddings(records: DatasetRecords, emb: npt.NDArray[Any], start: int, end: int) -> _Slice:
    table = records.table.slice(start, end - start)
    source_rows = table.column("source_row").to_numpy()
    rows, bad = _normalized(np.asarray(emb[source_rows], dtype=np.float32))
    ids = table.column("image_id").to_pylist()
    failures = [
        _failure(
            start + int(j),
            source_rows[j],
            ids[int(j)],
            f"embedding row {int(source_rows[j])} is zero or not finite",
        )
        for j in np.flatnonzero(bad)
    ]
    take = np.flatnonzero(~bad).astype(np.int64)
    return _Slice(rows[~bad], take + start, failures)


def _normalized(x: npt.NDArray[np.float32]) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]:
    """Rows scaled to unit length, and which rows could not be (zero, NaN or Inf)."""
    with np.errstate(over="ignore", invalid="ignore"):
        norms = np.linalg.norm(x.astype(np.float64), axis=1)
    bad = ~np.isfinite(norms) | (norms == 0) | ~np.isfinite(x).all(axis=1)
    safe = np.where(bad, 1.0, norms)
    return (x / safe[:, None]).astype(np.float32), bad


def _failure(item: int, source_row: Any, image_id: str, reason: str) -> dict[str, Any]:
    """One work-list item that produced no row, for the shard's failures file."""
    return {"item": item, "source_row": int(source_row), "image_id": image_id, "reason": reason}


def _commit(
    store: Path,
    manifest: Manifest,
    src: SourceInfo,
    records: DatasetRecords,
    part: _Slice,
    start: int,
    end: int,
) -> None:
    """Writes one shard's files (the metadata with each row's CRC32), then the manifest that lists them (the
    commit point; a store of format version 1 becomes version 2, since this shard has row checksums)."""
    stem = f"shards/{src.name}-{start // manifest.shard_rows:06d}"
    if f"{stem}.npy" in manifest.files:
        raise StoreError(f"{stem}.npy is already a committed file of the store; refusing to overwrite it")
    (store / "shards").mkdir(exist_ok=True)
    first_row = manifest.num_rows
    rows = part.rows.astype(manifest.dtype)
    npy = write_npy(store / f"{stem}.npy", rows)
    table = with_row_crc32(shard_table(records.table, part.take, first_row, src.name), row_crc32(rows))
    entries: dict[str, tuple[str, int]] = {
        f"{stem}.npy": npy,
        f"{stem}.parquet": write_bytes(store / f"{stem}.parquet", to_parquet_bytes(table, npy[0])),
    }
    if part.failures:
        entries[f"{stem}.failures.jsonl"] = write_jsonl(store / f"{stem}.failures.jsonl", part.failures)
        src.failure_files.append(f"{stem}.failures.jsonl")
    for rel, (sha, size) in entries.items():
        manifest.files[rel] = FileEntry(sha256=sha, bytes=size, quick=quick_fingerprint(store / rel))
    manifest.shards.append(
        ShardInfo(
            source=src.name,
            first_row=first_row,
            rows=len(part.take),
            input_start=start,
            input_end=end,
            embeddings=f"{stem}.npy",
            metadata=f"{stem}.parquet",
            failed=len(part.failures),
        )
    )
    src.next_input = end
    src.rows += len(part.take)
    src.failed += len(part.failures)
    manifest.format_version = FORMAT_VERSION
    manifest.save(store)


def _register_source(
    store: Path, manifest: Manifest, req: BuildRequest, records: DatasetRecords
) -> SourceInfo:
    metadata_sha256 = sha256_file(req.metadata)
    rejections_file = None
    if records.rejections:
        rejections_file = f"sources/{req.source_name}.rejected.jsonl"
        (store / "sources").mkdir(parents=True, exist_ok=True)
        sha, size = write_jsonl(store / rejections_file, [asdict(r) for r in records.rejections])
        manifest.files[rejections_file] = FileEntry(sha, size, quick_fingerprint(store / rejections_file))
    src = SourceInfo(
        name=req.source_name,
        format=req.dataset,
        metadata_path=str(req.metadata.resolve()),
        metadata_sha256=metadata_sha256,
        images=[str(p.resolve()) for p in req.images],
        embeddings_path=str(req.embeddings.resolve()) if req.embeddings else None,
        embeddings_fingerprint=quick_fingerprint(req.embeddings) if req.embeddings else None,
        columns=asdict(records.columns),
        total_rows=records.total_rows,
        input_rows=len(records),
        rejected=records.rejected_counts(),
        rejections_file=rejections_file,
    )
    manifest.sources.append(src)
    manifest.save(store)
    if records.rejections:
        log.warning(
            "%s: rejected %d of %d rows: %s",
            src.name,
            len(records.rejections),
            records.total_rows,
            src.rejected,
        )
    return src


def _check_request(req: BuildRequest) -> None:
    check_name(req.source_name, "source name")
    if (req.embeddings is None) == (not req.images):
        raise StoreError(
            "give either images (a folder or tar shards) or precomputed embeddings, not both or neither"
        )


def _check_new_store_options(req: BuildRequest) -> None:
    if req.dtype is not None and req.dtype not in DTYPES:
        raise StoreError(f"dtype must be one of {DTYPES}, got {req.dtype!r}")
    if req.shard_rows is not None and req.shard_rows < 1:
        raise StoreError(f"shard_rows must be >= 1, got {req.shard_rows}")


def _check_same_encoder(manifest: Manifest, model_id: str, dim: int, store: Path) -> None:
    if manifest.encoder != model_id or manifest.dim != dim:
        raise StoreError(
            f"{store} holds embeddings of {manifest.encoder!r} (d={manifest.dim}) but this source would use "
            f"{model_id!r} (d={dim}); a store mixes no encoders: use the same --encoder or a new store"
        )


def _check_same_inputs(src: SourceInfo, req: BuildRequest) -> None:
    """A source is resumed (or found complete) only by the same build: same reader, files and images."""
    now = {
        "dataset format": (src.format, req.dataset),
        "metadata file": (src.metadata_path, str(req.metadata.resolve())),
        "metadata content (SHA-256)": (src.metadata_sha256, sha256_file(req.metadata)),
        "images": (src.images, [str(p.resolve()) for p in req.images]),
        "embeddings": (src.embeddings_path, str(req.embeddings.resolve()) if req.embeddings else None),
    }
    if req.embeddings is not None and src.embeddings_path == now["embeddings"][1]:
        now["embeddings content"] = (src.embeddings_fingerprint, quick_fingerprint(req.embeddings))
    _refuse_differences(src, now)


def _check_same_records(src: SourceInfo, records: DatasetRecords) -> None:
    now = {
        "columns": (src.columns, asdict(records.columns)),
        "accepted rows": (src.input_rows, len(records)),
    }
    _refuse_differences(src, now)


def _refuse_differences(src: SourceInfo, now: dict[str, tuple[Any, Any]]) -> None:
    diff = [f"{k}: was {a!r}, now {b!r}" for k, (a, b) in now.items() if a != b]
    if diff:
        state = "complete" if src.complete else "half built"
        raise StoreError(
            f"the store's source {src.name!r} ({state}) was built from other inputs; "
            "to resume it run the same command, to add another dataset give it another --source name. "
            "Differences: " + "; ".join(diff)
        )


def _check_store_options(manifest: Manifest, req: BuildRequest) -> None:
    for what, asked, has in (
        ("dtype", req.dtype, manifest.dtype),
        ("shard_rows", req.shard_rows, manifest.shard_rows),
    ):
        if asked is not None and asked != has:
            raise StoreError(
                f"the store uses {what} {has!r}, not {asked!r}: "
                "drop that option, or build into a new directory"
            )


def _open_embeddings(path: Path, total_rows: int) -> npt.NDArray[Any]:
    try:
        emb = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise StoreError(
            f"cannot read embeddings {path}: {exc} (expected a .npy written by numpy.save)"
        ) from exc
    if emb.ndim != 2 or emb.dtype not in (np.float16, np.float32) or emb.shape[1] < 1:
        raise StoreError(f"{path} must be a 2-D float16 or float32 array, got {emb.dtype} {emb.shape}")
    if emb.shape[0] != total_rows:
        raise StoreError(
            f"{path} has {emb.shape[0]} rows but the metadata file has {total_rows}: "
            "row i of the embeddings must "
            "be data row i of the metadata file (rejected rows included)"
        )
    return emb
