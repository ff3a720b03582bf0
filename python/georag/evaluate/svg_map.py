"""The world map of `georag eval --html` as inline SVG: country outlines, truth vs prediction, error lines.

Equirectangular, in a 360 x 180 viewBox: x = lon + 180, y = 90 - lat. Three layers, lines under truths under
predictions (the static PNG's order: a prediction on its truth shows as a dot inside a ring). Every mark of
photo ``i`` carries ``data-i="i"``; the photo's id, error and coordinates are in a JSON block beside the
map (`map_data`), which the page's script reads for hovering, highlighting and zooming. The outlines need
the ``countryinfo`` package (`georag.evaluate.plots.land_rings`); no matplotlib.
"""

from __future__ import annotations

import html
import json
import math
from typing import Any

import numpy as np
import numpy.typing as npt

from georag.evaluate.plots import land_outlines, land_rings, track_parts
from georag.evaluate.report import Rows

DECIMALS = 3
"""Map coordinates are written to 0.001 degree (about 110 m), enough for a map zoomed in 100 times."""
TRUTH_R = 1.1
PRED_R = 0.6
"""Point radii in map units (degrees) before the page's script sizes them in screen pixels."""


def project(
    lat: npt.ArrayLike, lon: npt.ArrayLike
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """(x, y) on the map of latitudes and longitudes in degrees (longitudes wrapped into [-180, 180))."""
    lon = (np.asarray(lon, dtype=np.float64) + 180.0) % 360.0 - 180.0
    return lon + 180.0, 90.0 - np.asarray(lat, dtype=np.float64)


def map_svg(rows: Rows, map_id: str) -> str:
    """The ``<svg>`` of one report's rows: every scored photo a truth ring, a prediction dot and its line;
    a photo without a prediction its truth ring alone (class ``lone``); rows without a finite truth are
    left out."""
    has_truth = np.isfinite(rows.true_lat) & np.isfinite(rows.true_lon)
    scored = has_truth & np.isfinite(rows.pred_lat) & np.isfinite(rows.pred_lon)
    tx, ty = project(rows.true_lat, rows.true_lon)
    px, py = project(rows.pred_lat, rows.pred_lon)
    segments, owner = track_parts(
        np.where(scored, rows.true_lat, np.nan), rows.true_lon, rows.pred_lat, rows.pred_lon
    )
    sx, sy = segments[:, :, 0] + 180.0, 90.0 - segments[:, :, 1]  # already in [-180, 180]: no wrapping
    lines = "".join(
        f'<path data-i="{i}" d="M{_n(a)} {_n(b)}L{_n(c)} {_n(d)}"/>'
        for i, a, b, c, d in zip(owner.tolist(), sx[:, 0], sy[:, 0], sx[:, 1], sy[:, 1], strict=True)
    )
    lone = ' class="lone"'
    truths = "".join(
        f'<circle data-i="{i}"{"" if scored[i] else lone} cx="{_n(tx[i])}" cy="{_n(ty[i])}" r="{TRUTH_R}"/>'
        for i in np.flatnonzero(has_truth).tolist()
    )
    preds = "".join(
        f'<circle data-i="{i}" cx="{_n(px[i])}" cy="{_n(py[i])}" r="{PRED_R}"/>'
        for i in np.flatnonzero(scored).tolist()
    )
    # Faint lines where thousands cross, clear ones where a few do.
    opacity = min(max(8.0 / math.sqrt(max(int(scored.sum()), 1)), 0.12), 0.6)
    return (
        f'<svg class="map" id="{html.escape(map_id)}" viewBox="0 0 360 180" style="--line-opacity: '
        f'{opacity:.2f}" role="img" '
        'aria-label="world map of truth and predictions">'
        '<rect class="sea" x="0" y="0" width="360" height="180"/>'
        f'<path class="grid" d="{_graticule()}"/>'
        f'<path class="land" d="{outline_path()}"/>'
        f'<g class="lines">{lines}</g><g class="truths">{truths}</g><g class="preds">{preds}</g>'
        "</svg>"
    )


def map_data(rows: Rows) -> dict[str, Any]:
    """What the page's script shows of each photo: ids, errors (km, null without a prediction) and the
    truth and prediction as [lat, lon] (null where missing), indexed like the map's ``data-i``."""

    def pair(lat: float, lon: float) -> list[float] | None:
        return [round(lat, 5), round(lon, 5)] if math.isfinite(lat) and math.isfinite(lon) else None

    return {
        "ids": list(rows.ids),
        "km": [round(float(d), 2) if math.isfinite(d) else None for d in rows.dist_km],
        "truth": [pair(a, b) for a, b in zip(rows.true_lat.tolist(), rows.true_lon.tolist(), strict=True)],
        "pred": [pair(a, b) for a, b in zip(rows.pred_lat.tolist(), rows.pred_lon.tolist(), strict=True)],
    }


def json_script(data: Any, element_id: str) -> str:
    """``data`` as a ``<script type="application/json">`` block that no string inside can end early."""
    text = json.dumps(data, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")
    return f'<script type="application/json" id="{html.escape(element_id)}">{text}</script>'


def worst_misses(rows: Rows, count: int) -> list[int]:
    """Indices of the ``count`` scored rows with the largest errors, largest first (ties by input order)."""
    dist = np.where(np.isfinite(rows.dist_km), rows.dist_km, -np.inf)
    order = np.argsort(-dist, kind="stable")
    return [int(i) for i in order[:count] if math.isfinite(rows.dist_km[i])]


def outline_path() -> str:
    """The SVG path data of the coasts and borders (`georag.evaluate.plots.land_outlines`)."""
    parts = []
    for line in land_outlines(land_rings()):
        x, y = line[:, 0] + 180.0, 90.0 - line[:, 1]  # Natural Earth's longitudes lie in [-180, 180]
        points = [f"{_n(a)} {_n(b)}" for a, b in zip(x, y, strict=True)]
        parts.append("M" + "L".join(points))
    return "".join(parts)


def _graticule(step: int = 30) -> str:
    meridians = "".join(f"M{x} 0V180" for x in range(step, 360, step))
    parallels = "".join(f"M0 {y}H360" for y in range(step, 180, step))
    return meridians + parallels


def _n(value: float | np.floating[Any]) -> str:
    """A map coordinate as short text: rounded to DECIMALS, without trailing zeros."""
    text = f"{float(value):.{DECIMALS}f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text
