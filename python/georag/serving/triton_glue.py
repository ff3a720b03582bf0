"""Helpers for georag's Triton Python-backend models: config parameters, tensors, errors, BLS steps, and the
retrieval model's batching.

Imported only inside a Triton Python-backend stub, where ``triton_python_backend_utils`` exists; it is
looked up on first use so this module (and its typing) imports anywhere, and the parts that need no
Triton (`pipeline_config`, `answer_retrieval`, `submap_source`, `request_params`) are tested without one.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import logging
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache, partial
from itertools import pairwise
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from georag.config import Config, Sampling, load_config
from georag.encoder.preprocess import CONFIG_NAME, ProcessorSpec
from georag.errors import ConfigError, GeoRagError
from georag.geo.calibration import Calibration, load_calibration
from georag.llm.triton_client import VllmRequest
from georag.serving.batching import Outputs, run_batched
from georag.serving.bls_cancel import CancellableCall, cancel_supported
from georag.serving.bls_tensors import cpu_output_options, output_array
from georag.serving.errors import BadRequest, DependencyDown, ServingError, StepFailed, public_message
from georag.serving.params import MAX_PARAMETERS_BYTES, MAX_VARIANTS, RequestParams, parse_params
from georag.serving.pipeline import Embedding, Ranges
from georag.serving.retrieval import (
    MAX_K,
    NEIGHBOR_OUTPUTS,
    as_neighbors,
    check_row_ranges,
    search_outputs,
)
from georag.serving.workers import Lane
from georag.store.partitions import StorePartitions
from georag.types import Completion, Neighbors, Prompt

if TYPE_CHECKING:
    from georag.store.store import GeoStore

log = logging.getLogger(__name__)

CONFIG_PARAMETER = "georag_config"
"""The `georag` model's parameter holding the pipeline's config: a JSON object of dotted keys."""


@cache
def pb() -> ModuleType:
    """``triton_python_backend_utils`` (exists only inside the Python backend's stub)."""
    return importlib.import_module("triton_python_backend_utils")


PRIVATE_SETTINGS = "store.json"
"""The file beside a model's model.py holding the settings no client may read (GET /v2/models/NAME/config
shows every parameter of config.pbtxt): the store's path, the encoder it was built with."""
CALIBRATION_FILE = "calibration.json"
"""The calibration file (`georag eval calibrate`) of the `georag` model, beside its model.py: the config's
``strategy.calibration`` copied there by `georag triton repo` (the config parameter holds no host path)."""


def model_parameters(model_config: dict[str, Any], folder: Path | None = None) -> dict[str, str]:
    """The ``parameters`` of a parsed config.pbtxt as plain strings, over the settings of ``folder``'s
    `PRIVATE_SETTINGS` file (where there is one; a parameter of the same name wins)."""
    raw = model_config.get("parameters") or {}
    params = {key: str(value.get("string_value", "")) for key, value in raw.items()}
    path = None if folder is None else folder / PRIVATE_SETTINGS
    if path is None or not path.is_file():
        return params
    try:
        private = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"the model's {PRIVATE_SETTINGS} cannot be read: {exc}") from None
    if not isinstance(private, dict):
        raise ConfigError(f"the model's {PRIVATE_SETTINGS} must hold a JSON object")
    return {**{key: str(value) for key, value in private.items()}, **{k: v for k, v in params.items() if v}}


def pipeline_config(params: dict[str, str]) -> Config:
    """The `Config` of the `georag` model's ``georag_config`` parameter (``load_config(values=...)`` of its
    dotted keys; keys it does not list keep georag's defaults). ConfigError when it is missing or bad."""
    raw = params.get(CONFIG_PARAMETER)
    if raw is None:
        raise ConfigError(
            f"the georag model has no {CONFIG_PARAMETER!r} parameter: regenerate the repository with "
            "`georag triton repo`"
        )
    try:
        values = json.loads(raw) if raw.strip() else {}
    except ValueError as exc:
        raise ConfigError(f"the {CONFIG_PARAMETER!r} parameter is not JSON: {exc}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"the {CONFIG_PARAMETER!r} parameter must be a JSON object of dotted keys")
    return load_config(values=values)


def max_requests(params: dict[str, str]) -> int:
    """Requests one `georag` instance runs at once (``max_requests``; default 64)."""
    value = int(params.get("max_requests", "64"))
    if value < 1:
        raise ConfigError(f"max_requests must be >= 1, got {value}")
    return value


def served_calibration(folder: Path, config: Config) -> Calibration | None:
    """The `CALIBRATION_FILE` in ``folder`` for ``config``'s strategy, or None where there is none;
    ConfigError when it is unreadable or was fitted on another strategy's predictions."""
    path = folder / CALIBRATION_FILE
    return load_calibration(path, config.strategy.name) if path.is_file() else None


def processor_spec(folder: Path, size: int) -> ProcessorSpec:
    """The SigLIP preprocessing written beside the model (the export's), else the defaults at ``size``."""
    path = folder / CONFIG_NAME
    return ProcessorSpec.from_config_file(path) if path.is_file() else ProcessorSpec.for_siglip(size)


def default_strategy(config: Config, served: Sequence[str]) -> str:
    """What a request naming no strategy gets: ``config.strategy.name`` if served, else the first served."""
    return config.strategy.name if config.strategy.name in served else served[0]


def request_params(raw: bytes | str | None, default: str, *, allow_test_markers: bool) -> RequestParams:
    """`parse_params` of a request's parameters, with ``default`` as the strategy when they name none."""
    given: Any = None
    if raw is None or (len(raw) <= MAX_PARAMETERS_BYTES and not raw.strip()):
        given = {}
    elif len(raw) <= MAX_PARAMETERS_BYTES:
        with contextlib.suppress(ValueError, RecursionError):  # parse_params refuses it with its message
            given = json.loads(raw)
    if isinstance(given, dict) and "strategy" not in given:
        raw = json.dumps({**given, "strategy": default})
    return parse_params(raw, allow_test_markers=allow_test_markers)


def submap_source(store: str) -> StorePartitions | None:
    """The `georag` model's ``store`` parameter as the vpr-guided route's submap source (None if empty):
    the store's partitions only, not its embeddings or metadata (each `georag` instance is a process of
    its own, and the `retrieval` model holds the store)."""
    return StorePartitions.open(store) if store else None


def input_array(request: Any, name: str) -> npt.NDArray[Any] | None:
    """The request's input ``name`` as numpy, or None when the (optional) input is absent."""
    tensor = pb().get_input_tensor_by_name(request, name)
    return None if tensor is None else tensor.as_numpy()


def bytes_tensor(name: str, values: list[bytes], shape: tuple[int, ...]) -> Any:
    """A TYPE_STRING output tensor."""
    return pb().Tensor(name, np.array(values, dtype=np.object_).reshape(shape))


def guarded_initialize(
    model: str, body: Callable[[Any, dict[str, str]], None]
) -> Callable[[Any, dict[str, str]], None]:
    """A model's ``initialize`` running ``body``; a failure is raised as `load_failure` (no paths, no
    traceback of georag's code) from a frame named ``<MODEL model>`` rather than a file path: Triton
    appends the frames a load error passed through to the message it returns (the repository API)."""

    def initialize(self: Any, args: dict[str, str]) -> None:
        try:
            body(self, args)
        except Exception as exc:
            raise load_failure(model, exc) from None

    initialize.__code__ = initialize.__code__.replace(co_filename=f"<{model} model>")
    return initialize


def load_failure(model: str, exc: BaseException) -> Exception:
    """What a model's ``initialize`` raises instead of ``exc``: the message without paths, addresses or a
    traceback (Triton returns it to whoever asked for the load), the detail in the server log only."""
    pb().Logger.log_error(f"{model}: failed to load: {exc!r}")
    text = str(exc) if isinstance(exc, GeoRagError) else f"{type(exc).__name__}: {exc}"
    return pb().TritonModelException(
        f"{model} failed to load: {public_message(text)} (the server log has the detail)"
    )


def error_response(exc: ServingError) -> Any:
    """An InferenceResponse carrying ``exc``'s public message with its Triton error code."""
    utils = pb()
    code = getattr(utils.TritonError, exc.code, utils.TritonError.INTERNAL)
    return utils.InferenceResponse(error=utils.TritonError(str(exc), code))


# The retrieval model: one dynamic batch of requests -> their answers.


@dataclass(frozen=True, repr=False)
class RetrievalRequest:
    """One request to the `retrieval` model: its (b, d) embeddings and optional inputs (None: absent)."""

    embeddings: npt.NDArray[Any]
    k_near: npt.NDArray[Any] | None = None
    """(b, 1) rows wanted on the similar side; None: the model's default."""
    k_far: npt.NDArray[Any] | None = None
    """(b, 1) rows wanted on the dissimilar side; None: the model's default."""
    row_ranges: npt.NDArray[Any] | None = None
    """(b, R, 2) [start, end) rows each query is restricted to; None: the whole store."""


def answer_retrieval(
    store: GeoStore,
    requests: Sequence[RetrievalRequest],
    k_near: int,
    k_far: int,
    *,
    on_failure: Callable[[str], None] | None = None,
) -> list[Outputs | ServingError]:
    """Each request's 8 output arrays (NEIGHBOR_OUTPUTS order) or why it failed, in order.

    Requests without row ranges are searched together, one search per distinct (k_near, k_far) (a batch
    of requests at the defaults is one search, as before the k inputs existed); a request with row ranges
    is searched on its own, each of its queries within its own ranges. A bad request (NaN or all-zero
    embedding, a k outside [1 or 0, MAX_K], ranges outside the store) is a BadRequest alone; a search that
    fails unexpectedly fails its own group with StepFailed (``on_failure`` gets the detail for the log).
    """
    results: list[Outputs | ServingError | None] = [None] * len(requests)
    groups: dict[tuple[int, int], list[int]] = {}
    ranged: list[tuple[int, int, int, list[npt.NDArray[np.int64]]]] = []
    for i, req in enumerate(requests):
        try:
            rows = int(np.shape(req.embeddings)[0]) if np.ndim(req.embeddings) >= 1 else 0
            kn = _k(req.k_near, k_near, rows, "k_near", low=1)
            kf = _k(req.k_far, k_far, rows, "k_far", low=0)
            if req.row_ranges is None:
                groups.setdefault((kn, kf), []).append(i)
            else:
                ranged.append((i, kn, kf, _ranges(req.row_ranges, rows, store.ntotal)))
        except BadRequest as exc:
            results[i] = exc

    def failed(what: str, exc: Exception) -> StepFailed:
        if on_failure is not None:
            on_failure(f"retrieval: {what} failed: {exc!r}")
        log.error("retrieval: %s failed: %r", what, exc)
        return StepFailed("the store search failed (see the server log)")

    for (kn, kf), members in groups.items():
        found: list[Outputs | BadRequest] | list[StepFailed]
        try:
            found = run_batched(
                [requests[i].embeddings for i in members],
                partial(search_outputs, store, k_near=kn, k_far=kf),
                row_shape=(store.dim,),
                nonzero=True,
            )
        except Exception as exc:  # an exception here would reach every client with its internals
            error = failed(f"a batch of {len(members)} requests", exc)
            found = [error] * len(members)
        for i, answer in zip(members, found, strict=True):
            results[i] = answer
    for i, kn, kf, ranges in ranged:
        results[i] = _search_ranged(store, requests[i].embeddings, kn, kf, ranges, failed)
    return [r for r in results if r is not None]


def _search_ranged(
    store: GeoStore,
    embeddings: npt.NDArray[Any],
    k_near: int,
    k_far: int,
    ranges: list[npt.NDArray[np.int64]],
    failed: Callable[[str, Exception], StepFailed],
) -> Outputs | ServingError:
    """One request with row ranges: each query searched within its own ranges, the rows stacked."""
    parts: list[Outputs] = []
    for row, within in enumerate(ranges):
        try:
            (one,) = run_batched(
                [np.asarray(embeddings)[row : row + 1]],
                partial(search_outputs, store, k_near=k_near, k_far=k_far, row_ranges=within),
                row_shape=(store.dim,),
                nonzero=True,
            )
        except Exception as exc:
            return failed("a search within row ranges", exc)
        if isinstance(one, ServingError):
            return one
        parts.append(one)
    return tuple(np.concatenate(arrays) for arrays in zip(*parts, strict=True))


def _k(given: npt.NDArray[Any] | None, default: int, rows: int, name: str, *, low: int) -> int:
    """One request's k input (one equal integer per query) or ``default``; BadRequest if bad."""
    if given is None:
        return default
    arr = np.asarray(given)
    if arr.dtype.kind not in "iu" or arr.size != rows or rows < 1:
        got = f"{arr.dtype} {list(arr.shape)}"
        raise BadRequest(f"{name} must hold one integer per query ({rows}), got {got}")
    values = np.unique(arr.reshape(-1))
    if values.size != 1:
        raise BadRequest(f"{name} must be the same for every query of a request")
    value = int(values[0])
    if not low <= value <= MAX_K:
        raise BadRequest(f"{name} must be an integer in [{low}, {MAX_K}], got {value}")
    return value


def _ranges(given: npt.NDArray[Any], rows: int, ntotal: int) -> list[npt.NDArray[np.int64]]:
    """A request's (b, R, 2) row ranges as one checked (R, 2) array per query; BadRequest if bad."""
    arr = np.asarray(given)
    if arr.ndim != 3 or arr.shape[0] != rows:
        raise BadRequest(f"row_ranges must be (queries, R, 2) [start, end) pairs, got {list(arr.shape)}")
    return [check_row_ranges(arr[j], ntotal) for j in range(rows)]


# The georag model's steps.

BACKEND_POOL_DEFAULT = 32
"""Triton's default ``thread-pool-size`` of the Python backend: the threads of the server process that
carry one model instance's BLS calls, each held until its call's (first) answer, and its responses."""
RESPONSE_THREADS = 2
"""Backend threads left free of BLS calls for sending the instance's responses (default 2)."""


def backend_pool_size(cmdline: Sequence[str] | None = None) -> int:
    """The Python backend's ``thread-pool-size`` of the server running this stub: read from the
    ``--backend-config=python,thread-pool-size=N`` of its command line (the stub's parent process);
    `BACKEND_POOL_DEFAULT` when it gives none or cannot be read."""
    if cmdline is None:
        try:
            raw = Path(f"/proc/{os.getppid()}/cmdline").read_bytes()
        except OSError:
            return BACKEND_POOL_DEFAULT
        cmdline = [part.decode("utf-8", "replace") for part in raw.split(b"\0") if part]
    found = BACKEND_POOL_DEFAULT
    values = [arg.split("=", 1)[1] for arg in cmdline if arg.startswith("--backend-config=")]
    values += [b for a, b in pairwise(cmdline) if a == "--backend-config"]
    for value in values:
        backend, _, setting = value.partition(",")
        key, _, number = setting.partition("=")
        if backend == "python" and key == "thread-pool-size" and number.strip().isdigit():
            found = max(1, int(number))
    return found


@dataclass(frozen=True)
class BlsLanes:
    """How many BLS calls of each kind one `georag` instance makes at once."""

    encoder: int
    retrieval: int
    llm: int

    @classmethod
    def fit(cls, pool: int, max_requests: int) -> BlsLanes:
        """Lanes within a backend ``pool`` (`backend_pool_size`): an eighth each for the encoder and the
        retrieval calls (short ones), `RESPONSE_THREADS` for the responses, the rest for the LLM, at most
        every call ``max_requests`` requests can make at once. The calls of one kind can then never take
        the backend threads another kind needs: a stalled LLM cannot wedge knn requests."""
        side = max(1, min(max_requests, pool // 8))
        llm = max(1, min(max_requests * MAX_VARIANTS, pool - 2 * side - RESPONSE_THREADS))
        return cls(side, side, llm)


class BlsSteps:
    """The pipeline's steps as BLS calls to the models of the same server.

    Each call blocks a thread until its model answers (``InferenceRequest.exec``), here and in the server
    process (one of the Python backend's ``thread-pool-size`` threads of this instance, default 32). The
    calls run on lanes of the model's own, sized by `BlsLanes.fit` so that together they never take every
    backend thread: the event loop's default executor, which ``async_exec`` would use and every caller
    shares, is not used, and a stalled LLM can only take the LLM lane (knn requests never wait behind it).
    For more LLM calls in flight per instance, start tritonserver with a larger
    ``--backend-config=python,thread-pool-size=N`` (read here from its command line).

    An LLM call the pipeline gave up on (its step's limit or the request's deadline passed) is cancelled
    where the Python backend can cancel a BLS request (python_backend r25.04+, `cancellable`) and the
    request streams (one answer asked for): vLLM aborts it and its threads are freed within a decoding
    step. Elsewhere (Triton 2.51 among them, and requests for several answers) it holds its threads
    until the LLM answers or fails; the LLM lane bounds how many can be held so (`georag.serving.bls_cancel`).

    Every call asks for its outputs in CPU memory (``preferred_memory``): a TensorRT encoder on a GPU
    leaves them in GPU memory otherwise (`georag.serving.bls_tensors`).

    Each request also carries its step's time limit (``timeout``, microseconds): Triton enforces it while
    the request waits in a dynamic-batching queue (the encoder's ``allow_timeout_override``), not while a
    model runs it, so `georag.serving.pipeline` bounds every call itself as well. A model whose process is
    gone, or that is unloaded or not ready, fails the call as DependencyDown (UNAVAILABLE).
    """

    def __init__(
        self, encoder: str, retrieval: str, llm: str, family: str, config: Config, *, lanes: BlsLanes
    ) -> None:
        self.encoder, self.retrieval, self.llm, self.family = encoder, retrieval, llm, family
        self.config, self.lanes = config, lanes
        self._encoder = Lane("bls-encoder", lanes.encoder, what="encoder model")
        self._retrieval = Lane("bls-retrieval", lanes.retrieval, what="retrieval model")
        self._llm = Lane("bls-llm", lanes.llm, what="LLM")
        self.cancellable = cancel_supported()
        """Whether an abandoned LLM call is cancelled (the stub's response iterator has ``cancel()``)."""

    async def embed(self, pixels: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        utils = pb()
        request = utils.InferenceRequest(
            model_name=self.encoder,
            requested_output_names=["embeddings"],
            inputs=[utils.Tensor("pixel_values", np.ascontiguousarray(pixels[None], dtype=np.float32))],
            timeout=_us(self.config.serve.encoder_timeout_s),
            **cpu_output_options(utils),
        )
        response = await self._encoder.run(lambda: _exec(request, "encoder"))
        (embedding,) = _outputs(response, ["embeddings"], "encoder")
        return np.asarray(embedding[0], dtype=np.float32)

    async def retrieve(
        self, embedding: Embedding, k_near: int, k_far: int, ranges: Ranges = None
    ) -> Neighbors:
        """One query to the retrieval model with its k inputs (and row ranges: a restricted search)."""
        utils = pb()
        inputs = [
            utils.Tensor("embeddings", np.ascontiguousarray(embedding[None], dtype=np.float32)),
            utils.Tensor("k_near", np.array([[k_near]], dtype=np.int64)),
            utils.Tensor("k_far", np.array([[k_far]], dtype=np.int64)),
        ]
        if ranges is not None:
            batch = np.ascontiguousarray(np.asarray(ranges, dtype=np.int64).reshape(1, -1, 2))
            inputs.append(utils.Tensor("row_ranges", batch))
        request = utils.InferenceRequest(
            model_name=self.retrieval,
            requested_output_names=list(NEIGHBOR_OUTPUTS),
            inputs=inputs,
            timeout=_us(self.config.serve.retrieval_timeout_s),
            **cpu_output_options(utils),
        )
        response = await self._retrieval.run(lambda: _exec(request, "retrieval"))
        return as_neighbors(tuple(_outputs(response, list(NEIGHBOR_OUTPUTS), "retrieval")))

    async def generate(self, prompt: Prompt, sampling: Sampling) -> Completion:
        """One request to the vLLM backend, as georag's Triton client sends it: the chat rendered for the
        model's family, the image as base64, the prompt excluded from the output (cut off all the same
        if the server echoes it). It streams where it can be cancelled (`cancellable`, one answer): a call
        the pipeline stops waiting for is then cancelled (see the class)."""
        utils = pb()
        start = time.monotonic()
        wire = VllmRequest.of(prompt, sampling, self.family)
        stream = self.cancellable and sampling.n == 1

        def tensor(name: str, value: Any, dtype: Any) -> Any:
            return utils.Tensor(name, np.array([value], dtype=dtype))

        request = utils.InferenceRequest(
            model_name=self.llm,
            requested_output_names=["text_output"],
            inputs=[
                tensor("text_input", wire.text.encode("utf-8"), np.object_),
                tensor("image", wire.image_b64.encode("ascii"), np.object_),
                tensor("sampling_parameters", wire.sampling_parameters.encode("utf-8"), np.object_),
                # The vLLM backend echoes the prompt unless told not to.
                tensor("exclude_input_in_output", True, np.bool_),
                tensor("stream", stream, np.bool_),
            ],
            timeout=_us(self.config.serve.llm_timeout_s),
            **cpu_output_options(utils),
        )
        # exec returns once the first response is in; the rest (the stream, or the empty final flag) is
        # read on the same thread.
        call = CancellableCall(lambda: _exec(request, "LLM", decoupled=True))
        try:
            responses = await self._llm.run(call.run)
        except asyncio.CancelledError:
            # A short round trip to the server process (the stub releases the GIL); failing to cancel
            # leaves the call as it was before cancelling existed: running to its end on its lane.
            try:
                call.cancel()
            except Exception as exc:
                log.warning("georag: could not cancel an abandoned LLM call: %r", exc)
            raise
        texts = _llm_texts(responses, streamed=stream)
        if not texts:
            raise StepFailed("the LLM step answered no text")
        return wire.completion(texts, time.monotonic() - start)

    def close(self) -> None:
        """Stops the lanes (calls in line are cancelled; running ones end when their model answers)."""
        for lane in (self._llm, self._retrieval, self._encoder):
            lane.close()


_GONE = re.compile(r"not healthy|not ready|unknown model|not found|unavailable|unloaded", re.IGNORECASE)
"""What a BLS error says when its model is not serving (its stub process died, it is unloaded)."""


def _exec(request: Any, step: str, *, decoupled: bool = False) -> Any:
    """``request.exec()``; an exception it raises (the model is unknown, say) as the step's error."""
    try:
        return request.exec(decoupled=decoupled)
    except Exception as exc:
        raise _failed(step, exc) from None


def _outputs(response: Any, names: list[str], step: str) -> list[npt.NDArray[Any]]:
    if response.has_error():
        raise _failed(step, response.error())
    found = []
    for name in names:
        tensor = pb().get_output_tensor_by_name(response, name)
        if tensor is None:
            raise StepFailed(f"the {step} step answered without {name!r}")
        found.append(output_array(tensor, step))
    return found


def _llm_texts(responses: Sequence[Any], *, streamed: bool) -> list[str]:
    """The answers of the LLM's responses: each response's texts (one final response), or, streamed (one
    answer asked for), the new text of every response joined."""
    texts: list[str] = []
    for response in responses:
        if response.has_error():
            raise _failed("LLM", response.error())
        output = pb().get_output_tensor_by_name(response, "text_output")
        if output is not None:
            texts.extend(_text(item) for item in output_array(output, "LLM").reshape(-1))
    return ["".join(texts)] if streamed and texts else texts


def _failed(step: str, error: Any) -> StepFailed | DependencyDown:
    """The step's error for a BLS failure (a TritonError or an exception): DependencyDown when its model
    is not serving (its code UNAVAILABLE or NOT_FOUND, or its message says so), else StepFailed."""
    message = error.message() if hasattr(error, "message") else str(error)
    log.warning("georag: the %s step failed: %s", step, message)
    code = error.code() if hasattr(error, "code") else None
    gone = {getattr(pb().TritonError, name, None) for name in ("UNAVAILABLE", "NOT_FOUND")} - {None}
    if code in gone or _GONE.search(message):
        return DependencyDown(f"the {step} model is not serving: {public_message(message)}")
    return StepFailed(f"the {step} step failed: {public_message(message)}")


def _text(item: object) -> str:
    return item.decode("utf-8", "replace") if isinstance(item, bytes) else str(item)


def _us(seconds: float) -> int:
    return max(1, int(seconds * 1e6))
