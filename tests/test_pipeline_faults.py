"""The served pipeline keeps its promises under faults, in-process: `georag serve`'s app (the tiny SigLIP and
the store of `locate_env`, through FastAPI's TestClient) in front of the stand-in OpenAI-compatible LLM of
tests/openai_standin.py, which can stall or answer slowly, and the pipeline's parts alone.

What must hold: knn requests never wait behind a stalled LLM; every request is answered by its deadline;
an LLM call the pipeline gave up on ends at once and frees its thread; 64 requests reach the LLM at once;
an LLM that keeps stalling is marked down (503 at once, readiness says so) and knn is still served; bad
parameters and embeddings are refused cleanly. The same checks against a real tritonserver are in
tests/test_triton_faults.py.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
pytest.importorskip("torch")

from fastapi.testclient import TestClient

from georag.cli.options import config_from
from georag.cli.serve_cmd import build_app
from georag.config import Config, Sampling
from georag.errors import LLMError
from georag.llm.openai_client import OpenAIClient
from georag.llm.retry import RetryPolicy
from georag.llm.transport import Abort, CallAbandoned, abortable
from georag.serving.errors import BadRequest, DependencyDown, StepStalled
from georag.serving.health import COOLDOWN_S, FAILURES_TO_TRIP, Breaker
from georag.serving.params import parse_params
from georag.serving.pipeline import Pipeline
from georag.serving.triton_glue import request_params
from georag.serving.workers import Lane
from georag.types import Prompt
from openai_standin import StandIn
from test_image_budget import big_jpeg, big_png

LEAKS = ("/work", "/tmp", "/home", "Traceback", "127.0.0.1")


@contextmanager
def serving(locate_env: dict[str, Any], **options: Any) -> Iterator[TestClient]:
    """The app of `georag serve --store STORE [options]`, started and stopped."""
    config = config_from({"store": locate_env["store"], **options}, require=("store",))
    with TestClient(build_app(config)) as client:
        yield client


def _photo(locate_env: dict[str, Any], i: int = 0) -> bytes:
    return bytes(locate_env["queries"][i].read_bytes())


def _error(response: Any, status: int, code: str, words: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code and words in body["error"], body
    assert not any(leak in body["error"] for leak in LEAKS), body


def _timed(call: Any) -> tuple[float, Any]:
    start = time.monotonic()
    out = call()
    return time.monotonic() - start, out


def _prompt() -> Prompt:
    return Prompt(system="s", user="where?", image=b"\xff\xd8\xff", image_mime="image/jpeg")


# Ending an abandoned LLM call.


def test_firing_the_abort_ends_a_call_in_flight_at_once() -> None:
    with StandIn(mode="stall", stall_s=20) as llm:
        client = OpenAIClient.from_url(llm.url, timeout_s=15.0, policy=RetryPolicy(retries=2))
        abort = Abort()
        got: list[BaseException] = []

        def call() -> None:
            with abortable(abort):
                try:
                    client.generate(_prompt(), Sampling(n=1))
                except LLMError as exc:
                    got.append(exc)

        thread = threading.Thread(target=call)
        thread.start()
        while not llm.seen:
            time.sleep(0.01)
        took, _ = _timed(lambda: (abort.fire(), thread.join(5.0)))
        assert not thread.is_alive() and took < 1.0, took
        assert isinstance(got[0], CallAbandoned) and "abandoned by its caller" in str(got[0])
        time.sleep(0.3)
        assert len(llm.seen) == 1, "an abandoned call is not retried"
        with abortable(abort), pytest.raises(CallAbandoned):  # fired already: nothing is sent
            client.generate(_prompt(), Sampling(n=1))
        assert len(llm.seen) == 1
        client.close()


def test_an_abandoned_llm_call_frees_its_thread_at_once(locate_env: dict[str, Any]) -> None:
    """ONE LLM thread, a stalled LLM and a client that would wait 20 s: the second request still reaches
    the LLM right after the first gave up, so the first call's thread was freed when it gave up."""
    from georag.encoder import load_encoder
    from georag.serving.local_steps import LocalSteps
    from georag.store.store import GeoStore

    with StandIn(mode="stall", stall_s=20) as llm:
        client = OpenAIClient.from_url(llm.url, timeout_s=20.0, policy=RetryPolicy(retries=0))
        enc = load_encoder(locate_env["tiny"])
        steps = LocalSteps(enc.backend, GeoStore.open(locate_env["store"]), client, llm_threads=1)
        config = Config().with_values({"serve.llm_timeout_s": 0.5})
        pipeline = Pipeline(config, enc.spec, steps)
        try:
            for seen in (1, 2):
                took, error = _timed(lambda: _raised(pipeline.run(_photo(locate_env), parse_params(None))))
                assert isinstance(error, StepStalled) and "did not answer within 0.5 s" in str(error)
                assert took < 2.0 and len(llm.seen) == seen, (took, len(llm.seen))
        finally:
            steps.close()
            pipeline.close()


def _raised(coroutine: Any) -> BaseException | None:
    try:
        asyncio.run(coroutine)
    except Exception as exc:
        return exc
    return None


# Lanes and health, alone.


def test_a_full_lane_that_does_not_queue_refuses_at_once() -> None:
    lane = Lane("llm", 2, queue=False, what="LLM")
    release = threading.Event()

    async def main() -> list[Any]:
        held = [asyncio.ensure_future(lane.run(release.wait)) for _ in range(2)]
        await asyncio.sleep(0.05)
        assert lane.held == 2
        with pytest.raises(DependencyDown, match="all 2 of its calls this server allows are waiting"):
            await lane.run(lambda: None)
        release.set()
        return list(await asyncio.gather(*held))

    assert asyncio.run(main()) == [True, True] and lane.held == 0
    lane.close()


def test_a_lane_held_by_abandoned_calls_refuses_at_once() -> None:
    """A call nobody waits for any more keeps its thread while it runs (a BLS call cannot be cancelled);
    once such calls hold every thread, a new call is refused at once instead of waiting in line."""
    lane = Lane("bls-llm", 2, what="LLM")
    release = threading.Event()

    async def main() -> None:
        for _ in range(2):
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(lane.run(release.wait), 0.05)
        assert (lane.held, lane.abandoned) == (2, 2)
        start = time.monotonic()
        with pytest.raises(DependencyDown, match="it holds all 2 calls this server makes to it at once"):
            await lane.run(lambda: None)
        assert time.monotonic() - start < 0.05
        release.set()
        await asyncio.sleep(0.05)
        assert (lane.held, lane.abandoned) == (0, 0)
        assert await lane.run(lambda: 7) == 7

    asyncio.run(main())
    lane.close()


def test_a_breaker_trips_after_failures_in_a_row_and_recovers() -> None:
    breaker = Breaker("LLM", failures_to_trip=2, cooldown_s=0.2)
    stalled = StepStalled("the LLM step did not answer within 1 s")
    breaker.failed(BadRequest("bad image"))  # not the LLM's fault: not counted
    breaker.failed(stalled)
    breaker.check()
    breaker.failed(stalled)
    with pytest.raises(DependencyDown, match="the LLM is down: 2 calls in a row failed"):
        breaker.check()
    assert breaker.down_reason() is not None
    time.sleep(0.25)
    breaker.check()  # tried again after the cooldown
    breaker.failed(stalled)  # still failing: down again at once
    assert breaker.down_reason() is not None
    breaker.succeeded()
    assert breaker.down_reason() is None
    assert (FAILURES_TO_TRIP, COOLDOWN_S) == (3, 5.0)


# georag serve under faults.


def test_knn_is_never_queued_behind_a_stalled_llm(locate_env: dict[str, Any]) -> None:
    """24 rag requests wait on a stalled LLM (more than the default executor's threads on any small host)
    while knn requests come and go: each knn is answered in well under 1 s; each rag request fails by its
    LLM limit (504), or at once once the LLM is marked down (503)."""
    photo = _photo(locate_env)
    with (
        StandIn(mode="stall", stall_s=20) as llm,
        serving(locate_env, llm=llm.url, served_llm_timeout_s=1.0) as c,
    ):
        with ThreadPoolExecutor(24) as pool:
            rag = [pool.submit(_timed, lambda: c.post("/v1/locate", content=photo)) for _ in range(24)]
            knn = [_timed(lambda: c.post("/v1/locate?strategy=knn", content=photo)) for _ in range(10)]
            rag_done = [f.result() for f in rag]
        assert all(r.status_code == 200 for _, r in knn)
        assert max(t for t, _ in knn) < 1.0, [round(t, 2) for t, _ in knn]
        for took, r in rag_done:
            assert r.status_code in (503, 504) and r.json()["code"] == "UNAVAILABLE", r.text
            assert took < 1.0 + 1.5, took


def test_every_request_is_answered_by_its_deadline(locate_env: dict[str, Any]) -> None:
    """A never-answering LLM and an LLM limit past the deadline: 32 requests at once each end by the
    2 s deadline + 1 s."""
    photo = _photo(locate_env)
    options = {"served_llm_timeout_s": 30.0, "deadline_s": 2.0}
    with StandIn(mode="stall", stall_s=20) as llm, serving(locate_env, llm=llm.url, **options) as c:
        start = time.monotonic()
        with ThreadPoolExecutor(32) as pool:
            done = list(pool.map(lambda _: _timed(lambda: c.post("/v1/locate", content=photo)), range(32)))
        for took, r in done:
            assert r.status_code in (503, 504), r.text
            assert took < 2.0 + 1.0, took
        assert time.monotonic() - start < 2.0 + 2.0
        _error(done[0][1], 504, "UNAVAILABLE", "ran past its 2 s deadline")


def test_64_requests_reach_the_llm_at_once(locate_env: dict[str, Any]) -> None:
    """64 requests to an LLM taking 2 s each: all 64 are at the LLM together (not 12, the default
    executor's share) and all are answered in about 2 s, not 12."""
    photo = _photo(locate_env)
    answer = json.dumps({"latitude": 48.85, "longitude": 2.35})
    with (
        StandIn(script=lambda body: answer, delay_s=2.0) as llm,
        serving(locate_env, llm=llm.url, served_llm_timeout_s=20.0, max_requests=64, deadline_s=30.0) as c,
    ):
        start = time.monotonic()
        with ThreadPoolExecutor(64) as pool:
            done = list(pool.map(lambda _: c.post("/v1/locate?samples=1", content=photo), range(64)))
        elapsed = time.monotonic() - start
    assert [r.status_code for r in done] == [200] * 64
    assert llm.peak_in_flight == 64, llm.peak_in_flight
    assert elapsed < 2.0 + 4.0, elapsed  # one after another in twelves would take 12 s


def test_a_down_llm_is_refused_at_once_readiness_says_so_and_knn_is_served(
    locate_env: dict[str, Any],
) -> None:
    photo = _photo(locate_env)
    with (
        StandIn(mode="stall", stall_s=20) as llm,
        serving(locate_env, llm=llm.url, served_llm_timeout_s=0.5) as c,
    ):
        assert c.get("/health/ready").status_code == 200
        for _ in range(FAILURES_TO_TRIP):
            _error(c.post("/v1/locate", content=photo), 504, "UNAVAILABLE", "did not answer within 0.5 s")
        took, r = _timed(lambda: c.post("/v1/locate", content=photo))
        _error(r, 503, "UNAVAILABLE", "the LLM is down: 3 calls in a row failed")
        assert took < 0.5 and r.headers["retry-after"] == "1"
        assert len(llm.seen) == FAILURES_TO_TRIP, "a request refused at once sends nothing"
        _error(c.get("/health/ready"), 503, "UNAVAILABLE", "not ready: the LLM is down")
        assert c.post("/v1/locate?strategy=knn", content=photo).status_code == 200


# Bad input, refused cleanly.


def test_nested_parameters_are_400_on_both_fronts(locate_env: dict[str, Any]) -> None:
    deep = "[" * 2000 + "]" * 2000
    for raw in (deep, '{"id": ' + deep + "}"):
        with pytest.raises(BadRequest, match="nested too deeply"):
            parse_params(raw)
        with pytest.raises(BadRequest, match="nested too deeply"):
            request_params(raw, "knn", allow_test_markers=False)  # the Triton model's reading
    with serving(locate_env) as c:
        for key in ("variants", "id"):
            r = c.post(f"/v1/locate?strategy=knn&{key}={'[' * 1500}", content=_photo(locate_env))
            assert r.status_code == 400 and r.json()["code"] == "INVALID_ARG", r.text


def test_a_near_zero_embedding_is_refused(locate_env: dict[str, Any]) -> None:
    from georag.serving.retrieval import search_one
    from georag.store.store import GeoStore

    store = GeoStore.open(locate_env["store"])
    tiny = np.full(store.dim, 1e-45, dtype=np.float32)  # a denormal: nonzero, but no direction in float32
    with pytest.raises(BadRequest, match=r"norm [0-9.e-]+: too close to zero to have a direction"):
        search_one(store, tiny, 4, 4)
    found = search_one(store, np.full(store.dim, 1e-3, dtype=np.float32), 4, 4)
    assert (found.near_ids >= 0).all() and np.isfinite(found.near_scores).all()


def test_images_past_the_pixel_budget_are_400_and_large_jpegs_are_served(locate_env: dict[str, Any]) -> None:
    with serving(locate_env) as c:
        took, r = _timed(lambda: c.post("/v1/locate?strategy=knn", content=big_png(9000, 9000)))
        _error(r, 400, "INVALID_ARG", "bad image: the image is 9000x9000 (81.0 MP) and decodes to more than")
        assert took < 2.0, took
        r = c.post("/v1/locate?strategy=knn", content=big_jpeg(6400, 4000))
        assert r.status_code == 200, r.text
