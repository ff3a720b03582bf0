"""ONNX export of a SigLIP vision tower: one file, "pixel_values" -> "embeddings", dynamic batch."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from georag.encoder.backends.base import image_hw
from georag.encoder.backends.onnx_backend import DEFAULT_ONNX_NAME, INPUT_NAME, META_MODEL_ID, OUTPUT_NAME
from georag.encoder.model import ModelSource, load_vision_model, resolve_model
from georag.encoder.preprocess import CONFIG_NAME
from georag.errors import ExportError, GeoRagError, MissingDependencyError, extra_hint

log = logging.getLogger(__name__)

MIN_OPSET = 17
# torch's exporter implements opset 18 and up; asking for 17 makes it convert down and warn.
DEFAULT_OPSET = 18
META_DIM = "georag.dim"
META_PRECISION = "georag.precision"
# protobuf caps one file at 2 GiB; keep a margin for the graph itself (so400m fp32 is about 1.7 GB).
_SINGLE_FILE_BYTES = 1_900_000_000


def export_onnx(
    model: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    opset: int = DEFAULT_OPSET,
    *,
    half: bool = False,
) -> Path:
    """Exports the vision tower of `model` (hub id or folder) to `out_dir`/encoder.onnx; returns the path.

    Uses torch's dynamo exporter with a symbolic batch dimension; the weights go into the same file
    unless they exceed protobuf's 2 GiB limit (then into encoder.onnx.data beside it). `half=True`
    computes in fp16 inside the graph (for TensorRT's strongly typed networks); pixels in and embeddings
    out stay float32 either way. The preprocessor_config.json is copied alongside so the folder loads
    with `load_encoder(out_dir, backend="onnxruntime")`. The result is checked with onnx.checker and
    run by onnxruntime at batch sizes 1 and 3.
    """
    import torch

    if opset < MIN_OPSET:
        raise ExportError(f"opset must be >= {MIN_OPSET}, got {opset}")
    source = resolve_model(model)
    vision = load_vision_model(source)
    height, width = image_hw(vision.config.image_size)
    dim = int(vision.config.hidden_size)
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    path = out / DEFAULT_ONNX_NAME
    for stale in (path, path.with_name(path.name + ".data")):
        stale.unlink(missing_ok=True)
    wrapper = _PooledVision(vision, half=half).eval()
    n_bytes = sum(p.numel() * p.element_size() for p in wrapper.parameters())
    batch = torch.export.Dim("batch", min=1, max=65536)
    log.info("exporting %s (%.0f MB of weights) to %s, opset %d", source.model_id, n_bytes / 1e6, path, opset)
    chatter = io.StringIO()  # the dynamo exporter prints progress lines; keep them out of our CLI's output
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(chatter):
            # the exporter's own deprecation/future notices are not ours to act on
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)
            torch.onnx.export(
                wrapper,
                (torch.zeros(2, 3, height, width),),
                str(path),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                opset_version=opset,
                dynamo=True,
                external_data=n_bytes > _SINGLE_FILE_BYTES,
                dynamic_shapes={"pixel_values": {0: batch}},
                verbose=False,
            )
    except ImportError as exc:  # the dynamo exporter needs onnx and onnxscript
        raise MissingDependencyError(
            f"ONNX export needs onnx and onnxscript ({exc}): {extra_hint('onnx', 'onnx onnxscript')}"
        ) from exc
    except Exception as exc:  # the exporter raises many unrelated types; all mean "export failed"
        raise ExportError(f"torch.onnx.export failed for {source.model_id}: {exc}") from exc
    finally:
        for line in chatter.getvalue().splitlines():
            log.debug("torch.onnx: %s", line)
    _add_metadata(
        path, {META_MODEL_ID: source.model_id, META_DIM: str(dim), META_PRECISION: "fp16" if half else "fp32"}
    )
    _check(path, height, width, dim)
    _copy_processor_config(source, out)
    return path


class _PooledVision:
    """Built lazily as a torch.nn.Module subclass (torch is optional for georag.encoder)."""

    def __new__(cls, vision: Any, *, half: bool) -> Any:
        import torch

        class PooledVision(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.vision = vision.half() if half else vision

            def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
                x = pixel_values.half() if half else pixel_values
                return self.vision(pixel_values=x).pooler_output.float()

        return PooledVision()


def _add_metadata(path: Path, props: dict[str, str]) -> None:
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    for key, value in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))


def _check(path: Path, height: int, width: int, dim: int) -> None:
    import onnx

    from georag.encoder.backends.onnx_backend import OnnxBackend

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"{path} fails onnx.checker: {exc}") from exc
    proto = onnx.load(str(path), load_external_data=False)
    batch_dim = proto.graph.input[0].type.tensor_type.shape.dim[0]
    if not batch_dim.dim_param:
        raise ExportError(f"{path}: the batch axis is not dynamic ({batch_dim})")
    try:
        session = OnnxBackend(path)
        rng = np.random.default_rng(0)
        for n in (1, 3):
            emb = session.embed(rng.standard_normal((n, 3, height, width), dtype=np.float32))
            if emb.shape != (n, dim):
                raise ExportError(f"{path}: batch {n} gave shape {emb.shape}, expected {(n, dim)}")
    except GeoRagError as exc:
        raise ExportError(f"{path} does not run in onnxruntime: {exc}") from exc


def _copy_processor_config(source: ModelSource, out: Path) -> None:
    if source.local:
        src = Path(source.ref) / CONFIG_NAME
        if not src.is_file():
            log.warning("%s has no %s; the export will use the SigLIP defaults", source.ref, CONFIG_NAME)
            return
    else:
        try:
            from huggingface_hub import hf_hub_download

            src = Path(hf_hub_download(source.ref, CONFIG_NAME))
        except Exception as exc:  # offline or missing: the export itself is still valid
            log.warning(
                "cannot fetch %s of %s (%s); the export will use the SigLIP defaults",
                CONFIG_NAME,
                source.ref,
                exc,
            )
            return
    shutil.copyfile(src, out / CONFIG_NAME)
