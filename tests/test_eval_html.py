"""`georag eval --html`: the self-contained report on the published GeoEstimation predictions for IM2GPS3k.
Its table equals the printed one (and the paper's row), it loads nothing, it parses with balanced tags,
and every scored photo has its prediction point where the file puts it."""

from __future__ import annotations

import csv
import json
import re
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from georag.cli import main

pytest.importorskip("countryinfo")

GEOEST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "geoestimation"
COLS = ["--truth-format", "im2gps", "--id-col", "img_id", "--lat-col", "predicted_lat",
        "--lon-col", "predicted_long"]  # fmt: skip
VOID = {"meta", "br", "link", "img", "input", "hr", "col", "area", "base", "wbr", "source"}
SVG_LEAVES = {"path", "circle", "rect", "line"}  # written self-closed (<circle .../>)


class Page(HTMLParser):
    """What the tests read of the page: tag nesting, attributes, table cells, the map's marks, data."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.mismatched: list[str] = []
        self.attrs: list[tuple[str, str, str]] = []  # (tag, name, value) of every attribute
        self.tables: dict[str, list[list[str]]] = {}
        self.notes: list[str] = []
        self.marks: dict[str, list[dict[str, str]]] = {}  # svg id / layer -> its elements' attributes
        self.scripts: dict[str, str] = {}
        self._table: str | None = None
        self._cell: list[str] | None = None
        self._layer = ""
        self._svg = ""
        self._script: str | None = None
        self._li: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.attrs += [(tag, k, v) for k, v in a.items()]
        if tag == "table":
            self._table = a.get("class") or f"table{len(self.tables)}"
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self.tables[self._table].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "svg":
            self._svg = a.get("id", "")
        elif tag == "g":
            self._layer = a.get("class", "")
        elif tag in ("circle", "path") and self._svg:
            self.marks.setdefault(f"{self._svg}/{self._layer}", []).append(a)
        elif tag == "script":
            self._script = a.get("id", "inline")
            self.scripts[self._script] = ""
        elif tag == "li":
            self._li = []
        if tag not in VOID and tag not in SVG_LEAVES:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in VOID and tag not in SVG_LEAVES:
            self.stack.pop()

    def handle_endtag(self, tag: str) -> None:
        if tag in SVG_LEAVES and (not self.stack or self.stack[-1] != tag):
            return  # a leaf with a closing tag of its own (<circle ...><title>..</title></circle>) is pushed
        if not self.stack or self.stack[-1] != tag:
            self.mismatched.append(f"</{tag}> closes <{self.stack[-1] if self.stack else None}>")
            return
        self.stack.pop()
        if tag in ("td", "th") and self._cell is not None and self._table:
            self.tables[self._table][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._table = None
        elif tag == "g":
            self._layer = ""
        elif tag == "svg":
            self._svg = ""
        elif tag == "script":
            self._script = None
        elif tag == "li" and self._li is not None:
            self.notes.append("".join(self._li).strip())
            self._li = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        if self._script is not None:
            self.scripts[self._script] += data
        if self._li is not None:
            self._li.append(data)


def _need_data() -> None:
    if not GEOEST.is_dir():
        pytest.skip(f"needs the published GeoEstimation predictions in ../shared/data: missing {GEOEST}")


def _eval(*args: object) -> str:
    result = CliRunner().invoke(main, ["eval", *map(str, args)])
    assert result.exit_code == 0, result.output
    return result.output


def _markdown_rows(text: str) -> list[list[str]]:
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    return [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines]


def _page(path: Path) -> Page:
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    page.close()
    assert page.mismatched == [] and page.stack == [], (page.mismatched[:5], page.stack)
    return page


def _published(name: str) -> dict[str, dict[str, str]]:
    """id -> row of a published file, read with the csv module up to its blank line (a summary follows)."""
    with open(GEOEST / "results" / "im2gps3k" / f"{name}.csv", newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        rows = []
        for row in reader:
            if not any(cell.strip() for cell in row):
                break
            rows.append(dict(zip(header, row, strict=True)))
    return {r["img_id"]: r for r in rows}


def _assert_offline(path: Path, page: Page) -> None:
    text = path.read_text(encoding="utf-8")
    assert not [(t, k, v) for t, k, v in page.attrs if k in ("src", "href", "xlink:href")], (
        "nothing is loaded"
    )
    assert not re.search(r"https?:|//cdn|@import|url\(", text), "no external address anywhere in the page"


@pytest.fixture(scope="module")
def isns(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    _need_data()
    out = tmp_path_factory.mktemp("html") / "report.html"
    text = _eval(GEOEST / "results" / "im2gps3k" / "ISNs_M-fstar-S3.csv", "--truth",
                 GEOEST / "meta" / "im2gps3k_places365.csv", *COLS, "--markdown", "--bootstrap", "200",
                 "--html", out)  # fmt: skip
    return {"text": text, "path": out, "page": _page(out)}


def test_the_table_is_the_printed_table_and_the_papers_row(isns: dict[str, Any]) -> None:
    page, text = isns["page"], isns["text"]
    printed = _markdown_rows(text)
    assert page.tables["accuracy"] == printed, "header and rows, cell for cell"
    values = [row[1] for row in page.tables["accuracy"][1:6]]
    assert values == ["10.5 %", "28.0 %", "36.6 %", "49.7 %", "66.0 %"], "ISNs (M, f*, S3) in the paper"
    printed_notes = [line for line in text.splitlines() if line.startswith(("n = ", "2997 ", "missing 0"))]
    assert page.notes == printed_notes
    assert f"wrote {isns['path']}" in text


def test_the_page_loads_nothing_and_parses(isns: dict[str, Any]) -> None:
    _assert_offline(isns["path"], isns["page"])
    assert set(isns["page"].scripts) == {"map0-data", "inline"}, "the data block and the inline script"


def test_every_scored_photo_has_its_point_truth_and_line(isns: dict[str, Any]) -> None:
    page = isns["page"]
    data = json.loads(page.scripts["map0-data"])
    published = _published("ISNs_M-fstar-S3")
    assert sorted(data["ids"]) == sorted(published) and len(published) == 2997
    preds, truths = page.marks["map0/preds"], page.marks["map0/truths"]
    assert len(preds) == len(truths) == 2997 and not any("lone" in t.get("class", "") for t in truths)
    lines = {int(m["data-i"]) for m in page.marks["map0/lines"]}
    assert lines == set(range(2997)), "every pair has its error line"
    for mark in preds:
        i = int(mark["data-i"])
        row = published[data["ids"][i]]
        lat, lon = float(row["predicted_lat"]), float(row["predicted_long"])
        assert float(mark["cx"]) == pytest.approx((lon + 180.0) % 360.0, abs=6e-4)
        assert float(mark["cy"]) == pytest.approx(90.0 - lat, abs=6e-4)
        assert data["pred"][i] == pytest.approx([lat, lon], abs=1e-5)


def test_the_worst_misses_are_the_largest_published_distances(isns: dict[str, Any]) -> None:
    page = isns["page"]
    data = json.loads(page.scripts["map0-data"])
    rows = page.tables["misses"][1:]
    assert len(rows) == 50
    dist = {k: float(r["great_circle_distance"]) for k, r in _published("ISNs_M-fstar-S3").items()}
    worst = sorted(dist.values(), reverse=True)[:50]
    shown = [float(r[2].replace(",", "")) for r in rows]
    np.testing.assert_allclose(shown, worst, atol=0.06)  # the authors' own distances, 1 decimal shown
    for r in rows:
        assert dist[r[1]] == pytest.approx(float(r[2].replace(",", "")), abs=0.06), r[1]
    clickable = [m for m in page.attrs if m[0] == "tr" and m[1] == "data-i"]
    assert [data["ids"][int(v)] for _, _, v in clickable] == [r[1] for r in rows], "rows point at their photo"


def test_compare_gives_the_comparison_table_and_two_maps(tmp_path: Path) -> None:
    _need_data()
    results = GEOEST / "results" / "im2gps3k"
    out = tmp_path / "ab.html"
    text = _eval(results / "ISNs_M-fstar-S3.csv", "--compare", results / "base_M-m.csv", "--truth",
                 GEOEST / "meta" / "im2gps3k_places365.csv", *COLS, "--markdown", "--bootstrap", "100",
                 "--html", out)  # fmt: skip
    page = _page(out)
    printed = _markdown_rows(text)
    assert page.tables["accuracy"] == printed
    assert page.tables["accuracy"][0] == ["metric", "A", "B", "A - B", "95% CI (paired)"]
    assert len(page.marks["map1/preds"]) == len(page.marks["map0/preds"]) == 2997
    _assert_offline(out, page)


def test_missing_predictions_are_lone_truth_rings(tmp_path: Path) -> None:
    truth = tmp_path / "truth.csv"
    truth.write_text("IMG_ID,AUTHOR,LAT,LON\na.jpg,x,48.85,2.35\nb.jpg,x,-33.9,18.4\nc.jpg,x,35.7,139.7\n")
    preds = tmp_path / "p.csv"
    preds.write_text("id,lat,lon\na.jpg,48.0,2.0\nc.jpg,-10.0,-170.0\n")  # c crosses the date line
    out = tmp_path / "r.html"
    _eval(preds, "--truth", truth, "--html", out, "--bootstrap", "0")
    page = _page(out)
    data = json.loads(page.scripts["map0-data"])
    assert data["ids"] == ["a.jpg", "b.jpg", "c.jpg"] and data["km"][1] is None
    lone = [t for t in page.marks["map0/truths"] if t.get("class") == "lone"]
    assert [int(t["data-i"]) for t in lone] == [1] and len(page.marks["map0/preds"]) == 2
    parts = [int(m["data-i"]) for m in page.marks["map0/lines"]]
    assert parts == [0, 2, 2], "the date-line pair is drawn as two parts, one to each edge"
    _assert_offline(out, page)


def test_without_countryinfo_it_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from georag.evaluate.plots import land_rings

    truth = tmp_path / "truth.csv"
    truth.write_text("IMG_ID,AUTHOR,LAT,LON\na.jpg,x,48.85,2.35\n")
    preds = tmp_path / "p.csv"
    preds.write_text("id,lat,lon\na.jpg,48.0,2.0\n")
    land_rings.cache_clear()
    monkeypatch.setitem(sys.modules, "countryinfo", None)
    try:
        args = ["eval", str(preds), "--truth", str(truth), "--html", str(tmp_path / "r.html")]
        result = CliRunner().invoke(main, args)
    finally:
        land_rings.cache_clear()
    assert result.exit_code == 1 and "countryinfo" in result.output and "pip install" in result.output
    assert not (tmp_path / "r.html").exists()
