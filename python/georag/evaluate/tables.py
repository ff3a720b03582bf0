"""Text tables of an EvalReport or a Comparison: aligned plain text for the terminal, or markdown."""

from __future__ import annotations

import math
from collections.abc import Sequence

from georag.evaluate.calibration import CalibrationReport
from georag.evaluate.compare import Comparison
from georag.evaluate.metrics import threshold_key
from georag.evaluate.report import EvalReport, Interval

MAX_IDS_SHOWN = 20
"""Missing / extra / failed ids listed under a table; the JSON lists all."""


REPORT_HEADER = ("metric", "value", "95% CI")
COMPARISON_HEADER = ("metric", "A", "B", "A - B", "95% CI (paired)")


def report_table(report: EvalReport, *, title: str, markdown: bool = False, digits: int = 1) -> str:
    """The report as a metric | value | 95% CI table, a title line above and counts and ids below."""
    lines = [title, "", *grid(REPORT_HEADER, report_rows(report, digits), markdown), ""]
    lines += footer_lines(report)
    return "\n".join(lines)


def report_rows(report: EvalReport, digits: int = 1) -> list[list[str]]:
    """The cells of `report_table` under `REPORT_HEADER`, as printed (and as `georag eval --html` shows)."""
    rows = [
        [f"acc @ {threshold_key(t)} km", _pct(a, digits), _ci_pct(report.accuracy_ci, t, digits)]
        for t, a in report.accuracy.items()
    ]
    rows += [
        ["median error", _km(report.median_km), _ci_km(report.median_ci)],
        ["mean error", _km(report.mean_km), ""],
        ["GeoScore (mean)", _num(report.geoscore, 1), ""],
    ]
    return rows


def calibration_rows(cal: CalibrationReport) -> list[list[str]]:
    """ECE and Brier of a calibration report as rows under `REPORT_HEADER`."""
    what = f"P(error <= {cal.within_km:g} km)"
    ece_ci = "" if cal.ece_ci is None else f"[{cal.ece_ci[0]:.3f}, {cal.ece_ci[1]:.3f}]"
    brier_ci = "" if cal.brier_ci is None else f"[{cal.brier_ci[0]:.3f}, {cal.brier_ci[1]:.3f}]"
    return [
        [f"ECE of confidence as {what}", f"{cal.ece:.3f}", ece_ci],
        ["Brier score", f"{cal.brier:.3f}", brier_ci],
    ]


def calibration_note(cal: CalibrationReport) -> str:
    """The line under the table that says what the calibration rows measured."""
    kind = {
        "calibrated": "calibrated probabilities",
        "raw agreement": "the raw agreement taken as a probability; fit one with georag eval calibrate",
    }.get(cal.source, "the confidence column as given")
    return (
        f"calibration: {cal.n} predictions with a confidence ({kind}); {100 * cal.base_rate:.1f} % within "
        f"{cal.within_km:g} km; ECE over {len(cal.bins)} equal-width bins"
    )


def headroom_table(
    achieved: EvalReport, rows: dict[str, EvalReport], *, markdown: bool = False, digits: int = 1
) -> str:
    """The achieved accuracy next to the oracle and baseline rows (`georag.evaluate.headroom`)."""
    header = ["predictions", *[f"{threshold_key(t)} km" for t in achieved.thresholds_km], "median error"]
    cells = [
        [name, *[_pct(r.accuracy[t], digits) for t in achieved.thresholds_km], _km(r.median_km)]
        for name, r in {"achieved (these predictions)": achieved, **rows}.items()
    ]
    title = "headroom: what the evidence held (oracles look at the truth: ceilings, not systems)"
    return "\n".join([title, "", *grid(header, cells, markdown)])


def comparison_table(comparison: Comparison, *, title: str, markdown: bool = False, digits: int = 1) -> str:
    """A and B side by side with A - B (percentage points) and its paired 95% CI."""
    lines = [title, "", *grid(COMPARISON_HEADER, comparison_rows(comparison, digits), markdown), ""]
    lines += [f"A: {line}" for line in footer_lines(comparison.a)]
    lines += [f"B: {line}" for line in footer_lines(comparison.b)]
    return "\n".join(lines)


def comparison_rows(comparison: Comparison, digits: int = 1) -> list[list[str]]:
    """The cells of `comparison_table` under `COMPARISON_HEADER`, as printed."""
    a, b = comparison.a, comparison.b
    rows = [
        [
            f"acc @ {threshold_key(t)} km",
            _pct(a.accuracy[t], digits),
            _pct(b.accuracy[t], digits),
            _pp(comparison.difference[t], digits),
            _ci_pp(comparison.difference_ci, t, digits),
        ]
        for t in a.thresholds_km
    ]
    rows += [
        ["median error", _km(a.median_km), _km(b.median_km), _km_diff(a.median_km - b.median_km), ""],
        ["mean error", _km(a.mean_km), _km(b.mean_km), _km_diff(a.mean_km - b.mean_km), ""],
        ["GeoScore (mean)", _num(a.geoscore, 1), _num(b.geoscore, 1), f"{a.geoscore - b.geoscore:+.1f}", ""],
    ]
    return rows


def denominator_text(denominator: str) -> str:
    """The denominator rule in words, printed under every table that scores."""
    if denominator == "truth":
        return "denominator truth: every truth row; a missing or failed prediction counts as wrong"
    return "denominator predicted: only rows with a scored prediction; missing and failed rows are dropped"


def counts_line(report: EvalReport) -> str:
    """n, n scored, n missing and the denominator rule, in one line."""
    c = report.counts
    return (
        f"n = {c.n}: {c.scored} scored, {c.missing} missing, {c.failures} failed "
        f"({denominator_text(report.denominator)})"
    )


def footer_lines(report: EvalReport) -> list[str]:
    """The lines under a table: counts, the denominator rule, and the first missing / extra / failed ids."""
    c = report.counts
    lines = [
        counts_line(report),
        f"{c.truth} truth rows, {c.predictions} predictions, {c.joined} joined",
        f"missing {c.missing}, extra {c.extra}, failures {c.failures}, fallbacks {c.fallbacks}"
        + (f", matched without image extension {c.by_extension}" if c.by_extension else ""),
    ]
    for label, ids in (
        ("missing predictions", report.missing_ids),
        ("extra predictions (not in the truth)", report.extra_ids),
        ("failed predictions", report.failed_ids),
    ):
        if ids:
            shown = ", ".join(ids[:MAX_IDS_SHOWN])
            more = f" ... (first {MAX_IDS_SHOWN}; --json lists all)" if len(ids) > MAX_IDS_SHOWN else ""
            lines.append(f"{label} ({len(ids)}): {shown}{more}")
    return lines


def grid(header: Sequence[str], rows: Sequence[Sequence[str]], markdown: bool) -> list[str]:
    """The header and rows as aligned plain-text lines (first column left, the rest right), or markdown."""
    if markdown:
        out = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
        return out + ["| " + " | ".join(r) + " |" for r in rows]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = [c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
        return "  ".join([first, *rest]).rstrip()

    return [line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)]


def _num(value: float, digits: int) -> str:
    return f"{value:.{digits}f}" if math.isfinite(value) else "n/a"


def _pct(fraction: float, digits: int) -> str:
    return f"{100 * fraction:.{digits}f} %"


def _pp(fraction: float, digits: int) -> str:
    return f"{100 * fraction:+.{digits}f} pp"


def _km(value: float) -> str:
    return f"{_num(value, 2)} km" if math.isfinite(value) else "n/a"


def _km_diff(value: float) -> str:
    return f"{value:+.2f} km" if math.isfinite(value) else "n/a"


def _ci_pct(ci: dict[float, Interval] | None, t: float, digits: int) -> str:
    if ci is None:
        return ""
    lo, hi = ci[t]
    return f"[{100 * lo:.{digits}f}, {100 * hi:.{digits}f}]"


def _ci_pp(ci: dict[float, Interval] | None, t: float, digits: int) -> str:
    if ci is None:
        return ""
    lo, hi = ci[t]
    return f"[{100 * lo:+.{digits}f}, {100 * hi:+.{digits}f}]"


def _ci_km(ci: Interval | None) -> str:
    if ci is None or not all(math.isfinite(v) for v in ci):
        return ""
    return f"[{ci[0]:.2f}, {ci[1]:.2f}]"
