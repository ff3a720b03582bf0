"""`georag triton ...`: write a Triton model repository for a store, an encoder and an LLM.

The pipeline's options are the shared ones of `georag.cli.options` (the one `georag.config.Config`); the
others are about the Triton deployment only.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from georag.cli.options import RAG, SEARCH, VPR, FiniteFloat, config_from, errors, use
from georag.llm.chat_templates import known_families

_DIR = click.Path(file_okay=False, path_type=Path)


@click.group()
def triton() -> None:
    """Serve georag with Triton Inference Server: generate model repositories, probe a server."""


@triton.command("repo")
@click.option("--out", required=True, type=_DIR, help="Folder to write the model repository into.")
@use(
    "config",
    "store",
    *SEARCH,
    *RAG,
    *VPR,
    "max-requests",
    "max-queue",
    "max-image-mb",
    "served-llm-timeout-s",
    "deadline-s",
    default_text={"strategy": "rag"},
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
    "--server-tensorrt",
    metavar="VERSION",
    help="TensorRT version of the Triton that will serve --encoder-trt (`echo $TRT_VERSION` in its "
    "container); the engine must have been built with the same one.",
)
@click.option(
    "--allow-tensorrt-mismatch",
    is_flag=True,
    help="Write the repository even when the engine's TensorRT version does not match --server-tensorrt "
    "(or cannot be checked); the engine will then fail to load.",
)
@click.option(
    "--python-encoder",
    is_flag=True,
    help="Run the ONNX encoder in the Python backend (Triton builds without the onnxruntime backend).",
)
@click.option("--llm-model", default="Qwen/Qwen2-VL-7B-Instruct", show_default=True, help="vLLM model.")
@click.option(
    "--family",
    type=click.Choice(known_families()),
    default="qwen2-vl",
    show_default=True,
    help="Chat format of the LLM (the georag model renders it).",
)
@click.option(
    "--llm-standin",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="A model folder with the vLLM backend's interface to use instead of vLLM (tests).",
)
@click.option(
    "--pipeline-instances",
    default=2,
    show_default=True,
    type=click.IntRange(min=1),
    help="Instances (processes) of the georag model.",
)
@click.option("--max-model-len", default=8192, show_default=True, type=click.IntRange(min=256))
@click.option(
    "--gpu-memory-utilization", default=0.85, show_default=True, type=FiniteFloat(0.0, 1.0, min_open=True)
)
@click.option(
    "--max-pixels",
    default=1280 * 28 * 28,
    show_default=True,
    type=click.IntRange(min=3136),
    help="The LLM's image budget: Qwen's max_pixels, or whole 448x448 tiles for InternVL.",
)
@click.option("--allow-test-markers", is_flag=True, help="Let requests drive a stand-in LLM (tests only).")
@click.option("--overwrite", is_flag=True, help="Replace a georag repository already in --out.")
def triton_repo(
    out: Path,
    encoder_onnx: Path,
    encoder_trt: Path | None,
    server_tensorrt: str | None,
    allow_tensorrt_mismatch: bool,
    python_encoder: bool,
    llm_model: str,
    family: str,
    llm_standin: Path | None,
    pipeline_instances: int,
    max_model_len: int,
    gpu_memory_utilization: float,
    max_pixels: int,
    allow_test_markers: bool,
    overwrite: bool,
    **kw: Any,
) -> None:
    """Write a ready model repository: the encoder, retrieval over the store, the LLM, the georag pipeline.

    The pipeline's settings (retrieval depth, strategy, prompt variants, sampling, time limits) come from
    the options, then --config FILE.toml, then the defaults, and are written into the georag model's
    config. Requests naming no strategy get --strategy (default rag); vpr-guided is served when the
    store has the --submap-by partition (`georag index submaps STORE --by country`).

    --max-requests is what ONE georag instance runs at once (--pipeline-instances of them run); --max-queue
    bounds its Triton queue.

    Without --encoder-trt the encoder runs on CPU (siglip_onnx, or siglip_python with --python-encoder).
    With it, --server-tensorrt must name the serving Triton's TensorRT version, and the engine must have
    been built with that version (an engine loads in no other); a mismatch is refused.
    The TensorRT and vLLM models need a GPU server; their configurations are written, not run, here.
    """
    from georag.triton.repository import RepositoryConfig, write_repository

    with errors():
        config = config_from(kw, require=("store",), auto_strategy=False)
        if allow_test_markers:
            config = config.with_values({"serve.allow_test_markers": True})
        repo = RepositoryConfig(
            encoder_onnx=encoder_onnx,
            config=config,
            encoder_trt=encoder_trt,
            server_tensorrt=server_tensorrt,
            allow_tensorrt_mismatch=allow_tensorrt_mismatch,
            python_encoder=python_encoder,
            llm_model=llm_model,
            family=family,
            llm_standin=llm_standin,
            pipeline_instances=pipeline_instances,
            max_model_len=max_model_len,
            gpu_memory_utilization=gpu_memory_utilization,
            max_pixels=max_pixels,
        )
        models = write_repository(repo, out, overwrite=overwrite)
    click.echo(f"wrote {out}: {', '.join(models)}")


@triton.command("example")
@click.option("--out", required=True, type=_DIR, help="Folder to write the example repository into.")
@click.option("--overwrite", is_flag=True, help="Replace a georag repository already in --out.")
def triton_example(out: Path, overwrite: bool) -> None:
    """Write the example repository of the source tree's triton_models/ (no weights, no store)."""
    from georag.triton.repository import write_example_repository

    with errors():
        models = write_example_repository(out, overwrite=overwrite)
    click.echo(f"wrote {out}: {', '.join(models)}")


@triton.command("probe")
@click.argument("url")
@click.option("--model", default="georag", show_default=True, help="The pipeline model to ask.")
@click.option(
    "--rag",
    "rag",
    is_flag=True,
    help="Ask for strategy rag (an LLM call too) instead of knn (decoding, the encoder, the retrieval).",
)
@click.option(
    "--requests",
    default=2,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Requests sent at once (at least the georag instances, so that each is likely to get one).",
)
@click.option(
    "--timeout-s",
    default=10.0,
    show_default=True,
    type=FiniteFloat(0.0, 600.0, min_open=True),
    help="Time each request has to be answered (keep it under the livenessProbe's timeoutSeconds).",
)
def triton_probe(url: str, model: str, rag: bool, requests: int, timeout_s: float) -> None:
    """Liveness probe: locate a tiny generated photo through the served pipeline; exit 0 when every
    request is answered within --timeout-s, 1 otherwise (what failed goes to stderr).

    URL is Triton's HTTP address (http://HOST:8000). Triton's /v2/health/ready stays 200 while a model's
    process is dead or the pipeline is wedged; this probe is answered only when the pipeline works. As a
    Kubernetes livenessProbe: exec `georag triton probe http://127.0.0.1:8000`.
    """
    from georag.triton.probe import probe

    strategy = "rag" if rag else "knn"
    with errors():
        results = probe(url, model=model, strategy=strategy, requests=requests, timeout_s=timeout_s)
    failed = [r for r in results if not r.ok]
    slowest = max(r.seconds for r in results)
    if not failed:
        click.echo(f"ok: {model} answered {len(results)} {strategy} request(s), slowest in {slowest:.2f} s")
        return
    for r in failed:
        click.echo(f"probe failed after {r.seconds:.2f} s: {r.message}", err=True)
    click.echo(f"FAILED: {len(failed)} of {len(results)} {strategy} request(s) to {model}", err=True)
    sys.exit(1)
