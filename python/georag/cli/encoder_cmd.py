"""`georag encoder ...`: export the SigLIP vision tower to ONNX / TensorRT with a parity check."""

from __future__ import annotations

from pathlib import Path

import click

from georag.errors import GeoRagError


@click.group()
def encoder() -> None:
    """SigLIP image encoder: export to ONNX / TensorRT with a parity check against torch."""


_SHARED_IMAGES = Path("..") / "shared" / "data" / "im2gps3k" / "images"  # relative to the repo root


def _default_images() -> Path | None:
    for root in (Path.cwd(), Path(__file__).resolve().parents[3]):
        if (root / _SHARED_IMAGES).is_dir():
            return (root / _SHARED_IMAGES).resolve()
    return None


@encoder.command("export")
@click.option("--encoder", "model", required=True, help="Hub id or local folder of a SigLIP checkpoint.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["onnx", "tensorrt"]),
    default="onnx",
    show_default=True,
    help="Target.",
)
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Output folder.")
@click.option(
    "--opset", default=18, show_default=True, type=click.IntRange(min=17), help="ONNX opset (>= 17)."
)
@click.option(
    "--min-batch", default=1, show_default=True, type=click.IntRange(min=1), help="TensorRT profile min."
)
@click.option(
    "--opt-batch", default=8, show_default=True, type=click.IntRange(min=1), help="TensorRT profile opt."
)
@click.option(
    "--max-batch", default=32, show_default=True, type=click.IntRange(min=1), help="TensorRT profile max."
)
@click.option(
    "--images",
    type=click.Path(file_okay=False, path_type=Path),
    help="Parity-check images (default: ../shared/data/im2gps3k/images if present, else synthetic).",
)
@click.option("--parity-n", default=8, show_default=True, type=click.IntRange(min=1), help="Images compared.")
def encoder_export(
    model: str,
    fmt: str,
    out: Path,
    opset: int,
    min_batch: int,
    opt_batch: int,
    max_batch: int,
    images: Path | None,
    parity_n: int,
) -> None:
    """Export a SigLIP vision tower to ONNX (or a TensorRT engine) and check it against torch."""
    from georag.encoder.exporting import run_export

    if images is None:
        images = _default_images()
    try:
        outcome = run_export(
            model,
            out,
            fmt=fmt,
            opset=opset,
            batch_profile=(min_batch, opt_batch, max_batch),
            images=images,
            parity_n=min(parity_n, max_batch) if fmt == "tensorrt" else parity_n,
        )
    except (GeoRagError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"wrote {outcome.path}")
    click.echo(str(outcome.parity))
