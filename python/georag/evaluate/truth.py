"""Ground truth for scoring: a benchmark metadata file read through the store's dataset readers, or arrays."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from georag.datasets import ColumnMap, default_columns, read_dataset
from georag.errors import EvaluationError
from georag.evaluate.join import check_unique
from georag.geo.coords import check_latlon

GENERIC_COLUMNS = ("id", "lat", "lon")
"""The truth columns of ``--truth-format generic`` when none are named."""


@dataclass(frozen=True, repr=False)
class Truth:
    """The true location of each photo: unique ids and valid coordinates."""

    ids: tuple[str, ...]
    lat: npt.NDArray[np.float64]
    lon: npt.NDArray[np.float64]
    path: Path | None = None
    """The metadata file read, None for arrays."""
    format: str = "arrays"
    """The reader format (im2gps3k, yfcc4k, osv5m, generic, ...)."""
    rejected: dict[str, int] = field(default_factory=dict)
    """Rows of the file the reader dropped, by reason (bad or (0, 0) coordinates, repeated ids)."""

    @classmethod
    def from_arrays(cls, ids: Iterable[object], lat: npt.ArrayLike, lon: npt.ArrayLike) -> Truth:
        """Truth from arrays; EvaluationError for repeated ids, GeoRagError for invalid coordinates."""
        id_tuple = tuple(str(i) for i in ids)
        la, lo = check_latlon(lat, lon, "truth coordinates")
        if la.size != len(id_tuple):
            raise EvaluationError(f"truth: {len(id_tuple)} ids but {la.size} coordinates")
        check_unique(id_tuple, "truth")
        return cls(id_tuple, la, lo)

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        where = f", path={str(self.path)!r}" if self.path is not None else ""
        return f"Truth(format={self.format!r}{where}, rows={len(self)}, rejected={self.rejected})"


def read_truth(
    path: str | os.PathLike[str],
    format: str = "im2gps3k",
    *,
    id_col: str | None = None,
    lat_col: str | None = None,
    lon_col: str | None = None,
) -> Truth:
    """Read a benchmark's metadata with `georag.datasets.read_dataset` (format im2gps, im2gps3k,
    yfcc4k, mp16, osv5m or generic). Named columns override the format's; generic defaults to id, lat, lon.
    Rows the reader rejects (unusable or (0, 0) coordinates, repeated ids) are not truth rows."""
    columns = None
    if format == "generic" or any((id_col, lat_col, lon_col)):
        base = ColumnMap(*GENERIC_COLUMNS) if format == "generic" else default_columns(format)
        columns = ColumnMap(
            image_id=id_col or base.image_id, lat=lat_col or base.lat, lon=lon_col or base.lon
        )
    records = read_dataset(path, format, columns=columns)
    table = records.table
    return Truth(
        tuple(str(i) for i in table.column("image_id").to_pylist()),
        np.asarray(table.column("lat").to_numpy(), dtype=np.float64),
        np.asarray(table.column("lon").to_numpy(), dtype=np.float64),
        path=records.path,
        format=format,
        rejected=records.rejected_counts(),
    )
