"""The built-in dataset formats: their default columns, and checking a ColumnMap against a file's header."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from georag.datasets.records import ColumnMap
from georag.errors import DatasetError

FORMATS: tuple[str, ...] = ("im2gps", "im2gps3k", "yfcc4k", "mp16", "osv5m", "generic")

_IM2GPS = ColumnMap(image_id="IMG_ID", lat="LAT", lon="LON", author="AUTHOR")

_DEFAULTS: dict[str, ColumnMap] = {
    "im2gps": _IM2GPS,
    "im2gps3k": _IM2GPS,
    # The YFCC header is mostly column numbers, with LON before LAT. Column "3" is the uploader's Flickr
    # NSID ("55289779@N00"), the same id style as the AUTHOR column of MP-16 and IM2GPS, so one
    # photographer is recognisable across these datasets (e.g. to keep a user's photos out of a
    # benchmark's neighbors).
    "yfcc4k": ColumnMap(image_id="IMG_ID", lat="LAT", lon="LON", author="3"),
    "mp16": ColumnMap(image_id="IMG_ID", lat="LAT", lon="LON", author="AUTHOR"),
    "osv5m": ColumnMap(image_id="id", lat="latitude", lon="longitude", image_name="{id}.jpg"),
}

# Optional country columns, best first: MP16-Pro has both a country name and its code, and the code
# cannot be misread.
_COUNTRY_CANDIDATES: dict[str, tuple[str, ...]] = {
    "mp16": ("country_code", "country"),
    "osv5m": ("country",),
}

_ROLES = ("image_id", "lat", "lon", "author", "country")
_MAX_LISTED = 40


def check_format(format: str, columns: ColumnMap | None) -> None:
    """Raise DatasetError for an unknown format, or the generic one without a ColumnMap."""
    if format not in FORMATS:
        raise DatasetError(f"unknown dataset format {format!r}; expected one of {', '.join(FORMATS)}")
    if format == "generic" and columns is None:
        raise DatasetError("the generic format needs columns=ColumnMap(image_id=..., lat=..., lon=...)")


def default_columns(format: str, header: Sequence[str] | None = None) -> ColumnMap:
    """A built-in format's ColumnMap; given the file's ``header``, with its optional country column filled in.

    Without a header the optional country column (MP-16 ``country_code``/``country``, OSV-5M ``country``)
    is left out, since it may not be in the file. Raises DatasetError for "generic" or an unknown format.
    """
    if format not in _DEFAULTS:
        raise DatasetError(
            f"no default columns for format {format!r}; built-in formats: {', '.join(_DEFAULTS)}"
        )
    columns = _DEFAULTS[format]
    present = set(header or ())
    country = next((c for c in _COUNTRY_CANDIDATES.get(format, ()) if c in present), None)
    return replace(columns, country=country) if country is not None else columns


def resolve_columns(format: str, header: Sequence[str], columns: ColumnMap | None, path: Path) -> ColumnMap:
    """The ColumnMap to read ``path`` with: ``columns`` if given, else the format's default for this header.

    Every column the map names must occur exactly once in the header (DatasetError otherwise).
    """
    check_format(format, columns)
    if columns is None:
        columns = default_columns(format, header)
    for role in _ROLES:
        name = getattr(columns, role)
        if name is None:
            continue
        count = sum(1 for h in header if h == name)
        if count == 0:
            if _looks_binary(header):
                raise DatasetError(
                    f"{path} does not look like a text table (its first line holds control or undecodable "
                    "bytes); give the metadata CSV, Parquet or JSONL file of the dataset"
                )
            raise DatasetError(
                f"{path}: no column {name!r} (the {role} column of format {format!r}); "
                f"the file has columns: {_listing(header)}"
            )
        if count > 1:
            # pyarrow would take the first and the csv module the last: neither choice is safe.
            raise DatasetError(f"{path}: column {name!r} (the {role} column) occurs {count} times")
    return columns


def _looks_binary(header: Sequence[str]) -> bool:
    """True when the header holds NUL or other control characters, or undecodable bytes."""
    text = "".join(header)
    return any((ord(c) < 32 and c not in "\t\r\n") or c == "\ufffd" for c in text)


def _listing(header: Sequence[str]) -> str:
    shown = ", ".join(repr(h) for h in header[:_MAX_LISTED])
    more = len(header) - _MAX_LISTED
    return f"{shown}, ... ({more} more)" if more > 0 else (shown or "(none)")
