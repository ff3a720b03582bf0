"""Ground truth for scoring: a benchmark metadata file read through the store's dataset readers, or arrays."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import numpy.typing as npt

from georag.datasets import FORMATS, ColumnMap, default_columns, read_dataset
from georag.datasets.source import open_source
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


def _base_columns(format: str) -> ColumnMap:
    return ColumnMap(*GENERIC_COLUMNS) if format == "generic" else default_columns(format)


def _check_columns(file: Path, format: str, columns: ColumnMap) -> None:
    """EvaluationError when the id, lat or lon column is absent, suggesting the formats the file fits."""
    header = open_source(file).header
    needed = (columns.image_id, columns.lat, columns.lon)
    absent = [name for name in needed if name not in header]
    if not absent:
        return
    fits = [
        f
        for f in FORMATS
        if f != format and all(n in header for n in (lambda c: (c.image_id, c.lat, c.lon))(_base_columns(f)))
    ]
    shown = ", ".join(repr(h) for h in header[:40]) or "(none)"
    message = (
        f"{file}: no column {', '.join(repr(a) for a in absent)} for --truth-format {format} "
        f"(it needs {', '.join(needed)}); the file has columns: {shown}."
    )
    if fits:
        others = f" (or {', '.join(fits[1:])})" if len(fits) > 1 else ""
        message += f" These columns fit --truth-format {fits[0]}{others}."
    else:
        message += " Name them with --truth-id-col, --truth-lat-col and --truth-lon-col."
    raise EvaluationError(message)


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
    Only the id, latitude and longitude columns are needed (``IMG_ID,LAT,LON`` is an im2gps3k truth file);
    when they are absent but the file fits another format, the error names it.
    Rows the reader rejects (unusable or (0, 0) coordinates, repeated ids) are not truth rows."""
    if format not in FORMATS:
        raise EvaluationError(f"unknown truth format {format!r}; choose one of {', '.join(FORMATS)}")
    base = _base_columns(format)
    columns = ColumnMap(image_id=id_col or base.image_id, lat=lat_col or base.lat, lon=lon_col or base.lon)
    if format != "generic":
        # Keep the format's image-name template (OSV-5M ids name "{id}.jpg"); drop author and country.
        columns = replace(columns, image_name=default_columns(format).image_name)
    file = Path(path)
    if file.is_file():
        _check_columns(file, format, columns)
    records = read_dataset(file, format, columns=columns)
    table = records.table
    return Truth(
        tuple(str(i) for i in table.column("image_id").to_pylist()),
        np.asarray(table.column("lat").to_numpy(), dtype=np.float64),
        np.asarray(table.column("lon").to_numpy(), dtype=np.float64),
        path=records.path,
        format=format,
        rejected=records.rejected_counts(),
    )
