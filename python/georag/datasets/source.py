"""Raw access to a metadata file (CSV, TSV or Parquet): its header, and chosen columns as an Arrow table."""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from georag.errors import DatasetError

log = logging.getLogger(__name__)

T = TypeVar("T")

_HEADER_PROBE = 1 << 20
_COMPRESSION_SUFFIXES = (".gz", ".bz2", ".zst", ".lz4")
_PARQUET_MAGIC = b"PAR1"


@dataclass(frozen=True)
class MetadataSource:
    """One metadata file: its kind, its header and whether any data follows the header."""

    path: Path
    kind: str  # "csv" or "parquet"
    delimiter: str
    header: list[str]
    has_data: bool

    def read(self, names: list[str]) -> pa.Table:
        """The columns ``names`` in file order; CSV cells as text exactly as written ("" when empty)."""
        if self.kind == "parquet":
            return _guard(self.path, lambda: pq.read_table(self.path, columns=names))
        if not self.has_data:
            # pyarrow cannot read a header that has no line ending and no rows after it.
            return pa.table({n: pa.array([], pa.string()) for n in names})
        parse = pacsv.ParseOptions(delimiter=self.delimiter, newlines_in_values=True)
        # Every column as text: long integer ids never pass through float, and a bad number becomes a
        # rejected row instead of a failed read.
        convert = pacsv.ConvertOptions(
            include_columns=names, column_types=dict.fromkeys(names, pa.string()), strings_can_be_null=False
        )
        return _guard(
            self.path, lambda: pacsv.read_csv(self.path, parse_options=parse, convert_options=convert)
        )


def open_source(path: Path) -> MetadataSource:
    """Inspect ``path``: Parquet (by extension or magic bytes), else CSV (tab-separated for .tsv/.tab)."""
    if not path.exists():
        raise DatasetError(f"dataset file not found: {path}")
    if not path.is_file():
        raise DatasetError(f"not a file: {path} (pass the dataset's metadata CSV or Parquet file)")
    name = path.name.lower()
    if name.endswith((".parquet", ".pq")) or _starts_with(path, _PARQUET_MAGIC):
        schema = _guard(path, lambda: pq.read_schema(path))
        return MetadataSource(path, "parquet", "", list(schema.names), True)
    for suffix in _COMPRESSION_SUFFIXES:
        name = name.removesuffix(suffix)
    delimiter = "\t" if name.endswith((".tsv", ".tab")) else ","
    header, has_data = _csv_header(path, delimiter)
    log.debug("%s: CSV (delimiter %r), %d columns", path, delimiter, len(header))
    return MetadataSource(path, "csv", delimiter, header, has_data)


def _csv_header(path: Path, delimiter: str) -> tuple[list[str], bool]:
    """The header's column names (csv module rules, BOM dropped) and whether anything follows it."""
    chunk: bytes = _guard(path, lambda: _read_start(path))
    at_end = len(chunk) < _HEADER_PROBE
    # errors="replace": the probe may end inside a multi-byte character; only the header is used.
    lines = io.StringIO(chunk.decode("utf-8-sig", errors="replace"), newline="")
    header = next(csv.reader(lines, delimiter=delimiter), None)
    if header is None:
        raise DatasetError(f"{path}: empty file, no header row")
    return header, not at_end or bool(lines.read().strip())


def _read_start(path: Path) -> bytes:
    with pa.input_stream(str(path), compression="detect") as stream:
        return bytes(stream.read(_HEADER_PROBE))


def _starts_with(path: Path, magic: bytes) -> bool:
    with path.open("rb") as fh:
        return fh.read(len(magic)) == magic


def _guard(path: Path, read: Callable[[], T]) -> T:
    """Run ``read``, turning Arrow and OS failures into a DatasetError that names the file."""
    try:
        return read()
    except (pa.ArrowException, OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot read {path}: {exc}") from exc
