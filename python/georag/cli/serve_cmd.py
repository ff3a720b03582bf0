"""`georag serve`: the served pipeline over plain HTTP (FastAPI + uvicorn), for deployments without Triton."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

import click

from georag.errors import GeoRagError
from georag.llm.chat_templates import known_families

if TYPE_CHECKING:
    from fastapi import FastAPI


class _FiniteRange(click.FloatRange):
    """A float range refusing nan and inf too (click's FloatRange lets nan through, and inf where the
    range has no bound on that side)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


_POSITIVE = _FiniteRange(min=0.0, min_open=True)
LLM_GRACE_S = 0.5
"""How much longer than the LLM step's time limit the LLM client waits (default 0.5 s): the step gives up
first, so that a stalled LLM is always a 504, and the client's thread is free soon after."""


@click.command("serve")
@click.option(
    "--store", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path), help="GeoStore."
)
@click.option(
    "--encoder",
    default=None,
    help="The store's encoder: hub id or folder (an export for onnxruntime / tensorrt) "
    "[default: the encoder the store was built with].",
)
@click.option(
    "--backend", type=click.Choice(["torch", "onnxruntime", "tensorrt"]), default="torch", show_default=True
)
@click.option("--device", default=None, help="Encoder device (default: cpu; cuda for tensorrt).")
@click.option(
    "--llm",
    default=None,
    help="triton://HOST:PORT/MODEL | openai://HOST:PORT/v1?model=NAME [default: none, knn only].",
)
@click.option(
    "--family",
    type=click.Choice(known_families()),
    default="qwen2-vl",
    show_default=True,
    help="Chat format of a triton:// LLM whose URL names no ?family= (openai:// servers apply their own).",
)
@click.option("--k-near", default=16, show_default=True, type=click.IntRange(min=1), help="Similar rows.")
@click.option("--k-far", default=16, show_default=True, type=click.IntRange(min=0), help="Dissimilar rows.")
@click.option(
    "--variants", default=None, help="Prompt variants, e.g. rag:16:16,zero [default: rag:K_NEAR:K_FAR]."
)
@click.option(
    "--samples", default=5, show_default=True, type=click.IntRange(1, 16), help="Answers per prompt (n)."
)
@click.option("--temperature", default=0.7, show_default=True, type=_FiniteRange(0.0, 2.0))
@click.option("--index", default=None, help="Search this ANN index of the store [default: the exact search].")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--max-in-flight", default=64, show_default=True, type=click.IntRange(min=1), help="Requests run at once."
)
@click.option(
    "--max-queue",
    default=256,
    show_default=True,
    type=click.IntRange(min=0),
    help="Requests that may wait beyond --max-in-flight, uploads included; more are answered 503 at once.",
)
@click.option("--max-image-mb", default=20.0, show_default=True, type=_POSITIVE, help="Request size cap.")
@click.option(
    "--llm-timeout-s",
    default=60.0,
    show_default=True,
    type=_POSITIVE,
    help="Per LLM request, sent once (no retries: the caller gets the 502 / 504 and may retry).",
)
@click.option(
    "--deadline-s", default=120.0, show_default=True, type=_POSITIVE, help="Per request, waiting included."
)
def serve(host: str, port: int, **kw: Any) -> None:
    """Serve the pipeline over HTTP: POST a photo, get where it was taken as JSON.

    Without --llm only the retrieval strategies knn (then the default) and knn-medoid are served; with
    an LLM the default is rag. Example:

    \b
      georag serve --store store/ --llm 'openai://127.0.0.1:8000/v1?model=Qwen/Qwen2-VL-7B-Instruct'
      curl --data-binary @photo.jpg 'http://127.0.0.1:8080/v1/locate?id=photo.jpg&samples=3'

    The server holds at most --max-in-flight + --max-queue requests, uploads
    included; one more is answered 503 before its body is read. Each LLM
    request is sent once, bounded by --llm-timeout-s: a stalled or failing
    LLM ends the request with 504 / 502, and the client may retry.

    \b
    Routes: POST /v1/locate (query: id, strategy, samples, variants, seed,
    temperature), GET /v1/info, GET /health/live, GET /health/ready.
    Errors: 400 bad request, 408 slow upload, 413 too large, 502 model
    error, 503 busy, 504 timed out; body {"error": ..., "code": ...}.
    """
    from georag.serving.http_app import require_fastapi

    try:
        require_fastapi(server=True)  # before loading models
        app = build_app(**kw)
    except (GeoRagError, ValueError, OSError) as exc:  # MissingDependencyError (no FastAPI) included
        raise click.ClickException(str(exc)) from exc
    import uvicorn

    click.echo(f"georag serve: http://{host}:{port}/v1/locate (Ctrl-C stops)", err=True)
    uvicorn.run(app, host=host, port=port, timeout_graceful_shutdown=int(kw["deadline_s"]) + 1)


def build_app(
    *,
    store: Path,
    encoder: str | None = None,
    backend: str = "torch",
    device: str | None = None,
    llm: str | None = None,
    family: str = "qwen2-vl",
    k_near: int = 16,
    k_far: int = 16,
    variants: str | None = None,
    samples: int = 5,
    temperature: float = 0.7,
    index: str | None = None,
    max_in_flight: int = 64,
    max_queue: int = 256,
    max_image_mb: float = 20.0,
    llm_timeout_s: float = 60.0,
    deadline_s: float = 120.0,
) -> FastAPI:
    """Opens the store, the encoder (checked against the store) and the LLM, and returns the app.

    The LLM client sends each request once (no retries), bounded by ``llm_timeout_s`` (plus
    `LLM_GRACE_S`, so that the pipeline's 504 comes first): a call the pipeline gave up on ends then and
    frees its thread, and the client of georag, which gets the 502 / 504, decides whether to retry. The
    client and the LLM threads take ``max_in_flight * MAX_VARIANTS`` calls at once: each running request
    sends one call per prompt variant, all together.
    MissingDependencyError without FastAPI.
    """
    from georag.serving.http_app import require_fastapi

    require_fastapi()  # before loading models
    from georag.config import Sampling, parse_variants
    from georag.encoder import load_encoder
    from georag.llm.backends import open_llm
    from georag.locate.geolocator import default_variants
    from georag.serving.http_app import create_app
    from georag.serving.local_steps import LocalSteps
    from georag.serving.params import MAX_VARIANTS, STRATEGIES
    from georag.serving.pipeline import Pipeline, PipelineConfig
    from georag.store.store import GeoStore, check_encoder
    from georag.strategies.knn import KNN_MODES

    config = PipelineConfig(
        family=family,
        k_near=k_near,
        k_far=k_far,
        variants=parse_variants(variants) if variants else default_variants(k_near, k_far),
        sampling=Sampling(n=samples, temperature=temperature),
        max_image_bytes=int(max_image_mb * (1 << 20)),
        llm_timeout_s=llm_timeout_s,
        deadline_s=deadline_s,
    )
    geo = GeoStore.open(store)
    enc = load_encoder(encoder or geo.encoder, backend, device=device)
    check_encoder(geo, enc.model_id, enc.dim)  # before the index is built: a wrong encoder fails at once
    if index is not None:
        geo.ann_index(index)  # a missing or damaged index fails here, not at the first request
    else:
        geo.flat_index()  # built now, not during the first request's retrieval time limit
    calls = max_in_flight * MAX_VARIANTS
    client = None
    if llm and llm.strip().lower() != "none":
        client = open_llm(
            with_family(llm, family), timeout_s=llm_timeout_s + LLM_GRACE_S, retries=0, max_in_flight=calls
        )
    try:
        steps = LocalSteps(
            enc.backend, geo, client, k_near=k_near, k_far=k_far, index=index, llm_threads=calls
        )
    except BaseException:
        if client is not None:
            client.close()
        raise
    return create_app(
        Pipeline(config, enc.spec, steps),
        max_in_flight=max_in_flight,
        max_queue=max_queue,
        on_close=steps.close,
        default_strategy="rag" if client is not None else "knn",
        strategies=STRATEGIES if client is not None else KNN_MODES,
        family=llm_family(llm, family) if client is not None else None,
    )


def with_family(url: str, family: str) -> str:
    """``url`` with ``family=`` added when it is a triton:// URL naming none; other URLs as given."""
    parts = urlsplit(url.strip())
    if parts.scheme != "triton" or "family" in parse_qs(parts.query):
        return url
    query = f"{parts.query}&family={family}" if parts.query else f"family={family}"
    return urlunsplit(parts._replace(query=query))


def llm_family(url: str | None, family: str) -> str | None:
    """The chat format the LLM at ``url`` is driven with: the ``family=`` of a triton:// URL, ``family``
    where it names none; None for other URLs (an openai:// server applies its own) and for no LLM."""
    if not url or urlsplit(url.strip()).scheme != "triton":
        return None
    from georag.llm.triton_client import parse_triton_url

    return parse_triton_url(with_family(url, family)).family
