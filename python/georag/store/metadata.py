"""The per-row metadata a store keeps (Parquet): schema, one shard's table, reading with a checksum."""

from __future__ import annotations

import hashlib
import io
import os
import zlib
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from georag.errors import StoreError

SCHEMA = pa.schema(
    [
        pa.field("row_id", pa.int64(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("lat", pa.float64(), nullable=False),
        pa.field("lon", pa.float64(), nullable=False),
        pa.field("country", pa.string()),
        pa.field("author", pa.string()),
        pa.field("source_row", pa.int64(), nullable=False),
    ]
)
"""Columns of the stored metadata: the store row id, the source name, the dataset's image id, WGS-84
coordinates in degrees, the dataset's own country label as ISO alpha-2 (null when it has none), the
author / uploader (null when unknown) and the row's index in its source metadata file. What
`georag.store.store.GeoStore.metadata` holds; the files hold one more column, `ROW_CRC32`."""

ROW_CRC32 = "emb_crc32"
"""The stored column holding the CRC32 of each row's embedding (`row_crc32`): stores of format version 2 on.
The metadata is SHA-256-checked at every open, so these are trusted, and a search compares each row it
serves with its own (`georag.store.rowcheck`): a changed bit of a row the quick check did not read is
caught before it changes a score. Shards written before (format version 1) have no such column."""

STORED_SCHEMA = pa.schema([*SCHEMA, pa.field(ROW_CRC32, pa.uint32(), nullable=False)])
"""Columns of a shard's metadata file: `SCHEMA`, then `ROW_CRC32` (files of format version 1: `SCHEMA`)."""


def row_crc32(rows: npt.NDArray[Any]) -> npt.NDArray[np.uint32]:
    """(n,) ``zlib.crc32`` of each row of the (n, d) ``rows`` as stored: its d values, little-endian, as in
    the shard's .npy. A loop over the rows: 8192 rows of d = 1152 float16 take about 6 ms on one core."""
    if rows.ndim != 2:
        raise ValueError(f"rows must be 2-D, got shape {rows.shape}")
    stored = np.ascontiguousarray(rows, dtype=rows.dtype.newbyteorder("<"))
    return np.fromiter(map(zlib.crc32, stored), dtype=np.uint32, count=len(stored))


def with_row_crc32(table: pa.Table, crc: npt.NDArray[np.uint32]) -> pa.Table:
    """``table`` (`SCHEMA`) with its rows' CRC32s ``crc`` (`row_crc32` of their embeddings as stored) as
    `ROW_CRC32`: what a shard's metadata file holds (`STORED_SCHEMA`)."""
    column = pa.array(crc, type=pa.uint32())
    return table.cast(SCHEMA).append_column(STORED_SCHEMA.field(ROW_CRC32), column)


def split_row_crc32(table: pa.Table) -> tuple[pa.Table, npt.NDArray[np.uint32] | None]:
    """A shard's metadata (`read_checked`) as its `SCHEMA` columns and its rows' CRC32s (None: a shard
    written before row checksums)."""
    if ROW_CRC32 not in table.column_names:
        return table, None
    crc = table.column(ROW_CRC32).to_numpy().astype(np.uint32, copy=False)
    return table.drop_columns([ROW_CRC32]), crc


def shard_table(records: pa.Table, take: npt.NDArray[np.int64], first_row: int, source: str) -> pa.Table:
    """The stored metadata of rows ``take`` of a reader's table, numbered from ``first_row``."""
    rows = records.take(pa.array(take, type=pa.int64()))
    n = rows.num_rows
    return pa.table(
        {
            "row_id": pa.array(np.arange(first_row, first_row + n, dtype=np.int64)),
            "source": pa.array([source] * n, type=pa.string()),
            "image_id": rows.column("image_id").cast(pa.string()),
            "lat": rows.column("lat").cast(pa.float64()),
            "lon": rows.column("lon").cast(pa.float64()),
            "country": rows.column("country").cast(pa.string()),
            "author": rows.column("author").cast(pa.string()),
            "source_row": rows.column("source_row").cast(pa.int64()),
        },
        schema=SCHEMA,
    )


EMBEDDINGS_SHA256 = b"georag.embeddings_sha256"
"""Key of the Parquet schema metadata holding the SHA-256 of the shard's embeddings file: it binds the two
files of a shard, so that embeddings exchanged with another shard's (checksums included) are caught."""


def to_parquet_bytes(table: pa.Table, embeddings_sha256: str) -> bytes:
    """The table as Parquet (zstd) in memory, for an atomic write, bound to the shard's embeddings file by
    its SHA-256 (see `EMBEDDINGS_SHA256`)."""
    sink = io.BytesIO()
    bound = table.replace_schema_metadata({EMBEDDINGS_SHA256: embeddings_sha256.encode()})
    pq.write_table(bound, sink, compression="zstd")
    return sink.getvalue()


def read_checked(path: str | os.PathLike[str], sha256: str) -> pa.Table:
    """Reads a metadata Parquet file whose bytes hash to ``sha256``; StoreError otherwise.

    The bytes are hashed before pyarrow parses them, so a damaged file is reported as a checksum
    mismatch rather than whatever the Parquet reader makes of it.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise StoreError(f"cannot read {path}: {exc}") from exc
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        raise StoreError(
            f"{path} was changed after the store was written (SHA-256 {actual[:12]}..., manifest says "
            f"{sha256[:12]}...); run `georag index verify` and rebuild the affected source"
        )
    try:
        table = pq.read_table(io.BytesIO(data))
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise StoreError(f"{path} is not a readable Parquet file ({exc}); the store is damaged") from exc
    if not any(table.schema.equals(s, check_metadata=False) for s in (STORED_SCHEMA, SCHEMA)):
        raise StoreError(
            f"{path} does not have the store's metadata columns: it has {_columns(table.schema)}, a store's "
            f"are {_columns(STORED_SCHEMA)} (before format version 2: without {ROW_CRC32}); the store is "
            "damaged"
        )
    return table


def _columns(schema: pa.Schema) -> str:
    """The columns of ``schema`` with their types, e.g. ``row_id int64 not null, country string``."""
    return ", ".join(f"{f.name} {f.type}{'' if f.nullable else ' not null'}" for f in schema)


def shard_table_problem(
    table: pa.Table, first_row: int, rows: int, source: str, embeddings_sha256: str
) -> str | None:
    """What makes ``table`` not the metadata of the shard of ``rows`` rows from store row ``first_row`` of
    source ``source`` ("*": reordered, rows of any source) whose embeddings file has ``embeddings_sha256``,
    or None. The rows' ``row_id`` must run from ``first_row`` one by one (a metadata file put in another
    shard's place is caught here), and the embeddings SHA-256 the file records, where it records one
    (stores written before it did not), must be that one."""
    if table.num_rows != rows:
        return f"holds {table.num_rows} rows, the manifest's shard {rows}"
    ids = table.column("row_id").to_numpy(zero_copy_only=False)
    wrong = np.flatnonzero(ids != np.arange(first_row, first_row + rows, dtype=np.int64))
    if wrong.size:
        i = int(wrong[0])
        return f"row {i} has row_id {ids[i]}, expected {first_row + i}: it is another shard's metadata"
    if source != "*" and rows and not pc.all(pc.equal(table.column("source"), source)).as_py():
        return f"holds rows of another source than {source!r}"
    bound = (table.schema.metadata or {}).get(EMBEDDINGS_SHA256)
    if bound is not None and bound.decode(errors="replace") != embeddings_sha256:
        return (
            f"belongs with embeddings of SHA-256 {bound[:12].decode(errors='replace')}..., not the shard's "
            f"{embeddings_sha256[:12]}...: the embeddings files of two shards were exchanged"
        )
    return None


def empty_table() -> pa.Table:
    """A metadata table with no rows."""
    return SCHEMA.empty_table()


def as_dicts(table: pa.Table) -> list[dict[str, Any]]:
    """Rows as dicts (for reports and JSON)."""
    return table.to_pylist()
