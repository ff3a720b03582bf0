"""The store manifest: what a store holds (encoder, sources, shards, files and their checksums), as JSON.

The manifest is the store's commit record. A build writes a shard's files first and the manifest that lists
them last (atomically), so a store is always whatever its manifest says: files it does not list are leftovers
of an interrupted step and are ignored, then removed by the next build.
"""

from __future__ import annotations

import hashlib
import re
import typing
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from types import NoneType, UnionType
from typing import Any, Literal

from georag.errors import StoreError
from georag.store.files import quick_fingerprint, sha256_file, write_json
from georag.store.jsonread import parse_json, read_bounded
from georag.store.references import check_references

FORMAT = "georag-store"
FORMAT_VERSION = 2
"""The version a writer of shards records. 2: a shard's metadata file holds each row's CRC32
(`georag.store.metadata.ROW_CRC32`), a column that readers of version 1 refuse; 1: without it."""
READ_VERSIONS = (1, 2)
"""The versions this georag reads (a version-2 store may hold version-1 shards: rows added or not)."""
MANIFEST = "manifest.json"
DTYPES = ("float16", "float32")
FOLDERS = ("shards", "sources", "ann", "submaps")
"""The only folders a store writes into; every path the manifest names lies in one of them."""
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_HEX64 = re.compile(r"[0-9a-f]{64}")

Verify = Literal["quick", "full", "none"]
"""How much of a store file is checked: "quick" (size and a fingerprint), "full" (SHA-256), "none" (size)."""


def check_name(name: str, what: str) -> str:
    """``name`` if it is a safe file-name stem (1-64 letters, digits, ``_ . -``), else StoreError."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or ".." in name:
        raise StoreError(
            f"{what} {name!r} must be 1-64 letters, digits, '_', '.', '-', starting with a letter or digit"
        )
    return name


def check_path(rel: str, origin: object = "manifest") -> str:
    """``rel`` if it is a plain relative path inside one of the store's folders (no '..', not absolute)."""
    parts = PurePosixPath(rel).parts if isinstance(rel, str) else ()
    if len(parts) != 2 or parts[0] not in FOLDERS or parts[1] in ("", ".", "..") or "\\" in rel:
        raise StoreError(
            f"{origin} names the file {rel!r}, which is not inside the store's folders {FOLDERS}"
        )
    return rel


def now() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class FileEntry:
    """Checksums of one file of the store (path relative to the store)."""

    sha256: str
    """SHA-256 of the whole file."""
    bytes: int
    """Size in bytes."""
    quick: str
    """SHA-256 of the size and 16 spread blocks (checked on every open)."""


@dataclass
class SourceInfo:
    """One dataset added to the store (a row source of the hybrid database)."""

    name: str
    """Unique name in the store, e.g. "mp16" or "osv5m"; default: the dataset format."""
    format: str
    """The dataset reader used (see `georag.datasets.FORMATS`)."""
    metadata_path: str
    """The metadata file it was read from (absolute, as given)."""
    metadata_sha256: str
    """SHA-256 of that file: a resumed build refuses a changed file."""
    images: list[str]
    """The image folder or tar shards (absolute paths); empty when built from embeddings."""
    embeddings_path: str | None
    """The precomputed embeddings file (`--from-embeddings`), else None."""
    columns: dict[str, Any]
    """The column map the reader used."""
    total_rows: int
    """Data rows in the metadata file."""
    input_rows: int
    """Rows accepted by the reader (valid coordinates), i.e. the work list of the build."""
    rejected: dict[str, int]
    """Rows rejected by the reader, per reason; listed in `rejections_file`."""
    rejections_file: str | None
    """Relative path of the JSON-lines list of rejected rows, or None when there were none."""
    embeddings_fingerprint: str | None = None
    """Size and 16-block fingerprint of that file: a resumed build refuses a regenerated file."""
    failure_files: list[str] = field(default_factory=list)
    """Relative paths of the JSON-lines lists of work-list items that produced no row, one per shard."""
    next_input: int = 0
    """Work-list position where the build continues (== input_rows once complete)."""
    rows: int = 0
    """Rows stored so far."""
    failed: int = 0
    """Work-list items that produced no row (missing or corrupt image, bad embedding)."""
    complete: bool = False
    """True once every work-list item was processed."""


@dataclass
class ShardInfo:
    """A contiguous block of store rows: their embeddings and metadata."""

    source: str
    """Name of the source the rows came from ("*" after a reorder mixed the sources)."""
    first_row: int
    """Store row id of the shard's first row."""
    rows: int
    """Rows in the shard."""
    input_start: int
    """First work-list position of the slice this shard covers (-1 after a reorder)."""
    input_end: int
    """One past its last work-list position (-1 after a reorder)."""
    embeddings: str
    """Relative path of the (rows, dim) .npy."""
    metadata: str
    """Relative path of the Parquet metadata."""
    failed: int = 0
    """Work-list items of this slice that produced no row."""


@dataclass
class AnnInfo:
    """A faiss index file over all rows."""

    file: str
    """Relative path of the .faiss file (read only after its checksum matched)."""
    factory: str
    """The faiss index_factory string."""
    rows: int
    """Rows indexed (a stale index, after rows were added, is refused)."""


@dataclass
class SubmapInfo:
    """One partition of the rows into submaps (countries, k-means clusters)."""

    file: str
    """Relative path of the .npz."""
    scheme: str
    """"country" or "kmeans"."""
    count: int
    """Number of submaps."""
    rows: int
    """Rows covered (a stale partition, after rows were added, is refused)."""
    contiguous: bool = False
    """True when the store's rows were reordered so each submap is one contiguous range."""


@dataclass
class Manifest:
    """Everything a store holds, in the order rows are numbered."""

    encoder: str
    """Model id of the encoder that produced the embeddings (hub id or local folder)."""
    dim: int
    """Embedding dimension."""
    dtype: str
    """On-disk embedding dtype: "float16" or "float32" (rows are stored L2-normalized)."""
    shard_rows: int
    """Work-list items per shard (the unit of resumption)."""
    created: str = field(default_factory=now)
    """Creation time (UTC, ISO 8601)."""
    updated: str = field(default_factory=now)
    """Last commit time."""
    sources: list[SourceInfo] = field(default_factory=list)
    """Row sources in store order."""
    shards: list[ShardInfo] = field(default_factory=list)
    """Shards in row order."""
    files: dict[str, FileEntry] = field(default_factory=dict)
    """Checksums of every file of the store except the manifest itself."""
    ann: dict[str, AnnInfo] = field(default_factory=dict)
    """faiss indexes by name."""
    submaps: dict[str, SubmapInfo] = field(default_factory=dict)
    """Submap partitions by name."""
    encoder_fingerprint: str = ""
    """`georag.encoder.identity.model_fingerprint` of the encoder's files when the store was made or
    re-pointed ("" when unknown: stores made before georag recorded it), so that an identical copy of the
    model elsewhere is recognised (`georag index set-encoder`)."""
    format: str = FORMAT
    """Always "georag-store"."""
    format_version: int = FORMAT_VERSION
    """Bumped on an incompatible change (see `FORMAT_VERSION`); a version-1 store becomes version 2 when a
    writer adds shards to it (`index add`, `index submaps --reorder`)."""

    @property
    def num_rows(self) -> int:
        """Rows stored in all shards."""
        return sum(s.rows for s in self.shards)

    def source(self, name: str) -> SourceInfo | None:
        """The source called ``name``, or None."""
        return next((s for s in self.sources if s.name == name), None)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (the format and version first)."""
        body = asdict(self)
        return {"format": body.pop("format"), "format_version": body.pop("format_version"), **body}

    def save(self, store: Path) -> None:
        """Commits the manifest atomically (fsync, rename, directory fsync), as compact JSON."""
        self.updated = now()
        write_json(store / MANIFEST, self.to_json(), indent=None)

    def shard_files(self) -> list[str]:
        """The embeddings files in row order: equal lists mean the same rows in the same order."""
        return [s.embeddings for s in self.shards]

    def check_file(self, root: Path, rel: str, verify: Verify) -> None:
        """StoreError unless the store file ``rel`` is there, of its manifest size and (``verify`` "quick" or
        "full") of its recorded fingerprint or SHA-256."""
        problem = self.file_problem(root, rel, verify)
        if problem is not None:
            raise StoreError(f"{root / rel} {problem}; run `georag index verify {root}`")

    def file_problem(self, root: Path, rel: str, verify: Verify) -> str | None:
        """What is wrong with the store file ``rel`` (see `check_file`), or None."""
        entry = self.files[rel]
        path = root / rel
        if not path.is_file():
            return "is missing: the store is incomplete"
        size = path.stat().st_size
        if size != entry.bytes:
            return f"has {size} bytes but the manifest says {entry.bytes}: the file was changed or truncated"
        if verify == "none":
            return None
        actual = quick_fingerprint(path) if verify == "quick" else sha256_file(path)
        if actual != (entry.quick if verify == "quick" else entry.sha256):
            kind = "fingerprint" if verify == "quick" else "SHA-256"
            return (
                f"was changed after the store was written (its {kind} differs from the manifest's); "
                "rebuild the affected source"
            )
        return None

    @classmethod
    def load(cls, store: Path) -> Manifest:
        """Reads and validates ``store/manifest.json`` (bounded: see `georag.store.jsonread`; every
        cross-reference: see `georag.store.references`); StoreError names the file and what is wrong."""
        return cls.load_hashed(store)[0]

    @classmethod
    def load_hashed(cls, store: Path) -> tuple[Manifest, str]:
        """As `load`, with the SHA-256 of the manifest file's bytes that were parsed."""
        path = store / MANIFEST
        if not path.is_file():
            what = "does not exist" if not store.exists() else "has no manifest.json"
            raise StoreError(f"{store} {what}: not a georag store (build one with `georag index build`)")
        data = read_bounded(path, "store manifest")
        return cls.from_json(parse_json(data, path, "store manifest"), path), hashlib.sha256(data).hexdigest()

    @classmethod
    def from_json(cls, raw: Any, origin: Path | str = "manifest") -> Manifest:
        """Builds a Manifest from parsed JSON, refusing another format or version."""
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise StoreError(f"{origin} is not a georag store manifest")
        version = raw.get("format_version")
        if version not in READ_VERSIONS or isinstance(version, bool):
            raise StoreError(
                f"{origin} has store format version {_short(version)}; this georag reads versions "
                f"{', '.join(map(str, READ_VERSIONS))}"
            )
        try:
            m = cls(
                encoder=raw["encoder"],
                dim=raw["dim"],
                dtype=raw["dtype"],
                shard_rows=raw["shard_rows"],
                created=raw["created"],
                updated=raw["updated"],
                sources=[SourceInfo(**s) for s in raw["sources"]],
                shards=[ShardInfo(**s) for s in raw["shards"]],
                files={k: FileEntry(**v) for k, v in raw["files"].items()},
                ann={k: AnnInfo(**v) for k, v in raw["ann"].items()},
                submaps={k: SubmapInfo(**v) for k, v in raw["submaps"].items()},
                encoder_fingerprint=raw.get("encoder_fingerprint", ""),
                format_version=version,
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise StoreError(f"{origin} is malformed ({type(exc).__name__}: {_short(str(exc))})") from exc
        _check_types(m, origin)
        for rel in m.files:
            check_path(rel, origin)
        for what, entries in (("ANN index", m.ann), ("submaps", m.submaps)):
            for name in entries:
                check_name(name, what)
        for src in m.sources:
            check_name(src.name, "source name")
        if m.dtype not in DTYPES or m.dim < 1 or m.shard_rows < 1:
            raise StoreError(
                f"{origin} is malformed: dtype {_short(m.dtype)}, dim {m.dim}, shard_rows {m.shard_rows}"
            )
        for rel, entry in m.files.items():
            if entry.bytes < 0 or not (_HEX64.fullmatch(entry.sha256) and _HEX64.fullmatch(entry.quick)):
                raise StoreError(f"{origin} is malformed: the checksum entry of {rel} is {_short(entry)}")
        check_references(m, origin)
        return m


def _check_types(obj: Any, origin: object) -> None:
    """Every field of a parsed manifest has its annotated type (JSON gives no such guarantee)."""
    hints = typing.get_type_hints(type(obj))
    for f in fields(obj):
        value = getattr(obj, f.name)
        if not _matches(value, hints[f.name]):
            raise StoreError(f"{origin} is malformed: {type(obj).__name__}.{f.name} = {_short(value)}")
        items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else [value]
        for item in items:
            if is_dataclass(item):
                _check_types(item, origin)


def _short(value: Any) -> str:
    """``repr(value)``, cut to 80 characters (a damaged manifest may hold a huge value)."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _matches(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin in (UnionType, typing.Union):
        return any(_matches(value, h) for h in typing.get_args(hint))
    if hint is NoneType:
        return value is None
    if hint is Any:
        return True
    if origin is list:
        (item,) = typing.get_args(hint)
        return isinstance(value, list) and all(_matches(v, item) for v in value)
    if origin is dict:
        key, item = typing.get_args(hint)
        return isinstance(value, dict) and all(
            _matches(k, key) and _matches(v, item) for k, v in value.items()
        )
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)
