"""`georag eval`: score a predictions file (or two, paired) against a benchmark's ground truth."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from georag.cli.options import errors, use
from georag.errors import GeoRagError, MissingDependencyError
from georag.evaluate.scoring import DEFAULT_DENOMINATOR

if TYPE_CHECKING:
    from georag.evaluate import EvalReport, Predictions
    from georag.evaluate.html_report import Table

_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


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
@click.argument("predictions", type=_FILE)
@use("truth", "truth-format", required=("truth",), defaults={"truth-format": "im2gps3k"})
@click.option("--truth-id-col", default=None, help="Truth id column [default: the format's].")
@click.option("--truth-lat-col", default=None, help="Truth latitude column [default: the format's].")
@click.option("--truth-lon-col", default=None, help="Truth longitude column [default: the format's].")
@click.option("--id-col", default="id", show_default=True, help="Predictions' id column (JSONL key).")
@click.option("--lat-col", default="lat", show_default=True, help="Predictions' latitude column.")
@click.option("--lon-col", default="lon", show_default=True, help="Predictions' longitude column.")
@use("distance", defaults={"distance": "haversine"})
@click.option("--thresholds", default="1,25,200,750,2500", show_default=True, help="Thresholds in km.")
@use("denominator", "bootstrap", defaults={"denominator": DEFAULT_DENOMINATOR, "bootstrap": 1000})
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the bootstrap.")
@click.option(
    "--compare",
    "other",
    type=_FILE,
    default=None,
    help="A second predictions file (same columns): side by side, with a paired bootstrap of A - B.",
)
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), help="Write JSON here.")
@click.option("--markdown", is_flag=True, help="Print a markdown table instead of the plain one.")
@click.option("--digits", default=1, show_default=True, type=click.IntRange(0, 6), help="Decimals of %.")
@click.option(
    "--plot",
    "plot_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write error_cdf.png and world_map.png here (needs: pip install matplotlib countryinfo).",
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
    thresholds: str,
    denominator: str,
    bootstrap: int,
    seed: int,
    other: Path | None,
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

    \b
    georag eval preds.csv --truth im2gps3k_places365.csv
    georag eval results.csv --truth meta.csv --truth-format im2gps \\
        --id-col img_id --lat-col predicted_lat --lon-col predicted_long
    georag eval a.csv --compare b.csv --truth meta.csv --json ab.json
    """
    from georag.evaluate import (
        ScoreOptions,
        compare,
        evaluate_predictions,
        parse_thresholds,
        read_predictions,
        read_truth,
    )
    from georag.evaluate.html_report import Table
    from georag.evaluate.tables import (
        COMPARISON_HEADER,
        REPORT_HEADER,
        comparison_rows,
        comparison_table,
        footer_lines,
        report_rows,
        report_table,
    )

    with errors():
        chosen = parse_thresholds(thresholds)
        truth_rows = read_truth(
            truth, truth_format, id_col=truth_id_col, lat_col=truth_lat_col, lon_col=truth_lon_col
        )
        options = ScoreOptions(distance, chosen, denominator, bootstrap, seed)
        files = [predictions] if other is None else [predictions, other]
        preds = [read_predictions(f, id_col, lat_col, lon_col) for f in files]
        for p in preds:
            for note in p.notes:
                click.echo(f"note: {p.path}: {note}", err=True)
        failures = [line for p in preds for line in _failure_lines(p, len(preds) > 1)]
        head = f"against {truth.name} ({truth_format}), {distance} distance"
        if other is None:
            report = evaluate_predictions(preds[0], truth_rows, options)
            payload = {
                **report.to_json(),
                "predictions": str(predictions),
                "truth": str(truth),
                "prediction_failures": preds[0].failure_summary(),
            }
            title = f"{predictions.name} {head}"
            text = report_table(report, title=title, markdown=markdown, digits=digits)
            table = Table(REPORT_HEADER, report_rows(report, digits), footer_lines(report))
            reports: dict[str, tuple[str, EvalReport]] = {"": (predictions.name, report)}
        else:
            comparison = compare(preds[0], preds[1], truth_rows, options)
            payload = {
                **comparison.to_json(),
                "predictions": [str(predictions), str(other)],
                "truth": str(truth),
                "prediction_failures": [p.failure_summary() for p in preds],
            }
            title = f"A = {predictions.name}, B = {other.name}, {head}"
            text = comparison_table(comparison, title=title, markdown=markdown, digits=digits)
            notes = [
                f"{k}: {line}"
                for k, r in (("A", comparison.a), ("B", comparison.b))
                for line in footer_lines(r)
            ]
            table = Table(COMPARISON_HEADER, comparison_rows(comparison, digits), notes)
            reports = {
                "a_": (f"A = {predictions.name}", comparison.a),
                "b_": (f"B = {other.name}", comparison.b),
            }
        if json_out is not None:
            json_out.parent.mkdir(parents=True, exist_ok=True)
            json_out.write_text(json.dumps(payload, indent=2, allow_nan=False) + "\n", encoding="utf-8")
        if plot_dir is not None:
            for prefix, (name, rep) in reports.items():
                _plot(rep, plot_dir, prefix, name)
        if html_out is not None:
            _html(html_out, title, table, list(reports.values()))
    click.echo(text)
    for line in failures:
        click.echo(line)
    if json_out is not None:
        click.echo(f"wrote {json_out}")
    if plot_dir is not None:
        click.echo(f"wrote the plots to {plot_dir}")
    if html_out is not None:
        click.echo(f"wrote {html_out}")


def _failure_lines(preds: Predictions, named: bool) -> list[str]:
    """The rows of one predictions file without usable coordinates: counts by reason, examples, a hint."""
    lines = preds.failure_lines()
    if lines and named:
        lines[0] = f"{preds.path.name if preds.path else 'predictions'}: {lines[0]}"
    return ["", *lines] if lines else []


def _plot(report: EvalReport, out: Path, prefix: str, name: str) -> None:
    """The error CDF and the world map of one report, through georag.evaluate.plots (matplotlib)."""
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
    except GeoRagError:
        raise
    except ImportError as exc:  # a lazily imported matplotlib
        raise MissingDependencyError(f"{hint} ({exc})") from exc


def _html(out: Path, title: str, table: Table, reports: list[tuple[str, EvalReport]]) -> None:
    """The run's self-contained page (georag.evaluate.html_report; the map's outlines need countryinfo)."""
    from georag.evaluate.html_report import write_html_report

    write_html_report(out, title=title, table=table, reports=reports)


def _add_sweep() -> None:
    from georag.cli.sweep_cmd import sweep

    eval_command.add_command(sweep)


_add_sweep()
