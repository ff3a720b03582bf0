"""Triton Python-backend model `georag`: one photo in, JSON coordinates out (the whole pipeline via BLS).

The pipeline itself is `georag.serving.pipeline` (decode, SigLIP, retrieval, then the requested strategy's
route: rag, knn, knn-medoid or vpr-guided); this file connects it to Triton: the config's parameters (the
pipeline's `georag.config.Config` is the ``georag_config`` parameter), the BLS calls, the responses and the
errors. vpr-guided is served when the store has the configured submap partition (its partition is read
here; its second, restricted search is a call to the retrieval model). Written by `georag triton repo`;
needs georag in the server's Python environment.

Every request is answered from a task of its own through its response sender, and `execute` returns at
once: the instance takes the next requests while earlier ones wait for the LLM (a non-decoupled model,
so clients use plain /infer). At most ``max_requests`` run at once; the others wait for a slot within
their deadline. Blocking work runs on the pipeline's own lanes sized from ``max_requests`` (never the
event loop's default executor), every await is under the request's deadline, and a model that is down is
refused at once (UNAVAILABLE): see `georag.serving.pipeline` and `georag.serving.triton_glue.BlsSteps`.
A failed load says why without paths or a traceback (the server log has the detail).
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import triton_python_backend_utils as pb_utils

from georag.errors import ConfigError
from georag.serving.bls_tensors import cpu_output_options
from georag.serving.errors import BadRequest, ServingError, StepFailed, StepTimeout
from georag.serving.pipeline import Pipeline, result_json
from georag.serving.triton_glue import (
    BlsLanes,
    BlsSteps,
    backend_pool_size,
    bytes_tensor,
    default_strategy,
    error_response,
    guarded_initialize,
    input_array,
    max_requests,
    model_parameters,
    pipeline_config,
    processor_spec,
    request_params,
    served_calibration,
    submap_source,
)
from georag.strategies.registry import make_strategy


class TritonPythonModel:
    """Builds the pipeline from the config's parameters; answers each request or a clean error."""

    def _initialize(self, args: dict[str, str]) -> None:
        folder = Path(args["model_repository"]) / args["model_version"]
        params = model_parameters(json.loads(args["model_config"]), folder)
        slots = max_requests(params)
        self.config = config = pipeline_config(params).with_values({"serve.max_requests": slots})
        pool = backend_pool_size()
        lanes = BlsLanes.fit(pool, slots)
        self.steps = steps = BlsSteps(
            params["encoder_model"],
            params["retrieval_model"],
            params["llm_model"],
            params["family"],
            config,
            lanes=lanes,
        )
        spec = processor_spec(folder, int(params.get("image_size", "224")))
        store = submap_source(params.get("store", ""))
        calibration = served_calibration(folder, config)
        self.pipeline = Pipeline(config, spec, steps, store, calibration=calibration)
        if config.strategy.name not in self.pipeline.strategies:
            make_strategy(config.strategy, store)  # raises why (a missing partition names the fix)
            raise ConfigError(f"the configured strategy {config.strategy.name} cannot be served here")
        self.default_strategy = default_strategy(config, self.pipeline.strategies)
        pb_utils.Logger.log_info(
            f"georag: serving {', '.join(self.pipeline.strategies)} (default {self.default_strategy}), "
            f"{slots} requests at once; of the backend's {pool} threads (tritonserver --backend-config="
            f"python,thread-pool-size), BLS calls take {lanes.encoder} encoder, {lanes.retrieval} "
            f"retrieval and {lanes.llm} LLM; abandoned LLM calls are "
            f"{'cancelled' if steps.cancellable else 'not cancellable on this Triton (before 25.04)'}; "
            f"BLS outputs {'asked for' if cpu_output_options(pb_utils) else 'not askable'} in CPU memory"
        )
        self.slots = asyncio.Semaphore(slots)
        self.tasks: set[asyncio.Task[None]] = set()
        self.loop: asyncio.AbstractEventLoop | None = None

    initialize = guarded_initialize("georag", _initialize)

    async def execute(self, requests: list[Any]) -> None:
        self.loop = loop = asyncio.get_running_loop()
        for request in requests:
            task = loop.create_task(self._respond(request, time.monotonic()))
            self.tasks.add(task)  # the loop keeps only weak references to tasks
            task.add_done_callback(self.tasks.discard)

    async def _respond(self, request: Any, arrived: float) -> None:
        response = await self._answer(request, arrived)
        try:
            request.get_response_sender().send(response, flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        except Exception as exc:  # the client went away; nobody is left to answer
            pb_utils.Logger.log_warn(f"georag: could not send a response: {exc!r}")

    async def _answer(self, request: Any, arrived: float) -> Any:
        try:
            image = input_array(request, "image")
            if image is None or image.size != 1:
                raise BadRequest("send exactly one image per request (input 'image', shape [1, 1])")
            raw = input_array(request, "parameters")
            params = request_params(
                None if raw is None or raw.size == 0 else raw.reshape(-1)[0],
                self.default_strategy,
                allow_test_markers=self.config.serve.allow_test_markers,
            )
            left = self.config.serve.deadline_s - (time.monotonic() - arrived)
            try:
                await asyncio.wait_for(self.slots.acquire(), max(left, 0.001))
            except asyncio.TimeoutError:
                raise StepTimeout(
                    "the server is busy: the request could not start within its deadline"
                ) from None
            try:
                result = await self.pipeline.run(bytes(image.reshape(-1)[0]), params, arrived=arrived)
            finally:
                self.slots.release()
        except ServingError as exc:
            pb_utils.Logger.log_info(f"georag: request refused ({exc.code}): {exc}")
            return error_response(exc)
        except Exception as exc:  # a bug: the client gets no traceback or path, the log gets the detail
            pb_utils.Logger.log_error(f"georag: unexpected failure: {exc!r}")
            return error_response(StepFailed("internal error in the georag pipeline (see the server log)"))
        return pb_utils.InferenceResponse([bytes_tensor("result", [result_json(result)], (1, 1))])

    def finalize(self) -> None:
        # Tasks belong to the stub's event loop, which runs in another thread: cancel them from there.
        if self.loop is not None and not self.loop.is_closed():
            for task in list(self.tasks):
                self.loop.call_soon_threadsafe(task.cancel)
        self.pipeline.close()
        self.steps.close()
