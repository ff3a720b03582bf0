"""The error CDF of `georag eval --html` as inline SVG: the share of photos with error <= d km against d
(log axis, 0.1 to 20,000 km, as `georag.evaluate.plots.plot_error_cdf`), one curve per predictions file,
a dashed line at each threshold. Needs numpy only."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from georag.evaluate.plots import CDF_MAX_KM, CDF_MIN_KM, cdf_at, threshold_label

WIDTH, HEIGHT = 760, 400
_LEFT, _RIGHT, _TOP, _BOTTOM = 56, 24, 26, 44
CURVE_COLOURS = ("#111111", "#d62728", "#1f77b4", "#2ca02c")
"""Curve colours in order: the first file black, as in the PNG; a compared file red."""


def cdf_svg(curves: Sequence[tuple[str, npt.NDArray[np.float64]]], thresholds_km: Sequence[float]) -> str:
    """The ``<svg>`` of the named distance arrays (NaN: no prediction, counted in the denominator, so each
    curve's value at a threshold is the accuracy there). The legend names each curve; with one curve it also
    gives the accuracy at each threshold (`threshold_label`)."""
    parts = [_axes()]
    for t in thresholds_km:
        x = _x(t)
        parts.append(f'<line class="threshold" x1="{x:.1f}" y1="{_TOP}" x2="{x:.1f}" y2="{_y(0.0):.1f}"/>')
        parts.append(f'<text class="tlabel" x="{x:.1f}" y="{_TOP - 7}" text-anchor="middle">{t:,g} km</text>')
    legend = []
    for k, (name, dist) in enumerate(curves):
        colour = CURVE_COLOURS[k % len(CURVE_COLOURS)]
        parts.append(f'<path class="curve" stroke="{colour}" d="{_steps(dist)}"/>')
        for t, share in zip(thresholds_km, cdf_at(dist, thresholds_km).tolist(), strict=True):
            parts.append(
                f'<circle class="at" fill="{colour}" cx="{_x(t):.1f}" cy="{_y(share):.1f}" r="3">'
                f"<title>{html.escape(name)}: {html.escape(threshold_label(t, share))}</title></circle>"
            )
        legend.append((colour, f"{name} ({dist.size:,} photos)"))
    if len(curves) == 1:
        shares = cdf_at(curves[0][1], thresholds_km).tolist()
        legend += [("", threshold_label(t, s)) for t, s in zip(thresholds_km, shares, strict=True)]
    parts.append(_legend(legend))
    return (
        f'<svg class="cdf" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="cumulative share of photos within each error">{"".join(parts)}</svg>'
    )


def _x(km: float) -> float:
    lo, hi = math.log10(CDF_MIN_KM), math.log10(CDF_MAX_KM)
    frac = (math.log10(min(max(km, CDF_MIN_KM), CDF_MAX_KM)) - lo) / (hi - lo)
    return _LEFT + frac * (WIDTH - _LEFT - _RIGHT)


def _y(share: float) -> float:
    return HEIGHT - _BOTTOM - share * (HEIGHT - _TOP - _BOTTOM)


def _steps(dist: npt.NDArray[np.float64]) -> str:
    """The exact step curve: up by 1/n at each photo's error (errors under 0.1 km at the left edge)."""
    finite = np.sort(dist[np.isfinite(dist)])
    values, counts = np.unique(np.clip(finite, CDF_MIN_KM, CDF_MAX_KM), return_counts=True)
    shares = np.cumsum(counts) / max(dist.size, 1)
    path = [f"M{_x(CDF_MIN_KM):.1f} {_y(0.0):.1f}"]
    for v, s in zip(values.tolist(), shares.tolist(), strict=True):
        path.append(f"H{_x(v):.1f}V{_y(s):.1f}")
    path.append(f"H{_x(CDF_MAX_KM):.1f}")
    return "".join(path)


def _axes() -> str:
    x0, x1, y0, y1 = _x(CDF_MIN_KM), _x(CDF_MAX_KM), _y(0.0), _y(1.0)
    out = [f'<rect class="frame" x="{x0:.1f}" y="{y1:.1f}" width="{x1 - x0:.1f}" height="{y0 - y1:.1f}"/>']
    for p in range(-1, 5):
        x = _x(10.0**p)
        out.append(f'<line class="gridline" x1="{x:.1f}" y1="{y1:.1f}" x2="{x:.1f}" y2="{y0:.1f}"/>')
        out.append(
            f'<text class="tick" x="{x:.1f}" y="{y0 + 16:.1f}" text-anchor="middle">{10.0**p:,g}</text>'
        )
    for pct in range(0, 101, 20):
        y = _y(pct / 100)
        out.append(f'<line class="gridline" x1="{x0:.1f}" y1="{y:.1f}" x2="{x1:.1f}" y2="{y:.1f}"/>')
        out.append(f'<text class="tick" x="{x0 - 6:.1f}" y="{y + 4:.1f}" text-anchor="end">{pct} %</text>')
    out.append(
        f'<text class="axis" x="{(x0 + x1) / 2:.1f}" y="{HEIGHT - 8}" text-anchor="middle">'
        "error d (km, log scale)</text>"
    )
    out.append(
        f'<text class="axis" transform="translate(14 {(y0 + y1) / 2:.1f}) rotate(-90)" text-anchor="middle">'
        "photos with error \u2264 d</text>"
    )
    return "".join(out)


def _legend(entries: list[tuple[str, str]]) -> str:
    x, y = _x(CDF_MIN_KM) + 10, _y(1.0) + 18
    out = []
    for k, (colour, text) in enumerate(entries):
        row = y + 16 * k
        if colour:
            out.append(f'<line x1="{x:.1f}" y1="{row - 4:.1f}" x2="{x + 18:.1f}" y2="{row - 4:.1f}" '
                       f'stroke="{colour}" stroke-width="2"/>')  # fmt: skip
        out.append(f'<text class="legend" x="{x + 24:.1f}" y="{row:.1f}">{html.escape(text)}</text>')
    return f'<g class="legendbox">{"".join(out)}</g>'
