"""The Python API: `Geolocator.from_store`, `predict` (path, bytes, PIL image) and `predict_many`, checked
against `georag locate` on the same photos and against a numpy brute force over the store's embeddings."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from encoder_fixtures import make_tiny_siglip
from georag import Config, Geolocator, Prediction
from georag.encoder import load_encoder
from georag.errors import ConfigError, InputError, LLMError, StoreError
from georag.llm.prompts import format_coordinates
from georag.locate import api, run
from georag.locate.budget import LLMFailureBudgetError
from georag.store.store import GeoStore
from openai_standin import StandIn, answer
from store_fixtures import unit_rows

pytest.importorskip("torch")
Image = pytest.importorskip("PIL.Image")


@pytest.fixture(scope="module")
def geo(locate_env: dict[str, Any]) -> Any:
    with Geolocator.from_store(locate_env["store"]) as g:
        yield g


@pytest.fixture(scope="module")
def brute(locate_env: dict[str, Any]) -> dict[str, Any]:
    """The queries' cosine scores against every store row, in float64 (an independent reference)."""
    store = GeoStore.open(locate_env["store"])
    db = unit_rows(store.embeddings(np.arange(store.ntotal)))
    q = unit_rows(load_encoder(locate_env["tiny"]).encode(locate_env["queries"]).embeddings)
    return {"scores": q @ db.T, "lat": store.lat, "lon": store.lon}


def _rows(side: list[dict[str, Any]]) -> list[int]:
    return [int(n["row"]) for n in side]


def _key(side: list[dict[str, Any]]) -> list[tuple[int, float, float]]:
    return [(int(n["row"]), n["lat"], n["lon"]) for n in side]


def _same_neighbors(a: dict[str, list[dict[str, Any]]], b: dict[str, list[dict[str, Any]]]) -> None:
    """The same rows and coordinates; scores to 2e-5 (a batch of one rounds float32 sums differently)."""
    for side in ("near", "far"):
        assert _key(a[side]) == _key(b[side])
        np.testing.assert_allclose([n["score"] for n in a[side]], [n["score"] for n in b[side]], atol=2e-5)


def _same(a: Prediction, b: Prediction) -> None:
    fields = ("lat", "lon", "confidence", "strategy", "error")
    assert [getattr(a, f) for f in fields] == [getattr(b, f) for f in fields]
    _same_neighbors(a.neighbors, b.neighbors)


def test_predict_equals_georag_locate_and_the_brute_force(
    geo: Any, locate_env: dict[str, Any], brute: dict[str, Any], tmp_path: Path
) -> None:
    queries = locate_env["queries"][:6]
    summary = run(queries, Config(store=str(locate_env["store"])).with_values({"strategy.name": "knn"}),
                  out=tmp_path / "p.csv", progress=False)  # fmt: skip
    assert summary.ok == 6
    with open(tmp_path / "p.csv", newline="") as f:
        cli = list(csv.DictReader(f))
    records = [json.loads(x) for x in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert geo.config.strategy.name == "knn", "no LLM: the retrieval route"
    for i, (path, row, rec) in enumerate(zip(queries, cli, records, strict=True)):
        pred = geo.predict(path)
        assert pred.id == path.name and pred.ok and pred.strategy == "knn"
        assert (f"{pred.lat:.6f}", f"{pred.lon:.6f}") == (row["lat"], row["lon"])
        _same_neighbors(pred.neighbors, rec["evidence"]["neighbors"])
        assert pred.candidates == [], "retrieval only: no LLM answers"
        # The 16 most similar and 16 most dissimilar rows of a float64 brute force.
        order = np.argsort(-brute["scores"][i], kind="stable")
        assert _rows(pred.neighbors["near"]) == order[:16].tolist()
        assert _rows(pred.neighbors["far"]) == order[::-1][:16].tolist()
        top1 = order[0]
        assert (pred.lat, pred.lon) == pytest.approx((brute["lat"][top1], brute["lon"][top1]), abs=1e-9)


def test_top_k_is_the_number_of_neighbors_drawn_on(
    locate_env: dict[str, Any], brute: dict[str, Any], tmp_path: Path
) -> None:
    path = locate_env["queries"][2]
    with Geolocator.from_store(locate_env["store"], strategy="knn-medoid") as g:
        pred = g.predict(path, top_k=5)
        default = g.predict(path)
    order = np.argsort(-brute["scores"][2], kind="stable")
    assert _rows(pred.neighbors["near"]) == order[:5].tolist()
    assert _rows(pred.neighbors["far"]) == order[::-1][:5].tolist()
    assert len(default.neighbors["near"]) == 16, "top_k is per call: the default stays 16"
    # knn-medoid over the top 5: the row with the least sum of great-circle distances to the other four.
    lat, lon = np.radians(brute["lat"][order[:5]]), np.radians(brute["lon"][order[:5]])
    cos = np.sin(lat)[:, None] * np.sin(lat) + np.cos(lat)[:, None] * np.cos(lat) * np.cos(lon[:, None] - lon)
    best = int(np.argmin(np.arccos(np.clip(cos, -1, 1)).sum(axis=1)))
    assert (pred.lat, pred.lon) == pytest.approx((brute["lat"][order[best]], brute["lon"][order[best]]))
    # The same as `georag locate --k-near 5 --k-far 5 --knn-k 5`.
    config = Config(store=str(locate_env["store"])).with_values(
        {"strategy.name": "knn-medoid", "strategy.knn_k": 5, "search.k_near": 5, "search.k_far": 5,
         "strategy.rag.variants": "rag:5:5"}
    )  # fmt: skip
    run([path], config, out=tmp_path / "p.csv", progress=False)
    rec = json.loads((tmp_path / "p.jsonl").read_text())
    assert (rec["lat"], rec["lon"]) == (pred.lat, pred.lon)
    _same_neighbors(rec["evidence"]["neighbors"], pred.neighbors)
    with pytest.raises(ConfigError, match="top_k must be an integer >= 1"):
        g.predict(path, top_k=0)


def test_bytes_and_pil_images_give_the_path_result(geo: Any, locate_env: dict[str, Any]) -> None:
    path = locate_env["queries"][3]
    by_path = geo.predict(path)
    by_bytes = geo.predict(path.read_bytes())
    with Image.open(path) as im:
        by_pil = geo.predict(im, image_id="mine")
    assert by_bytes.id == "image" and by_pil.id == "mine"
    _same(by_bytes, by_path)
    _same(by_pil, by_path)


def test_a_bad_image_raises_input_error_with_the_reason(geo: Any, tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"cannot locate image: .*(corrupt|not an image|cannot identify)"):
        geo.predict(b"\xff\xd8\xff\xe0 not a jpeg")
    with pytest.raises(InputError, match=r"missing\.jpg"):
        geo.predict(tmp_path / "missing.jpg")
    with pytest.raises(InputError, match="a path, the file's bytes or a PIL image, got int"):
        geo.predict(42)


def test_predict_many_streams_in_input_order_and_records_failures(
    geo: Any, locate_env: dict[str, Any]
) -> None:
    queries = locate_env["queries"][:5]
    images = (x for x in [queries[0], b"garbage", queries[1].read_bytes(), *queries[2:]])  # a generator
    preds = list(geo.predict_many(images))
    assert [p.id for p in preds] == [queries[0].name, "image-1", "image-2", *(q.name for q in queries[2:])]
    assert preds[1].error and not preds[1].ok and np.isnan(preds[1].lat)
    singles = [geo.predict(q) for q in queries]
    for got, want in zip([preds[0], *preds[2:]], singles, strict=True):
        _same(got, want)
    named = list(geo.predict_many(queries[:2], ids=["a", "b"], top_k=3))
    assert [p.id for p in named] == ["a", "b"] and len(named[0].neighbors["near"]) == 3
    with pytest.raises(InputError, match="repeats"):
        list(geo.predict_many([queries[0], queries[0]]))
    with pytest.raises(InputError, match="give one id per image"):
        list(geo.predict_many(queries[:2], ids=["a"]))
    with pytest.raises(InputError, match="give one id per image"):
        list(geo.predict_many(queries[:2], ids=["a", "b", "c"]))


def test_predict_many_spends_one_failure_budget_over_all_its_chunks(
    locate_env: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(api, "STREAM_CHUNK", 2)  # six photos: three chunks of two
    queries = locate_env["queries"][:6]
    with StandIn() as server:
        settings = {"llm.max_failures": 2, "llm.retries": 0}
        with Geolocator.from_store(locate_env["store"], server.url, settings=settings) as g:
            server.mode = "bad_request"  # after the LLM check: every request fails
            stream = g.predict_many(queries)
            got = [next(stream), next(stream)]  # the two failures allowed fall back
            with pytest.raises(LLMFailureBudgetError, match="failed for 3 photo"):
                next(stream)  # the third, in the second chunk, stops the stream
    assert [p.id for p in got] == [q.name for q in queries[:2]]
    assert all("every LLM request failed" in (p.fallback or "") for p in got)


def test_from_store_settings_and_errors(locate_env: dict[str, Any], tmp_path: Path) -> None:
    store = locate_env["store"]
    with Geolocator.from_store(store, settings={"search.k_near": 4, "search.k_far": 2}) as g:
        pred = g.predict(locate_env["queries"][0])
        assert (len(pred.neighbors["near"]), len(pred.neighbors["far"])) == (4, 2)
        assert g.config.strategy.name == "knn" and g.config.store == str(store)
    with pytest.raises(ConfigError, match="rag strategy needs an LLM"):
        Geolocator.from_store(store, strategy="rag")
    with pytest.raises(ConfigError, match=r"unknown config key 'search\.kk'"):
        Geolocator.from_store(store, settings={"search.kk": 1})
    other = make_tiny_siglip(tmp_path / "other", seed=5)
    with pytest.raises(StoreError, match="was built with"):
        Geolocator.from_store(store, encoder=str(other))
    with pytest.raises(StoreError):
        Geolocator.from_store(tmp_path / "no-store")


def test_an_llm_url_gives_the_rag_route_and_close_releases_it(locate_env: dict[str, Any]) -> None:
    with StandIn() as server:
        with Geolocator.from_store(
            locate_env["store"], server.url, settings={"strategy.rag.sampling.n": 3}
        ) as g:
            assert g.config.strategy.name == "rag"
            pred = g.predict(locate_env["queries"][0], top_k=4)
        asked = [s for s in server.seen if s.body.get("max_tokens") != 1]  # not the LLM check's request
        with pytest.raises(LLMError, match="closed"):  # `with` closed the client that from_store opened
            g.predict(locate_env["queries"][0])
    middle = answer(1)
    assert pred.strategy == "rag" and pred.confidence == 1.0
    assert (pred.lat, pred.lon) == (middle["latitude"], middle["longitude"]), "the medoid of the 3 answers"
    assert pred.candidates == [(answer(i)["latitude"], answer(i)["longitude"]) for i in range(3)]
    assert len(pred.neighbors["near"]) == 4 and len(asked) == 1
    text = asked[0].body["messages"][1]["content"][1]["text"]
    near = pred.neighbors["near"]
    shown = format_coordinates([n["lat"] for n in near], [n["lon"] for n in near])
    assert shown in text, "the top_k similar rows are shown to the LLM"
