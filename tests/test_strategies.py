"""The strategies are pure: driven here by hand, request by request, with no store, server or thread.

Each route is checked against an independent computation (a float64 haversine brute force for the medoid,
the re-ranking formula written out), and the async runner against the sync one.
"""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any

import numpy as np
import pytest

from georag.config import RagConfig, Sampling, StrategyConfig, VprConfig, parse_variants
from georag.errors import ConfigError, LLMError
from georag.store.submaps import Submaps, submaps_from_labels
from georag.strategies.knn import Knn, knn_predict
from georag.strategies.registry import STRATEGIES, make_strategy
from georag.strategies.route import Ask, Found, Search, run_route, run_route_async
from georag.types import Completion, Photo, Retrieved

PHOTO = Photo(b"\xff\xd8\xff fake jpeg", "image/jpeg")


def _haversine(a: tuple[float, float], b: tuple[float, float]) -> float:
    la1, lo1, la2, lo2 = map(math.radians, (*a, *b))
    h = math.sin((la2 - la1) / 2) ** 2 + math.cos(la1) * math.cos(la2) * math.sin((lo2 - lo1) / 2) ** 2
    return 2 * 6371.0088 * math.asin(min(1.0, math.sqrt(h)))


def _medoid(points: list[tuple[float, float]]) -> int:
    sums = [sum(_haversine(p, q) for q in points) for p in points]
    return int(np.argmin(sums))


def _item(k: int = 6, embedding: bool = False) -> Retrieved:
    rng = np.random.default_rng(3)
    near_lat = np.linspace(40.0, 45.0, k)
    near_lon = np.linspace(-3.0, 7.0, k)
    far_lat, far_lon = -near_lat, near_lon + 120.0
    return Retrieved(
        "photo.jpg",
        np.arange(k, dtype=np.int64), np.linspace(0.9, 0.5, k).astype(np.float32), near_lat, near_lon,
        np.arange(100, 100 + k, dtype=np.int64), np.linspace(-0.5, -0.1, k).astype(np.float32),
        far_lat, far_lon,
        rng.standard_normal(8).astype(np.float32) if embedding else None,
    )  # fmt: skip


def _done(*texts: str) -> Completion:
    return Completion(texts=tuple(texts), seconds=0.01)


def _never(request: Any) -> Any:
    raise AssertionError(f"unexpected request {request!r}")


def test_knn_routes_ask_nothing_and_equal_the_baseline() -> None:
    item = _item()
    for mode in ("knn", "knn-medoid"):
        pred = run_route(Knn(mode, 4).route(item), _never, _never, {})
        ref = knn_predict(item, mode, 4)
        assert (pred.lat, pred.lon, pred.strategy) == (ref.lat, ref.lon, mode)
    # knn-medoid: the medoid of the top 4 by an independent brute force
    pts = [(float(a), float(b)) for a, b in zip(item.near_lat[:4], item.near_lon[:4], strict=True)]
    pred = run_route(Knn("knn-medoid", 4).route(item), _never, _never, {})
    assert (pred.lat, pred.lon) == pts[_medoid(pts)]


def test_rag_sends_every_variant_in_one_round_and_picks_the_medoid() -> None:
    cfg = RagConfig(variants=parse_variants("rag:3:2,zero"), sampling=Sampling(n=3))
    item = _item()
    route = make_strategy(StrategyConfig("rag", rag=cfg)).route(item, PHOTO)
    ask = next(route)
    assert isinstance(ask, Ask) and len(ask.prompts) == 2 and ask.sampling.n == 3
    # the rag prompt shows the first 3 similar and 2 dissimilar coordinates, the zero-shot one none
    assert "(40.0000, -3.0000)" in ask.prompts[0].user and "(41.0000, -1.0000)" in ask.prompts[0].user
    assert "(42.0000, 1.0000)" in ask.prompts[0].user and "(43.0000, 3.0000)" not in ask.prompts[0].user
    assert "(40.0000" not in ask.prompts[1].user
    assert all(p.image == PHOTO.data for p in ask.prompts)
    answers = [(48.85, 2.35), (48.86, 2.30), (45.76, 4.83), (51.5, -0.12), (48.80, 2.10)]
    texts = [json.dumps({"latitude": a, "longitude": b}) for a, b in answers]
    with pytest.raises(StopIteration) as stop:
        route.send((_done(*texts[:3]), _done(*texts[3:], "I cannot tell")))
    pred = stop.value.value
    assert pred.strategy == "rag" and pred.fallback is None
    assert (pred.lat, pred.lon) == answers[_medoid(answers)]
    # confidence: the share of the 6 requested samples within 100 km of the pick
    near = sum(_haversine(a, (pred.lat, pred.lon)) <= 100 for a in answers)
    assert pred.confidence == pytest.approx(near / 6)
    assert len(pred.evidence["answers"]) == 6 and pred.evidence["answers"][-1]["parsed"] is None


def test_rag_falls_back_to_the_top_neighbor_when_every_request_fails() -> None:
    item = _item()
    cfg = StrategyConfig("rag", rag=RagConfig(variants=parse_variants("rag:2:2,zero")))
    pred = run_route(
        make_strategy(cfg).route(item, PHOTO),
        lambda ask: tuple(LLMError("server down") for _ in ask.prompts),
        _never,
        {},
    )
    assert pred.strategy == "rag>knn" and pred.confidence == 0.0
    assert (pred.lat, pred.lon) == (item.near_lat[0], item.near_lon[0])
    assert "every LLM request failed" in (pred.fallback or "")


class _Store:
    """The store as the vpr-guided route sees it: a path, a size and a submap partition."""

    path = "test-store"

    def __init__(self, submaps: Submaps) -> None:
        self._submaps, self.ntotal = submaps, submaps.num_rows

    def submap_names(self) -> list[str]:
        return ["country"]

    def submaps(self, name: str) -> Submaps:
        assert name == "country"
        return self._submaps


def _country_store() -> _Store:
    labels = np.array([0] * 150 + [1] * 150 + [2] * 20, dtype=np.int32)  # FR, US, and a tiny LU
    return _Store(submaps_from_labels("country", ["FR", "US", "LU"], labels))


def _prior(country: str, lat: float, lon: float) -> str:
    return json.dumps({"country": country, "latitude": lat, "longitude": lon})


def test_vpr_guided_searches_the_prior_country_and_reranks_by_distance_to_the_prior() -> None:
    store = _country_store()
    vpr = VprConfig(rerank_k=4, prior_weight=0.5, sampling=Sampling(n=3))
    strategy = make_strategy(StrategyConfig("vpr-guided", vpr=vpr), store)
    item = _item(embedding=True)
    route = strategy.route(item, PHOTO)
    ask = next(route)
    assert isinstance(ask, Ask) and ask.stage == "prior" and len(ask.prompts) == 1
    search = route.send((_done(_prior("FR", 48.85, 2.35), _prior("FR", 48.9, 2.4), _prior("US", 40, -74)),))
    assert isinstance(search, Search) and search.k == 4 and search.rows == 150
    np.testing.assert_array_equal(search.row_ranges, store.submaps("country").ranges("FR"))
    np.testing.assert_array_equal(search.embedding, item.embedding)
    lat = np.array([43.3, 48.8, 45.7, 50.6])
    lon = np.array([5.4, 2.3, 4.8, 3.1])
    cos = np.array([0.9, 0.8, 0.85, 0.7], dtype=np.float32)
    with pytest.raises(StopIteration) as stop:
        route.send(Found(np.array([7, 3, 11, 20]), cos, lat, lon))
    pred = stop.value.value
    # the prior is the medoid of the three samples; the score is (1 - w) cos - w d / 20037.5
    samples = [(48.85, 2.35), (48.9, 2.4), (40.0, -74.0)]
    prior = samples[_medoid(samples)]
    scores = [
        0.5 * float(c) - 0.5 * _haversine((a, b), prior) / 20037.5
        for c, a, b in zip(cos, lat, lon, strict=True)
    ]
    best = int(np.argmax(scores))
    assert pred.strategy == "vpr-guided" and pred.fallback is None
    assert (pred.lat, pred.lon) == (lat[best], lon[best])
    assert pred.evidence["prior"]["country"] == "FR" and pred.evidence["submap"]["chosen"] == ["FR"]
    assert pred.evidence["candidates"][0]["row"] == [7, 3, 11, 20][best]


def test_vpr_guided_falls_back_to_the_global_search_without_a_trusted_submap() -> None:
    strategy = make_strategy(StrategyConfig("vpr-guided", vpr=VprConfig(rerank_k=3)), _country_store())
    item = _item(embedding=True)
    for answer, why in (
        (_prior("LU", 49.6, 6.1), "fewer than min_submap_rows"),
        (_prior("JP", 35.7, 139.7), "no rows in country JP"),
        ("no idea", "no usable prior"),
    ):
        pred = run_route(strategy.route(item, PHOTO), lambda ask, a=answer: (_done(a),), _never, {})
        assert pred.strategy == "vpr-guided>global" and why in (pred.fallback or ""), pred.fallback
        assert pred.confidence == 0.0
        assert {c["row"] for c in pred.evidence["candidates"]} == {0, 1, 2}


def test_vpr_guided_hybrid_asks_rag_with_the_reranked_candidates() -> None:
    vpr = VprConfig(rerank_k=2, hybrid=True, sampling=Sampling(n=1))
    rag = RagConfig(variants=parse_variants("rag:2:1"), sampling=Sampling(n=1))
    strategy = make_strategy(StrategyConfig("vpr-guided", vpr=vpr, rag=rag), _country_store())
    route = strategy.route(_item(embedding=True), PHOTO)
    next(route)
    route.send((_done(_prior("FR", 48.85, 2.35)),))
    ask = route.send(Found(np.array([5, 9]), np.array([0.9, 0.8], np.float32), np.array([10.0, 48.8]),
                           np.array([10.0, 2.3])))  # fmt: skip
    assert isinstance(ask, Ask) and ask.stage == "llm"
    # the candidate nearer the prior comes first among the similar coordinates
    user = ask.prompts[0].user
    assert user.index("(48.8000, 2.3000)") < user.index("(10.0000, 10.0000)")
    with pytest.raises(StopIteration) as stop:
        route.send((_done(json.dumps({"latitude": 48.86, "longitude": 2.34})),))
    pred = stop.value.value
    assert pred.strategy == "vpr-guided+rag" and (pred.lat, pred.lon) == (48.86, 2.34)


def test_async_runner_gives_what_the_sync_runner_gives() -> None:
    strategy = make_strategy(StrategyConfig("vpr-guided", vpr=VprConfig(rerank_k=2)), _country_store())
    item = _item(embedding=True)
    found = Found(
        np.array([4, 8]), np.array([0.7, 0.6], np.float32), np.array([47.0, 44.0]), np.array([1.0, 2.0])
    )

    def ask(request: Ask) -> tuple[Completion, ...]:
        return (_done(_prior("FR", 45.0, 2.0)),)

    async def ask_async(request: Ask) -> tuple[Completion, ...]:
        return ask(request)

    async def search_async(request: Search) -> Found:
        return found

    sync_timings: dict[str, float] = {}
    one = run_route(strategy.route(item, PHOTO), ask, lambda s: found, sync_timings)
    async_timings: dict[str, float] = {}
    two = asyncio.run(run_route_async(strategy.route(item, PHOTO), ask_async, search_async, async_timings))
    assert one.evidence.pop("timings").keys() == two.evidence.pop("timings").keys() == {"rerank_s"}
    assert one.record() == two.record()
    assert set(sync_timings) == set(async_timings) == {"prior_s", "submap_search_s"}


def test_the_registry_knows_every_strategy_and_refuses_what_cannot_run() -> None:
    assert set(STRATEGIES) == {"rag", "knn", "knn-medoid", "vpr-guided"}
    for name in ("rag", "knn", "knn-medoid"):
        assert make_strategy(StrategyConfig(name)).name == name
    with pytest.raises(ConfigError, match="needs the store"):
        make_strategy(StrategyConfig("vpr-guided"))
    with pytest.raises(ConfigError, match=r"no submap partition 'kmeans9'.*country"):
        make_strategy(StrategyConfig("vpr-guided", vpr=VprConfig(submap_by="kmeans9")), _country_store())
    with pytest.raises(ConfigError, match="strategy must be one of"):
        StrategyConfig("nearest")


def test_the_async_runner_does_the_routes_work_off_the_event_loop() -> None:
    """Parsing and choosing run in a worker thread, so a served event loop goes on taking requests."""
    import threading

    seen: list[str] = []

    def route() -> Any:
        seen.append(threading.current_thread().name)
        yield Ask((), Sampling())
        seen.append(threading.current_thread().name)
        return knn_predict(_item())

    async def ask(request: Ask) -> tuple[Completion, ...]:
        return ()

    async def main() -> Any:
        loop_thread = threading.current_thread().name
        pred = await run_route_async(route(), ask, _never, {})
        return loop_thread, pred

    loop_thread, pred = asyncio.run(main())
    assert pred.strategy == "knn" and len(seen) == 2 and loop_thread not in seen
