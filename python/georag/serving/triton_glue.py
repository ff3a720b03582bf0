"""Helpers for georag's Triton Python-backend models: config parameters, tensors, errors, BLS steps.

Imported only inside a Triton Python-backend stub, where ``triton_python_backend_utils`` exists; it is
looked up on first use so this module (and its typing) imports anywhere.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import time
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt

from georag.config import Sampling, parse_variants
from georag.encoder.preprocess import CONFIG_NAME, ProcessorSpec
from georag.llm.triton_client import VllmRequest
from georag.serving.errors import ServingError, StepFailed, public_message
from georag.serving.pipeline import NeighbourArrays, PipelineConfig
from georag.serving.retrieval import NEIGHBOUR_OUTPUTS
from georag.types import Completion, Prompt

log = logging.getLogger(__name__)


@cache
def pb() -> ModuleType:
    """``triton_python_backend_utils`` (exists only inside the Python backend's stub)."""
    return importlib.import_module("triton_python_backend_utils")


def model_parameters(model_config: dict[str, Any]) -> dict[str, str]:
    """The ``parameters`` of a parsed config.pbtxt as plain strings."""
    raw = model_config.get("parameters") or {}
    return {key: str(value.get("string_value", "")) for key, value in raw.items()}


def flag(params: dict[str, str], key: str, default: bool = False) -> bool:
    """A boolean parameter ("true"/"false", "1"/"0")."""
    value = params.get(key, "").strip().lower()
    return default if not value else value in ("1", "true", "yes", "on")


def pipeline_config(params: dict[str, str]) -> PipelineConfig:
    """The `PipelineConfig` of the `georag` model's parameters (see its config.pbtxt)."""
    defaults = PipelineConfig()
    sampling = Sampling(
        n=int(params.get("samples", defaults.sampling.n)),
        temperature=float(params.get("temperature", defaults.sampling.temperature)),
        top_p=float(params.get("top_p", defaults.sampling.top_p)),
        max_tokens=int(params.get("max_tokens", defaults.sampling.max_tokens)),
    )
    return PipelineConfig(
        family=params.get("family", defaults.family),
        k_near=int(params.get("k_near", defaults.k_near)),
        k_far=int(params.get("k_far", defaults.k_far)),
        variants=parse_variants(params["variants"]) if params.get("variants") else defaults.variants,
        sampling=sampling,
        max_image_bytes=int(params.get("max_image_bytes", defaults.max_image_bytes)),
        encoder_timeout_s=float(params.get("encoder_timeout_s", defaults.encoder_timeout_s)),
        retrieval_timeout_s=float(params.get("retrieval_timeout_s", defaults.retrieval_timeout_s)),
        llm_timeout_s=float(params.get("llm_timeout_s", defaults.llm_timeout_s)),
        deadline_s=float(params.get("deadline_s", defaults.deadline_s)),
        allow_test_markers=flag(params, "allow_test_markers"),
    )


def max_in_flight(params: dict[str, str]) -> int:
    """Requests one `georag` instance runs at once (``max_in_flight``; default 64)."""
    value = int(params.get("max_in_flight", "64"))
    if value < 1:
        raise ValueError(f"max_in_flight must be >= 1, got {value}")
    return value


def processor_spec(folder: Path, size: int) -> ProcessorSpec:
    """The SigLIP preprocessing written beside the model (the export's), else the defaults at ``size``."""
    path = folder / CONFIG_NAME
    return ProcessorSpec.from_config_file(path) if path.is_file() else ProcessorSpec.for_siglip(size)


def input_array(request: Any, name: str) -> npt.NDArray[Any] | None:
    """The request's input ``name`` as numpy, or None when the (optional) input is absent."""
    tensor = pb().get_input_tensor_by_name(request, name)
    return None if tensor is None else tensor.as_numpy()


def bytes_tensor(name: str, values: list[bytes], shape: tuple[int, ...]) -> Any:
    """A TYPE_STRING output tensor."""
    return pb().Tensor(name, np.array(values, dtype=np.object_).reshape(shape))


def error_response(exc: ServingError) -> Any:
    """An InferenceResponse carrying ``exc``'s public message with its Triton error code."""
    utils = pb()
    code = getattr(utils.TritonError, exc.code, utils.TritonError.INTERNAL)
    return utils.InferenceResponse(error=utils.TritonError(str(exc), code))


class BlsSteps:
    """The pipeline's steps as BLS calls to the models of the same server.

    Each request also carries its step's time limit (``timeout``, microseconds): Triton enforces it while
    the request waits in a dynamic-batching queue (the encoder's ``allow_timeout_override``), not while a
    model runs it, so `georag.serving.pipeline` bounds every call itself as well.
    """

    def __init__(self, encoder: str, retrieval: str, llm: str, config: PipelineConfig) -> None:
        self.encoder, self.retrieval, self.llm, self.config = encoder, retrieval, llm, config

    async def embed(self, pixels: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        utils = pb()
        request = utils.InferenceRequest(
            model_name=self.encoder,
            requested_output_names=["embeddings"],
            inputs=[utils.Tensor("pixel_values", np.ascontiguousarray(pixels[None], dtype=np.float32))],
            timeout=_us(self.config.encoder_timeout_s),
        )
        response = await request.async_exec()
        (embedding,) = _outputs(response, ["embeddings"], "encoder")
        return np.asarray(embedding[0], dtype=np.float32)

    async def retrieve(self, embedding: npt.NDArray[np.float32]) -> NeighbourArrays:
        utils = pb()
        request = utils.InferenceRequest(
            model_name=self.retrieval,
            requested_output_names=list(NEIGHBOUR_OUTPUTS),
            inputs=[utils.Tensor("embeddings", np.ascontiguousarray(embedding[None], dtype=np.float32))],
            timeout=_us(self.config.retrieval_timeout_s),
        )
        response = await request.async_exec()
        arrays = _outputs(response, list(NEIGHBOUR_OUTPUTS), "retrieval")
        return NeighbourArrays(*(a[0] for a in arrays))

    async def generate(self, prompt: Prompt, sampling: Sampling) -> Completion:
        """One request to the vLLM backend, as georag's Triton client sends it: the chat rendered for the
        config's family, the image as base64, the prompt excluded from the output (cut off all the same
        if the server echoes it)."""
        utils = pb()
        start = time.monotonic()
        wire = VllmRequest.of(prompt, sampling, self.config.family)

        def tensor(name: str, value: Any, dtype: Any) -> Any:
            return utils.Tensor(name, np.array([value], dtype=dtype))

        request = utils.InferenceRequest(
            model_name=self.llm,
            requested_output_names=["text_output"],
            inputs=[
                tensor("text_input", wire.text.encode("utf-8"), np.object_),
                tensor("image", wire.image_b64.encode("ascii"), np.object_),
                tensor("sampling_parameters", wire.sampling_parameters.encode("utf-8"), np.object_),
                # The vLLM backend echoes the prompt unless told not to; one final response, no stream.
                tensor("exclude_input_in_output", True, np.bool_),
                tensor("stream", False, np.bool_),
            ],
            timeout=_us(self.config.llm_timeout_s),
        )
        first = await request.async_exec(decoupled=True)
        # The awaited call returns once the first response is in; the rest (often only the empty final
        # flag) is read off the event loop, since the iterator blocks.
        responses = await asyncio.to_thread(list, first)
        texts: list[str] = []
        for response in responses:
            if response.has_error():
                raise _failed("LLM", response.error().message())
            output = utils.get_output_tensor_by_name(response, "text_output")
            if output is not None:
                texts.extend(_text(item) for item in output.as_numpy().reshape(-1))
        if not texts:
            raise StepFailed("the LLM step answered no text")
        return wire.completion(texts, time.monotonic() - start)


def _outputs(response: Any, names: list[str], step: str) -> list[npt.NDArray[Any]]:
    if response.has_error():
        raise _failed(step, response.error().message())
    found = []
    for name in names:
        tensor = pb().get_output_tensor_by_name(response, name)
        if tensor is None:
            raise StepFailed(f"the {step} step answered without {name!r}")
        found.append(tensor.as_numpy())
    return found


def _failed(step: str, message: str) -> StepFailed:
    log.warning("georag: the %s step failed: %s", step, message)
    return StepFailed(f"the {step} step failed: {public_message(message)}")


def _text(item: object) -> str:
    return item.decode("utf-8", "replace") if isinstance(item, bytes) else str(item)


def _us(seconds: float) -> int:
    return max(1, int(seconds * 1e6))
