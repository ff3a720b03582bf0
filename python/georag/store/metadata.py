"""The per-row metadata a store keeps (Parquet): schema, one shard's table, reading with a checksum."""

from __future__ import annotations

import hashlib
import io
import os
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
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
author / uploader (null when unknown) and the row's index in its source metadata file."""


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


def to_parquet_bytes(table: pa.Table) -> bytes:
    """The table as Parquet (zstd) in memory, for an atomic write."""
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
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
    table = pq.read_table(io.BytesIO(data))
    if not table.schema.equals(SCHEMA, check_metadata=False):
        raise StoreError(f"{path} does not have the store's metadata columns: {table.schema.names}")
    return table


def empty_table() -> pa.Table:
    """A metadata table with no rows."""
    return SCHEMA.empty_table()


def as_dicts(table: pa.Table) -> list[dict[str, Any]]:
    """Rows as dicts (for reports and JSON)."""
    return table.to_pylist()
