"""`georag serve`: the served pipeline over plain HTTP (FastAPI), for deployments without Triton.

The same `georag.serving.pipeline.Pipeline` as the Triton model, with the same limits: the request body is
the encoded photo (refused with 413 past ``max_image_bytes`` before it is all read), the query string
carries the parameters `georag.serving.params.parse_params` checks, and the deadline counts from arrival.
A multipart/form-data body (``curl -F file=@photo.jpg``) carries the photo in its part named ``file`` or
its only file part, and may carry the parameters in its other fields (never one both there and in the
query); its cap is ``max_image_bytes`` plus `MULTIPART_ALLOWANCE` for the framing, enforced as it is read.

The answer is the result as JSON; ``?format=geojson`` makes it an RFC 7946 FeatureCollection
(`georag.geojson`: the prediction as a Point; ``&evidence=1`` adds the LLM candidates and the near and far
gallery rows as further Features with their ``role``). These two output options go in the query string only.

GET / is a map page for people (`georag.serving.page`): it posts photos to /v1/locate like any client and
draws the answers; GET /v1/gallery/{row}/thumbnail serves a gallery row's image, small, where the store
can reach the images it was built from.

The body is read under its cap first, then parsed (`georag.serving.forms`, with python-multipart, the
parser FastAPI uses): a request needs one file part and a few short fields, and anything else (no or two
file parts, a missing closing boundary, a part without a name) is refused with a clear 400.

Admission (`georag.serving.admission`) comes before the body is read, and counts uploads apart from the
requests whose body is in: at most ``max_uploads`` bodies are read at once (``max_uploads_per_client`` per
client address, 429 beyond), each at a minimum rate after a grace (408 otherwise), and at most
``max_requests + max_queue`` requests with their body in wait for a slot or run; beyond any of these a
request is refused at once, its body unread. An admitted request reads its body, then waits for one of the
``max_requests`` slots within its deadline and runs the pipeline. Connections that never finish their
headers are the protocol's to close (`georag.serving.conn_guard`, under `georag serve`).

Status codes (error body ``{"error": MESSAGE, "code": INVALID_ARG | UNAVAILABLE | INTERNAL}``, MESSAGE
free of paths and addresses): 400 a bad request (image, parameters, or a strategy this server cannot
answer; also a client that hung up mid-upload, logged at info level, though no answer reaches it), 408 the
body did not arrive within the deadline or came too slowly, 413 too large an image, 429 the client's
address already uploads its share, 503 the server is busy (full, too many uploads, or no slot within the
deadline), shutting down, or a model the request needs is down (failed or stalled several
times in a row: refused at once, `georag.serving.health`; /health/ready says which), 504 a step (encoder,
retrieval, LLM) or the deadline ran out while the pipeline ran, 502 a model the pipeline calls answered
with an error, 500 a bug (the detail goes to the log only).
"""

import asyncio
import json
import logging
import math
import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from georag.config import StrategyConfig
from georag.errors import MissingDependencyError, extra_hint
from georag.serving.admission import Admission, Busy, SlowBody, TooManyUploads, read_body
from georag.serving.auth import require_key
from georag.serving.errors import (
    BadRequest,
    DependencyDown,
    ServingError,
    StepFailed,
    StepTimeout,
    public_message,
)
from georag.serving.forms import TooLarge, boundary_of, multipart, parse_form, too_large
from georag.serving.gallery import GalleryImages
from georag.serving.page import add_page
from georag.serving.params import KEYS, RequestParams, known_keys, parse_params
from georag.serving.pipeline import Pipeline, result_json

if TYPE_CHECKING:  # fastapi is imported when an app is made; FastAPI reads the routes' annotations then
    from fastapi import FastAPI, Request, Response

log = logging.getLogger(__name__)

_INTEGERS = ("samples", "seed")
_INTEGER = re.compile(r"-?(?:0|[1-9][0-9]*)")
"""A query value read as an integer: JSON's integers (no sign +, no spaces, _ or leading zeros)."""
_DECIMAL = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?")
"""A query value read as a temperature: a plain decimal number (JSON's, without an exponent)."""
_STATUS = {"INVALID_ARG": 400, "UNAVAILABLE": 504, "INTERNAL": 502}
OUTPUT_KEYS = ("format", "evidence")
"""Query parameters choosing the answer's form (not the pipeline's parameters): format=json|geojson and,
with geojson, evidence=0|1."""
_FLAGS = {"0": False, "1": True, "false": False, "true": True}
_PACKAGES = "fastapi uvicorn python-multipart"
"""What `georag serve` needs (its extra, ``serve``)."""
MULTIPART_ALLOWANCE = 16 << 10
"""Bytes a multipart/form-data body may hold beyond ``max_image_bytes`` (16 KiB): boundaries, part
headers and the parameter fields."""


@dataclass
class _State:
    """What the routes share: readiness and the admission counts."""

    admission: Admission
    ready: bool = False


def require_fastapi(*, server: bool = False) -> None:
    """Raises MissingDependencyError, saying what to install, unless FastAPI and python-multipart (and
    uvicorn too, with ``server``) can be imported."""
    try:
        import fastapi  # noqa: F401

        if server:
            import uvicorn  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError(
            f"georag serve needs FastAPI and uvicorn: {extra_hint('serve', _PACKAGES)} ({exc})"
        ) from exc
    multipart()  # python-multipart, for form uploads: missing, the server refuses to start


def create_app(
    pipeline: Pipeline,
    *,
    on_close: Callable[[], Any] | None = None,
    family: str | None = None,
    api_key: str | None = None,
    docs: bool = False,
) -> "FastAPI":
    """The HTTP app serving ``pipeline``: POST /v1/locate, GET /v1/info, /health/live, /health/ready, and
    the map page (GET /, /static/..., /v1/gallery/{row}/thumbnail: thumbnails where ``pipeline.store`` is a
    GeoStore whose image files are reachable).

    The limits are the pipeline's ``config.serve``: ``max_requests`` pipeline runs at once, ``max_queue``
    requests allowed to wait beyond those: the server holds at most ``max_requests + max_queue`` requests
    whose body is in, and answers 503 at once beyond that; uploads are counted apart (``max_uploads``,
    ``max_uploads_per_client``) and read at ``min_upload_bytes_per_s`` or faster
    (`georag.serving.admission`). ``on_close``: called at shutdown, after readiness turned 503 (e.g.
    `LocalSteps.close`). The strategies served are the pipeline's (a server without an LLM answers knn
    and knn-medoid, and a request for rag gets 400); a request naming none gets
    ``config.strategy.name`` if served, else the first served one. ``family``: the chat format the LLM is
    driven with, as /v1/info reports it (default None: no LLM, or an openai:// server applying its own);
    /v1/info says ``"llm": false`` and ``"family": null`` whatever ``family`` where no strategy served needs
    an LLM. ``api_key``: when given, every route but the health routes and the page's own files needs
    ``Authorization: Bearer <api_key>`` (compared in constant time; 401 without detail otherwise).
    ``docs``: serve FastAPI's /docs, /redoc and /openapi.json (off by default: the docs pages load scripts
    from a CDN, and the schema need not be public). While ``pipeline.store`` checks its files in the
    background (`GeoStore.verify_in_background`), /v1/locate and /health/ready answer 503 until the check
    passes. MissingDependencyError without FastAPI.
    """
    require_fastapi()
    from fastapi import FastAPI, Request, Response
    from starlette.exceptions import HTTPException

    config = pipeline.config
    cfg = config.serve
    max_requests, max_queue = cfg.max_requests, cfg.max_queue
    strategies = pipeline.strategies
    if not strategies:
        raise ValueError("the pipeline serves no strategy")
    default_strategy = config.strategy.name if config.strategy.name in strategies else strategies[0]
    has_llm = any(StrategyConfig(name).needs_llm for name in strategies)
    known = known_keys(cfg.allow_test_markers)
    state = _State(Admission(cfg))
    admission = state.admission
    gallery = GalleryImages.of(getattr(pipeline, "store", None))

    def checked(given: dict[str, str]) -> RequestParams:
        """The parameters ``given`` (query and form), checked, with a strategy this server answers."""
        raw = _params_json(given, default_strategy)
        params = parse_params(raw, allow_test_markers=cfg.allow_test_markers)
        if params.strategy not in strategies:
            why = "is not served here"
            if StrategyConfig(params.strategy).needs_llm and "rag" not in strategies:
                why = "needs an LLM and this server has none"
            raise BadRequest(f"strategy {params.strategy} {why}; ask for {' or '.join(strategies)}")
        return params

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        admission.slots = asyncio.Semaphore(max_requests)  # bound to this (the serving) event loop
        state.ready = True
        log.info("georag serve: ready (%d in flight, %d waiting at most)", max_requests, max_queue)
        try:
            yield
        finally:
            state.ready = False
            if on_close is not None:
                on_close()
            log.info("georag serve: stopped")

    app = FastAPI(
        title="georag",
        summary="Where on Earth was this photo taken?",
        lifespan=lifespan,
        **({} if docs else {"docs_url": None, "redoc_url": None, "openapi_url": None}),
    )
    integrity = getattr(getattr(pipeline, "store", None), "integrity", None)

    def store_problem() -> str | None:
        """Why the store may not be served yet (its background check has not passed), else None."""
        if integrity is None:
            return None
        status = integrity()
        return None if status["state"] in ("passed", "not run") else f"store check {status['state']}"

    if api_key:
        require_key(app, api_key)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        # Unknown routes and methods answer in the same error format as the pipeline's errors.
        code = "INVALID_ARG" if exc.status_code < 500 else "INTERNAL"
        return _error(exc.status_code, str(exc.detail), code, dict(exc.headers) if exc.headers else None)

    @app.post("/v1/locate", response_model=None)
    async def locate(request: Request) -> Response:
        """The photo in the body: raw bytes, or multipart/form-data (the part named ``file`` or the only
        file part; other fields may carry parameters). Parameters in the query string. The result as
        JSON, or as GeoJSON with ``format=geojson`` (``evidence=1``: with the candidates and neighbours)."""
        arrived = time.monotonic()

        def left() -> float:
            return cfg.deadline_s - (time.monotonic() - arrived)

        try:
            if not state.ready or admission.slots is None:
                raise Busy("the server is not ready or is shutting down")
            if store_problem() is not None:
                raise Busy(f"the server is not ready: {store_problem()}")
            asked, geojson, evidence = _output_options(request.query_params.multi_items())
            query = _given(asked, "query parameter", (*known, *OUTPUT_KEYS))
            params = checked(query)  # the query's parameters are refused before the body is read
            boundary = boundary_of(request.headers.get("content-type"))  # None: the body is the image
            cap = cfg.max_image_bytes + (MULTIPART_ALLOWANCE if boundary is not None else 0)
            _check_length(request, cap, cfg.max_image_bytes)
            client = request.client.host if request.client is not None else ""  # the TCP peer's address
            with admission.upload(client):  # refused before the body is read: a full server reads none
                image = await read_body(request, cap, cfg.max_image_bytes, left(), cfg)
            if boundary is not None:
                image, items = parse_form(image, boundary, cfg.max_image_bytes)
                if any(key in OUTPUT_KEYS for key, _ in items):
                    raise BadRequest(f"{' and '.join(OUTPUT_KEYS)} go in the query string, not the form")
                fields = _given(items, "form field", known)
                both = sorted(set(query) & set(fields))
                if both:
                    raise BadRequest(f"parameter {both[0]!r} is given both in the query and in the form")
                if fields:
                    params = checked({**query, **fields})
            with admission.hold():  # the body is in: it now counts against max_requests + max_queue
                async with admission.slot(left()):
                    result = await pipeline.run(image, params, arrived=arrived)
            if geojson:
                from georag.geojson import MEDIA_TYPE, dumps, from_result

                features = dumps(from_result(result, evidence=evidence)).encode("utf-8")
                return Response(features, media_type=MEDIA_TYPE)
            body = result_json(result)
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
            "llm": has_llm,
            "family": family if has_llm else None,
            "k_near": config.search.k_near,
            "k_far": config.search.k_far,
            "variants": [str(v) for v in config.strategy.rag.variants],
            "sampling": asdict(config.strategy.rag.sampling),
            "strategies": list(strategies),
            "default_strategy": default_strategy,
            "max_image_bytes": cfg.max_image_bytes,
            "deadline_s": cfg.deadline_s,
            "llm_timeout_s": cfg.llm_timeout_s,
            "max_requests": max_requests,
            "max_queue": max_queue,
            "thumbnails": gallery is not None,
        }

    @app.get("/health/live")
    async def live() -> dict[str, str]:
        """200 while the process runs."""
        return {"status": "live"}

    @app.get("/health/ready", response_model=None)
    async def ready() -> Response:
        """200 once started and until shutdown begins while every model the pipeline calls is serving,
        else 503 saying which is down (`georag.serving.health`: refused at once meanwhile)."""
        if not state.ready:
            return _error(503, "not ready", "UNAVAILABLE")
        down = pipeline.health.down()
        if down:
            return _error(503, f"not ready: {'; '.join(down.values())}", "UNAVAILABLE")
        problem = store_problem()
        if problem is not None:
            return _error(503, f"not ready: {problem}", "UNAVAILABLE")
        return Response(b'{"status":"ready"}', media_type="application/json")

    add_page(app, gallery)
    return app


def _output_options(items: list[tuple[str, str]]) -> tuple[list[tuple[str, str]], bool, bool]:
    """The query's items less `OUTPUT_KEYS`, whether GeoJSON is asked for, and whether with the evidence
    (BadRequest for a bad value, a repeated key, or evidence without format=geojson)."""
    rest: list[tuple[str, str]] = []
    given: dict[str, str] = {}
    for key, value in items:
        if key not in OUTPUT_KEYS:
            rest.append((key, value))
        elif key in given:
            raise BadRequest(f"query parameter {key!r} is given more than once")
        else:
            given[key] = value
    form = given.get("format", "json")
    if form not in ("json", "geojson"):
        raise BadRequest(f"format must be json or geojson, got {form[:40]!r}")
    evidence = given.get("evidence", "0").lower()
    if evidence not in _FLAGS:
        raise BadRequest(f"evidence must be 0 or 1, got {evidence[:40]!r}")
    if _FLAGS[evidence] and form != "geojson":
        raise BadRequest(
            "evidence=1 is an option of format=geojson (the JSON answer always holds the evidence)"
        )
    return rest, form == "geojson", _FLAGS[evidence]


def _given(items: list[tuple[str, str]], where: str, known: tuple[str, ...]) -> dict[str, str]:
    """The parameters of the query string or the form fields (``where`` names which), each key once and
    among `KEYS`; ``known``: the keys named in the message refusing another (test_marker hidden unless
    allowed: where it is not, parse_params refuses it)."""
    given: dict[str, str] = {}
    for key, value in items:
        if key not in KEYS:
            raise BadRequest(f"unknown {where} {key!r}; known: {', '.join(known)}")
        if key in given:
            raise BadRequest(f"{where} {key!r} is given more than once")
        given[key] = value
    return given


def _params_json(given: dict[str, str], default_strategy: str) -> str:
    """The parameters as the JSON of `parse_params` (numbers converted where they parse)."""
    values = {key: _number(key, value) for key, value in given.items()}
    values.setdefault("strategy", default_strategy)
    # A value that is no (finite) number stays a string, so that parse_params refuses it with its message.
    return json.dumps(values)


def _number(key: str, value: str) -> Any:
    """``value`` as parse_params expects ``key``: an int / float where it is written as JSON writes one,
    else the string (which parse_params refuses)."""
    try:
        if key in _INTEGERS and _INTEGER.fullmatch(value):
            return int(value)
        if key == "temperature" and _DECIMAL.fullmatch(value):
            number = float(value)
            return number if math.isfinite(number) else value
    except ValueError:  # an integer of more digits than int() converts
        return value
    return value


def _check_length(request: "Request", cap: int, image_cap: int) -> None:
    """Refuses (413) a body whose Content-Length passes ``cap`` bytes, before anything is read (the
    message names ``image_cap``, the cap on the image)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not re.fullmatch(r"[0-9]+", declared.strip()):
            raise BadRequest("Content-Length must be a whole number of bytes")
        if int(declared) > cap:
            raise TooLarge(too_large(int(declared) if cap == image_cap else None, image_cap))


def _status(exc: ServingError) -> int:
    if isinstance(exc, TooLarge):
        return 413
    if isinstance(exc, SlowBody):
        return 408
    if isinstance(exc, TooManyUploads):
        return 429
    if isinstance(exc, (Busy, DependencyDown)):
        return 503
    if isinstance(exc, (BadRequest, StepTimeout, StepFailed)):
        return _STATUS[exc.code]
    return 500


def _error(status: int, message: str, code: str, headers: dict[str, str] | None = None) -> "Response":
    from fastapi.responses import JSONResponse

    if status in (429, 503):
        headers = {**(headers or {}), "Retry-After": "1"}
    return JSONResponse({"error": public_message(message), "code": code}, status_code=status, headers=headers)
