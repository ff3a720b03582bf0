"""Build a serialized TensorRT engine from an exported encoder ONNX (NOT YET RUN: no GPU or TensorRT here).

Written against the documented TensorRT Python API. TensorRT 10: a weakly typed network with
BuilderFlag.FP16, LayerNorm layers pinned to fp32 (OBEY_PRECISION_CONSTRAINTS; see `_pin_fp32`). TensorRT 11
(no FP16 builder flag): a strongly typed network, so the ONNX must compute in fp16 already
(`export_onnx(..., half=True)`); the ONNX LayerNormalization keeps fp32 statistics (stash_type).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from georag.encoder.backends.onnx_backend import INPUT_NAME, META_MODEL_ID
from georag.encoder.backends.tensorrt_backend import engine_meta_path, import_tensorrt
from georag.errors import ExportError

log = logging.getLogger(__name__)

DEFAULT_ENGINE_NAME = "encoder.engine"


def tensorrt_needs_fp16_onnx() -> bool:
    """True when the installed TensorRT builds fp16 only from an fp16 ONNX (strongly typed, TensorRT 11)."""
    trt = import_tensorrt()
    return _strongly_typed(trt)


def build_tensorrt_engine(
    onnx_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    *,
    min_batch: int = 1,
    opt_batch: int = 8,
    max_batch: int = 32,
    fp16: bool = True,
    workspace_gib: float | None = None,
) -> Path:
    """Builds and writes the engine for `onnx_path` with one dynamic-batch profile; returns `out_path`.

    NOT YET RUN. Writes a JSON sidecar (model id, dim, image size, profile) next to the engine.
    """
    if not 1 <= min_batch <= opt_batch <= max_batch:
        raise ExportError(
            f"need 1 <= min_batch <= opt_batch <= max_batch, got {min_batch}/{opt_batch}/{max_batch}"
        )
    trt = import_tensorrt()
    import onnx

    src = Path(onnx_path)
    proto = onnx.load(str(src), load_external_data=False)
    meta = {p.key: p.value for p in proto.metadata_props}
    dims = [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    height, width = int(dims[2]), int(dims[3])
    strongly_typed = fp16 and _strongly_typed(trt)
    if strongly_typed and meta.get("georag.precision") != "fp16":
        raise ExportError(
            f"TensorRT {trt.__version__} builds fp16 only from an fp16 ONNX; export with half=True "
            "(the CLI does this itself)"
        )
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if strongly_typed else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(src)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"TensorRT cannot parse {src}: {errors}")
    config = builder.create_builder_config()
    if workspace_gib is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    profile = builder.create_optimization_profile()
    profile.set_shape(
        INPUT_NAME,
        (min_batch, 3, height, width),
        (opt_batch, 3, height, width),
        (max_batch, 3, height, width),
    )
    config.add_optimization_profile(profile)
    if fp16 and not strongly_typed:
        config.set_flag(trt.BuilderFlag.FP16)
        _pin_fp32(trt, network, config)
    log.info(
        "building TensorRT engine from %s (batch %d/%d/%d, fp16=%s)",
        src,
        min_batch,
        opt_batch,
        max_batch,
        fp16,
    )
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError(f"TensorRT failed to build an engine from {src} (see the TensorRT log)")
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(bytes(memoryview(serialized)))
    engine_meta_path(out).write_text(
        json.dumps(
            {
                "model_id": meta.get(META_MODEL_ID, str(src)),
                "dim": int(meta.get("georag.dim", "0")),
                "height": height,
                "width": width,
                "batch": [min_batch, opt_batch, max_batch],
                "fp16": fp16,
                "strongly_typed": strongly_typed,
                "tensorrt": trt.__version__,
            },
            indent=2,
        )
    )
    return out


def _strongly_typed(trt: Any) -> bool:
    major = int(str(trt.__version__).split(".")[0])
    return major >= 11 or not hasattr(trt.BuilderFlag, "FP16")


def _pin_fp32(trt: Any, network: Any, config: Any) -> None:
    """Keeps the normalization (LayerNorm) layers in fp32, and only them.

    LayerNorm's mean and variance reductions lose accuracy in fp16 (and its sum of squares overflows),
    so its layers are pinned. Softmax is left free: TensorRT fuses attention (the two batched matrix
    multiplies around a softmax of a SigLIP layer) into one kernel only from that pattern of
    ``IMatrixMultiplyLayer`` and ``ISoftMaxLayer`` layers (TensorRT documentation, "Fused Attention",
    method 2), and a softmax forced to fp32 between fp16 matrix multiplies is likely to keep the pattern
    from fusing, leaving attention unfused (slower, and the whole score matrix in memory). The softmax is
    itself stable in fp16 (its input is max-subtracted). NOT RUN on a GPU: whether attention fuses is
    seen in the TensorRT build log (``--verbose`` / a profiling verbosity of DETAILED).
    """
    if hasattr(trt.BuilderFlag, "OBEY_PRECISION_CONSTRAINTS"):
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
    pinned = 0
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if layer.type == trt.LayerType.NORMALIZATION:
            layer.precision = trt.float32
            for j in range(layer.num_outputs):
                layer.set_output_type(j, trt.float32)
            pinned += 1
    log.info("pinned %d normalization layers to fp32", pinned)
