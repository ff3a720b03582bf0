"""`georag serve`: the served pipeline over plain HTTP (FastAPI), for deployments without Triton.

The same `georag.serving.pipeline.Pipeline` as the Triton model, with the same limits: the request body is
the encoded photo (refused with 413 past ``max_image_bytes`` before it is all read), the query string
carries the parameters `georag.serving.params.parse_params` checks, at most ``max_in_flight`` requests run
the pipeline at once and the others wait for a slot within their deadline (counted from arrival), and no
more than ``max_queue`` wait: beyond that a request is refused at once.

Status codes (error body ``{"error": MESSAGE, "code": INVALID_ARG | UNAVAILABLE | INTERNAL}``, MESSAGE
free of paths and addresses): 400 a bad request (image, parameters, or a strategy this server cannot
answer), 408 the body did not arrive within the deadline, 413 too large an image, 503 the server is busy
(queue full, no slot within the deadline) or shutting down, 504 a step (encoder, retrieval, LLM) or the
deadline ran out while the pipeline ran, 502 a model the pipeline calls answered with an error, 500 a bug
(the detail goes to the log only).
"""

import asyncio
import json
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Collection
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from georag.errors import MissingDependencyError
from georag.serving.errors import BadRequest, ServingError, StepFailed, StepTimeout, public_message
from georag.serving.params import STRATEGIES, parse_params
from georag.serving.pipeline import Pipeline

if TYPE_CHECKING:  # fastapi is imported when an app is made; FastAPI reads the routes' annotations then
    from fastapi import FastAPI, Request, Response

log = logging.getLogger(__name__)

QUERY_KEYS = ("id", "strategy", "samples", "variants", "seed", "temperature", "test_marker")
"""Query parameters of ``POST /v1/locate``: the keys of the parameters JSON (test_marker only where the
pipeline's config allows test markers)."""
_INTEGERS = ("samples", "seed")
_STATUS = {"INVALID_ARG": 400, "UNAVAILABLE": 504, "INTERNAL": 502}


class _TooLarge(BadRequest):
    """A body over the size cap (answered 413)."""


class _Busy(StepTimeout):
    """No slot for the request: the queue is full, none freed within its deadline, or the server is not
    ready (answered 503)."""


class _SlowBody(BadRequest):
    """The body did not arrive within the request's deadline (answered 408)."""


@dataclass
class _State:
    """What the routes share: readiness and the admission limits (made on the serving event loop)."""

    max_in_flight: int
    max_queue: int
    ready: bool = False
    waiting: int = 0
    slots: asyncio.Semaphore | None = None

    def semaphore(self) -> asyncio.Semaphore:
        if self.slots is None:
            self.slots = asyncio.Semaphore(self.max_in_flight)
        return self.slots


def create_app(
    pipeline: Pipeline,
    *,
    max_in_flight: int = 64,
    max_queue: int = 256,
    on_close: Callable[[], Any] | None = None,
    default_strategy: str = "rag",
    strategies: Collection[str] = STRATEGIES,
) -> "FastAPI":
    """The HTTP app serving ``pipeline``: POST /v1/locate, GET /v1/info, /health/live, /health/ready.

    ``max_in_flight``: pipeline runs at once (default 64); ``max_queue``: requests allowed to wait for a
    slot (default 256; more are answered 503 at once). ``on_close``: called at shutdown, after readiness
    turned 503 (e.g. `LocalSteps.close`). ``default_strategy``: the strategy of a request naming none
    (default "rag"); ``strategies``: those this server answers (default all; a server without an LLM
    passes knn and knn-medoid, and a request for rag gets 400).
    """
    try:
        from fastapi import FastAPI, Request, Response
        from starlette.exceptions import HTTPException
    except ImportError as exc:
        raise MissingDependencyError(
            f'georag serve needs FastAPI and uvicorn: pip install "georag[serve]" ({exc})'
        ) from exc
    if max_in_flight < 1 or max_queue < 0:
        raise ValueError("max_in_flight must be >= 1 and max_queue >= 0")
    unknown = sorted(set(strategies) - set(STRATEGIES)) + (
        [default_strategy] if default_strategy not in strategies else []
    )
    if unknown:
        raise ValueError(f"unknown or unserved strategy {unknown}; known: {', '.join(STRATEGIES)}")
    state = _State(max_in_flight, max_queue)
    cfg = pipeline.config

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.slots = asyncio.Semaphore(max_in_flight)  # bound to this (the serving) event loop
        state.ready = True
        log.info("georag serve: ready (%d in flight, %d waiting at most)", max_in_flight, max_queue)
        try:
            yield
        finally:
            state.ready = False
            if on_close is not None:
                on_close()
            log.info("georag serve: stopped")

    app = FastAPI(title="georag", summary="Where on Earth was this photo taken?", lifespan=lifespan)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        # Unknown routes and methods answer in the same error format as the pipeline's errors.
        code = "INVALID_ARG" if exc.status_code < 500 else "INTERNAL"
        return _error(exc.status_code, str(exc.detail), code, exc.headers)

    @app.post("/v1/locate")
    async def locate(request: Request) -> Response:
        """The photo in the body (raw bytes); parameters in the query string. The result as JSON."""
        arrived = time.monotonic()

        def left() -> float:
            return cfg.deadline_s - (time.monotonic() - arrived)

        try:
            if not state.ready:
                raise _Busy("the server is not ready or is shutting down")
            params = parse_params(
                _params_json(request.query_params.multi_items(), default_strategy),
                allow_test_markers=cfg.allow_test_markers,
            )
            if params.strategy not in strategies:
                why = "needs an LLM and this server has none" if params.strategy == "rag" else "is not served"
                raise BadRequest(f"strategy {params.strategy} {why}; ask for {' or '.join(strategies)}")
            image = await _read_body(request, cfg.max_image_bytes, left())
            async with _slot(state, left()):
                result = await pipeline.run(image, params, arrived=arrived)
            body = json.dumps(result, allow_nan=False, separators=(",", ":")).encode("utf-8")
        except ServingError as exc:
            log.info("georag serve: request refused (%s): %s", exc.code, exc)
            return _error(_status(exc), str(exc), exc.code)
        except Exception:  # a bug: the client gets no detail, the log gets the traceback
            log.exception("georag serve: unexpected failure")
            return _error(500, "internal error in the georag pipeline (see the server log)", "INTERNAL")
        return Response(body, media_type="application/json")

    @app.get("/v1/info")
    async def info() -> dict[str, Any]:
        """What this server answers with (no paths or addresses)."""
        return {
            "family": cfg.family,
            "k_near": cfg.k_near,
            "k_far": cfg.k_far,
            "variants": [str(v) for v in cfg.variants],
            "sampling": asdict(cfg.sampling),
            "strategies": list(strategies),
            "default_strategy": default_strategy,
            "max_image_bytes": cfg.max_image_bytes,
            "deadline_s": cfg.deadline_s,
            "llm_timeout_s": cfg.llm_timeout_s,
            "max_in_flight": max_in_flight,
            "max_queue": max_queue,
        }

    @app.get("/health/live")
    async def live() -> dict[str, str]:
        """200 while the process runs."""
        return {"status": "live"}

    @app.get("/health/ready")
    async def ready() -> Response:
        """200 once started and until shutdown begins, else 503."""
        if state.ready:
            return Response(b'{"status":"ready"}', media_type="application/json")
        return _error(503, "not ready", "UNAVAILABLE")

    return app


def _params_json(items: list[tuple[str, str]], default_strategy: str) -> str:
    """The query string as the parameters JSON of `parse_params` (numbers converted where they parse)."""
    given: dict[str, Any] = {}
    for key, value in items:
        if key not in QUERY_KEYS:
            raise BadRequest(f"unknown query parameter {key!r}; known: {', '.join(QUERY_KEYS)}")
        if key in given:
            raise BadRequest(f"query parameter {key!r} is given more than once")
        given[key] = _number(key, value)
    given.setdefault("strategy", default_strategy)
    # A value that is no (finite) number stays a string, so that parse_params refuses it with its message.
    return json.dumps(given)


def _number(key: str, value: str) -> Any:
    """``value`` as parse_params expects ``key``: int / float where it parses, else the string (refused)."""
    try:
        if key in _INTEGERS:
            return int(value)
        if key == "temperature":
            number = float(value)
            return number if math.isfinite(number) else value
    except ValueError:
        return value
    return value


async def _read_body(request: "Request", cap: int, left_s: float) -> bytes:
    """The whole body, refused (413) past ``cap`` bytes as soon as that shows: from Content-Length before
    reading, else while reading the chunks; refused (408) if it does not arrive within ``left_s``."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            raise BadRequest("Content-Length must be a whole number of bytes")
        if int(declared) > cap:
            raise _TooLarge(_too_large(int(declared), cap))

    async def chunks() -> bytes:
        parts: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > cap:
                raise _TooLarge(_too_large(None, cap))
            parts.append(chunk)
        return b"".join(parts)

    try:
        body = await asyncio.wait_for(chunks(), max(left_s, 0.001))
    except asyncio.TimeoutError:
        raise _SlowBody("the image did not arrive within the request's deadline") from None
    if not body:
        raise BadRequest("the body is empty: send the encoded image (e.g. curl --data-binary @photo.jpg)")
    return body


@asynccontextmanager
async def _slot(state: _State, left_s: float) -> AsyncIterator[None]:
    """Holds one of the ``max_in_flight`` slots; waits for one within ``left_s`` if at most ``max_queue``
    others wait, else refuses at once."""
    slots = state.semaphore()
    if slots.locked():
        if state.waiting >= state.max_queue:
            raise _Busy(f"the server is busy: {state.waiting} requests are already waiting")
        state.waiting += 1
        try:
            await asyncio.wait_for(slots.acquire(), max(left_s, 0.001))
        except asyncio.TimeoutError:
            raise _Busy("the server is busy: the request could not start within its deadline") from None
        finally:
            state.waiting -= 1
    else:
        await slots.acquire()
    try:
        yield
    finally:
        slots.release()


def _status(exc: ServingError) -> int:
    if isinstance(exc, _TooLarge):
        return 413
    if isinstance(exc, _SlowBody):
        return 408
    if isinstance(exc, _Busy):
        return 503
    if isinstance(exc, (BadRequest, StepTimeout, StepFailed)):
        return _STATUS[exc.code]
    return 500


def _too_large(size: int | None, cap: int) -> str:
    limit = f"this server accepts at most {cap / (1 << 20):.1f} MiB"
    return f"the image is {size / (1 << 20):.1f} MiB; {limit}" if size else f"the image is too large; {limit}"


def _error(status: int, message: str, code: str, headers: dict[str, str] | None = None) -> "Response":
    from fastapi.responses import JSONResponse

    if status == 503:
        headers = {**(headers or {}), "Retry-After": "1"}
    return JSONResponse({"error": public_message(message), "code": code}, status_code=status, headers=headers)
