"""Dataset metadata readers: IM2GPS, IM2GPS3k, YFCC4k, MP-16, OSV-5M and generic CSV/Parquet -> records."""

from __future__ import annotations

from georag.datasets.formats import FORMATS, default_columns
from georag.datasets.read import read_dataset
from georag.datasets.records import RECORD_SCHEMA, ColumnMap, DatasetRecords, Rejection

__all__ = [
    "FORMATS",
    "RECORD_SCHEMA",
    "ColumnMap",
    "DatasetRecords",
    "Rejection",
    "default_columns",
    "read_dataset",
]
