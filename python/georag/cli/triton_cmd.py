"""`georag triton ...`: write a Triton model repository for a store, an encoder and an LLM."""

from __future__ import annotations

from pathlib import Path

import click

from georag.errors import GeoRagError
from georag.llm.chat_templates import known_families

_DIR = click.Path(file_okay=False, path_type=Path)


@click.group()
def triton() -> None:
    """Serve georag with Triton Inference Server: generate model repositories."""


@triton.command("repo")
@click.option("--out", required=True, type=_DIR, help="Folder to write the model repository into.")
@click.option(
    "--store",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="The GeoStore the retrieval model searches (referenced by absolute path, not copied).",
)
@click.option(
    "--encoder-onnx",
    required=True,
    type=click.Path(exists=True, path_type=Path),
    help="Folder of `georag encoder export --format onnx` (model id, sizes, preprocessing).",
)
@click.option(
    "--encoder-trt",
    type=click.Path(exists=True, path_type=Path),
    help="Folder of `georag encoder export --format tensorrt`: serve SigLIP with TensorRT (GPU).",
)
@click.option(
    "--python-encoder",
    is_flag=True,
    help="Run the ONNX encoder in the Python backend (Triton builds without the onnxruntime backend).",
)
@click.option("--llm-model", default="Qwen/Qwen2-VL-7B-Instruct", show_default=True, help="vLLM model.")
@click.option("--family", type=click.Choice(known_families()), default="qwen2-vl", show_default=True)
@click.option(
    "--llm-standin",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="A model folder with the vLLM backend's interface to use instead of vLLM (tests).",
)
@click.option("--k-near", default=16, show_default=True, type=click.IntRange(min=1))
@click.option("--k-far", default=16, show_default=True, type=click.IntRange(min=0))
@click.option("--variants", help="Prompt variants (default rag:K_NEAR:K_FAR).")
@click.option(
    "--samples", default=5, show_default=True, type=click.IntRange(1, 16), help="Answers per prompt."
)
@click.option("--max-image-mb", default=20.0, show_default=True, type=float, help="Request size cap.")
@click.option("--llm-timeout", default=60.0, show_default=True, type=float, help="Seconds per LLM request.")
@click.option("--deadline", default=120.0, show_default=True, type=float, help="Seconds per request.")
@click.option("--pipeline-instances", default=2, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--ann-index", default="", help="Search this faiss index of the store instead of the exact one."
)
@click.option("--max-model-len", default=8192, show_default=True, type=click.IntRange(min=256))
@click.option("--gpu-memory-utilization", default=0.85, show_default=True, type=float)
@click.option("--max-pixels", default=1280 * 28 * 28, show_default=True, type=click.IntRange(min=3136))
@click.option("--allow-test-markers", is_flag=True, help="Let requests drive a stand-in LLM (tests only).")
@click.option("--overwrite", is_flag=True, help="Replace a georag repository already in --out.")
def triton_repo(
    out: Path,
    store: Path,
    encoder_onnx: Path,
    encoder_trt: Path | None,
    python_encoder: bool,
    llm_model: str,
    family: str,
    llm_standin: Path | None,
    k_near: int,
    k_far: int,
    variants: str | None,
    samples: int,
    max_image_mb: float,
    llm_timeout: float,
    deadline: float,
    pipeline_instances: int,
    ann_index: str,
    max_model_len: int,
    gpu_memory_utilization: float,
    max_pixels: int,
    allow_test_markers: bool,
    overwrite: bool,
) -> None:
    """Write a ready model repository: the encoder, retrieval over STORE, the LLM, the georag pipeline.

    Without --encoder-trt the encoder runs on CPU (siglip_onnx, or siglip_python with --python-encoder).
    The TensorRT and vLLM models need a GPU server; their configurations are written, not run, here.
    """
    from georag.triton.repository import RepositoryConfig, write_repository

    try:
        config = RepositoryConfig(
            store=store,
            encoder_onnx=encoder_onnx,
            encoder_trt=encoder_trt,
            python_encoder=python_encoder,
            llm_model=llm_model,
            family=family,
            llm_standin=llm_standin,
            k_near=k_near,
            k_far=k_far,
            variants=variants,
            samples=samples,
            max_image_mb=max_image_mb,
            llm_timeout_s=llm_timeout,
            deadline_s=deadline,
            pipeline_instances=pipeline_instances,
            ann_index=ann_index,
            max_model_len=max_model_len,
            gpu_memory_utilization=gpu_memory_utilization,
            max_pixels=max_pixels,
            allow_test_markers=allow_test_markers,
        )
        models = write_repository(config, out, overwrite=overwrite)
    except (GeoRagError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"wrote {out}: {', '.join(models)}")


@triton.command("example")
@click.option("--out", required=True, type=_DIR, help="Folder to write the example repository into.")
@click.option("--overwrite", is_flag=True, help="Replace a georag repository already in --out.")
def triton_example(out: Path, overwrite: bool) -> None:
    """Write the example repository of the source tree's triton_models/ (no weights, no store)."""
    from georag.triton.repository import write_example_repository

    try:
        models = write_example_repository(out, overwrite=overwrite)
    except (GeoRagError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"wrote {out}: {', '.join(models)}")
