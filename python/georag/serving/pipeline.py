"""The served pipeline for one photo: decode, SigLIP, retrieval, then the requested strategy's route -> JSON.

Triton-independent: the model calls are the `Steps` it is given (BLS calls inside Triton, local calls
in-process), so the same code runs in the `georag` Python-backend model, in `georag serve`, in tests and in
the benchmark. Every strategy of `georag.strategies.registry` runs here through the same route code as
`georag locate` (`georag.strategies.route.run_route_async`): rag, knn, knn-medoid and vpr-guided (whose
submap search is a second, restricted retrieval call). Every await runs under its step's own time limit
and under the request's overall deadline (decoding, the LLM's copy of the photo and the strategy's own
work between model calls included), so a stalled model ends the request with `StepTimeout` instead of
holding it. An LLM timeout or error ends the request with an error (the client may retry); answers that
state no coordinates fall back as in-process (``strategy`` "rag>knn", "vpr-guided>global").

Blocking work runs on the pipeline's own lanes (`georag.serving.workers`): decoding on one (at most as many
at once as there are cores, and within the process's pixel budget, `georag.encoder.images`), the
strategy's work on another; the `Steps` keep lanes of their own for the model calls, so that a stalled LLM
never delays a knn request. A dependency that keeps failing is marked down (`georag.serving.health`): the
steps needing it are refused at once (DependencyDown) until it is tried again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

import numpy as np
import numpy.typing as npt

from georag.config import Config, RagConfig, Sampling, StrategyConfig, VprConfig
from georag.encoder.images import DecodeWaitTimeout, decoding
from georag.encoder.preprocess import ProcessorSpec
from georag.errors import GeoRagError, ImageLoadError
from georag.geo.calibration import Calibration, load_calibration
from georag.geo.exif import flag_exif_gps
from georag.llm.image import llm_photo
from georag.serving.errors import BadRequest, ServingError, StepFailed, StepStalled, StepTimeout
from georag.serving.health import Health
from georag.serving.params import RequestParams, check_served
from georag.serving.workers import Lane, cpu_threads
from georag.strategies.registry import make_strategy
from georag.strategies.route import Answers, Ask, Found, Search, Strategy, finish, run_route_async
from georag.strategies.vpr_guided import SubmapSource
from georag.types import Completion, Neighbors, Photo, Prompt

T = TypeVar("T")
Embedding = npt.NDArray[np.float32]
"""One photo's raw (d,) SigLIP embedding."""
Ranges = npt.NDArray[np.int64] | None
"""(R, 2) [start, end) row ranges of a restricted search, or None: the whole store."""
DEPENDENCIES = {"encoder": "encoder", "retrieval": "retrieval model", "LLM": "LLM"}
"""The models a pipeline calls: its steps' names -> how messages name them."""


class Steps(Protocol):
    """The model calls of the pipeline; each may be slow or stall (the pipeline bounds them)."""

    async def embed(self, pixels: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """(3, H, W) preprocessed pixels -> (d,) raw SigLIP embedding."""
        ...

    async def retrieve(
        self, embedding: Embedding, k_near: int, k_far: int, ranges: Ranges = None
    ) -> Neighbors:
        """(d,) raw embedding -> its neighbors in the store (one query, coordinates attached), within
        ``ranges`` when given."""
        ...

    async def generate(self, prompt: Prompt, sampling: Sampling) -> Completion:
        """One LLM request -> its n answers, prompt excluded (`georag.llm.client.LLMClient.generate`)."""
        ...


class Pipeline:
    """Answers one photo at a time (call `run` concurrently for several); thread- and task-safe.

    ``store``: where the vpr-guided route finds its submap partition (None: vpr-guided is not served).
    """

    def __init__(
        self,
        config: Config,
        spec: ProcessorSpec,
        steps: Steps,
        store: SubmapSource | None = None,
        *,
        has_llm: bool = True,
        calibration: Calibration | None = None,
    ) -> None:
        check_served(config)
        self.config, self.spec, self.steps, self.store = config, spec, steps, store
        self.calibration = calibration
        """Applied to the answers of the configured strategy (``config.strategy.name``), for which it was
        fitted (`serving_calibration`); other strategies' confidences stay raw agreement."""
        self.strategies = servable(config, store, has_llm=has_llm)
        """The strategies this pipeline answers (see `servable`)."""
        self.health = Health(DEPENDENCIES)
        """Whether the encoder, the retrieval model and the LLM are serving (readiness reports it)."""
        threads = cpu_threads(config.serve.max_requests)
        self._decoder = Lane("decode", threads)
        self._router = Lane("route", threads)

    def close(self) -> None:
        """Stops the pipeline's own threads (the steps' are theirs to stop)."""
        self._decoder.close()
        self._router.close()

    async def run(
        self, image: bytes, params: RequestParams, *, arrived: float | None = None
    ) -> dict[str, Any]:
        """The result for ``image``: id, lat, lon, confidence, strategy, fallback and evidence.

        ``arrived``: when the request arrived (`time.monotonic`), if it waited before this call; the
        deadline counts from then. Raises BadRequest (bad or too large an image, impossible parameters),
        StepTimeout (StepStalled: a step's own limit), StepFailed, or DependencyDown (a model the request
        needs is marked down, `georag.serving.health`).
        """
        limits = self.config.serve
        clock = _Clock(limits.deadline_s, arrived)
        if len(image) > limits.max_image_bytes:
            raise BadRequest(
                f"the image is {_mib(len(image))}; this server accepts at most {_mib(limits.max_image_bytes)}"
            )
        if not image:
            raise BadRequest("the image is empty")
        strategy = self.strategy_for(params)
        for name in ("encoder", "retrieval", *(("LLM",) if strategy.needs_llm else ())):
            self.health[name].check()  # a dependency marked down: refused before any work
        search = self.config.search
        k_near = max(search.k_near, strategy.k_near)
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        pixels, photo = await clock.step(
            "decode",
            lambda: self._decoder.run(lambda: self._prepare(image, strategy.needs_llm, clock.left())),
            limits.deadline_s,
        )
        t1 = time.perf_counter()
        embedding = await self._call(
            "encoder", clock, lambda: self.steps.embed(pixels), limits.encoder_timeout_s
        )
        t2 = time.perf_counter()
        found = await self._call(
            "retrieval",
            clock,
            lambda: self.steps.retrieve(embedding, k_near, search.k_far),
            limits.retrieval_timeout_s,
        )
        t3 = time.perf_counter()
        timings.update(decode_s=t1 - t0, encode_s=t2 - t1, search_s=t3 - t2)
        item = found.retrieved(0, params.id, embedding if strategy.needs_embedding else None)
        marker = f"\n{params.test_marker}" if params.test_marker else ""

        async def ask(request: Ask) -> Answers:
            async def one(prompt: Prompt) -> Completion:
                sent = dataclasses.replace(prompt, user=prompt.user + marker)
                return await self._call(
                    "LLM", clock, lambda: self.steps.generate(sent, request.sampling), limits.llm_timeout_s
                )

            return tuple(await _all([one(p) for p in request.prompts]))

        async def search_within(request: Search) -> Found:
            res = await self._call(
                "retrieval",
                clock,
                lambda: self.steps.retrieve(request.embedding, request.k, 0, request.row_ranges),
                limits.retrieval_timeout_s,
            )
            return Found.of(res)

        async def offload(work: Callable[[], tuple[bool, Any]]) -> tuple[bool, Any]:
            return await clock.step("strategy", lambda: self._router.run(work), limits.deadline_s)

        route = strategy.route(item, photo)
        pred = await run_route_async(route, ask, search_within, timings, offload=offload)
        timings["total_s"] = time.perf_counter() - t0
        if pred.error is not None:
            raise StepFailed(pred.error)
        pred = flag_exif_gps(finish(pred, item, timings), image)
        if self.calibration is not None and strategy.name == self.config.strategy.name:
            pred = self.calibration.apply(pred)
        record = pred.record()
        del record["error"]
        return record

    async def _call(self, name: str, clock: _Clock, start: Callable[[], Awaitable[T]], limit_s: float) -> T:
        """One call of dependency ``name`` under ``limit_s`` and the deadline, refused at once while it is
        marked down; its outcome counts towards its health."""
        breaker = self.health[name]
        breaker.check()
        try:
            out = await clock.step(name, start, limit_s)
        except ServingError as exc:
            breaker.failed(exc)
            raise
        breaker.succeeded()
        return out

    def strategy_for(self, params: RequestParams) -> Strategy:
        """The strategy ``params`` asks for, with the request's sampling and variants (BadRequest if bad)."""
        if params.strategy not in self.strategies:
            raise BadRequest(
                f"strategy {params.strategy} is not served here; ask for {' or '.join(self.strategies)}"
            )
        cfg = self.config.strategy
        changes: dict[str, Any] = {}
        if params.temperature is not None:
            changes["temperature"] = params.temperature
        if params.seed is not None:
            changes["seed"] = params.seed
        # ``samples`` is the answers per prompt variant (rag's); the prior's count stays as configured.
        samples = {} if params.samples is None else {"n": params.samples}
        rag: RagConfig = _resampled(cfg.rag, {**changes, **samples})
        vpr: VprConfig = _resampled(cfg.vpr, changes)
        if params.variants is not None:
            search = self.config.search
            for v in params.variants:
                if v.k_near > search.k_near or v.k_far > search.k_far:
                    raise BadRequest(
                        f"variant {v} shows more references than this server retrieves ({search.k_near})"
                    )
            rag = dataclasses.replace(rag, variants=params.variants)
        try:
            return make_strategy(StrategyConfig(params.strategy, cfg.knn_k, rag, vpr), self.store)
        except GeoRagError as exc:
            raise BadRequest(str(exc)) from None

    def _prepare(
        self, image: bytes, for_llm: bool, wait_s: float
    ) -> tuple[npt.NDArray[np.float32], Photo | None]:
        """The encoder's pixels and (``for_llm``) the LLM's photo, from ONE decode of ``image`` held within
        the process's pixel budget (waiting ``wait_s`` at most for room)."""
        try:
            with decoding(image, wait_s=max(wait_s, 0.0)) as decoded:
                pixels = self.spec(decoded)
                photo = llm_photo(image, decoded) if for_llm else None
        except (ImageLoadError, ValueError) as exc:
            raise BadRequest(f"bad image: {exc}") from None
        except DecodeWaitTimeout as exc:
            raise StepTimeout(f"the server is busy decoding other images ({exc})") from None
        return pixels, photo


def serving_calibration(config: Config) -> Calibration | None:
    """The calibration file of ``config`` (``strategy.calibration``) for its configured strategy, or None;
    ConfigError when it is unreadable or was fitted on another strategy's predictions."""
    return load_calibration(config.strategy.calibration, config.strategy.name)


def servable(config: Config, store: SubmapSource | None, *, has_llm: bool = True) -> tuple[str, ...]:
    """The strategies a pipeline with ``config`` can answer: those that need an LLM only with one, and
    vpr-guided only over a store with the configured submap partition."""
    from georag.config import STRATEGY_NAMES

    out = []
    for name in STRATEGY_NAMES:
        try:
            strategy = make_strategy(dataclasses.replace(config.strategy, name=name), store)
        except GeoRagError:
            continue
        if strategy.needs_llm and not has_llm:
            continue
        out.append(name)
    return tuple(out)


def _resampled(config: T, changes: dict[str, Any]) -> T:
    """``config`` (rag or vpr) with its sampling changed."""
    sampling = dataclasses.replace(config.sampling, **changes)  # type: ignore[attr-defined]
    return dataclasses.replace(config, sampling=sampling)  # type: ignore[type-var]


class _Clock:
    """The request's deadline; each step gets the smaller of its own limit and the time left."""

    def __init__(self, deadline_s: float, start: float | None = None) -> None:
        self.deadline_s = deadline_s
        self.end = (time.monotonic() if start is None else start) + deadline_s

    def left(self) -> float:
        """Seconds until the deadline (negative once past it)."""
        return self.end - time.monotonic()

    async def step(self, name: str, start: Callable[[], Awaitable[T]], limit_s: float) -> T:
        """``start()`` awaited for at most ``limit_s`` and the time left: StepStalled when its own limit
        passes, StepTimeout when the deadline does (the awaited call is cancelled either way)."""
        left = self.left()
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
            raise StepStalled(f"the {name} step did not answer within {limit_s:g} s") from None


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


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


def result_json(result: dict[str, Any]) -> bytes:
    """The result dict as strict JSON bytes (what both fronts send)."""
    return json.dumps(result, allow_nan=False, separators=(",", ":")).encode("utf-8")
