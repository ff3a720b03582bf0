"""GeoStore: the geotagged embedding database (format, readers, build, search)."""

from __future__ import annotations

from georag.datasets import FORMATS, ColumnMap, read_dataset
from georag.store.build import BuildReport, BuildRequest, build_source
from georag.store.store import GeoStore

__all__ = [
    "FORMATS",
    "BuildReport",
    "BuildRequest",
    "ColumnMap",
    "GeoStore",
    "build_source",
    "read_dataset",
]
