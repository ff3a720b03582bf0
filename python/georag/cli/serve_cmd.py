"""`georag serve`: the served pipeline over plain HTTP (FastAPI + uvicorn), for deployments without Triton."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

import click

from georag.cli.options import RAG, SEARCH, SERVE, SHARDED, SLOW_CLIENTS, VPR, config_from, errors, use
from georag.config import Config
from georag.errors import ConfigError, GeoRagError

if TYPE_CHECKING:
    from fastapi import FastAPI


LLM_GRACE_S = 0.5
"""How much longer than the LLM step's time limit the LLM client waits (default 0.5 s): the step gives up
first, so that a stalled LLM is always a 504 (and ends the client's call at once, freeing its thread)."""

@click.command("serve")
@use("config", "store", "encoder", "backend", "device", "llm", "family", *SEARCH, *RAG, *VPR, "calibration",
     *SERVE, *SLOW_CLIENTS, defaults={"family": "qwen2-vl"})  # fmt: skip
@use(*SHARDED)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--verify",
    "store_check",
    type=click.Choice(["quick", "full", "background"]),
    default="quick",
    show_default=True,
    help="Store check: quick (sizes and 16 sampled blocks per file), full (every byte hashed before "
    "serving), background (hashed while serving starts; /health/ready and /v1/locate answer 503 until it "
    "passes).",
)
@click.option(
    "--api-key",
    envvar="GEORAG_API_KEY",
    metavar="KEY",
    default=None,
    help="Require 'Authorization: Bearer KEY' on every route but the health probes (16+ characters). "
    "Prefer the environment variable GEORAG_API_KEY: a command line is visible to other users.",
)
@click.option(
    "--docs",
    is_flag=True,
    help="Also serve FastAPI's /docs, /redoc and /openapi.json (off: the "
    "docs pages load scripts from a CDN).",
)
@click.option(
    "--ssl-certfile",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Serve HTTPS with this certificate (PEM; with --ssl-keyfile).",
)
@click.option(
    "--ssl-keyfile",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="The private key of --ssl-certfile (PEM).",
)
def serve(
    host: str,
    port: int,
    family: str,
    store_check: str,
    api_key: str | None,
    docs: bool,
    ssl_certfile: str | None,
    ssl_keyfile: str | None,
    **kw: Any,
) -> None:
    """Serve the pipeline over HTTP: POST a photo, get where it was taken as JSON.

    Without --llm only the retrieval strategies knn (then the default) and knn-medoid are served; with
    an LLM the default is rag, and vpr-guided is served too where the store has the --submap-by
    partition. Settings come from the options, then --config FILE.toml, then the defaults. Example:

    \b
      georag serve --store store/ --llm 'openai://127.0.0.1:8000/v1?model=Qwen/Qwen2-VL-7B-Instruct'
      curl --data-binary @photo.jpg 'http://127.0.0.1:8080/v1/locate?id=photo.jpg&samples=3'
      curl -F file=@photo.jpg -F samples=3 http://127.0.0.1:8080/v1/locate

    The server holds at most --max-requests + --max-queue requests whose
    body is in; one more is answered 503 before its body is read. Uploads
    are counted apart (--max-uploads, --max-uploads-per-client: 503 / 429
    unread) and must keep coming (--body-timeout-s, --min-upload-bytes-per-s:
    408); a connection is closed when its headers take over
    --header-timeout-s or its address already has
    --max-connections-per-client sending. The client address is the TCP
    peer (X-Forwarded-For is ignored): behind a proxy, every client shares
    the proxy's, so the proxy should enforce these limits. Each LLM
    request is sent once, bounded by --llm-timeout-s: a stalled or failing
    LLM ends the request with 504 / 502, and the client may retry; after 3
    in a row the LLM is refused at once for 5 s (503; knn still served).

    \b
    Routes: GET / (the map page), POST /v1/locate (the photo as the body or
    as the multipart part "file"; query or form fields: id, strategy,
    samples, variants, seed, temperature; query: format=geojson, evidence=1),
    GET /v1/info, GET /v1/gallery/ROW/thumbnail, GET /health/live,
    GET /health/ready; /docs and /openapi.json only with --docs.
    Errors: 400 bad request, 408 slow upload, 413 too large, 502 model
    error, 503 busy, 504 timed out; body {"error": ..., "code": ...}.
    """
    from georag.serving.http_app import require_fastapi

    if bool(ssl_certfile) != bool(ssl_keyfile):
        raise click.UsageError("--ssl-certfile and --ssl-keyfile go together")
    if api_key is not None and len(api_key) < 16:
        raise click.UsageError("the API key (--api-key or GEORAG_API_KEY) must be 16 characters or more")
    with errors():
        config = config_from(kw, require=("store",))
        require_fastapi(server=True)  # before loading models
        from georag.serving.conn_guard import guarded_protocol

        limits = config.serve
        protocol = guarded_protocol(limits.header_timeout_s, limits.max_connections_per_client)
        app = build_app(config, family=family, store_check=store_check, api_key=api_key, docs=docs)
    import uvicorn

    scheme = "https" if ssl_certfile else "http"
    click.echo(f"georag serve: {scheme}://{host}:{port}/ (the map page; Ctrl-C stops)", err=True)
    uvicorn.run(
        app,
        host=host,
        port=port,
        timeout_graceful_shutdown=int(config.serve.deadline_s) + 1,
        ssl_certfile=ssl_certfile,
        ssl_keyfile=ssl_keyfile,
        http=protocol,
        proxy_headers=False,  # the client address is the TCP peer's, never a header's
    )


def build_app(
    config: Config,
    *,
    family: str = "qwen2-vl",
    store_check: str = "quick",
    api_key: str | None = None,
    docs: bool = False,
) -> FastAPI:
    """Opens the store (searched with ``config.search.index``), the encoder (``config.encoder.model``, or
    the store's own; checked against the store) and the LLM (``config.llm.url``), and returns the app.

    Served: knn and knn-medoid; with an LLM rag too, and vpr-guided where the store has the partition
    ``config.strategy.vpr.submap_by``. ConfigError when ``config.strategy.name`` is not among them (the
    default strategy of requests). ``family``: the chat format of a triton:// LLM whose URL names none.

    The LLM client sends each request once (no retries), bounded by ``config.serve.llm_timeout_s`` (plus
    `LLM_GRACE_S`, so that the pipeline's 504 comes first): a call the pipeline gave up on is ended at
    once (its connection shut) and frees its thread, and the client of georag, which gets the 502 / 504,
    decides whether to retry; an LLM that keeps failing is refused at once for a while (503, and
    /health/ready says so). The client and the LLM threads take ``max_requests * MAX_VARIANTS`` calls at
    once: each running request sends one call per prompt variant, all together. ``store_check``: "quick",
    "full" (every byte hashed before serving) or "background" (hashed while serving starts; 503 until it
    passes); ``api_key`` and ``docs``: see `georag.serving.http_app.create_app`. MissingDependencyError
    without FastAPI.
    """
    from georag.serving.http_app import require_fastapi

    require_fastapi()  # before loading models
    from georag.distributed.sharded_store import open_store
    from georag.encoder import load_encoder_from
    from georag.llm.backends import open_llm
    from georag.serving.http_app import create_app
    from georag.serving.local_steps import LocalSteps
    from georag.serving.params import MAX_VARIANTS, check_served
    from georag.serving.pipeline import Pipeline, serving_calibration
    from georag.store.store import check_encoder

    calibration = serving_calibration(config)  # a wrong file fails before any model is loaded
    if not config.store:
        raise ConfigError("no store: give one (--store, or store in the config file)")
    check_served(config)  # before loading models
    search = config.search
    store = open_store(
        config.store,
        ray=search.ray,
        shards=search.shards,
        index=search.index,
        verify="full" if store_check == "full" else "quick",
    )
    if store_check == "background":
        store.verify_in_background()
    enc = load_encoder_from(config.encoder, store.encoder)
    check_encoder(store, enc.model_id, enc.dim)  # before the index is built: a wrong encoder fails at once
    store.index()  # built or read now (a missing or damaged one fails here), not in a request's time limit
    calls = config.serve.max_requests * MAX_VARIANTS
    url = config.llm.url
    client = None
    if url.strip().lower() != "none":
        timeout_s = config.serve.llm_timeout_s + LLM_GRACE_S
        client = open_llm(with_family(url, family), timeout_s=timeout_s, retries=0, concurrency=calls)
    steps = pipeline = None
    try:
        steps = LocalSteps(enc.backend, store, client, llm_threads=calls)
        llm_ok = client is not None
        pipeline = Pipeline(config, enc.spec, steps, store, has_llm=llm_ok, calibration=calibration)
        _check_served(pipeline, store, has_llm=client is not None)
        if "vpr-guided" in pipeline.strategies:
            store.index("exact")  # submap searches are exact whatever --index: built now, not in a request
        return create_app(
            pipeline,
            on_close=_closer(pipeline, steps),
            family=llm_family(url, family) if client is not None else None,
            api_key=api_key,
            docs=docs,
        )
    except BaseException:
        if pipeline is not None:
            pipeline.close()
        if steps is not None:
            steps.close()
        elif client is not None:
            client.close()
        raise


def _closer(pipeline: Any, steps: Any) -> Callable[[], None]:
    """What the app runs at shutdown: the steps' threads and client, then the pipeline's threads."""

    def close() -> None:
        steps.close()
        pipeline.close()

    return close


def _check_served(pipeline: Any, store: Any, *, has_llm: bool) -> None:
    """ConfigError saying why, when the configured strategy is not among those served."""
    from georag.strategies.registry import make_strategy

    name = pipeline.config.strategy.name
    if name in pipeline.strategies:
        return
    if pipeline.config.strategy.needs_llm and not has_llm:
        why = "needs an LLM (--llm)"
    else:
        try:
            make_strategy(pipeline.config.strategy, store)
            why = "is not served"
        except GeoRagError as exc:
            why = f"cannot be served: {exc}"
    raise ConfigError(f"--strategy {name} {why}; this server answers {', '.join(pipeline.strategies)}")


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
