"""Tests for georag.datasets: metadata files -> validated records, checked against the csv module."""

from __future__ import annotations

import csv
import math
import random
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from georag.datasets import (
    FORMATS,
    RECORD_SCHEMA,
    ColumnMap,
    DatasetRecords,
    Rejection,
    default_columns,
    read_dataset,
)
from georag.datasets.validate import _first_seen
from georag.errors import DatasetError, GeoRagError

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
IM2GPS3K = SHARED / "im2gps3k" / "im2gps3k_places365.csv"
IM2GPS3K_META = SHARED / "geoestimation" / "meta" / "im2gps3k_places365.csv"
IM2GPS_META = SHARED / "geoestimation" / "meta" / "im2gps_places365.csv"
YFCC4K = SHARED / "yfcc4k" / "yfcc4k_places365.csv"
OSV5M_WEBSITE = SHARED / "osv5m" / "website_images_with_coords.csv"
OSV5M_IMAGES = SHARED / "osv5m" / "images"


def _need(*paths: Path) -> None:
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        pytest.skip(f"needs the shared reference data (../shared/data): missing {', '.join(missing)}")


def _dict_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _write(path: Path, text: str, newline: str = "\n") -> Path:
    path.write_bytes(text.replace("\n", newline).encode("utf-8"))
    return path


def _col(records: DatasetRecords, name: str) -> list[object]:
    return records.table.column(name).to_pylist()


# --- real benchmark files -------------------------------------------------------------------------------


def test_formats_are_the_documented_ones() -> None:
    assert FORMATS == ("im2gps", "im2gps3k", "yfcc4k", "mp16", "osv5m", "generic")


def test_im2gps3k_matches_an_independent_csv_parse() -> None:
    _need(IM2GPS3K)
    rows = _dict_rows(IM2GPS3K)
    records = read_dataset(IM2GPS3K, "im2gps3k")
    assert len(rows) == 2997
    assert records.total_rows == 2997 and len(records) == 2997 and records.rejections == []
    assert records.table.schema.equals(RECORD_SCHEMA)
    assert _col(records, "source_row") == list(range(2997))
    assert _col(records, "image_id") == [r["IMG_ID"] for r in rows]
    assert _col(records, "image_name") == [r["IMG_ID"] for r in rows]  # IMG_ID already ends in .jpg
    assert _col(records, "lat") == [float(r["LAT"]) for r in rows]
    assert _col(records, "lon") == [float(r["LON"]) for r in rows]
    assert _col(records, "author") == [r["AUTHOR"] or None for r in rows]
    assert set(_col(records, "country")) == {None}
    first = records.table.slice(0, 1).to_pylist()[0]
    assert first["image_id"] == "1000269685_e60e9cdfb4_1125_78841376@N00.jpg"
    assert (first["lat"], first["lon"], first["author"]) == (32.325436, -64.764404, "78841376@N00")


def test_im2gps3k_crlf_copy_reads_the_same() -> None:
    _need(IM2GPS3K, IM2GPS3K_META)
    assert b"\r\n" in IM2GPS3K_META.read_bytes()[:200]  # the GeoEstimation copy really is CRLF
    plain = read_dataset(IM2GPS3K, "im2gps3k")
    crlf = read_dataset(IM2GPS3K_META, "im2gps3k")
    assert crlf.table.equals(plain.table)
    assert not any("\r" in s for s in _col(crlf, "image_id") + _col(crlf, "author"))  # type: ignore[operator]


def test_im2gps_meta_reads_as_im2gps() -> None:
    _need(IM2GPS_META)
    rows = _dict_rows(IM2GPS_META)
    records = read_dataset(IM2GPS_META, "im2gps")
    assert len(records) == len(rows) == 237
    assert _col(records, "lat") == [float(r["LAT"]) for r in rows]
    assert _col(records, "lon") == [float(r["LON"]) for r in rows]


def test_yfcc4k_reads_lat_and_lon_by_name() -> None:
    _need(YFCC4K)
    with YFCC4K.open(newline="", encoding="utf-8") as fh:
        header = next(csv.reader(fh))
    assert header.index("LON") < header.index("LAT")  # the trap: LON comes first
    rows = _dict_rows(YFCC4K)
    records = read_dataset(YFCC4K, "yfcc4k")
    assert len(rows) == 4536 and records.total_rows == 4536
    assert _col(records, "lat") == [float(r["LAT"]) for r in rows]
    assert _col(records, "lon") == [float(r["LON"]) for r in rows]
    assert _col(records, "author") == [r["3"] or None for r in rows]
    by_id = {r["image_id"]: r for r in records.table.to_pylist()}
    known = by_id["10201275523.jpg"]
    assert (known["lon"], known["lat"]) == (-79.365637, 43.649708)
    assert known["author"] == "55289779@N00" and known["image_name"] == "10201275523.jpg"
    # This row has a quoted tag list full of commas before the coordinates.
    quoted = by_id["7289030198.jpg"]
    assert (quoted["lat"], quoted["lon"], quoted["author"]) == (40.740067, -73.985495, "53430201@N03")


def test_yfcc4k_rejections_match_an_independent_count() -> None:
    _need(YFCC4K)
    expected = 0
    seen: set[str] = set()
    for r in _dict_rows(YFCC4K):
        image_id = r["IMG_ID"].strip()
        try:
            lat, lon = float(r["LAT"]), float(r["LON"])
        except ValueError:
            expected += 1
            continue
        bad = not image_id or not (math.isfinite(lat) and math.isfinite(lon))
        bad = bad or abs(lat) > 90 or abs(lon) > 180 or (lat == 0 and lon == 0) or image_id in seen
        expected += bad
        if not bad:
            seen.add(image_id)
    records = read_dataset(YFCC4K, "yfcc4k")
    assert len(records.rejections) == expected
    assert len(records) + expected == 4536


def test_generic_on_osv5m_website_file() -> None:
    _need(OSV5M_WEBSITE, OSV5M_IMAGES)
    rows = _dict_rows(OSV5M_WEBSITE)
    columns = ColumnMap(
        image_id="id", lat="true_lat", lon="true_lon", country="country", image_name="{id}.jpg"
    )
    records = read_dataset(OSV5M_WEBSITE, "generic", columns=columns)
    assert records.columns == columns and len(records) == len(rows) == 6
    assert _col(records, "image_id") == [r["id"] for r in rows]
    assert "4065883540137904" in _col(records, "image_id")
    assert _col(records, "lat") == [float(r["true_lat"]) for r in rows]
    assert _col(records, "lon") == [float(r["true_lon"]) for r in rows]
    assert _col(records, "country") == [r["country"] for r in rows]  # already ISO alpha-2
    assert sorted(_col(records, "image_name")) == sorted(p.name for p in OSV5M_IMAGES.glob("*.jpg"))


# --- built-in formats on synthetic files ----------------------------------------------------------------


def test_osv5m_keeps_long_integer_ids_exact(tmp_path: Path) -> None:
    # 2**53 + 1 has no float64: any trip through float would change it.
    path = _write(
        tmp_path / "train.csv",
        "id,latitude,longitude,country,region,sub-region,city\n"
        "4065883540137904,29.93,78.13,IN,Uttarakhand,Haridwar,Haridwar\n"
        "9007199254740993,60.25,5.43,no,Hordaland,Os,Syfteland\n"
        "123456789012345678,48.85,2.35,France,IDF,Paris,Paris\n"
        "517681129360654,1.0,2.0,Narnia,,,\n",
    )
    records = read_dataset(path, "osv5m")
    assert _col(records, "image_id") == [
        "4065883540137904",
        "9007199254740993",
        "123456789012345678",
        "517681129360654",
    ]
    assert _col(records, "image_name")[1] == "9007199254740993.jpg"
    assert _col(records, "country") == ["IN", "NO", "FR", None]  # unknown name: null, not a rejection
    assert records.columns.country == "country" and records.columns.author is None
    assert set(_col(records, "author")) == {None}


def test_mp16_prefers_country_code_over_country(tmp_path: Path) -> None:
    pro = _write(
        tmp_path / "mp16_pro.csv",
        "IMG_ID,AUTHOR,LAT,LON,neighbourhood,city,county,state,region,country,country_code,continent\n"
        "a/b/1.jpg,1@N00,41.9,12.5,,Rome,,Lazio,,Italia,it,Europe\n"
        "a/b/2.jpg,,51.5,-0.1,,London,,England,,United Kingdom,gb,Europe\n",
    )
    records = read_dataset(pro, "mp16")
    assert records.columns.country == "country_code"
    assert _col(records, "country") == ["IT", "GB"]
    assert _col(records, "author") == ["1@N00", None]
    assert _col(records, "image_name") == ["a/b/1.jpg", "a/b/2.jpg"]

    names_only = _write(tmp_path / "mp16_names.csv", "IMG_ID,AUTHOR,LAT,LON,country\nx.jpg,u,1,2,Germany\n")
    assert _col(read_dataset(names_only, "mp16"), "country") == ["DE"]
    plain = _write(tmp_path / "mp16.csv", "IMG_ID,AUTHOR,LAT,LON,S3_Label\nx.jpg,u,1,2,0\n")
    assert read_dataset(plain, "mp16").columns.country is None


def test_columns_override_a_builtin_format(tmp_path: Path) -> None:
    path = _write(tmp_path / "m.csv", "IMG_ID,LAT,LON,owner\np1,10,20,me\n")
    with pytest.raises(DatasetError, match="AUTHOR"):
        read_dataset(path, "im2gps")
    columns = ColumnMap(image_id="IMG_ID", lat="LAT", lon="LON", author="owner", image_name="img/{id}.png")
    records = read_dataset(path, "im2gps", columns=columns)
    assert records.columns == columns
    assert records.table.to_pylist() == [
        {
            "source_row": 0,
            "image_id": "p1",
            "image_name": "img/p1.png",
            "lat": 10.0,
            "lon": 20.0,
            "author": "me",
            "country": None,
        }
    ]


def test_default_columns_describe_the_builtin_formats() -> None:
    assert default_columns("yfcc4k") == ColumnMap(image_id="IMG_ID", lat="LAT", lon="LON", author="3")
    assert default_columns("im2gps") == default_columns("im2gps3k")
    assert default_columns("osv5m").image_name == "{id}.jpg" and default_columns("osv5m").country is None
    assert default_columns("osv5m", ["id", "latitude", "longitude", "country"]).country == "country"
    assert default_columns("mp16", ["IMG_ID", "country", "country_code"]).country == "country_code"
    with pytest.raises(DatasetError, match="generic"):
        default_columns("generic")


def test_missing_column_error_names_column_file_and_header(tmp_path: Path) -> None:
    path = _write(tmp_path / "nolat.csv", "IMG_ID,AUTHOR,LATITUDE,LON\na.jpg,u,1,2\n")
    with pytest.raises(DatasetError) as info:
        read_dataset(path, "im2gps3k")
    message = str(info.value)
    assert "'LAT'" in message and str(path) in message and "'LATITUDE'" in message
    assert isinstance(info.value, GeoRagError) and isinstance(info.value, ValueError)

    yfcc = _write(tmp_path / "yfcc.csv", "0,IMG_ID,LON,LAT\n1,a.jpg,2,1\n")
    with pytest.raises(DatasetError, match=r"'3'.*author"):
        read_dataset(yfcc, "yfcc4k")


# --- validation rules -----------------------------------------------------------------------------------

_REJECTS = """IMG_ID,AUTHOR,LAT,LON
good.jpg, someone ,45.5,-73.25
badlat.jpg,u,abc,10
emptylat.jpg,u,,10
nan.jpg,u,nan,10
inf.jpg,u,10,inf
huge.jpg,u,1e999,10
comma.jpg,u,"1,5",10
north.jpg,u,90.0001,10
south.jpg,u,-91,10
east.jpg,u,10,180.5
west.jpg,u,10,-181
zero.jpg,u,0,0
zero2.jpg,u,0.000,-0
,u,1,2
   ,u,1,2
good.jpg,u,1,2
edge.jpg,,90,-180
spaced.jpg,u, 12.5 ,+3.
halfzero.jpg,u,0,5
"""


def test_every_rejection_reason(tmp_path: Path) -> None:
    records = read_dataset(_write(tmp_path / "r.csv", _REJECTS), "im2gps")
    assert records.total_rows == 19
    assert records.rejected_counts() == {
        "not a number": 6,
        "lat out of range": 2,
        "lon out of range": 2,
        "zero coordinates (unknown)": 2,
        "missing image id": 2,
        "duplicate image id": 1,
    }
    assert _col(records, "image_id") == ["good.jpg", "edge.jpg", "spaced.jpg", "halfzero.jpg"]
    assert _col(records, "source_row") == [0, 16, 17, 18]
    assert _col(records, "lat") == [45.5, 90.0, 12.5, 0.0]
    assert _col(records, "lon") == [-73.25, -180.0, 3.0, 5.0]
    assert _col(records, "author") == ["someone", None, "u", "u"]
    by_row = {r.source_row: r for r in records.rejections}
    assert by_row[1] == Rejection(1, "badlat.jpg", "not a number", "lat='abc' lon='10'")
    assert by_row[6].detail == "lat='1,5' lon='10'"
    assert by_row[7].reason == "lat out of range" and "90.0001" in by_row[7].detail
    assert by_row[9].reason == "lon out of range" and "180.5" in by_row[9].detail
    assert by_row[13].reason == by_row[14].reason == "missing image id"
    assert by_row[13].image_id is None and by_row[14].image_id is None
    assert by_row[15].reason == "duplicate image id" and by_row[15].image_id == "good.jpg"
    assert "row 0" in by_row[15].detail
    assert [r.source_row for r in records.rejections] == sorted(by_row)


def test_zero_is_unknown_can_be_switched_off(tmp_path: Path) -> None:
    records = read_dataset(_write(tmp_path / "r.csv", _REJECTS), "im2gps", zero_is_unknown=False)
    assert "zero coordinates (unknown)" not in records.rejected_counts()
    assert {"zero.jpg", "zero2.jpg"} <= set(_col(records, "image_id"))


def test_first_fault_wins_and_rejected_rows_do_not_claim_ids(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "d.csv",
        "IMG_ID,AUTHOR,LAT,LON\n,u,x,500\na.jpg,u,95,0\na.jpg,u,1,1\na.jpg,u,2,2\nb.jpg,u,3,3\nb.jpg,u,4,4\n",
    )
    records = read_dataset(path, "im2gps")
    reasons = [(r.source_row, r.reason) for r in records.rejections]
    # Row 1's bad latitude does not reserve "a.jpg": row 2 is its first usable occurrence.
    assert reasons == [
        (0, "missing image id"),
        (1, "lat out of range"),
        (3, "duplicate image id"),
        (5, "duplicate image id"),
    ]
    assert _col(records, "source_row") == [2, 4]
    assert records.rejections[2].detail == "image id 'a.jpg' already kept from row 2"


def test_matches_a_pure_python_reference_on_random_rows(tmp_path: Path) -> None:
    rng = random.Random(7)
    cells = ["", "abc", "nan", "-inf", "0", "0.0", "-0", "91", "-90", "181", "-180", " 7.5 ", "1e2", ".5"]
    rows = []
    for _ in range(3000):
        image_id = rng.choice(["", " ", f"id{rng.randrange(2500)}"])
        lat = rng.choice([*cells, f"{rng.uniform(-100, 100):.6f}"])
        lon = rng.choice([*cells, f"{rng.uniform(-200, 200):.6f}"])
        rows.append((image_id, lat, lon))
    path = tmp_path / "random.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["IMG_ID", "AUTHOR", "LAT", "LON"])
        writer.writerows((i, "a", la, lo) for i, la, lo in rows)

    kept, reasons, seen = [], [], set()
    for row, (raw_id, raw_lat, raw_lon) in enumerate(rows):
        image_id = raw_id.strip()
        try:
            lat, lon = float(raw_lat), float(raw_lon)
            number = math.isfinite(lat) and math.isfinite(lon)
        except ValueError:
            number = False
        if not image_id:
            reasons.append((row, "missing image id"))
        elif not number:
            reasons.append((row, "not a number"))
        elif abs(lat) > 90:
            reasons.append((row, "lat out of range"))
        elif abs(lon) > 180:
            reasons.append((row, "lon out of range"))
        elif lat == 0 and lon == 0:
            reasons.append((row, "zero coordinates (unknown)"))
        elif image_id in seen:
            reasons.append((row, "duplicate image id"))
        else:
            seen.add(image_id)
            kept.append((row, image_id, lat, lon))

    records = read_dataset(path, "im2gps")
    assert [(r.source_row, r.reason) for r in records.rejections] == reasons
    got = list(zip(*(_col(records, c) for c in ("source_row", "image_id", "lat", "lon")), strict=True))
    assert got == kept


def test_first_seen_handles_any_dictionary_order() -> None:
    # Arrow numbers keys by first appearance; the fallback must agree when they are numbered otherwise.
    keys = np.array([5, 2, 5, 0, 2, 2, 7], dtype=np.int64)
    is_first, first_of_key = _first_seen(keys)
    assert is_first.tolist() == [True, True, False, True, False, False, True]
    assert [int(first_of_key[k]) for k in keys] == [0, 1, 0, 3, 1, 1, 6]


# --- file shapes ----------------------------------------------------------------------------------------


def test_crlf_quotes_bom_and_embedded_newlines(tmp_path: Path) -> None:
    text = (
        '\ufeffIMG_ID,note,AUTHOR,LAT,LON\n"a.jpg","x, y, z",u1,1.5,2.5\n'
        'b.jpg,"two\nlines",u2,-3,4\n"c,d.jpg",,u3,5,6\n'
    )
    records = read_dataset(_write(tmp_path / "crlf.csv", text, newline="\r\n"), "im2gps")
    assert _col(records, "image_id") == ["a.jpg", "b.jpg", "c,d.jpg"]
    assert _col(records, "author") == ["u1", "u2", "u3"]
    assert _col(records, "lat") == [1.5, -3.0, 5.0]
    assert _col(records, "lon") == [2.5, 4.0, 6.0]


def test_tsv_by_extension(tmp_path: Path) -> None:
    path = _write(tmp_path / "m.tsv", "IMG_ID\tAUTHOR\tLAT\tLON\na.jpg\tu\t1\t2\n")
    assert _col(read_dataset(path, "im2gps"), "lat") == [1.0]


def test_generic_parquet_with_typed_columns(tmp_path: Path) -> None:
    table = pa.table(
        {
            "key": pa.array([9007199254740993, 2, 3, 2, 5], pa.int64()),
            "y": pa.array([10.0, float("nan"), 95.0, 4.0, 20.0]),
            "x": pa.array([20.0, 1.0, 1.0, 4.0, None]),
            "who": ["a", "", None, "d", "e"],
            "nation": pa.array(["Japan", "jp", "xx", "Deutschland", "JPN"]).dictionary_encode(),
        }
    )
    path = tmp_path / "meta.parquet"
    pq.write_table(table, path)
    columns = ColumnMap(
        image_id="key", lat="y", lon="x", author="who", country="nation", image_name="{id}.webp"
    )
    records = read_dataset(path, "generic", columns=columns)
    assert records.total_rows == 5
    assert records.table.to_pylist() == [
        {
            "source_row": 0,
            "image_id": "9007199254740993",
            "image_name": "9007199254740993.webp",
            "lat": 10.0,
            "lon": 20.0,
            "author": "a",
            "country": "JP",
        },
        {
            "source_row": 3,
            "image_id": "2",
            "image_name": "2.webp",
            "lat": 4.0,
            "lon": 4.0,
            "author": "d",
            "country": None,  # "Deutschland" is not an English or ISO name
        },
    ]
    assert [(r.source_row, r.reason) for r in records.rejections] == [
        (1, "not a number"),
        (2, "lat out of range"),
        (4, "not a number"),
    ]


def test_parquet_float_ids_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "f.parquet"
    pq.write_table(pa.table({"id": [1.0], "lat": [1.0], "lon": [2.0]}), path)
    with pytest.raises(DatasetError, match="image id column 'id'"):
        read_dataset(path, "generic", columns=ColumnMap("id", "lat", "lon"))


@pytest.mark.parametrize(
    "text", ["IMG_ID,AUTHOR,LAT,LON\n", "IMG_ID,AUTHOR,LAT,LON", "IMG_ID,AUTHOR,LAT,LON\r\n\r\n"]
)
def test_header_without_rows_gives_an_empty_table(tmp_path: Path, text: str) -> None:
    records = read_dataset(_write(tmp_path / "empty.csv", text), "im2gps")
    assert len(records) == 0 and records.total_rows == 0 and records.rejections == []
    assert records.table.schema.equals(RECORD_SCHEMA)


def test_unreadable_inputs_raise_dataset_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not found"):
        read_dataset(tmp_path / "absent.csv", "im2gps")
    with pytest.raises(DatasetError, match="not a file"):
        read_dataset(tmp_path, "im2gps")
    with pytest.raises(DatasetError, match="empty file"):
        read_dataset(_write(tmp_path / "blank.csv", ""), "im2gps")
    ragged = _write(tmp_path / "ragged.csv", "IMG_ID,AUTHOR,LAT,LON\na.jpg,u,1,2\nb.jpg,u\n")
    with pytest.raises(DatasetError, match=re.escape(str(ragged))):
        read_dataset(ragged, "im2gps")
    twice = _write(tmp_path / "twice.csv", "IMG_ID,AUTHOR,LAT,LON,LAT\na.jpg,u,1,2,3\n")
    with pytest.raises(DatasetError, match=r"'LAT'.*2 times"):
        read_dataset(twice, "im2gps")
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 not really")
    with pytest.raises(DatasetError, match="cannot read"):
        read_dataset(broken, "generic", columns=ColumnMap("a", "b", "c"))


def test_format_and_column_map_checks(tmp_path: Path) -> None:
    path = _write(tmp_path / "m.csv", "IMG_ID,AUTHOR,LAT,LON\na.jpg,u,1,2\n")
    with pytest.raises(DatasetError, match="unknown dataset format 'flickr'"):
        read_dataset(path, "flickr")
    with pytest.raises(DatasetError, match="needs columns"):
        read_dataset(path, "generic")
    with pytest.raises(DatasetError, match="must contain"):
        ColumnMap("IMG_ID", "LAT", "LON", image_name="photo.jpg")
    with pytest.raises(DatasetError, match="must name a column"):
        ColumnMap("", "LAT", "LON")


def test_repr_and_len(tmp_path: Path) -> None:
    records = read_dataset(_write(tmp_path / "r.csv", _REJECTS), "im2gps")
    assert len(records) == 4
    text = repr(records)
    assert "format='im2gps'" in text and "kept=4 of 19 rows" in text and "'duplicate image id': 1" in text


def test_a_binary_file_given_as_metadata_is_named_not_dumped(tmp_path: Path) -> None:
    binary = tmp_path / "photo.csv"
    binary.write_bytes(b"\x7fELF\x02\x01\x01\x00\x00\x00\xff\xfe binary junk\n\x00\x01\x02")
    with pytest.raises(DatasetError, match="does not look like a text table") as info:
        read_dataset(binary, "im2gps3k")
    assert "ELF" not in str(info.value) and "\\x" not in str(info.value)
