"""`georag eval calibrate`: fit the map from a run's agreement to P(error <= D km) on photos with a truth."""

from __future__ import annotations

from pathlib import Path

import click

from georag.cli.eval_options import EXISTING_FILE, file_columns
from georag.cli.options import errors, use


@click.command("calibrate")
@click.argument("predictions", type=EXISTING_FILE)
@file_columns
@use("distance", defaults={"distance": "haversine"})
@click.option(
    "--within-km",
    type=click.FloatRange(min=0.0, min_open=True),
    default=25.0,
    show_default=True,
    help="The distance the calibrated confidence speaks of: P(error <= this many km).",
)
@click.option(
    "--method",
    type=click.Choice(["isotonic", "platt"]),
    default="isotonic",
    show_default=True,
    help="isotonic: a non-decreasing map of the agreement; platt: logistic on agreement, answered share "
    "and spread (those need the JSONL).",
)
@click.option(
    "--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="The calibration file."
)
def calibrate(
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
    within_km: float,
    method: str,
    out: Path,
) -> None:
    """Fit a calibration on PREDICTIONS (a georag run's JSONL, or its CSV: agreement only) against the
    truth, and write it to --out; `georag locate --calibration FILE` then reports confidence as the fitted
    probability that the prediction lies within --within-km of the truth.

    Fit on a run made WITHOUT --calibration (a JSONL keeps the raw agreement either way; a CSV does not),
    with the strategy and settings you will locate with, on photos that are not the ones you report on.
    Fallbacks and failed photos are left out. The numbers printed are in-sample; cross-validate for an
    honest estimate (benchmarks/bench_selection.py does, on real answers).

    \b
    georag eval calibrate preds.jsonl --truth im2gps3k_places365.csv --out calib.json
    georag locate photos/ --store S --llm URL --calibration calib.json --out new.csv
    """
    from georag.evaluate.calibration_fit import fit_from_files

    with errors():
        cal, before, after = fit_from_files(
            predictions,
            truth,
            truth_format,
            columns=(id_col, lat_col, lon_col),
            truth_columns=(truth_id_col, truth_lat_col, truth_lon_col),
            distance=distance,
            within_km=within_km,
            method=method,
        )
        cal.save(out)
    fitted = cal.fitted_on
    click.echo(
        f"fitted {cal.method} calibration of P(error <= {cal.within_km:g} km) on {fitted['n']} predictions "
        f"({fitted['within']} within, base rate {100 * fitted['base_rate']:.1f} %)"
        + (f", strategy {cal.strategy}" if cal.strategy else "")
        + f"; features: {', '.join(cal.features)}"
    )
    click.echo(
        f"in-sample: ECE {before.ece:.3f} -> {after.ece:.3f}, Brier {before.brier:.3f} -> {after.brier:.3f} "
        "(raw agreement -> calibrated)"
    )
    for note in fitted.get("left_out", []):
        click.echo(f"left out: {note}")
    click.echo(f"wrote {out}")
