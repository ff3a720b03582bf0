"""Vectorised validation of raw metadata columns: parse coordinates, reject bad rows, build the records."""

from __future__ import annotations

import logging

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from georag.datasets.records import ID_PLACEHOLDER, RECORD_SCHEMA, ColumnMap, Rejection
from georag.errors import DatasetError
from georag.geo.countries import normalize_country

log = logging.getLogger(__name__)

# Rejection reasons; a row with several faults gets the first that applies, in this order.
MISSING_ID = "missing image id"
NOT_A_NUMBER = "not a number"
LAT_RANGE = "lat out of range"
LON_RANGE = "lon out of range"
ZERO = "zero coordinates (unknown)"
DUPLICATE = "duplicate image id"
_REASONS = ("", MISSING_ID, NOT_A_NUMBER, LAT_RANGE, LON_RANGE, ZERO, DUPLICATE)

# A plain decimal number as text; RE2's \d is ASCII only. "nan"/"inf" spellings fail on purpose.
_NUMBER = r"^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$"
_NULL_TEXT = pa.scalar(None, pa.string())


def validate(raw: pa.Table, columns: ColumnMap, *, zero_is_unknown: bool) -> tuple[pa.Table, list[Rejection]]:
    """The kept rows (schema ``RECORD_SCHEMA``, file order) and one Rejection per dropped row."""
    ids = pc.utf8_trim_whitespace(_text(raw, columns.image_id, integers_only=True))
    lat, lat_ok = _coordinate(raw, columns.lat)
    lon, lon_ok = _coordinate(raw, columns.lon)
    missing = _bools(pc.or_kleene(pc.is_null(ids), pc.equal(pc.utf8_length(ids), 0)))
    with np.errstate(invalid="ignore"):  # NaN marks unparsed cells, already rejected as not a number
        faults = (
            missing,
            ~(lat_ok & lon_ok),
            np.abs(lat) > 90.0,
            np.abs(lon) > 180.0,
            (lat == 0.0) & (lon == 0.0) if zero_is_unknown else np.zeros(len(lat), dtype=bool),
        )
    code = np.zeros(raw.num_rows, dtype=np.int8)
    for value, fault in enumerate(faults, start=1):
        code[(code == 0) & fault] = value
    first_of = _mark_duplicates(ids, code)
    keep = code == 0
    mask = pa.array(keep)
    kept_ids = ids.filter(mask)
    table = pa.Table.from_arrays(
        [
            pa.array(np.flatnonzero(keep), pa.int64()),
            kept_ids,
            _image_names(kept_ids, columns.image_name),
            pa.array(lat[keep], pa.float64()),
            pa.array(lon[keep], pa.float64()),
            _authors(raw, columns.author).filter(mask),
            _countries(raw, columns.country).filter(mask),
        ],
        schema=RECORD_SCHEMA,
    )
    return table, _rejections(raw, columns, ids, code, first_of)


def _text(raw: pa.Table, name: str, *, integers_only: bool = False) -> pa.ChunkedArray:
    """A column as text; ids may only be text or integers (a float id would not be the id any more)."""
    column = raw.column(name)
    kind = column.type
    if pa.types.is_string(kind):
        return column
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    if (
        pa.types.is_string(kind)
        or pa.types.is_large_string(kind)
        or pa.types.is_integer(kind)
        or not integers_only
    ):
        try:
            return pc.cast(column, pa.string())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise DatasetError(f"column {name!r} of type {column.type} cannot be read as text") from exc
    raise DatasetError(f"image id column {name!r} has type {column.type}; expected text or integers")


def _coordinate(raw: pa.Table, name: str) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    """The column as float64 (NaN where unusable) and where it holds a finite number."""
    kind = raw.column(name).type
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind):
        values = pc.cast(raw.column(name), pa.float64())
    else:
        text = pc.utf8_trim_whitespace(_text(raw, name))
        parsable = pc.fill_null(pc.match_substring_regex(text, _NUMBER), False)
        values = pc.cast(pc.if_else(parsable, text, _NULL_TEXT), pa.float64())
    out = np.asarray(values.to_numpy(), dtype=np.float64)  # nulls become NaN
    return out, np.isfinite(out)


def _bools(array: pa.ChunkedArray) -> npt.NDArray[np.bool_]:
    return np.asarray(pc.fill_null(array, False).to_numpy(), dtype=bool)


def _mark_duplicates(ids: pa.ChunkedArray, code: npt.NDArray[np.int8]) -> dict[int, int]:
    """Mark later repeats of a kept id as duplicates (in ``code``); returns {duplicate row: first row}."""
    candidates = np.flatnonzero(code == 0)
    if candidates.size < 2:
        return {}
    kept = ids if candidates.size == len(ids) else ids.filter(pa.array(code == 0))
    keys = _dictionary_keys(kept)
    is_first, first_of_key = _first_seen(keys)
    repeats = np.flatnonzero(~is_first)
    if not repeats.size:
        return {}
    code[candidates[repeats]] = _REASONS.index(DUPLICATE)
    firsts = candidates[first_of_key[keys[repeats]]]
    return dict(zip(candidates[repeats].tolist(), firsts.tolist(), strict=True))


def _dictionary_keys(values: pa.ChunkedArray) -> npt.NDArray[np.int64]:
    """One integer per value, equal integers for equal values (Arrow's hash table, no Python strings)."""
    encoded = pc.dictionary_encode(values)
    chunks = encoded.chunks
    if not chunks:
        return np.zeros(0, dtype=np.int64)
    # Arrow encodes a chunked array against one shared dictionary; unify only if that ever changes.
    shared = {chunk.dictionary.buffers()[-1].address for chunk in chunks if len(chunk.dictionary)}
    if len(shared) > 1:
        chunks = encoded.unify_dictionaries().chunks
    return np.concatenate([np.asarray(c.indices.to_numpy(), dtype=np.int64) for c in chunks])


def _first_seen(keys: npt.NDArray[np.int64]) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.int64]]:
    """Whether each position holds the first occurrence of its key, and each key's first position."""
    is_first = np.ones(keys.size, dtype=bool)
    is_first[1:] = keys[1:] > np.maximum.accumulate(keys)[:-1]
    order = np.flatnonzero(is_first)
    if np.array_equal(keys[order], np.arange(order.size)):
        # Arrow numbers dictionary entries in order of first appearance: a linear pass suffices.
        return is_first, order
    uniq, first_pos = np.unique(keys, return_index=True)
    first_of_key = np.zeros(int(uniq[-1]) + 1, dtype=np.int64)
    first_of_key[uniq] = first_pos
    return first_of_key[keys] == np.arange(keys.size), first_of_key


def _image_names(ids: pa.ChunkedArray, template: str) -> pa.ChunkedArray:
    """The template with every ``{id}`` replaced by the row's id."""
    pieces = template.split(ID_PLACEHOLDER)
    if pieces == ["", ""]:
        return ids
    parts: list[pa.ChunkedArray | pa.Scalar] = []
    for i, piece in enumerate(pieces):
        if i:
            parts.append(ids)
        if piece:
            parts.append(pa.scalar(piece, pa.string()))
    return pc.binary_join_element_wise(*parts, "")


def _authors(raw: pa.Table, name: str | None) -> pa.ChunkedArray:
    if name is None:
        return pa.chunked_array([pa.nulls(raw.num_rows, pa.string())])
    author = pc.utf8_trim_whitespace(_text(raw, name))
    return pc.if_else(pc.equal(pc.utf8_length(author), 0), _NULL_TEXT, author)


def _countries(raw: pa.Table, name: str | None) -> pa.ChunkedArray:
    """ISO alpha-2 codes; each distinct spelling is looked up once, unknown ones become null."""
    if name is None:
        return pa.chunked_array([pa.nulls(raw.num_rows, pa.string())])
    encoded = pc.dictionary_encode(_text(raw, name)).unify_dictionaries()
    if not encoded.num_chunks:
        return pa.chunked_array([], pa.string())
    spellings = encoded.chunk(0).dictionary.to_pylist()
    codes = [normalize_country(s) for s in spellings]
    unknown = sorted({s.strip() for s, c in zip(spellings, codes, strict=True) if c is None and s.strip()})
    if unknown:
        log.info("%d country spellings not recognised (left empty), e.g. %s", len(unknown), unknown[:5])
    lookup = pa.array(codes, pa.string())
    return pa.chunked_array([lookup.take(chunk.indices) for chunk in encoded.chunks], pa.string())


def _rejections(
    raw: pa.Table,
    columns: ColumnMap,
    ids: pa.ChunkedArray,
    code: npt.NDArray[np.int8],
    first_of: dict[int, int],
) -> list[Rejection]:
    rows = np.flatnonzero(code)
    if not rows.size:
        return []
    where = pa.array(rows)
    raw_lat = _text(raw, columns.lat).take(where).to_pylist()
    raw_lon = _text(raw, columns.lon).take(where).to_pylist()
    raw_ids = ids.take(where).to_pylist()
    out: list[Rejection] = []
    for row, image_id, la, lo in zip(rows.tolist(), raw_ids, raw_lat, raw_lon, strict=True):
        reason = _REASONS[code[row]]
        if reason == DUPLICATE:
            detail = f"image id {image_id!r} already kept from row {first_of[row]}"
        else:
            detail = f"lat={la!r} lon={lo!r}"
        out.append(Rejection(row, image_id or None, reason, detail))
    return out
