"""The reliability diagram of a calibration report as a PNG: share within the distance against confidence.

Each bin of confidences (`georag.evaluate.calibration`) is a bar at its mean confidence as high as the
share of its predictions that were within the distance; a perfectly calibrated confidence puts every bar
on the diagonal. The gap to the diagonal is shaded, the number of predictions is written on each bar, and
a histogram of the confidences sits below. matplotlib only (`georag.evaluate.plots`' optional extra).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from georag.evaluate.calibration import CalibrationReport
from georag.evaluate.plots import _figure, _matplotlib, _save

FIGSIZE = (8.0, 6.4)


def plot_reliability(report: CalibrationReport, path: str | os.PathLike[str], *, title: str = "") -> Path:
    """Writes the reliability diagram of ``report`` to ``path`` (PNG); returns the path."""
    _matplotlib()
    from matplotlib.ticker import PercentFormatter

    fig = _figure(FIGSIZE)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    width = (report.bins[0].hi - report.bins[0].lo if report.bins else 0.1) * 0.9
    full = [b for b in report.bins if b.n]
    centres = np.array([(b.lo + b.hi) / 2 for b in full])
    acc = np.array([b.accuracy for b in full])
    conf = np.array([b.confidence for b in full])
    top.plot([0, 1], [0, 1], color="0.45", linestyle="--", linewidth=1.0, label="perfectly calibrated")
    top.bar(centres, acc, width=width, color="tab:blue", alpha=0.85, label="share within the distance")
    top.bar(
        centres, conf - acc, bottom=acc, width=width, fill=False, edgecolor="tab:red", hatch="///",
        linewidth=0.8, label="gap to the bin's mean confidence",
    )  # fmt: skip
    top.plot(
        conf, acc, linestyle="none", marker="o", color="black", markersize=4, label="(mean confidence, share)"
    )
    top.set_xlim(0, 1)
    top.set_ylim(0, 1.02)
    top.yaxis.set_major_formatter(PercentFormatter(1.0))
    top.set_ylabel(f"predictions within {report.within_km:g} km")
    top.grid(True, color="0.9", linewidth=0.6)
    ece_ci = "" if report.ece_ci is None else f" [{report.ece_ci[0]:.3f}, {report.ece_ci[1]:.3f}]"
    brier_ci = "" if report.brier_ci is None else f" [{report.brier_ci[0]:.3f}, {report.brier_ci[1]:.3f}]"
    stats = (
        f"n = {report.n}\nwithin {report.within_km:g} km: {100 * report.base_rate:.1f} %\n"
        f"ECE = {report.ece:.3f}{ece_ci}\nBrier = {report.brier:.3f}{brier_ci}"
    )
    top.legend(
        loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize="small", title=stats, title_fontsize="small",
        alignment="left",
    )  # fmt: skip
    counts = [b.n for b in report.bins]
    mids = [(b.lo + b.hi) / 2 for b in report.bins]
    bottom.bar(mids, counts, width=width, color="0.55")
    for x, n in zip(mids, counts, strict=True):
        if n:
            bottom.annotate(
                f"{n}", (x, n), textcoords="offset points", xytext=(0, 2), ha="center", fontsize=7
            )
    bottom.set_ylim(0, max([*counts, 1]) * 1.25)
    bottom.set_ylabel("predictions")
    source = report.source or "as given"
    bottom.set_xlabel(f"confidence ({source}): claimed P(error \u2264 {report.within_km:g} km)")
    bottom.xaxis.set_major_formatter(PercentFormatter(1.0))
    if title:
        top.set_title(title)
    return _save(fig, path)
