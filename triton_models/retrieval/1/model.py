"""Triton Python-backend model `retrieval`: raw SigLIP embeddings -> k nearest and k farthest store rows.

One instance holds the GeoStore (see config.pbtxt for why one), opened with the configured index. Each
dynamic batch is searched by `georag.serving.triton_glue.answer_retrieval`: requests at the same k are one
GeoStore.search, a request with row ranges (the vpr-guided strategy's submap) is searched on its own, and
a bad request fails alone. `execute` is synchronous on purpose: while a batch is searched the next
requests queue, and the dynamic batcher hands them over as one batch, one pass over the database for all
of them. An async `execute` would free the instance at its first await, so batches would stay small and
run side by side, each spreading over every core (the C++ core is multi-threaded) and slowing the others,
and every call would pay one more thread hand-off.
Written by `georag triton repo`; needs georag in the server's Python environment.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import triton_python_backend_utils as pb_utils

from georag.errors import ConfigError
from georag.serving.errors import ServingError
from georag.serving.retrieval import NEIGHBOR_OUTPUTS
from georag.serving.triton_glue import (
    RetrievalRequest,
    answer_retrieval,
    error_response,
    guarded_initialize,
    input_array,
    model_parameters,
)
from georag.store.store import GeoStore


class TritonPythonModel:
    """Opens the store once (checked against its manifest, its index built or read now) and answers
    batches of queries."""

    def _initialize(self, args: dict[str, str]) -> None:
        folder = Path(args["model_repository"]) / args["model_version"]
        params = model_parameters(json.loads(args["model_config"]), folder)
        self.k_near, self.k_far = int(params["k_near"]), int(params["k_far"])
        if not params.get("store"):
            raise ConfigError("no store named: regenerate the repository with `georag triton repo`")
        self.store = GeoStore.open(
            params["store"], encoder=params.get("encoder") or None, index=params.get("index") or "exact"
        )
        self.store.index()  # built or read now, at load time, not on the first request
        if self.store.submap_names():
            # Restricted (submap) searches of the vpr-guided route are exact whatever the index: the exact
            # index is built now too, not within a request's time limit.
            self.store.index("exact")

    initialize = guarded_initialize("retrieval", _initialize)

    def execute(self, requests: list[Any]) -> list[Any]:
        batch = [
            RetrievalRequest(
                input_array(r, "embeddings"),  # type: ignore[arg-type]
                input_array(r, "k_near"),
                input_array(r, "k_far"),
                input_array(r, "row_ranges"),
            )
            for r in requests
        ]
        results = answer_retrieval(
            self.store, batch, self.k_near, self.k_far, on_failure=pb_utils.Logger.log_error
        )
        return [
            error_response(r)
            if isinstance(r, ServingError)
            else pb_utils.InferenceResponse(
                [pb_utils.Tensor(name, a) for name, a in zip(NEIGHBOR_OUTPUTS, r, strict=True)]
            )
            for r in results
        ]
