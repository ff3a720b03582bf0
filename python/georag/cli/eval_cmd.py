"""`georag eval`: score a predictions file (or two, paired) against a benchmark's ground truth."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from georag.cli.eval_options import EXISTING_FILE, file_columns
from georag.cli.options import errors, use
from georag.errors import GeoRagError, MissingDependencyError
from georag.evaluate.scoring import DEFAULT_DENOMINATOR

if TYPE_CHECKING:
    from georag.evaluate import EvalReport, Predictions, ScoreOptions, Truth
    from georag.evaluate.calibration import CalibrationReport
    from georag.evaluate.html_report import Table
    from georag.evaluate.records import Records



class _EvalGroup(click.Group):
    """`georag eval FILE ...` scores a file (the `score` subcommand); `georag eval sweep ...` runs a grid."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["score", *args]
        return super().parse_args(ctx, args)


@click.group("eval", cls=_EvalGroup)
def eval_command() -> None:
    """Score predictions against ground truth (`georag eval FILE --truth T`), or sweep settings
    (`georag eval sweep`). `georag eval score --help` lists the scoring options."""




@eval_command.command("score")
@click.argument("predictions", type=EXISTING_FILE)
@file_columns
@use("distance", defaults={"distance": "haversine"})
@click.option(
    "--convention",
    type=click.Choice(["georag", "g3"]),
    default="georag",
    show_default=True,
    help="georag: --distance, a hit is d <= t; g3: as G3's code scores (WGS-84 geodesic, d < t), to compare "
    "with papers that used it.",
)
@click.option("--thresholds", default="1,25,200,750,2500", show_default=True, help="Thresholds in km.")
@use("denominator", "bootstrap", defaults={"denominator": DEFAULT_DENOMINATOR, "bootstrap": 1000})
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the bootstrap.")
@click.option(
    "--compare",
    "other",
    type=EXISTING_FILE,
    default=None,
    help="A second predictions file (same columns): side by side, with a paired bootstrap of A - B.",
)
@click.option(
    "--calibration-km",
    type=click.FloatRange(min=0.0, min_open=True),
    default=None,
    help="Check uncalibrated confidences as P(error <= this many km) [default: the distance calibrated "
    "predictions state, else 25].",
)
@click.option(
    "--exclude-exif-gps",
    is_flag=True,
    help="Leave out the photos whose EXIF carries GPS (flagged in a georag JSONL; the answer is in them).",
)
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), help="Write JSON here.")
@click.option("--markdown", is_flag=True, help="Print a markdown table instead of the plain one.")
@click.option("--digits", default=1, show_default=True, type=click.IntRange(0, 6), help="Decimals of %.")
@click.option(
    "--plot",
    "plot_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write error_cdf.png, world_map.png (and reliability.png where predictions carry a confidence) here "
    "(needs: pip install matplotlib countryinfo).",
)
@click.option(
    "--html",
    "html_out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write one self-contained offline page here: the table, the error CDF and an interactive map of "
    "truth vs prediction with the worst misses (needs: pip install countryinfo).",
)
def score(
    predictions: Path,
    truth: Path,
    truth_format: str,
    truth_id_col: str | None,
    truth_lat_col: str | None,
    truth_lon_col: str | None,
    id_col: str,
    lat_col: str,
    lon_col: str,
    distance: str,
    convention: str,
    thresholds: str,
    denominator: str,
    bootstrap: int,
    seed: int,
    other: Path | None,
    calibration_km: float | None,
    exclude_exif_gps: bool,
    json_out: Path | None,
    markdown: bool,
    digits: int,
    plot_dir: Path | None,
    html_out: Path | None,
) -> None:
    """Score PREDICTIONS against the ground truth: accuracy within each distance threshold, median and
    mean error, GeoScore, with 95% bootstrap intervals.

    PREDICTIONS is a `georag locate` output (CSV or JSONL: failed rows and fallbacks are counted) or any
    CSV/JSONL with id, latitude and longitude columns (--id-col, --lat-col, --lon-col); a CSV is read up to
    its first blank line. Ids join the truth's exactly, or when they differ only by an image extension
    ("x" and "x.jpg"). With --compare B, PREDICTIONS is A and both are scored on the same rows.

    Where rows carry a confidence, its calibration is reported too (ECE, Brier, reliability bins; the
    distance it speaks of: the predictions' calibration, else --calibration-km). A georag JSONL also gives
    the headroom (the best LLM candidate and the best neighbour, oracles, and vpr-guided's prior alone) and
    counts the photos whose EXIF carries GPS (--exclude-exif-gps leaves them out).

    \b
    georag eval preds.csv --truth im2gps3k_places365.csv
    georag eval results.csv --truth meta.csv --truth-format im2gps \\
        --id-col img_id --lat-col predicted_lat --lon-col predicted_long
    georag eval a.csv --compare b.csv --truth meta.csv --json ab.json
    """
    from georag.evaluate import (
        compare,
        evaluate_predictions,
        parse_thresholds,
        read_predictions,
        read_truth,
    )
    from georag.evaluate.extras import headroom_of
    from georag.evaluate.html_report import Table
    from georag.evaluate.records import read_records
    from georag.evaluate.tables import (
        COMPARISON_HEADER,
        REPORT_HEADER,
        calibration_note,
        calibration_rows,
        comparison_rows,
        comparison_table,
        footer_lines,
        grid,
        headroom_table,
        report_rows,
    )

    with errors():
        chosen = parse_thresholds(thresholds)
        truth_rows = read_truth(
            truth, truth_format, id_col=truth_id_col, lat_col=truth_lat_col, lon_col=truth_lon_col
        )
        options = _options(convention, distance, chosen, denominator, bootstrap, seed)
        files = [predictions] if other is None else [predictions, other]
        preds = [read_predictions(f, id_col, lat_col, lon_col) for f in files]
        records = [read_records(f, id_col) for f in files]
        for p in preds:
            for note in p.notes:
                click.echo(f"note: {p.path}: {note}", err=True)
        failures = [line for p in preds for line in _failure_lines(p, len(preds) > 1)]
        leaks, truth_rows, leak_line = _leaks(records, truth_rows, exclude_exif_gps)
        rule = (
            "G3 convention: geodesic, d < t"
            if convention == "g3"
            else f"{options.distance} distance, {options.rule}"
        )
        head = f"against {truth.name} ({truth_format}), {rule}"
        below: list[str] = []
        if other is None:
            report = evaluate_predictions(preds[0], truth_rows, options)
            cal = _calibration(report, records[0], options, calibration_km)
            payload = {
                **report.to_json(),
                "predictions": str(predictions),
                "truth": str(truth),
                "prediction_failures": preds[0].failure_summary(),
                "calibration": cal.to_json() if cal is not None else None,
            }
            title = f"{predictions.name} {head}"
            rows = report_rows(report, digits) + (calibration_rows(cal) if cal is not None else [])
            notes = footer_lines(report) + ([calibration_note(cal)] if cal is not None else [])
            text = "\n".join([title, "", *grid(REPORT_HEADER, rows, markdown), "", *notes])
            table = Table(REPORT_HEADER, rows, notes)
            reports: dict[str, tuple[str, EvalReport, CalibrationReport | None]] = {
                "": (predictions.name, report, cal)
            }
            extra = headroom_of(records[0], truth_rows, options)
            if extra:
                below += ["", headroom_table(report, extra, markdown=markdown, digits=digits)]
                payload["headroom"] = {name: _brief(r) for name, r in extra.items()}
        else:
            comparison = compare(preds[0], preds[1], truth_rows, options)
            cals = [
                _calibration(r, rec, options, calibration_km)
                for r, rec in zip((comparison.a, comparison.b), records, strict=True)
            ]
            payload = {
                **comparison.to_json(),
                "predictions": [str(predictions), str(other)],
                "truth": str(truth),
                "prediction_failures": [p.failure_summary() for p in preds],
            }
            for key, cal in zip(("a", "b"), cals, strict=True):
                payload[key]["calibration"] = cal.to_json() if cal is not None else None
            title = f"A = {predictions.name}, B = {other.name}, {head}"
            text = comparison_table(comparison, title=title, markdown=markdown, digits=digits)
            notes = [
                f"{k}: {line}"
                for k, r in (("A", comparison.a), ("B", comparison.b))
                for line in footer_lines(r)
            ]
            for k, cal in zip("AB", cals, strict=True):
                if cal is not None:
                    below.append(f"{k}: ECE {cal.ece:.3f}, Brier {cal.brier:.3f}; {calibration_note(cal)}")
            table = Table(COMPARISON_HEADER, comparison_rows(comparison, digits), notes + below)
            reports = {
                "a_": (f"A = {predictions.name}", comparison.a, cals[0]),
                "b_": (f"B = {other.name}", comparison.b, cals[1]),
            }
        if leaks is not None:
            payload["exif_gps"] = leaks
            below += ["", leak_line]
        if json_out is not None:
            json_out.parent.mkdir(parents=True, exist_ok=True)
            json_out.write_text(json.dumps(payload, indent=2, allow_nan=False) + "\n", encoding="utf-8")
        if plot_dir is not None:
            for prefix, (name, rep, cal) in reports.items():
                _plot(rep, cal, plot_dir, prefix, name)
        if html_out is not None:
            _html(html_out, title, table, [(name, rep) for name, rep, _ in reports.values()])
    click.echo(text)
    for line in below:
        click.echo(line)
    for line in failures:
        click.echo(line)
    if json_out is not None:
        click.echo(f"wrote {json_out}")
    if plot_dir is not None:
        click.echo(f"wrote the plots to {plot_dir}")
    if html_out is not None:
        click.echo(f"wrote {html_out}")


def _options(
    convention: str, distance: str, thresholds: tuple[float, ...], denominator: str, bootstrap: int, seed: int
) -> ScoreOptions:
    """The scoring options of the command line; --convention g3 refuses a --distance other than geodesic
    given on the command line (the default haversine gives way to it)."""
    from georag.evaluate import ScoreOptions

    given = (
        click.get_current_context().get_parameter_source("distance") == click.core.ParameterSource.COMMANDLINE
    )
    kw = {"thresholds": thresholds, "denominator": denominator, "bootstrap": bootstrap, "seed": seed}
    if convention == "georag" or given:
        kw["distance"] = distance
    return ScoreOptions.for_convention(convention, **kw)


def _calibration(
    report: EvalReport, records: Records, options: ScoreOptions, within_km: float | None
) -> CalibrationReport | None:
    from georag.evaluate.extras import calibration_of

    return calibration_of(report, records, options, within_km)


def _leaks(
    records: list[Records], truth: Truth, exclude: bool
) -> tuple[dict[str, object] | None, Truth, str]:
    """The photos flagged for GPS in their EXIF: (the JSON entry, the truth to score, the line to print)."""
    from georag.evaluate.extras import without_ids
    from georag.evaluate.headroom import exif_gps_ids

    if not any(r.has_evidence for r in records):
        if exclude:
            raise click.UsageError("--exclude-exif-gps needs a georag JSONL (its evidence flags the photos)")
        return None, truth, ""
    ids = tuple(sorted({i for r in records for i in exif_gps_ids(r)}))
    out = without_ids(truth, ids) if exclude else truth
    dropped = len(truth) - len(out)
    line = (
        f"EXIF GPS: {len(ids)} photo(s) carry GPS coordinates in their EXIF (the answer is in the file)"
        + (
            f"; {dropped} left out of the scores (--exclude-exif-gps)"
            if exclude
            else "; --exclude-exif-gps leaves them out"
        )
        + (f": {', '.join(ids[:10])}" + (" ..." if len(ids) > 10 else "") if ids else "")
    )
    return {"count": len(ids), "excluded": dropped if exclude else 0, "ids": list(ids)}, out, line


def _brief(report: EvalReport) -> dict[str, object]:
    """A headroom row in the JSON: n, accuracy, median_km and their intervals."""
    full = report.to_json()
    return {k: full[k] for k in ("n", "accuracy", "median_km", "ci", "counts")}


def _failure_lines(preds: Predictions, named: bool) -> list[str]:
    """The rows of one predictions file without usable coordinates: counts by reason, examples, a hint."""
    lines = preds.failure_lines()
    if lines and named:
        lines[0] = f"{preds.path.name if preds.path else 'predictions'}: {lines[0]}"
    return ["", *lines] if lines else []


def _plot(report: EvalReport, cal: CalibrationReport | None, out: Path, prefix: str, name: str) -> None:
    """The error CDF and the world map of one report (and its reliability diagram), through matplotlib."""
    hint = "--plot needs matplotlib: pip install matplotlib countryinfo"
    try:
        from georag.evaluate import plots
    except ImportError as exc:
        raise MissingDependencyError(f"{hint} ({exc})") from exc
    # Every denominator row goes in: the plots draw a row without a prediction (NaN) as an error beyond
    # the axis and a truth marker alone, so the curve at each threshold is the reported accuracy.
    rows = report.rows
    what = f"{name}, {report.distance}, n = {report.n}"
    out.mkdir(parents=True, exist_ok=True)
    try:
        plots.plot_error_cdf(
            rows.dist_km, report.thresholds_km, out / f"{prefix}error_cdf.png", title=f"Error CDF: {what}"
        )
        plots.plot_world_map(
            rows.true_lat,
            rows.true_lon,
            rows.pred_lat,
            rows.pred_lon,
            out / f"{prefix}world_map.png",
            title=f"Truth vs prediction: {what}",
        )
        if cal is not None:
            from georag.evaluate.reliability_plot import plot_reliability

            plot_reliability(cal, out / f"{prefix}reliability.png", title=f"Reliability: {name}")
    except GeoRagError:
        raise
    except ImportError as exc:  # a lazily imported matplotlib
        raise MissingDependencyError(f"{hint} ({exc})") from exc


def _html(out: Path, title: str, table: Table, reports: list[tuple[str, EvalReport]]) -> None:
    """The run's self-contained page (georag.evaluate.html_report; the map's outlines need countryinfo)."""
    from georag.evaluate.html_report import write_html_report

    write_html_report(out, title=title, table=table, reports=reports)


def _add_subcommands() -> None:
    from georag.cli.calibrate_cmd import calibrate
    from georag.cli.sweep_cmd import sweep

    eval_command.add_command(sweep)
    eval_command.add_command(calibrate)


_add_subcommands()
