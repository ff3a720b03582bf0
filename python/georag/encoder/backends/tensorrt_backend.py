"""The TensorRT backend: runs a serialized engine built by `build_tensorrt_engine` (NOT YET RUN: no GPU here).

Written against the TensorRT 10 Python API (tensor-name I/O, `execute_async_v3`); tensorrt and torch
(for CUDA buffers and the stream) are imported lazily, and a missing package or GPU raises
MissingDependencyError.

Everything runs on the backend's own device and CUDA stream: the engine is deserialized and its context
created under ``torch.cuda.device(device)`` (TensorRT places an engine on the CURRENT device, so
``device="cuda:1"`` would otherwise load it on cuda:0), and each batch's copies and ``execute_async_v3``
run on a ``torch.cuda.Stream`` of the backend's (not the legacy default stream, which synchronizes with
every other stream of the process). Tested with fake tensorrt and torch modules only.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from georag.encoder.backends.base import check_embeddings, check_pixels
from georag.encoder.backends.onnx_backend import INPUT_NAME, OUTPUT_NAME
from georag.errors import EncoderError, MissingDependencyError

log = logging.getLogger(__name__)


def import_tensorrt() -> Any:
    """The `tensorrt` module, or MissingDependencyError (needs an NVIDIA GPU and `pip install tensorrt`)."""
    try:
        import tensorrt
    except ImportError as exc:
        raise MissingDependencyError(
            "TensorRT is not installed (it needs an NVIDIA GPU; `pip install tensorrt`); "
            "use the onnxruntime or torch backend instead"
        ) from exc
    return tensorrt


def engine_meta_path(engine_path: Path) -> Path:
    """The JSON sidecar written next to an engine: model id, dim, image size, batch profile."""
    return engine_path.with_suffix(engine_path.suffix + ".json")


class TensorRTBackend:
    """Embeds pixels with a TensorRT engine (input "pixel_values", output "embeddings", dynamic batch).

    NOT YET RUN: written against the documented TensorRT 10 API; batches larger than the engine's
    profile maximum are split.
    """

    name = "tensorrt"

    def __init__(self, engine_path: str | os.PathLike[str], *, device: str = "cuda") -> None:
        trt = import_tensorrt()
        import torch

        if not torch.cuda.is_available():
            raise MissingDependencyError("the tensorrt backend needs a CUDA device; torch sees none")
        path = Path(engine_path).expanduser()
        if path.is_dir():
            engines = sorted(path.glob("*.engine")) + sorted(path.glob("*.plan"))
            if len(engines) != 1:
                raise EncoderError(f"{path} holds {len(engines)} .engine/.plan files, expected one")
            path = engines[0]
        if not path.is_file():
            raise EncoderError(f"no TensorRT engine at {path}")
        self.path = path
        self.device = _cuda_device(torch, device)
        self._torch = torch
        self._logger = trt.Logger(trt.Logger.WARNING)
        with torch.cuda.device(self.device):
            self._stream = torch.cuda.Stream(self.device)  # type: ignore[no-untyped-call]  # untyped in torch
            self._runtime = trt.Runtime(self._logger)
            self.engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
            if self.engine is None:
                raise EncoderError(
                    f"TensorRT could not deserialize {path} (built by another TensorRT version?)"
                )
            self.context = self.engine.create_execution_context()
        in_shape = tuple(self.engine.get_tensor_shape(INPUT_NAME))
        out_shape = tuple(self.engine.get_tensor_shape(OUTPUT_NAME))
        self.height, self.width, self.dim = int(in_shape[2]), int(in_shape[3]), int(out_shape[-1])
        self.preferred_micro_batch: int | None = None  # a GPU engine wants whole batches
        _, _, max_shape = self.engine.get_tensor_profile_shape(INPUT_NAME, 0)
        self.max_batch = int(max_shape[0])
        self._in_dtype = _torch_dtype(torch, trt.nptype(self.engine.get_tensor_dtype(INPUT_NAME)))
        self._out_dtype = _torch_dtype(torch, trt.nptype(self.engine.get_tensor_dtype(OUTPUT_NAME)))
        meta_path = engine_meta_path(path)
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        self.model_id = str(meta.get("model_id", path))
        log.info("TensorRT engine %s (d=%d, max batch %d)", path, self.dim, self.max_batch)

    def embed(self, pixels: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """(n, 3, H, W) float32 -> (n, d) float32 raw embeddings."""
        x = check_pixels(pixels, self.height, self.width)
        parts = [self._run(x[i : i + self.max_batch]) for i in range(0, x.shape[0], self.max_batch)]
        out = np.concatenate(parts) if parts else np.zeros((0, self.dim), np.float32)
        return check_embeddings(out, x.shape[0], self.dim, self.name)

    def _run(self, chunk: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """One batch on the backend's device and stream: copy in, execute, wait for the stream, copy out."""
        torch = self._torch
        stream = self._stream
        with torch.cuda.device(self.device), torch.cuda.stream(stream):
            inp = torch.from_numpy(chunk).to(self.device, dtype=self._in_dtype).contiguous()
            out = torch.empty((chunk.shape[0], self.dim), dtype=self._out_dtype, device=self.device)
            if not self.context.set_input_shape(INPUT_NAME, tuple(inp.shape)):
                raise EncoderError(f"batch of {chunk.shape[0]} is outside the engine's optimization profile")
            self.context.set_tensor_address(INPUT_NAME, inp.data_ptr())
            self.context.set_tensor_address(OUTPUT_NAME, out.data_ptr())
            if not self.context.execute_async_v3(stream.cuda_stream):
                raise EncoderError("TensorRT execution failed")
            stream.synchronize()
            return np.asarray(out.float().cpu().numpy(), dtype=np.float32)


def _cuda_device(torch: Any, device: str) -> Any:
    """``device`` as a torch CUDA device with its index (``"cuda"``: the current device)."""
    found = torch.device(device)
    if found.type != "cuda":
        raise EncoderError(f"the tensorrt backend runs on a CUDA device, got {device!r}")
    return found if found.index is not None else torch.device("cuda", torch.cuda.current_device())


def _torch_dtype(torch: Any, np_dtype: Any) -> Any:
    table = {np.dtype(np.float32): torch.float32, np.dtype(np.float16): torch.float16}
    try:
        return table[np.dtype(np_dtype)]
    except KeyError as exc:
        raise EncoderError(f"unsupported engine I/O dtype {np_dtype}") from exc
