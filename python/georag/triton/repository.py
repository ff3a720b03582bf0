"""`write_repository`: a ready Triton model repository for one store, encoder and LLM, from the templates.

The templates are package data (``georag/triton/templates/<model>/``, ``${name}`` placeholders), so an
installed wheel generates repositories too. The top-level ``triton_models/`` of the source tree is the
example `write_example_repository` renders (SigLIP so400m, Qwen2-VL-7B, a store at /models/georag-store);
edit the templates, not that copy, and re-render it with ``georag triton example --out triton_models``.

A repository holds exactly one encoder model (Triton refuses to start when a model fails to load):
``siglip_trt`` with ``encoder_trt`` (GPU), else ``siglip_onnx`` (Triton's onnxruntime backend, CPU), or
``siglip_python`` with ``python_encoder`` (the same ONNX file in the Python backend, for Triton builds
without the onnxruntime backend). The LLM is ``mllm`` on the vLLM backend, or a copy of ``llm_standin``
(a model folder with the vLLM backend's interface, as the tests use).

The store's path (and the encoder it was built with) are written to ``<model>/1/store.json``
(`PRIVATE_SETTINGS`) of the retrieval and georag models, not into their config.pbtxt, whose parameters
any client reads (``GET /v2/models/NAME/config``).
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import sys
import tempfile
from importlib import resources
from pathlib import Path
from string import Template
from typing import TYPE_CHECKING, Any

from georag.encoder.backends.onnx_backend import find_onnx
from georag.encoder.preprocess import CONFIG_NAME
from georag.geo.calibration import load_calibration
from georag.serving.retrieval import MAX_K
from georag.serving.triton_glue import CALIBRATION_FILE, PRIVATE_SETTINGS
from georag.triton.engine_args import family_engine_args
from georag.triton.inputs import EncoderFacts, EngineFile, read_engine, read_facts, standin_name
from georag.triton.model_config import (
    LLM_MODEL,
    PIPELINE_MODEL,
    RETRIEVAL_MODEL,
    RepositoryConfig,
    RepositoryError,
    pipeline_values,
)
from georag.triton.tensorrt_check import check_engine_tensorrt

if TYPE_CHECKING:
    if sys.version_info >= (3, 11):
        from importlib.resources.abc import Traversable
    else:
        from importlib.abc import Traversable

__all__ = ["RepositoryConfig", "RepositoryError", "write_example_repository", "write_repository"]

log = logging.getLogger(__name__)


def write_repository(config: RepositoryConfig, out: Path, *, overwrite: bool = False) -> list[str]:
    """Writes the repository for ``config`` into ``out``; returns the model names written.

    Checks first that the store, the ONNX export (and engine) describe the same encoder and dimension.
    ``out`` must not exist or be empty; with ``overwrite``, a previous georag repository there is replaced.
    """
    facts = read_facts(config)
    files: dict[str, Path] = {}
    onnx = find_onnx(config.encoder_onnx)
    engine = None
    if config.encoder_trt is not None:
        engine = read_engine(config.encoder_trt, facts)
        check_engine_tensorrt(
            engine.tensorrt, config.server_tensorrt, allow_mismatch=config.allow_tensorrt_mismatch
        )
        encoder = "siglip_trt"
        files["siglip_trt/1/model.plan"] = engine.path
    else:
        encoder = "siglip_python" if config.python_encoder else "siglip_onnx"
        name = "encoder.onnx" if config.python_encoder else "model.onnx"
        files[f"{encoder}/1/{name}"] = onnx
        data = onnx.with_name(onnx.name + ".data")
        if data.is_file():  # weights over 2 GiB live beside the graph, under the name the graph records
            files[f"{encoder}/1/{data.name}"] = data
    strategy = config.config.strategy
    if strategy.calibration:  # checked now (readable, fitted on this strategy), loaded by the georag model
        load_calibration(strategy.calibration, strategy.name)
        files[f"{PIPELINE_MODEL}/1/{CALIBRATION_FILE}"] = Path(strategy.calibration)
    llm = LLM_MODEL if config.llm_standin is None else standin_name(config.llm_standin)
    return _render(config, facts, out, overwrite, [encoder], llm, files, engine)


def write_example_repository(out: Path, *, overwrite: bool = False) -> list[str]:
    """Renders the example repository (the source tree's ``triton_models/``): SigLIP so400m (d = 1152,
    384 px) as siglip_trt with siglip_onnx as its CPU alternative, a store at /models/georag-store and
    Qwen2-VL-7B-Instruct on vLLM. It holds no weights, engine or store: it shows what `write_repository`
    writes; generate a real one with ``georag triton repo``."""
    facts = EncoderFacts(
        model_id="google/siglip-so400m-patch14-384",
        dim=1152,
        height=384,
        width=384,
        store="/models/georag-store",
        preprocessor=None,
    )
    config = RepositoryConfig(encoder_onnx=Path("siglip-onnx"), store=Path(facts.store))
    models = _render(config, facts, out, overwrite, ["siglip_trt", "siglip_onnx"], LLM_MODEL, {}, None)
    readme = _templates().joinpath("README.md").read_text("utf-8")
    (out / "README.md").write_text(readme, encoding="utf-8")
    return models


def _render(
    config: RepositoryConfig,
    facts: EncoderFacts,
    out: Path,
    overwrite: bool,
    encoders: list[str],
    llm: str,
    files: dict[str, Path],
    engine: EngineFile | None,
) -> list[str]:
    values = _values(config, facts, encoders[0], llm)
    _prepare(out, overwrite)
    with tempfile.TemporaryDirectory(prefix=".georag-repo-", dir=out.parent) as tmp:
        stage = Path(tmp)
        models = [*encoders, RETRIEVAL_MODEL, PIPELINE_MODEL]
        for model in models:
            _render_model(model, _model_values(model, values, config, engine), stage / model)
        if config.llm_standin is None:
            _render_model(LLM_MODEL, values, stage / LLM_MODEL)
            _write_engine_args(config, stage / LLM_MODEL / "1" / "model.json")
        else:
            shutil.copytree(config.llm_standin, stage / llm, ignore=shutil.ignore_patterns("__pycache__"))
        models.append(llm)
        if facts.preprocessor is not None:
            (stage / PIPELINE_MODEL / "1" / CONFIG_NAME).write_text(facts.preprocessor, encoding="utf-8")
        _write_private(stage / RETRIEVAL_MODEL / "1", {"store": facts.store, "encoder": facts.model_id})
        _write_private(stage / PIPELINE_MODEL / "1", {"store": facts.store})
        for rel, src in files.items():
            (stage / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, stage / rel)
        for child in stage.iterdir():
            shutil.move(str(child), out / child.name)
    log.info("wrote the model repository %s: %s", out, ", ".join(models))
    return sorted(models)


def _prepare(out: Path, overwrite: bool) -> None:
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise RepositoryError(f"{out} is not empty; choose another folder or overwrite")
        if not (out / PIPELINE_MODEL / "config.pbtxt").is_file():
            raise RepositoryError(f"{out} is not empty and is no georag repository; refusing to replace it")
        for child in out.iterdir():
            if child.is_dir():
                shutil.rmtree(child)
            else:
                child.unlink()
    out.mkdir(parents=True, exist_ok=True)


def _values(config: RepositoryConfig, facts: EncoderFacts, encoder: str, llm: str) -> dict[str, str]:
    """The values every template may use; the CPU encoders' batching (see `_model_values`)."""
    max_batch = config.encoder_max_batch
    # On CPU, 8-image calls ran fastest (georag.encoder.Encoder): prefer them, allow up to max_batch.
    preferred = sorted({min(8, max_batch), max_batch})
    cfg = config.config
    serve = cfg.serve
    raw: dict[str, Any] = {
        "dim": facts.dim,
        "height": facts.height,
        "width": facts.width,
        "index": _pb_string(cfg.search.index),
        "max_batch": max_batch,
        "preferred_batch_sizes": ", ".join(map(str, preferred)),
        "warmup_batch": min(8, max_batch),
        "queue_delay_us": config.encoder_queue_delay_us,
        "queue_timeout_us": _us(serve.encoder_timeout_s),
        "max_queue_size": config.max_queue_size,
        "instances": config.encoder_instances,
        "k_near": cfg.search.k_near,
        "k_far": cfg.search.k_far,
        "max_k": MAX_K,
        "llm_name": llm,
        "llm_hf_id": _pb_string(config.llm_model),
        "family": config.family,
        "encoder_model": encoder,
        "retrieval_model": RETRIEVAL_MODEL,
        "georag_config": _pb_json_lines(pipeline_values(cfg), indent=6),
        "max_image_mb": _number(serve.max_image_bytes / (1 << 20)),
        "deadline_us": _us(serve.deadline_s),
    }
    return {key: str(value) for key, value in raw.items()}


def _model_values(
    model: str, values: dict[str, str], config: RepositoryConfig, engine: EngineFile | None
) -> dict[str, str]:
    """The values of ``model``'s template: the shared ones, with its own batching and instances.

    siglip_trt batches as its engine's profile allows: up to the maximum, preferring the optimum (the
    warm-up size too), and names the TensorRT that built it; without an engine (the example) the profile
    of `georag encoder export` is used.
    """
    if model == "siglip_trt":
        _, opt, high = (1, 8, 32) if engine is None else engine.profile
        own = {
            "max_batch": high,
            "preferred_batch_sizes": ", ".join(map(str, sorted({opt, high}))),
            "warmup_batch": opt,
            "queue_delay_us": config.trt_queue_delay_us,
            "tensorrt": "X.Y.Z" if engine is None or engine.tensorrt is None else engine.tensorrt,
        }
    elif model == RETRIEVAL_MODEL:
        own = {
            "max_batch": config.retrieval_max_batch,
            "queue_delay_us": config.retrieval_queue_delay_us,
            "queue_timeout_us": _us(config.config.serve.retrieval_timeout_s),
        }
    elif model == PIPELINE_MODEL:
        own = {
            "max_batch": config.pipeline_max_batch,
            "instances": config.pipeline_instances,
            "max_requests": config.config.serve.max_requests,
            "max_queue_size": config.config.serve.max_queue,
        }
    else:
        own = {}
    return {**values, **{key: str(value) for key, value in own.items()}}


def _render_model(model: str, values: dict[str, str], dst: Path) -> None:
    src = _templates().joinpath(model)
    _copy_tree(src, dst, values)


def _templates() -> Traversable:
    """The templates folder (package data, so it is there in an installed wheel too)."""
    return resources.files("georag.triton").joinpath("templates")


def _copy_tree(src: Traversable, dst: Path, values: dict[str, str]) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for entry in src.iterdir():
        if entry.name == "__pycache__":
            continue
        if entry.is_dir():
            _copy_tree(entry, dst / entry.name, values)
        elif entry.name.endswith(".pbtxt"):
            text = Template(entry.read_text("utf-8")).substitute(values)
            (dst / entry.name).write_text(text, encoding="utf-8")
        else:
            (dst / entry.name).write_bytes(entry.read_bytes())


def _write_private(folder: Path, settings: dict[str, str]) -> None:
    """The model's settings no client may read (`PRIVATE_SETTINGS`, beside its model.py)."""
    text = json.dumps(settings, indent=2) + "\n"
    (folder / PRIVATE_SETTINGS).write_text(text, encoding="utf-8")


def _write_engine_args(config: RepositoryConfig, path: Path) -> None:
    """The template's family-neutral vLLM arguments, the deployment's, and the family's own
    (`georag.triton.engine_args`: trust_remote_code, mm_processor_kwargs)."""
    args = json.loads(path.read_text(encoding="utf-8"))
    args.update(
        model=config.llm_model,
        max_model_len=config.max_model_len,
        gpu_memory_utilization=config.gpu_memory_utilization,
        **family_engine_args(config.family, config.max_pixels),
    )
    path.write_text(json.dumps(args, indent=2) + "\n", encoding="utf-8")


def _pb_string(text: str) -> str:
    """``text`` escaped for a protobuf text-format string literal."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _pb_json_lines(values: dict[str, Any], indent: int) -> str:
    """``values`` as one JSON object written as adjacent protobuf string literals, one key a line (text
    format joins adjacent literals into one string, so the parameter reads as one JSON text)."""
    pad = " " * indent
    items = [json.dumps(key) + ": " + json.dumps(value) for key, value in values.items()]
    parts = ["{", *(item + ("," if i < len(items) - 1 else "") for i, item in enumerate(items)), "}"]
    return "\n".join(f'{pad}"{_pb_string(part)}"' for part in parts)


def _us(seconds: float) -> int:
    """``seconds`` in whole microseconds (Triton's queue timeouts)."""
    return int(seconds * 1e6)


def _number(x: float) -> str:
    return str(int(x)) if math.isfinite(x) and float(x).is_integer() else repr(float(x))
