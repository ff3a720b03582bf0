"""The served pipeline for one photo: decode, SigLIP, retrieval, prompt, LLM, parse, select -> a JSON dict.

Triton-independent: the three model calls are the `Steps` it is given (BLS calls inside Triton, local
calls in-process), so the same code runs in the `georag` Python-backend model, in tests and in the
benchmark. Every step runs under its own time limit and under the request's overall deadline, so a
stalled model ends the request with `StepTimeout` instead of holding it. An LLM timeout or error ends the
request with an error (the client may retry); answers that state no coordinates fall back to the top-1
neighbour (``strategy`` "rag>knn"), as `georag.strategies.rag.rag_predict` does in-process.
"""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np
import numpy.typing as npt

from georag.encoder.images import load_image, to_rgb
from georag.encoder.preprocess import ProcessorSpec
from georag.errors import ImageLoadError
from georag.llm.client import Completion, Prompt, Sampling
from georag.llm.prompts import PromptVariant, build_prompt
from georag.locate.prediction import Prediction
from georag.serving.errors import BadRequest, StepFailed, StepTimeout
from georag.serving.params import RequestParams
from georag.strategies.knn import KNN_MODES, knn_predict
from georag.strategies.rag import RagConfig, rag_predict
from georag.strategies.retrieved import Retrieved

T = TypeVar("T")

MAX_IMAGE_BYTES = 20 << 20
"""Largest image a request may carry (default 20 MiB); larger requests are refused before decoding."""
LLM_MAX_BYTES = 4 << 20
"""As `georag.locate.llm_image`: a JPEG / PNG up to 4 MiB goes to the LLM as it is (default)."""
LLM_MAX_SIDE = 1536
"""Other images are re-encoded as JPEG with the long side at most 1536 px (default), as in-process."""
_SENT_AS_IS = {b"\xff\xd8\xff": "image/jpeg", b"\x89PNG": "image/png"}


@dataclass(frozen=True)
class NeighbourArrays:
    """One photo's k nearest and k farthest store rows (padding: id -1, NaN coordinates)."""

    near_ids: npt.NDArray[np.int64]
    near_scores: npt.NDArray[np.float32]
    near_lat: npt.NDArray[np.float64]
    near_lon: npt.NDArray[np.float64]
    far_ids: npt.NDArray[np.int64]
    far_scores: npt.NDArray[np.float32]
    far_lat: npt.NDArray[np.float64]
    far_lon: npt.NDArray[np.float64]


class Steps(Protocol):
    """The model calls of the pipeline; each may be slow or stall (the pipeline bounds them)."""

    async def embed(self, pixels: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """(3, H, W) preprocessed pixels -> (d,) raw SigLIP embedding."""
        ...

    async def retrieve(self, embedding: npt.NDArray[np.float32]) -> NeighbourArrays:
        """(d,) raw embedding -> its neighbours in the store."""
        ...

    async def generate(self, prompt: Prompt, sampling: Sampling) -> Completion:
        """One LLM request -> its n answers, prompt excluded (`georag.llm.client.LLMClient.generate`)."""
        ...


@dataclass(frozen=True)
class PipelineConfig:
    """How the pipeline answers; filled from the `georag` model's config.pbtxt parameters."""

    family: str = "qwen2-vl"
    """Chat format of the LLM (see `georag.llm.chat_templates`); default qwen2-vl."""
    k_near: int = 16
    """Similar rows the retrieval model returns; default 16 (variants show at most this many)."""
    k_far: int = 16
    """Dissimilar rows the retrieval model returns; default 16."""
    variants: tuple[PromptVariant, ...] = (PromptVariant("rag", 16, 16),)
    """Default prompt variants; default one, rag:16:16."""
    sampling: Sampling = field(default_factory=lambda: Sampling(n=5))
    """Default sampling; default 5 answers at temperature 0.7 (the medoid's candidates)."""
    max_image_bytes: int = MAX_IMAGE_BYTES
    """Largest accepted image; default 20 MiB."""
    encoder_timeout_s: float = 10.0
    """Time limit of the SigLIP call; default 10 s."""
    retrieval_timeout_s: float = 30.0
    """Time limit of the retrieval call; default 30 s (an exact search of 10M rows takes about 1 s)."""
    llm_timeout_s: float = 60.0
    """Time limit of each LLM request; default 60 s."""
    deadline_s: float = 120.0
    """Time limit of the whole request, decoding included; default 120 s."""
    allow_test_markers: bool = False
    """Accept the ``test_marker`` request parameter (repositories generated for tests only); default False."""

    def __post_init__(self) -> None:
        for v in self.variants:
            if v.k_near > self.k_near or v.k_far > self.k_far:
                raise ValueError(
                    f"variant {v} shows more references than k_near={self.k_near}, k_far={self.k_far}"
                )
        for name in ("encoder_timeout_s", "retrieval_timeout_s", "llm_timeout_s", "deadline_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")
        if self.max_image_bytes < 1:
            raise ValueError("max_image_bytes must be positive")


class Pipeline:
    """Answers one photo at a time (call `run` concurrently for several); thread- and task-safe."""

    def __init__(self, config: PipelineConfig, spec: ProcessorSpec, steps: Steps) -> None:
        self.config, self.spec, self.steps = config, spec, steps

    async def run(
        self, image: bytes, params: RequestParams, *, arrived: float | None = None
    ) -> dict[str, Any]:
        """The result for ``image``: id, lat, lon, confidence, strategy, fallback and evidence.

        ``arrived``: when the request arrived (`time.monotonic`), if it waited before this call; the
        deadline counts from then. Raises BadRequest (bad or too large an image, impossible parameters),
        StepTimeout or StepFailed.
        """
        cfg = self.config
        clock = _Clock(cfg.deadline_s, arrived)
        if len(image) > cfg.max_image_bytes:
            raise BadRequest(
                f"the image is {_mib(len(image))}; this server accepts at most {_mib(cfg.max_image_bytes)}"
            )
        if not image:
            raise BadRequest("the image is empty")
        variants = params.variants or cfg.variants
        for v in variants:
            if v.k_near > cfg.k_near or v.k_far > cfg.k_far:
                raise BadRequest(
                    f"variant {v} shows more references than this server retrieves ({cfg.k_near})"
                )
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        pixels = await clock.step("decode", lambda: asyncio.to_thread(self._pixels, image), cfg.deadline_s)
        t1 = time.perf_counter()
        embedding = await clock.step("encoder", lambda: self.steps.embed(pixels), cfg.encoder_timeout_s)
        t2 = time.perf_counter()
        found = await clock.step("retrieval", lambda: self.steps.retrieve(embedding), cfg.retrieval_timeout_s)
        t3 = time.perf_counter()
        timings.update(decode_s=t1 - t0, encode_s=t2 - t1, search_s=t3 - t2)
        item = Retrieved(
            params.id, Path(params.id),
            found.near_ids, found.near_scores, found.near_lat, found.near_lon,
            found.far_ids, found.far_scores, found.far_lat, found.far_lon,
        )  # fmt: skip
        if params.strategy in KNN_MODES:
            pred = knn_predict(item, params.strategy)
        else:
            pred = await self._rag(item, image, variants, params, clock)
            timings["llm_s"] = time.perf_counter() - t3
        timings["total_s"] = time.perf_counter() - t0
        if pred.error is not None:
            raise StepFailed(pred.error)
        return _result(pred, item, timings)

    def _pixels(self, image: bytes) -> npt.NDArray[np.float32]:
        try:
            return self.spec(load_image(image))
        except ImageLoadError as exc:
            raise BadRequest(f"bad image: {exc}") from None
        except ValueError as exc:
            raise BadRequest(f"bad image: {exc}") from None

    async def _rag(
        self,
        item: Retrieved,
        image: bytes,
        variants: Sequence[PromptVariant],
        params: RequestParams,
        clock: _Clock,
    ) -> Prediction:
        cfg = self.config
        sampling = cfg.sampling
        if params.samples is not None:
            sampling = replace(sampling, n=params.samples)
        if params.temperature is not None:
            sampling = replace(sampling, temperature=params.temperature)
        if params.seed is not None:
            sampling = replace(sampling, seed=params.seed)
        llm_bytes, mime = await asyncio.to_thread(llm_image_bytes, image)
        prompts = [build_prompt(v, llm_bytes, **item_coordinates(item), image_mime=mime) for v in variants]
        marker = f"\n{params.test_marker}" if params.test_marker else ""

        async def ask(prompt: Prompt) -> Completion:
            sent = replace(prompt, user=prompt.user + marker)
            return await clock.step("LLM", lambda: self.steps.generate(sent, sampling), cfg.llm_timeout_s)

        done = await _all([ask(p) for p in prompts])
        recorded = RecordedLLM({(p.system, p.user): c for p, c in zip(prompts, done, strict=True)})
        rag = RagConfig(variants=tuple(variants), sampling=sampling)
        # Parsing and choosing take milliseconds of CPU: off the event loop, so other requests go on.
        return await asyncio.to_thread(rag_predict, item, llm_bytes, mime, recorded, rag)


class RecordedLLM:
    """An `LLMClient` replaying answers fetched beforehand, so `rag_predict` chooses exactly as in-process."""

    name = "recorded"

    def __init__(self, completions: dict[tuple[str, str], Completion]) -> None:
        self._completions = completions

    def generate(self, prompt: Prompt, sampling: Sampling) -> Completion:
        """The completion recorded for ``prompt`` (KeyError: a prompt that was never sent, a bug)."""
        return self._completions[(prompt.system, prompt.user)]

    def cancel(self) -> None:
        """Nothing runs: the answers were fetched before."""

    def close(self) -> None:
        """Nothing to release."""


def llm_image_bytes(data: bytes) -> tuple[bytes, str]:
    """(bytes, MIME type) of the photo for the LLM, by the same rule as `georag.locate.llm_image`."""
    if len(data) <= LLM_MAX_BYTES:
        for magic, mime in _SENT_AS_IS.items():
            if data.startswith(magic):
                return data, mime
    try:
        image = to_rgb(load_image(data))
    except ImageLoadError as exc:
        raise BadRequest(f"bad image: {exc}") from None
    image.thumbnail((LLM_MAX_SIDE, LLM_MAX_SIDE))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    return out.getvalue(), "image/jpeg"


class _Clock:
    """The request's deadline; each step gets the smaller of its own limit and the time left."""

    def __init__(self, deadline_s: float, start: float | None = None) -> None:
        self.deadline_s = deadline_s
        self.end = (time.monotonic() if start is None else start) + deadline_s

    async def step(self, name: str, start: Callable[[], Awaitable[T]], limit_s: float) -> T:
        left = self.end - time.monotonic()
        if left <= 0:
            raise StepTimeout(
                f"the request ran past its {self.deadline_s:g} s deadline before the {name} step"
            )
        budget = min(limit_s, left)
        try:
            return await asyncio.wait_for(start(), budget)
        except asyncio.TimeoutError:
            if budget < limit_s:
                raise StepTimeout(
                    f"the request ran past its {self.deadline_s:g} s deadline in the {name} step"
                ) from None
            raise StepTimeout(f"the {name} step did not answer within {limit_s:g} s") from None


async def _all(coroutines: list[Awaitable[T]]) -> list[T]:
    """All results in order; the first failure cancels the others and is raised."""
    tasks = [asyncio.ensure_future(c) for c in coroutines]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def item_coordinates(item: Retrieved) -> dict[str, npt.NDArray[np.float64]]:
    """The neighbours' coordinates as `build_prompt` takes them."""
    return {
        "near_lat": item.near_lat,
        "near_lon": item.near_lon,
        "far_lat": item.far_lat,
        "far_lon": item.far_lon,
    }


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


def _result(pred: Prediction, item: Retrieved, timings: dict[str, float]) -> dict[str, Any]:
    evidence = {
        "neighbors": item.evidence(),
        **pred.evidence,
        "timings": {k: round(v, 5) for k, v in timings.items()},
    }
    return {
        "id": item.id,
        "lat": pred.lat,
        "lon": pred.lon,
        "confidence": pred.confidence,
        "strategy": pred.strategy,
        "fallback": pred.fallback,
        "evidence": evidence,
    }


def result_json(result: dict[str, Any]) -> bytes:
    """The result dict as strict JSON bytes (what both fronts send)."""
    return json.dumps(result, allow_nan=False, separators=(",", ":")).encode("utf-8")
