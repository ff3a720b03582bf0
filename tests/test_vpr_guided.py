"""The vpr-guided route: prior parsing and voting, restricted search, re-ranking, fallbacks, the CLI."""

from __future__ import annotations

import csv
import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from georag.cli import main
from georag.config import VprConfig
from georag.errors import GeoRagError
from georag.geo.coords import haversine_km
from georag.llm.prior import PriorAnswer, parse_country, parse_prior
from georag.strategies.prior import vote_prior
from georag.strategies.vpr_guided import HALF_CIRCUMFERENCE_KM, rerank_order, rerank_scores
from georag.types import Prediction
from openai_standin import StandIn, user_text

NYC = (40.7128, -74.006)

# ---- the prior: parsing and voting (no store needed) ----------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"country": "FR", "latitude": 48.85, "longitude": 2.35}', ("FR", 48.85, 2.35)),
        ("Country: France\nLatitude 48.85, Longitude 2.35", ("FR", 48.85, 2.35)),
        (
            '```json\n{"country_code": "us", "latitude": "40.7", "longitude": "-74.0"}\n```',
            ("US", 40.7, -74.0),
        ),
        ("{'country': 'Italy', 'latitude': 41.9, 'longitude': 12.5,}", ("IT", 41.9, 12.5)),
        ('{"countryCode": "JPN", "lat": 35.68, "lng": 139.69}', ("JP", 35.68, 139.69)),
        ('{"location": {"country": "Russia", "latitude": 55.75, "longitude": 37.62}}', ("RU", 55.75, 37.62)),
        ("**Country:** United Kingdom (GB)\n**Coordinates:** 51.5074, -0.1278", ("GB", 51.5074, -0.1278)),
        ("Country: France Latitude: 48.85 Longitude: 2.35", ("FR", 48.85, 2.35)),
        ("Country code = jp", ("JP", None, None)),
        ("Country: Georgia, USA", ("US", None, None)),
        ("Country: Georgia", ("GE", None, None)),
        ("The country: Russia.", ("RU", None, None)),
        ('{"latitude": 40.71, "longitude": -74.0}', (None, 40.71, -74.0)),
        ("I think Paris.\nCountry: not sure\nLatitude: 48.8566, Longitude: 2.3522", (None, 48.8566, 2.3522)),
    ],
)
def test_the_prior_parser_reads_json_prose_codes_and_names(
    text: str, expected: tuple[str | None, float | None, float | None]
) -> None:
    assert parse_prior(text) == PriorAnswer(*expected)


@pytest.mark.parametrize(
    "text",
    [
        "I'm sorry, I can't determine where this photo was taken.",
        "Country: unknown",
        '{"country": "unknown", "latitude": 0, "longitude": 0}',
        '{"country": null, "latitude": null, "longitude": null}',
        "It is hard to say which country this is.",
        "Country: it is unclear",
        "Country: Atlantis",
        "",
        None,
    ],
)
def test_refusals_and_unknown_countries_give_none(text: str | None) -> None:
    assert parse_prior(text) is None


def test_the_last_json_country_decides_and_free_prose_is_not_mined() -> None:
    assert parse_country('first {"country": "FR"} then {"country": "DE"}') == "DE"
    assert parse_country("It was not taken in Italy, I think.") is None
    assert parse_country('{"country": "unknown"}\nCountry: France') is None  # the final JSON declined


def test_the_country_vote_is_the_majority_and_the_coordinates_their_medoid() -> None:
    answers = [
        PriorAnswer("FR", 48.85, 2.35),
        PriorAnswer("FR", 48.86, 2.34),
        PriorAnswer("BE", 50.85, 4.35),
        None,
        PriorAnswer("FR", None, None),
    ]
    prior = vote_prior(answers, asked=5)
    assert prior.country == "FR" and prior.votes == {"FR": 3, "BE": 1}
    assert (prior.lat, prior.lon) in ((48.85, 2.35), (48.86, 2.34))
    assert prior.agreement == pytest.approx(2 / 5)  # two of five within 100 km of the medoid


def test_a_tied_vote_goes_to_the_country_whose_samples_are_most_central() -> None:
    # Two votes each; Belgium's samples sit between France's and Germany's outlier, so they are central.
    answers = [
        PriorAnswer("FR", 48.85, 2.35),
        PriorAnswer("BE", 50.85, 4.35),
        PriorAnswer("BE", 50.84, 4.36),
        PriorAnswer("FR", 43.3, 5.37),
        PriorAnswer("DE", 52.52, 13.4),
    ]
    prior = vote_prior(answers, asked=5)
    assert prior.votes == {"FR": 2, "BE": 2, "DE": 1}
    assert prior.country == "BE"
    # No coordinates at all: the first named wins the tie.
    assert vote_prior([PriorAnswer("FR"), PriorAnswer("BE")], asked=2).country == "FR"
    empty = vote_prior([None, None], asked=2)
    assert not empty.parsed and empty.agreement == 0.0


# ---- the re-ranking score (hand-computed) -----------------------------------------------------------


def test_rerank_order_matches_a_hand_computed_example() -> None:
    cos = [0.9, 0.8, 0.7, 0.7]  # visual order
    dist = [5000.0, 100.0, 0.0, 0.0]
    assert HALF_CIRCUMFERENCE_KM == 20037.5
    assert rerank_order(cos, dist, 0.0).tolist() == [0, 1, 2, 3]  # pure retrieval order
    # w = 0.5: 0.45 - 0.5*5000/20037.5 = 0.325234; 0.4 - 0.5*100/20037.5 = 0.397505; 0.35; 0.35 (a tie)
    np.testing.assert_allclose(rerank_scores(cos, dist, 0.5), [0.325234, 0.397505, 0.35, 0.35], atol=1e-6)
    assert rerank_order(cos, dist, 0.5).tolist() == [1, 2, 3, 0]
    # w = 1: nearest to the prior first; the two at 0 km keep their visual order.
    np.testing.assert_allclose(rerank_scores(cos, dist, 1.0), [-0.249532, -0.004991, 0.0, 0.0], atol=1e-6)
    assert rerank_order(cos, dist, 1.0).tolist() == [2, 3, 1, 0]


@pytest.mark.parametrize(
    "kwargs", [{"prior_weight": 1.5}, {"prior_weight": -0.1}, {"rerank_k": 0}, {"submap_by": ""}]
)
def test_the_config_refuses_bad_values(kwargs: dict[str, Any]) -> None:
    with pytest.raises(GeoRagError):
        VprConfig(**kwargs)


# ---- the route on a store of the shared photos --------------------------------------------------------


@pytest.fixture(scope="module")
def vpr_env(locate_env: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A copy of the locate store with country submaps and 8 k-means clusters (the session store stays)."""
    from georag.encoder import load_encoder
    from georag.store.partition import make_submaps
    from georag.store.store import GeoStore

    root = tmp_path_factory.mktemp("vpr")
    shutil.copytree(locate_env["store"], root / "store")
    make_submaps(root / "store", "country")
    make_submaps(root / "store", "kmeans", k=8)
    store = GeoStore.open(root / "store")
    encoder = load_encoder(locate_env["tiny"])
    queries = locate_env["queries"][:6]
    emb = encoder.encode(queries, ids=[p.name for p in queries], progress=False).embeddings
    by_name = dict(zip([p.name for p in queries], emb, strict=True))
    return {**locate_env, "root": root, "store": root / "store", "geostore": store, "encoder": encoder,
            "queries": queries, "embeddings": by_name}  # fmt: skip


def _prior_json(country: str, lat: float, lon: float) -> str:
    return json.dumps({"country": country, "latitude": lat, "longitude": lon})


def _is_prior(body: dict[str, Any]) -> bool:
    return "ISO 3166-1" in user_text(body)


def _locate(
    env: dict[str, Any],
    script: Callable[[dict[str, Any]], str | list[str]] | None,
    *,
    mode: str = "ok",
    truth: dict[str, Any] | None = None,
    exclusion: Any = None,
    **vpr: Any,
) -> list[Prediction]:
    from georag.config import Config, ExclusionConfig, StrategyConfig
    from georag.llm.backends import open_llm
    from georag.locate.geolocator import Geolocator

    vpr.setdefault("min_submap_rows", 20)
    with StandIn(script=script, mode=mode) as server:
        llm = open_llm(server.url, retries=0)
        try:
            config = Config(
                strategy=StrategyConfig("vpr-guided", vpr=VprConfig(**vpr)),
                exclusion=exclusion or ExclusionConfig(),
            )
            geo = Geolocator(env["geostore"], env["encoder"], llm, config, truth=truth)
            return list(geo.locate(env["queries"], max_failures=-1))  # fallbacks are what these tests check
        finally:
            assert llm is not None
            llm.close()


def _brute_force(
    env: dict[str, Any], image_id: str, rows: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """The top k of ``rows`` by score against the stored (normalized) rows as they are, in numpy (an
    independent reference of the restricted search)."""
    store = env["geostore"]
    q = np.asarray(env["embeddings"][image_id], dtype=np.float64)
    q /= np.linalg.norm(q)
    e = store.embeddings(rows).astype(np.float64)
    s = e @ q
    top = np.argsort(-s, kind="stable")[:k]
    return rows[top], s[top]


def _rows_of(ranges: np.ndarray) -> np.ndarray:
    return np.concatenate([np.arange(a, b) for a, b in ranges]).astype(np.int64)


def _visual(pred: Prediction) -> list[dict[str, Any]]:
    return sorted(pred.evidence["candidates"], key=lambda c: c["visual_rank"])


def test_a_correct_prior_searches_exactly_the_submap_rows(vpr_env: dict[str, Any]) -> None:
    submaps = vpr_env["geostore"].submaps("country")
    assert submaps.size("US") >= 20
    us_rows = _rows_of(submaps.ranges("US"))
    preds = _locate(vpr_env, lambda body: _prior_json("US", *NYC), prior_weight=0.0)
    assert len(preds) == 6
    for pred in preds:
        assert pred.strategy == "vpr-guided" and pred.fallback is None and pred.error is None
        ev = pred.evidence
        assert ev["submap"]["chosen"] == ["US"] and ev["submap"]["rows_searched"] == submaps.size("US")
        assert ev["prior"]["country"] == "US" and ev["prior"]["votes"] == {"US": 5}
        assert pred.confidence == 1.0  # all five samples agree
        cands = _visual(pred)
        assert len(cands) == 16 and all(c["row"] in set(us_rows.tolist()) for c in cands)
        ids, cos = _brute_force(vpr_env, pred.id, us_rows, 16)
        assert [c["row"] for c in cands] == ids.tolist()
        np.testing.assert_allclose([c["cos"] for c in cands], cos, atol=2e-5)
        # w = 0: the prediction is the visually nearest row of the submap.
        assert (pred.lat, pred.lon) == (cands[0]["lat"], cands[0]["lon"])
        assert {"encode_s", "search_s", "prior_s", "submap_search_s", "rerank_s"} <= set(ev["timings"])


def test_reranking_by_the_prior_picks_the_candidate_the_score_says(vpr_env: dict[str, Any]) -> None:
    preds = _locate(vpr_env, lambda body: _prior_json("US", *NYC), prior_weight=0.5)
    for pred in preds:
        cands = pred.evidence["candidates"]
        cos = np.array([c["cos"] for c in _visual(pred)])
        lat = np.array([c["lat"] for c in _visual(pred)])
        lon = np.array([c["lon"] for c in _visual(pred)])
        order = rerank_order(cos, haversine_km(lat, lon, *NYC), 0.5)
        assert [c["visual_rank"] for c in cands] == order.tolist()
        assert (pred.lat, pred.lon) == (lat[order[0]], lon[order[0]])
        scores = [c["score"] for c in cands]
        assert scores == sorted(scores, reverse=True)


def _global_top(pred: Prediction, k: int = 16) -> list[int]:
    return [n["row"] for n in pred.evidence["neighbors"]["near"][:k]]


@pytest.mark.parametrize(
    ("name", "answer", "reason"),
    [
        ("absent country", _prior_json("NZ", -41.29, 174.78), "the store has no rows in country NZ"),
        ("no such country", "Country: Atlantis", "no usable prior: none of the 5 prior answers"),
        ("refusal", "I'm sorry, I can't tell where this is.", "no usable prior"),
        ("tiny submap", None, "fewer than min_submap_rows 20"),
    ],
)
def test_an_unusable_prior_falls_back_to_the_global_search_and_says_so(
    vpr_env: dict[str, Any], name: str, answer: str | None, reason: str
) -> None:
    submaps = vpr_env["geostore"].submaps("country")
    assert "NZ" not in submaps.names
    if answer is None:  # a country of the store with a single row
        tiny = min(submaps.names, key=submaps.size)
        assert submaps.size(tiny) < 20
        answer = json.dumps({"country": tiny})
    preds = _locate(vpr_env, lambda body: answer)
    for pred in preds:
        assert pred.strategy == "vpr-guided>global", name
        assert reason in (pred.fallback or "") and "searched the whole store" in (pred.fallback or "")
        assert pred.evidence["submap"]["fallback"] in pred.fallback
        assert pred.evidence["submap"]["rows_searched"] == vpr_env["geostore"].ntotal
        assert [c["row"] for c in _visual(pred)] == _global_top(pred)
        if name != "absent country":  # no prior coordinates: the global top-1 stands, with no agreement
            assert (pred.lat, pred.lon) == (_visual(pred)[0]["lat"], _visual(pred)[0]["lon"])
            assert pred.confidence == 0.0


def test_a_failed_prior_request_falls_back(vpr_env: dict[str, Any]) -> None:
    preds = _locate(vpr_env, None, mode="bad_request")
    assert all(
        p.strategy == "vpr-guided>global" and "prior request failed" in (p.fallback or "") for p in preds
    )
    assert all(p.error is None and math.isfinite(p.lat) for p in preds)


def test_coordinates_without_a_country_choose_the_country_they_lie_in(vpr_env: dict[str, Any]) -> None:
    preds = _locate(vpr_env, lambda body: json.dumps({"latitude": NYC[0], "longitude": NYC[1]}))
    for pred in preds:
        assert pred.strategy == "vpr-guided"
        assert pred.evidence["submap"]["chosen"] == ["US"]
        assert pred.evidence["submap"]["country_from"] == "coordinates"


def test_kmeans_searches_the_clusters_nearest_to_the_prior(vpr_env: dict[str, Any]) -> None:
    submaps = vpr_env["geostore"].submaps("kmeans8")
    for n in (1, 2):
        chosen = submaps.nearest_clusters(*NYC, n=n)
        rows = _rows_of(np.concatenate([submaps.ranges(c) for c in chosen]))
        assert rows.size == sum(submaps.size(c) for c in chosen)
        preds = _locate(
            vpr_env, lambda body: _prior_json("US", *NYC), submap_by="kmeans8", clusters=n, min_submap_rows=1
        )
        for pred in preds:
            assert pred.strategy == "vpr-guided", pred.fallback
            assert pred.evidence["submap"]["chosen"] == chosen
            assert pred.evidence["submap"]["rows_searched"] == rows.size
            ids, _ = _brute_force(vpr_env, pred.id, rows, 16)
            assert [c["row"] for c in _visual(pred)] == ids.tolist()


def test_a_missing_partition_is_one_clear_error_up_front(vpr_env: dict[str, Any]) -> None:
    with pytest.raises(GeoRagError, match=r"no submap partition 'kmeans100'.*georag index submaps"):
        _locate(vpr_env, None, submap_by="kmeans100")
    with pytest.raises(GeoRagError, match="--clusters picks k-means clusters"):
        _locate(vpr_env, None, clusters=2)
    with pytest.raises(GeoRagError, match="has 8 clusters"):
        _locate(vpr_env, None, submap_by="kmeans8", clusters=9)


def test_exclusions_apply_inside_the_submap(vpr_env: dict[str, Any]) -> None:
    from georag.config import ExclusionConfig
    from georag.locate.exclusion import QueryTruth

    # Every query claims to be in New York: rows within 1,000 km of it may not be retrieved.
    truth = {p.name: QueryTruth(*NYC) for p in vpr_env["queries"]}
    store = vpr_env["geostore"]
    us_rows = _rows_of(store.submaps("country").ranges("US"))
    allowed = us_rows[haversine_km(store.lat[us_rows], store.lon[us_rows], *NYC) > 1000]
    assert 16 <= allowed.size < us_rows.size
    preds = _locate(
        vpr_env,
        lambda body: _prior_json("US", *NYC),
        truth=truth,
        exclusion=ExclusionConfig(radius_km=1000),
        prior_weight=0.0,
    )
    for pred in preds:
        assert pred.strategy == "vpr-guided"
        ids, _ = _brute_force(vpr_env, pred.id, allowed, 16)
        assert [c["row"] for c in _visual(pred)] == ids.tolist()
        assert pred.evidence["submap"].get("excluded_rows", 0) > 0


# ---- the CLI ---------------------------------------------------------------------------------------


def _cli(env: dict[str, Any], out: Path, llm: str, *extra: str) -> list[str]:
    return [
        "locate", *map(str, env["queries"]), "--store", str(env["store"]), "--encoder", str(env["tiny"]),
        "--llm", llm, "--out", str(out), "--strategy", "vpr-guided", *extra,
    ]  # fmt: skip


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_georag_locate_runs_the_route(vpr_env: dict[str, Any], tmp_path: Path) -> None:
    with StandIn(script=lambda body: _prior_json("US", *NYC)) as server:
        r = CliRunner().invoke(
            main, _cli(vpr_env, tmp_path / "p.csv", server.url, "--min-submap-rows", "20", "--rerank-k", "8")
        )
        seen = [s for s in server.seen if s.body.get("max_tokens") != 1]  # not the LLM check's request
    assert r.exit_code == 0, r.output
    assert "6 ok" in r.output
    rows = _csv(tmp_path / "p.csv")
    assert len(rows) == 6 and all(x["strategy"] == "vpr-guided" and x["confidence"] == "1.000" for x in rows)
    assert len(seen) == 6 and all(s.body["n"] == 5 for s in seen)  # one prior request of 5 samples a photo
    records = [json.loads(x) for x in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert all(len(rec["evidence"]["candidates"]) == 8 for rec in records)
    # The default min-submap-rows (100) is more than the store's US rows: every photo falls back, and says so.
    with StandIn(mode="prior", prior_country="US") as server:
        r = CliRunner().invoke(main, _cli(vpr_env, tmp_path / "fb.csv", server.url))
    assert r.exit_code == 0 and "6 fell back to the global search" in r.output, r.output
    assert all(x["strategy"] == "vpr-guided>global" for x in _csv(tmp_path / "fb.csv"))


def test_the_hybrid_hands_the_reranked_candidates_to_the_rag_prompt(
    vpr_env: dict[str, Any], tmp_path: Path
) -> None:
    rag_answer = json.dumps({"latitude": 40.0, "longitude": -75.0})

    def script(body: dict[str, Any]) -> str:
        return _prior_json("US", *NYC) if _is_prior(body) else rag_answer

    with StandIn(script=script) as server:
        args = _cli(vpr_env, tmp_path / "h.csv", server.url, "--hybrid", "--min-submap-rows", "20")
        r = CliRunner().invoke(main, [*args, "--samples", "3"])
        prompts = [user_text(s.body) for s in server.seen if not _is_prior(s.body)]
    assert r.exit_code == 0, r.output
    rows = _csv(tmp_path / "h.csv")
    assert all(
        (x["strategy"], x["lat"], x["lon"]) == ("vpr-guided+rag", "40.000000", "-75.000000") for x in rows
    )
    from georag.llm.prompts import format_coordinates

    for rec in (json.loads(x) for x in (tmp_path / "h.jsonl").read_text().splitlines()):
        cands = rec["evidence"]["candidates"]
        shown = format_coordinates([c["lat"] for c in cands], [c["lon"] for c in cands])
        assert any(shown in p for p in prompts), "the similar set is the re-ranked candidates, in that order"
        assert len(rec["evidence"]["rag"]["answers"]) == 3 and "llm_s" in rec["evidence"]["timings"]

    # The RAG answers do not parse: the best re-ranked candidate stands, and the fallback says why.
    with StandIn(script=lambda b: _prior_json("US", *NYC) if _is_prior(b) else "no idea, sorry") as server:
        r = CliRunner().invoke(main, _cli(vpr_env, tmp_path / "h2.csv", server.url, "--hybrid",
                                          "--min-submap-rows", "20"))  # fmt: skip
    assert r.exit_code == 0, r.output
    for x, rec in zip(
        _csv(tmp_path / "h2.csv"),
        map(json.loads, (tmp_path / "h2.jsonl").read_text().splitlines()),
        strict=True,
    ):
        best = rec["evidence"]["candidates"][0]
        assert x["strategy"] == "vpr-guided" and "hybrid: none of the" in x["fallback"]
        assert (float(x["lat"]), float(x["lon"])) == pytest.approx((best["lat"], best["lon"]), abs=1e-6)


def test_the_cli_says_what_to_do_about_a_missing_partition_or_option(
    vpr_env: dict[str, Any], tmp_path: Path
) -> None:
    with StandIn() as server:
        r = CliRunner().invoke(main, _cli(vpr_env, tmp_path / "x.csv", server.url, "--submap-by", "nope"))
        assert r.exit_code != 0 and "no submap partition 'nope'" in r.output
        args = _cli(vpr_env, tmp_path / "x.csv", server.url, "--hybrid")
        args[args.index("vpr-guided")] = "rag"
        r = CliRunner().invoke(main, args)
        assert r.exit_code != 0 and "--hybrid is an option of --strategy vpr-guided" in r.output
    r = CliRunner().invoke(main, _cli(vpr_env, tmp_path / "x.csv", "none"))
    assert r.exit_code != 0 and "needs an LLM" in r.output


def test_georag_eval_sweep_runs_the_route(vpr_env: dict[str, Any], tmp_path: Path) -> None:
    from store_fixtures import IM2GPS3K_CSV

    photos = [str(p) for p in vpr_env["queries"]]
    with StandIn(mode="prior", prior_country="US") as server:
        r = CliRunner().invoke(
            main,
            ["eval", "sweep", *photos, "--store", str(vpr_env["store"]), "--encoder", str(vpr_env["tiny"]),
             "--truth", str(IM2GPS3K_CSV), "--llm", server.url, "--strategies", "knn,vpr-guided",
             "--k-near", "16", "--k-far", "16", "--samples", "3", "--bootstrap", "0",
             "--out", str(tmp_path / "sweep")],
        )  # fmt: skip
    assert r.exit_code == 0, r.output
    runs = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    assert [(x["strategy"], x["k_near"], x["k_far"]) for x in runs] == [("knn", 1, 0), ("vpr-guided", 16, 16)]
    rows = _csv(tmp_path / "sweep" / "vpr-guided_k16-16.csv")
    # The sweep keeps the route's defaults: 100 rows at least per submap, more than this store's US holds.
    assert len(rows) == 6 and all(x["strategy"] == "vpr-guided>global" and x["lat"] for x in rows)
    assert all("fewer than min_submap_rows 100" in x["fallback"] for x in rows)


def test_georag_serve_answers_vpr_guided_as_the_geolocator_does(vpr_env: dict[str, Any]) -> None:
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from georag.cli.options import config_from
    from georag.cli.serve_cmd import build_app
    from georag.llm.backends import open_llm_from
    from georag.locate.geolocator import Geolocator

    with StandIn(script=lambda body: _prior_json("US", *NYC)) as server:
        # As `georag serve --store STORE --llm URL --min-submap-rows 20 --rerank-k 8` builds it.
        options = {"store": vpr_env["store"], "llm": server.url, "min_submap_rows": 20, "rerank_k": 8}
        config = config_from(options, require=("store",))
        served = []
        with TestClient(build_app(config)) as client:
            info = client.get("/v1/info").json()
            for photo in vpr_env["queries"][:3]:
                r = client.post(f"/v1/locate?id={photo.name}&strategy=vpr-guided", content=photo.read_bytes())
                assert r.status_code == 200, r.text
                served.append(r.json())
        llm = open_llm_from(config.llm)
        try:
            local = config.with_values({"strategy.name": "vpr-guided"})
            geo = Geolocator(vpr_env["geostore"], vpr_env["encoder"], llm, local)
            preds = list(geo.locate(vpr_env["queries"][:3]))
        finally:
            assert llm is not None
            llm.close()
    assert (
        info["strategies"] == ["rag", "knn", "knn-medoid", "vpr-guided"] and info["default_strategy"] == "rag"
    )
    for out, pred in zip(served, preds, strict=True):
        assert (out["id"], out["strategy"], out["fallback"]) == (pred.id, "vpr-guided", None)
        assert (out["lat"], out["lon"], out["confidence"]) == (pred.lat, pred.lon, pred.confidence)
        theirs, ours = out["evidence"], pred.evidence
        for part in ("prior", "submap"):  # timings aside
            assert _untimed(theirs[part]) == _untimed(json.loads(json.dumps(ours[part]))), part
        assert [c["row"] for c in theirs["candidates"]] == [c["row"] for c in ours["candidates"]]
        assert len(theirs["candidates"]) == 8
        np.testing.assert_allclose(
            [c["score"] for c in theirs["candidates"]], [c["score"] for c in ours["candidates"]], atol=1e-5
        )


def _untimed(evidence: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in evidence.items() if not k.endswith(("_s", "_seconds"))}


def test_the_submap_search_is_exact_whatever_the_global_index(
    vpr_env: dict[str, Any], tmp_path: Path
) -> None:
    """With a faiss index as the global search, the prior's submap is still searched exactly: the same
    candidates as a numpy brute force over the submap's rows; the global search uses the named index."""
    from georag.config import Config
    from georag.llm.backends import open_llm
    from georag.locate.geolocator import Geolocator
    from georag.store.ann import build_ann
    from georag.store.store import GeoStore

    shutil.copytree(vpr_env["store"], tmp_path / "store")
    build_ann(GeoStore.open(tmp_path / "store"), "IVF4,Flat", name="ivf")
    store = GeoStore.open(tmp_path / "store", index="ivf")
    calls: list[Any] = []
    search = store.search

    def spy(*args: Any, **kw: Any) -> Any:
        calls.append(kw.get("index"))
        return search(*args, **kw)

    store.search = spy  # type: ignore[method-assign]
    config = Config().with_values(
        {"search.index": "ivf", "strategy.name": "vpr-guided", "strategy.vpr.min_submap_rows": 20}
    )
    script = lambda body: _prior_json("US", 40.7, -74.0) if _is_prior(body) else "{}"  # noqa: E731
    with StandIn(script=script) as server:
        llm = open_llm(server.url, retries=0)
        assert llm is not None
        try:
            preds = list(Geolocator(store, vpr_env["encoder"], llm, config).locate(vpr_env["queries"][:2]))
        finally:
            llm.close()
    assert "ivf" in calls and "exact" in calls and set(calls) <= {"ivf", "exact"}
    us = store.submaps("country").ranges("US")
    for pred in preds:
        assert pred.strategy == "vpr-guided", pred.fallback
        rows = [c["row"] for c in sorted(pred.evidence["candidates"], key=lambda c: c["visual_rank"])]
        ref, _ = _brute_force(vpr_env, pred.id, _rows_of(us), len(rows))
        assert rows == ref.tolist()


def test_locate_one_leaves_the_client_usable(vpr_env: dict[str, Any]) -> None:
    """One photo at a time, twice: the first run ends cleanly, so the client is not cancelled."""
    from georag.config import Config
    from georag.llm.backends import open_llm
    from georag.locate.geolocator import Geolocator

    answer = json.dumps({"latitude": 48.85, "longitude": 2.35})
    with StandIn(script=lambda body: answer) as server:
        llm = open_llm(server.url, retries=0)
        assert llm is not None
        try:
            geo = Geolocator(vpr_env["geostore"], vpr_env["encoder"], llm, Config())
            first, second = (geo.locate_one(p) for p in vpr_env["queries"][:2])
        finally:
            llm.close()
    assert (first.strategy, second.strategy) == ("rag", "rag")
    assert (second.lat, second.lon) == (48.85, 2.35) and second.fallback is None
