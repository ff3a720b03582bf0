"""Evaluation plots as PNG files: the cumulative error curve (CDF) and a world map of truth vs prediction.

matplotlib (and, for the map, the country outlines that the `countryinfo` package ships) are optional:
`pip install matplotlib countryinfo` (or `pip install '.[plot]'` in georag's source folder). They are
imported inside the plotting functions, so importing this module, and the pure helpers `cdf_at` and
`track_segments`, needs numpy only.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from georag.errors import EvaluationError, MissingDependencyError, extra_hint

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DPI = 150
"""Resolution of every PNG written here: a CDF_FIGSIZE figure is 1050 x 675 pixels, a map 1800 x 975."""
CDF_FIGSIZE = (7.0, 4.5)
MAP_FIGSIZE = (12.0, 6.5)
CDF_MIN_KM = 0.1
CDF_MAX_KM = 20_000.0
"""The CDF's log-scaled x axis: 100 m to about half the Earth's circumference (20,015 km)."""

_PLOT_HINT = extra_hint("plot", "matplotlib countryinfo")
_CURVE_POINTS = 2048  # log-spaced samples of the CDF: steps stay sharp on screen for any number of photos
_TRUTH_COLOUR = "tab:blue"
_PRED_COLOUR = "tab:red"
_LINE_COLOUR = "0.4"
# Outlines only, no land fill: countryinfo lacks a few countries (see land_rings), and a filled map would
# show those as water, which reads as a wrong claim; an unfilled map only shows a missing border there.
_LAND_EDGE = "#7d7d75"


def cdf_at(dist_km: npt.ArrayLike, thresholds_km: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """The share of all photos whose error is at most each threshold: a fraction in [0, 1] per threshold.

    NaN or infinite distances (photos without a prediction) count in the denominator and never below a
    threshold, so missing predictions lower every value: the accuracy at t km is `cdf_at(d, [t])[0]`.
    """
    dist = _distances(dist_km)
    thresholds = _thresholds(thresholds_km)
    answered = np.sort(dist[np.isfinite(dist)])
    return np.searchsorted(answered, thresholds, side="right").astype(np.float64) / dist.size


def threshold_label(threshold_km: float, share: float) -> str:
    """The legend text of a threshold line: the distance, then the accuracy there, e.g. "25 km: 28.0 %"."""
    return f"{threshold_km:,g} km: {100.0 * share:.1f} %"


def track_segments(
    true_lat: npt.ArrayLike, true_lon: npt.ArrayLike, pred_lat: npt.ArrayLike, pred_lon: npt.ArrayLike
) -> npt.NDArray[np.float64]:
    """Line segments from each truth to its prediction on the equirectangular map, shape (k, 2, 2).

    Each segment is [[lon_a, lat_a], [lon_b, lat_b]] (x before y, as matplotlib wants), in input order.
    A pair is joined the shorter way round in longitude: when that crosses the date line (the two longitudes
    are more than 180 degrees apart) the line is cut at +-180 into two segments, one ending on each edge of
    the map at the latitude interpolated linearly in (lon, lat). The line is straight on the map, not the
    great circle; pairs exactly 180 degrees apart are joined directly. Pairs with any non-finite coordinate
    give no segment. Longitudes are wrapped into [-180, 180) first.
    """
    return track_parts(true_lat, true_lon, pred_lat, pred_lon)[0]


def track_parts(
    true_lat: npt.ArrayLike, true_lon: npt.ArrayLike, pred_lat: npt.ArrayLike, pred_lon: npt.ArrayLike
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.intp]]:
    """`track_segments`, and for each segment the index of the pair it belongs to (one or two a pair)."""
    lat1, lon1, lat2, lon2 = _coordinates(true_lat, true_lon, pred_lat, pred_lon)
    ok = np.isfinite(lat1) & np.isfinite(lon1) & np.isfinite(lat2) & np.isfinite(lon2)
    la1, lo1, la2, lo2 = lat1[ok], _wrap(lon1[ok]), lat2[ok], _wrap(lon2[ok])
    dlon = lo2 - lo1
    crosses = np.abs(dlon) > 180.0
    # The shorter way round: |step| < 180 where the pair crosses; the crossing is at +180 going east.
    step = np.where(crosses, dlon - 360.0 * np.sign(dlon), dlon)
    edge = np.where(step > 0, 180.0, -180.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(crosses, (edge - lo1) / step, 1.0)
    lat_cut = la1 + t * (la2 - la1)
    segs = np.empty((la1.size, 2, 2, 2), dtype=np.float64)  # pair, first/second part, end, (lon, lat)
    segs[:, 0, 0] = np.stack([lo1, la1], axis=1)
    segs[:, 0, 1] = np.stack([np.where(crosses, edge, lo2), np.where(crosses, lat_cut, la2)], axis=1)
    segs[:, 1, 0] = np.stack([-edge, lat_cut], axis=1)
    segs[:, 1, 1] = np.stack([lo2, la2], axis=1)
    keep = np.stack([np.ones(la1.size, dtype=bool), crosses], axis=1).reshape(-1)
    flat = segs.reshape(-1, 2, 2)[keep]
    owner = np.repeat(np.flatnonzero(ok), 2)[keep]
    # A point on the date line itself leaves a zero-length part: drop it.
    drawn = np.any(flat[:, 0] != flat[:, 1], axis=1)
    return flat[drawn], owner[drawn]


def plot_error_cdf(
    dist_km: npt.ArrayLike, thresholds_km: Sequence[float], path: str | os.PathLike[str], *, title: str = ""
) -> Path:
    """Writes the cumulative share of photos with error <= d km (log x axis, 0.1 to 20,000 km) as a PNG.

    A dashed vertical line marks each threshold, labelled with the accuracy there (e.g. "25 km: 28.0 %").
    Photos without a prediction (NaN or infinite distance) count as errors beyond the axis, so the curve ends
    below 100 % by their share. Distances under 0.1 km are drawn at the left edge. Returns the path.
    """
    dist = _distances(dist_km)
    thresholds = _thresholds(thresholds_km)
    shares = cdf_at(dist, thresholds)
    mpl = _matplotlib()
    from matplotlib.ticker import FuncFormatter, PercentFormatter

    fig = _figure(CDF_FIGSIZE)
    ax = fig.add_subplot()
    grid = np.geomspace(CDF_MIN_KM, CDF_MAX_KM, _CURVE_POINTS)
    missing = int(np.count_nonzero(~np.isfinite(dist)))
    ax.plot(
        grid, cdf_at(dist, grid), drawstyle="steps-post", color="black", linewidth=1.6, label="all photos"
    )
    colours = mpl.colormaps["viridis"](np.linspace(0.1, 0.85, max(thresholds.size, 1)))
    for t, share, colour in zip(thresholds.tolist(), shares.tolist(), colours, strict=False):
        ax.axvline(t, color=colour, linestyle="--", linewidth=1.0, label=threshold_label(t, share))
        ax.plot([t], [share], marker="o", markersize=4, color=colour)
    ax.set_xscale("log")
    ax.set_xlim(CDF_MIN_KM, CDF_MAX_KM)
    ax.set_ylim(0.0, 1.0)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:,g}"))
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_xlabel("error d (km, log scale)")
    ax.set_ylabel("photos with error \u2264 d")
    ax.grid(True, which="major", color="0.88", linewidth=0.6)
    legend_title = f"{dist.size:,} photos" + (f", {missing:,} without a prediction" if missing else "")
    ax.legend(loc="upper left", title=legend_title, fontsize="small", title_fontsize="small")
    if title:
        ax.set_title(title)
    return _save(fig, path)


def plot_world_map(
    true_lat: npt.ArrayLike,
    true_lon: npt.ArrayLike,
    pred_lat: npt.ArrayLike,
    pred_lon: npt.ArrayLike,
    path: str | os.PathLike[str],
    *,
    title: str = "",
    max_lines: int = 2000,
) -> Path:
    """Writes an equirectangular world map (lon -180..180, lat -90..90) of truth and predictions as a PNG.

    Land is drawn as outlines (coasts and borders, unfilled) from the country polygons of the `countryinfo`
    package (Natural Earth 1:110m, public domain; see `land_rings`). Truth points are open blue rings,
    predictions small red dots drawn over them (so both stay visible where they coincide or crowd), and a
    thin, faint grey line joins each truth to its prediction for at most `max_lines` pairs, a fixed-seed
    random sample when there are more (the same input always gives the same picture). Lines take the
    shorter way round in longitude and are cut at the date line into two segments (see `track_segments`).
    A photo without a prediction (NaN) gets its truth marker only; one without a finite truth is left out.
    Returns the path.
    """
    fig = world_map_figure(true_lat, true_lon, pred_lat, pred_lon, title=title, max_lines=max_lines)
    return _save(fig, path)


def world_map_figure(
    true_lat: npt.ArrayLike,
    true_lon: npt.ArrayLike,
    pred_lat: npt.ArrayLike,
    pred_lon: npt.ArrayLike,
    *,
    title: str = "",
    max_lines: int = 2000,
) -> Figure:
    """The figure `plot_world_map` saves (one axes, data coordinates lon / lat)."""
    lat1, lon1, lat2, lon2 = _coordinates(true_lat, true_lon, pred_lat, pred_lon)
    if max_lines < 0:
        raise EvaluationError(f"max_lines must be >= 0, got {max_lines}")
    _matplotlib()
    rings = land_rings()
    from matplotlib.collections import LineCollection

    has_truth = np.isfinite(lat1) & np.isfinite(lon1)
    has_pred = has_truth & np.isfinite(lat2) & np.isfinite(lon2)
    paired = np.flatnonzero(has_pred)
    drawn = paired[_sample(paired.size, max_lines)]

    fig = _figure(MAP_FIGSIZE)
    ax = fig.add_subplot()
    ax.add_collection(LineCollection(land_outlines(rings), colors=_LAND_EDGE, linewidths=0.5, zorder=1))
    segments = track_segments(lat1[drawn], lon1[drawn], lat2[drawn], lon2[drawn])
    ax.add_collection(
        LineCollection(list(segments), colors=_LINE_COLOUR, linewidths=0.3, alpha=0.3, zorder=2)
    )
    n_truth, n_pred = int(np.count_nonzero(has_truth)), int(paired.size)
    # Truth as open rings under the predictions as small filled dots: a prediction on (or near) its truth
    # shows as a dot inside a ring, and neither kind hides the other where they crowd (cities, cell centres).
    ax.scatter(
        _wrap(lon1[has_truth]),
        lat1[has_truth],
        s=18,
        facecolors="none",
        edgecolors=_TRUTH_COLOUR,
        linewidths=0.7,
        alpha=0.8,
        zorder=3,
        label=f"truth ({n_truth:,})",
    )
    ax.scatter(
        _wrap(lon2[has_pred]),
        lat2[has_pred],
        s=5,
        color=_PRED_COLOUR,
        linewidths=0,
        alpha=0.85,
        zorder=4,
        label=f"prediction ({n_pred:,})",
    )
    lines = f"truth \u2192 prediction ({drawn.size:,} lines)"
    ax.plot([], [], color=_LINE_COLOUR, linewidth=0.8, label=lines)
    ax.set_xlim(-180.0, 180.0)
    ax.set_ylim(-90.0, 90.0)
    ax.set_aspect("equal")
    ax.set_xticks(np.arange(-180, 181, 30))
    ax.set_yticks(np.arange(-90, 91, 30))
    ax.grid(True, color="0.9", linewidth=0.6, zorder=0)
    ax.set_axisbelow(True)
    ax.set_xlabel("longitude (\u00b0)")
    ax.set_ylabel("latitude (\u00b0)")
    missing = n_truth - n_pred
    legend_title = f"{missing:,} without a prediction" if missing else None
    ax.legend(loc="lower left", fontsize="small", title=legend_title, title_fontsize="small", markerscale=1.6)
    if title:
        ax.set_title(title)
    return fig


@functools.lru_cache(maxsize=1)
def land_rings() -> tuple[npt.NDArray[np.float64], ...]:
    """Every ring of every country polygon `countryinfo` ships, as (k, 2) float arrays of (lon, lat).

    The package's outlines are Natural Earth 1:110m admin-0 countries (via the public-domain world.geo.json).
    A few territories come without geometry (Myanmar, Hungary, Serbia, Montenegro, Kosovo, Palestine and
    small islands): the map lacks Myanmar's coast and the borders inside the Hungary-Serbia block, which is
    why it draws outlines only. A ring circling a pole is closed along the map's edge (see
    `_close_around_pole`), so every ring is a proper polygon; `land_outlines` gives the lines to draw. Loaded
    once per process.
    """
    try:
        import countryinfo
    except ImportError as exc:
        raise MissingDependencyError(
            f"the world map needs `countryinfo` (land outlines): {_PLOT_HINT}"
        ) from exc
    rings: list[npt.NDArray[np.float64]] = []
    for geo in _country_geojsons(countryinfo):
        for feature in (geo or {}).get("features") or []:
            rings.extend(_geometry_rings(feature.get("geometry") or {}))
    return tuple(rings)


def _country_geojsons(module: Any) -> list[dict[str, Any] | None]:
    """Each country's GeoJSON FeatureCollection, through the public API of countryinfo 1.x or 0.1.x."""
    if hasattr(module, "all_countries"):  # 1.x (Python >= 3.11)
        return [country.geo_json() for country in module.all_countries()]
    # 0.1.x (the release pip picks on Python 3.10): CountryInfo() without a name lists every country's data.
    return [info.get("geoJSON") for info in module.CountryInfo().all().values()]


def _geometry_rings(geometry: dict[str, Any]) -> list[npt.NDArray[np.float64]]:
    """The exterior and interior rings of a GeoJSON Polygon or MultiPolygon (other types give none)."""
    kind, coords = geometry.get("type"), geometry.get("coordinates") or []
    polygons = [coords] if kind == "Polygon" else coords if kind == "MultiPolygon" else []
    rings = []
    for polygon in polygons:
        for ring in polygon:
            xy = np.asarray(ring, dtype=np.float64)
            if xy.ndim == 2 and xy.shape[0] >= 3 and xy.shape[1] >= 2:
                rings.append(_close_around_pole(xy[:, :2]))
    return rings


def _close_around_pole(ring: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """A ring that circles a pole (Antarctica) closed along the map's edges and the pole's latitude.

    Such a ring jumps once from one side of the map to the other (+180 to -180); drawn as it is, it would
    fill only down to that jump and leave a line across the whole map. Other rings come back unchanged.
    """
    open_ring = ring[:-1] if np.array_equal(ring[0], ring[-1]) else ring
    lon, lat = open_ring[:, 0], open_ring[:, 1]
    jumps = np.flatnonzero(np.abs(np.diff(np.append(lon, lon[0]))) > 180.0)
    if jumps.size != 1:
        return ring
    start = (int(jumps[0]) + 1) % lon.size
    rolled = np.roll(open_ring, -start, axis=0)  # now the jump is from the last point back to the first
    pole = -90.0 if float(lat.mean()) < 0 else 90.0
    end_edge, start_edge = 180.0 * np.sign(rolled[-1, 0]), 180.0 * np.sign(rolled[0, 0])
    closure = [[end_edge, rolled[-1, 1]], [end_edge, pole], [start_edge, pole], [start_edge, rolled[0, 1]]]
    return np.concatenate([rolled, np.asarray(closure), rolled[:1]])


def land_outlines(rings: Sequence[npt.NDArray[np.float64]]) -> list[npt.NDArray[np.float64]]:
    """Coasts and borders as polylines, (k, 2) arrays of (lon, lat): each ring cut where an edge only traces
    the map's frame or jumps across it.

    Natural Earth cuts polygons at the date line and closes Antarctica at the pole; those edges lie on
    lon = +-180 or lat = +-90 and would draw the frame as if it were coast.
    """
    out = []
    for ring in rings:
        a, b = ring[:-1], ring[1:]
        on_side = (np.abs(a[:, 0]) >= 180.0 - 1e-9) & (a[:, 0] == b[:, 0])
        on_pole = (np.abs(a[:, 1]) >= 90.0 - 1e-9) & (a[:, 1] == b[:, 1])
        jump = np.abs(a[:, 0] - b[:, 0]) > 180.0
        kept = np.flatnonzero(~(on_side | on_pole | jump))
        if kept.size:
            for run in np.split(kept, np.flatnonzero(np.diff(kept) > 1) + 1):
                out.append(ring[run[0] : run[-1] + 2])
    return out


def _matplotlib() -> Any:
    """The pyplot-free matplotlib entry point (colormaps), or MissingDependencyError."""
    try:
        import matplotlib
    except ImportError as exc:
        raise MissingDependencyError(f"evaluation plots need matplotlib: {_PLOT_HINT}") from exc
    return matplotlib


def _figure(size: tuple[float, float]) -> Figure:
    """A Figure drawn by the Agg canvas directly: no pyplot, so no GUI backend, no global figure registry,
    and no matplotlib.use() that would change the backend for the rest of the process."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | os.PathLike[str]) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=DPI, format="png")
    return out


def _distances(dist_km: npt.ArrayLike) -> npt.NDArray[np.float64]:
    dist = _column(dist_km, "distances")
    if dist.size == 0:
        raise EvaluationError("no distances to plot")
    finite = dist[np.isfinite(dist)]
    if np.any(finite < 0):
        raise EvaluationError(f"distances must be >= 0 km, got {float(finite.min())}")
    return dist


def _thresholds(thresholds_km: npt.ArrayLike) -> npt.NDArray[np.float64]:
    thresholds = _column(thresholds_km, "thresholds")
    if not np.all(np.isfinite(thresholds) & (thresholds > 0)):
        raise EvaluationError(f"thresholds must be finite and > 0 km, got {thresholds.tolist()}")
    return thresholds


def _column(values: npt.ArrayLike, name: str) -> npt.NDArray[np.float64]:
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise EvaluationError(f"{name} must be numbers: {exc}") from exc
    if arr.ndim != 1:
        raise EvaluationError(f"{name} must be a 1-D sequence, got shape {arr.shape}")
    return arr


def _coordinates(*values: npt.ArrayLike) -> tuple[npt.NDArray[np.float64], ...]:
    """true_lat, true_lon, pred_lat, pred_lon as 1-D float arrays of one length."""
    names = ("true_lat", "true_lon", "pred_lat", "pred_lon")
    arrays = tuple(_column(v, name) for v, name in zip(values, names, strict=True))
    sizes = {a.size for a in arrays}
    if len(sizes) > 1:
        raise EvaluationError(
            f"coordinate arrays differ in length: {[a.size for a in arrays]} ({', '.join(names)})"
        )
    return arrays


def _wrap(lon: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Longitudes into [-180, 180)."""
    return (lon + 180.0) % 360.0 - 180.0


def _sample(n: int, k: int) -> npt.NDArray[np.integer[Any]]:
    """Indices of at most k of n items, sorted: all of them, or a fixed-seed random choice (reproducible)."""
    if n <= k:
        return np.arange(n)
    return np.sort(np.random.default_rng(0).choice(n, size=k, replace=False))
