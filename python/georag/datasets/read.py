"""read_dataset: one dataset metadata file -> validated DatasetRecords."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from georag.datasets.formats import check_format, resolve_columns
from georag.datasets.records import ColumnMap, DatasetRecords
from georag.datasets.source import open_source
from georag.datasets.validate import validate

log = logging.getLogger(__name__)


def read_dataset(
    path: str | os.PathLike[str],
    format: str,
    *,
    columns: ColumnMap | None = None,
    zero_is_unknown: bool = True,
) -> DatasetRecords:
    """Read and validate a dataset's metadata file (CSV, TSV or Parquet), columns chosen by name.

    ``format`` is one of ``FORMATS``; ``columns`` overrides a built-in format's columns and is required for
    ``"generic"``. Rows with unusable coordinates or ids are dropped and listed in ``rejections``; with
    ``zero_is_unknown`` a (0, 0) coordinate counts as unknown, which is how Flickr-derived datasets mark
    a missing location. Raises DatasetError when the file cannot be read as that format.
    """
    check_format(format, columns)
    file = Path(path)
    source = open_source(file)
    chosen = resolve_columns(format, source.header, columns, file)
    raw = source.read(chosen.required())
    table, rejections = validate(raw, chosen, zero_is_unknown=zero_is_unknown)
    records = DatasetRecords(format, file, chosen, table, raw.num_rows, rejections)
    log.info(
        "%s: kept %d of %d rows as %s records, rejected %s",
        file,
        len(records),
        raw.num_rows,
        format,
        records.rejected_counts(),
    )
    return records
