"""Triton Python-backend model `siglip_python`: SigLIP pixels -> raw embeddings with onnxruntime on CPU.

For Triton builds without the onnxruntime backend. Each dynamic batch becomes one onnxruntime call; a
request with bad pixels fails alone. Written by `georag triton repo`; needs georag and onnxruntime in the
server's Python environment.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import triton_python_backend_utils as pb_utils

from georag.encoder.backends.onnx_backend import OnnxBackend
from georag.serving.batching import run_batched
from georag.serving.errors import ServingError, StepFailed
from georag.serving.triton_glue import error_response, guarded_initialize, model_parameters


class TritonPythonModel:
    """Loads the ONNX encoder beside this file and embeds every batch in one call."""

    def _initialize(self, args: dict[str, str]) -> None:
        params = model_parameters(json.loads(args["model_config"]))
        folder = Path(args["model_repository"]) / args["model_version"]
        self.backend = OnnxBackend(folder / params.get("onnx_file", "encoder.onnx"))
        self.row_shape = (3, self.backend.height, self.backend.width)

    initialize = guarded_initialize("siglip_python", _initialize)

    def execute(self, requests: list[Any]) -> list[Any]:
        arrays = [pb_utils.get_input_tensor_by_name(r, "pixel_values").as_numpy() for r in requests]
        try:
            results = run_batched(arrays, lambda x: (self.backend.embed(x),), row_shape=self.row_shape)
        except Exception as exc:  # an exception here would reach every client with its internals
            pb_utils.Logger.log_error(f"siglip_python: the batch failed: {exc!r}")
            return [error_response(StepFailed("the encoder failed (see the server log)")) for _ in requests]
        return [
            error_response(r)
            if isinstance(r, ServingError)
            else pb_utils.InferenceResponse([pb_utils.Tensor("embeddings", r[0])])
            for r in results
        ]
