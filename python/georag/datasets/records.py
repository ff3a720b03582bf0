"""The reader's result types: which columns hold what, rejected rows, and the validated records table."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from georag.errors import DatasetError

ID_PLACEHOLDER = "{id}"

RECORD_SCHEMA = pa.schema(
    [
        pa.field("source_row", pa.int64(), nullable=False),
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("image_name", pa.string(), nullable=False),
        pa.field("lat", pa.float64(), nullable=False),
        pa.field("lon", pa.float64(), nullable=False),
        pa.field("author", pa.string()),
        pa.field("country", pa.string()),
    ]
)
"""The schema of ``DatasetRecords.table``: kept rows in file order."""


@dataclass(frozen=True)
class ColumnMap:
    """Which columns of a CSV/Parquet hold what; used by the generic format and to describe the built-in ones.

    ``image_name`` is a template: every ``{id}`` in it is replaced by the image id (plain text substitution,
    no other ``str.format`` field), e.g. ``"{id}.jpg"`` or ``"images/{id}.jpg"``.
    """

    image_id: str
    lat: str
    lon: str
    author: str | None = None
    country: str | None = None
    image_name: str = ID_PLACEHOLDER

    def __post_init__(self) -> None:
        for role in ("image_id", "lat", "lon"):
            if not getattr(self, role):
                raise DatasetError(f"ColumnMap.{role} must name a column")
        if ID_PLACEHOLDER not in self.image_name:
            # Without the placeholder every row would point at the same image file.
            raise DatasetError(f"ColumnMap.image_name template {self.image_name!r} must contain '{{id}}'")

    def required(self) -> list[str]:
        """The column names this map reads, each once, in role order."""
        names = [self.image_id, self.lat, self.lon, self.author, self.country]
        return list(dict.fromkeys(n for n in names if n))


@dataclass(frozen=True)
class Rejection:
    """One data row that was not kept, and why."""

    source_row: int
    image_id: str | None
    reason: str
    detail: str


@dataclass(frozen=True)
class DatasetRecords:
    """The validated rows of one metadata file (``table``, schema ``RECORD_SCHEMA``) and the rejected ones."""

    format: str
    path: Path
    columns: ColumnMap
    table: pa.Table
    total_rows: int
    rejections: list[Rejection]

    def rejected_counts(self) -> dict[str, int]:
        """How many rows were rejected for each reason."""
        return dict(Counter(r.reason for r in self.rejections))

    def __len__(self) -> int:
        return int(self.table.num_rows)

    def __repr__(self) -> str:
        return (
            f"DatasetRecords(format={self.format!r}, path={str(self.path)!r}, "
            f"kept={len(self)} of {self.total_rows} rows, rejected={self.rejected_counts()})"
        )
