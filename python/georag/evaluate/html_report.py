"""`georag eval --html`: one self-contained, offline HTML page of a scoring run.

The page holds the accuracy table (the cells `georag eval` prints, from `georag.evaluate.tables`), the error
CDF (`svg_cdf`) and, per predictions file, an interactive world map of truth vs prediction (`svg_map`: zoom
with the wheel, drag to pan, hover a point for its id and error, click a row of the worst misses to find
it). Everything is inline: the style sheet and script (``html_assets/``), the SVG, the data. The page loads
nothing, so it opens without a network and can be mailed or archived as one file. The map's outlines need
``countryinfo`` (``pip install countryinfo``); matplotlib is not used.
"""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from georag._version import __version__
from georag.evaluate.report import EvalReport
from georag.evaluate.svg_cdf import cdf_svg
from georag.evaluate.svg_map import json_script, map_data, map_svg, worst_misses

WORST = 50
"""Rows of each map's worst-misses table."""


@dataclass(frozen=True)
class Table:
    """The printed table of a run: header, rows of cells, and the lines under it."""

    header: Sequence[str]
    rows: Sequence[Sequence[str]]
    notes: Sequence[str]


def write_html_report(
    path: str | os.PathLike[str],
    *,
    title: str,
    table: Table,
    reports: Sequence[tuple[str, EvalReport]],
    worst: int = WORST,
) -> Path:
    """Writes the page (UTF-8) and returns its path. ``reports``: (name, report) of each predictions file,
    one curve of the CDF and one map each. MissingDependencyError when ``countryinfo`` is absent."""
    text = html_report(title=title, table=table, reports=reports, worst=worst)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    return out


def html_report(
    *, title: str, table: Table, reports: Sequence[tuple[str, EvalReport]], worst: int = WORST
) -> str:
    """The page as text (see `write_html_report`)."""
    first = reports[0][1]
    meta = (
        f"{first.distance} distance; denominator {first.denominator}; thresholds "
        + ", ".join(f"{t:,g}" for t in first.thresholds_km)
        + f" km; written by georag {__version__}"
    )
    curves = [(name, report.rows.dist_km) for name, report in reports]
    maps = "".join(_map_section(name, report, f"map{k}", worst) for k, (name, report) in enumerate(reports))
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_asset('report.css')}</style></head><body>"
        f'<h1>{_e(title)}</h1><p class="meta">{_e(meta)}</p>'
        f"<h2>Accuracy</h2>{_accuracy(table)}"
        f'<h2>Error CDF</h2><div class="charts">{cdf_svg(curves, first.thresholds_km)}</div>'
        f"{maps}"
        "<footer><p>Country outlines: Natural Earth 1:110m (public domain), as the countryinfo package ships "
        "them. This page is self-contained: it loads nothing from the network.</p></footer>"
        f"<script>{_asset('report.js')}</script></body></html>\n"
    )


def _accuracy(table: Table) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in table.header)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in table.rows)
    notes = "".join(f"<li>{_e(line)}</li>" for line in table.notes)
    return (
        f'<table class="accuracy"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
        f'<ul class="notes">{notes}</ul>'
    )


def _map_section(name: str, report: EvalReport, map_id: str, worst: int) -> str:
    rows = report.rows
    scored = int(rows.scored.sum())
    lone = len(rows.ids) - scored
    legend = (
        '<div class="legendline">'
        f'<span><span class="key truth"></span>truth ({len(rows.ids):,})</span>'
        f'<span><span class="key pred"></span>prediction ({scored:,})</span>'
        '<span><span class="key line"></span>truth \u2192 prediction</span>'
        + (f'<span><span class="key lone"></span>no prediction ({lone:,})</span>' if lone else "")
        + '<span class="hint">wheel: zoom; drag: pan; hover: a photo; click: pick it; double-click: whole '
        'world</span><button class="reset" type="button">reset</button></div>'
    )
    return (
        f"<h2>Truth vs prediction: {_e(name)}</h2>"
        f'<div class="mapbox">{legend}<div class="mapgrid">'
        f'<div class="mapwrap">{map_svg(rows, map_id)}<div class="tip" hidden></div></div>'
        f"{_worst_table(report, worst)}</div>{json_script(map_data(rows), map_id + '-data')}</div>"
    )


def _worst_table(report: EvalReport, count: int) -> str:
    rows = report.rows
    body = []
    for rank, i in enumerate(worst_misses(rows, count), start=1):
        body.append(
            f'<tr data-i="{i}"><td>{rank}</td><td class="id" title="{_e(rows.ids[i])}">{_e(rows.ids[i])}</td>'
            f"<td>{rows.dist_km[i]:,.1f}</td>"
            f'<td class="where">{rows.true_lat[i]:.2f}, {rows.true_lon[i]:.2f}<br>'
            f"\u2192 {rows.pred_lat[i]:.2f}, {rows.pred_lon[i]:.2f}</td></tr>"
        )
    head = "<tr><th>#</th><th>worst misses</th><th>km</th><th>truth \u2192 pred.</th></tr>"
    return (
        '<div class="worstcell"><div class="worst"><table class="misses">'
        f"<thead>{head}</thead><tbody>{''.join(body)}</tbody></table></div></div>"
    )


def _asset(name: str) -> str:
    return (resources.files("georag.evaluate") / "html_assets" / name).read_text(encoding="utf-8")


def _e(text: str) -> str:
    return html.escape(text, quote=True)
