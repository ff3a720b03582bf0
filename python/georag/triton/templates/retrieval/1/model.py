"""Triton Python-backend model `retrieval`: raw SigLIP embeddings -> k nearest and k farthest store rows.

One instance holds the GeoStore (see config.pbtxt for why one); each dynamic batch is one
GeoStore.search. `execute` is synchronous on purpose: while a batch is searched the next requests queue,
and the dynamic batcher hands them over as one batch, one pass over the database for all of them. An async
`execute` would free the instance at its first await, so batches would stay small and run side by side,
each spreading over every core (the C++ core is multi-threaded) and slowing the others, and every call
would pay one more thread hand-off.
Written by `georag triton repo`; needs georag in the server's Python environment.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import numpy.typing as npt
import triton_python_backend_utils as pb_utils

from georag.serving.batching import Outputs, run_batched
from georag.serving.errors import ServingError, StepFailed
from georag.serving.retrieval import NEIGHBOUR_OUTPUTS, search_outputs
from georag.serving.triton_glue import error_response, model_parameters
from georag.store.store import GeoStore


class TritonPythonModel:
    """Opens the store once (checked against its manifest) and answers batches of queries."""

    def initialize(self, args: dict[str, str]) -> None:
        params = model_parameters(json.loads(args["model_config"]))
        self.k_near, self.k_far = int(params["k_near"]), int(params["k_far"])
        self.index = params.get("index") or None
        self.store = GeoStore.open(params["store"], encoder=params.get("encoder") or None)
        if self.index is None:
            self.store.flat_index()  # built now, at load time, not on the first request
        else:
            self.store.ann_index(self.index)

    def execute(self, requests: list[Any]) -> list[Any]:
        arrays = [pb_utils.get_input_tensor_by_name(r, "embeddings").as_numpy() for r in requests]
        try:
            results = run_batched(arrays, self._search, row_shape=(self.store.dim,), nonzero=True)
        except Exception as exc:  # an exception here would reach every client with its internals
            pb_utils.Logger.log_error(f"retrieval: the batch failed: {exc!r}")
            return [
                error_response(StepFailed("the store search failed (see the server log)")) for _ in requests
            ]
        return [
            error_response(r)
            if isinstance(r, ServingError)
            else pb_utils.InferenceResponse(
                [pb_utils.Tensor(name, a) for name, a in zip(NEIGHBOUR_OUTPUTS, r, strict=True)]
            )
            for r in results
        ]

    def _search(self, queries: npt.NDArray[np.float32]) -> Outputs:
        return search_outputs(self.store, queries, self.k_near, self.k_far, self.index)
