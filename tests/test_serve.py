"""Tests `georag serve` (georag.serving.http_app, georag.cli.serve_cmd): the pipeline over plain HTTP.

The app is built as the CLI builds it, for the tiny SigLIP and the store of shared IM2GPS3k photos of
`locate_env`, and called through FastAPI's TestClient; one test starts the real command on a free port
and talks HTTP to it. References are independent: the top-1 neighbor by a float64 numpy brute force
over the store's embeddings, the medoid of the stand-in LLM's answers by a haversine brute force here.
Errors must be clean (status, code, a message without paths) and bounded in time; limits must hold.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
pytest.importorskip("torch")

from fastapi.testclient import TestClient

from georag.cli.options import config_from
from georag.cli.serve_cmd import build_app, llm_family, with_family
from georag.config import Config, ServeConfig
from georag.serving.errors import BadRequest
from georag.serving.http_app import MULTIPART_ALLOWANCE
from georag.serving.params import RequestParams, parse_params
from georag.serving.pipeline import Pipeline
from openai_standin import StandIn
from serve_process import get, serve_process

LEAKS = re.compile(r"/work|/tmp|/home|Traceback|File \"|0x[0-9a-f]{4,}|127\.0\.0\.1|\.py\b")
BOUNDARY = "------------------------f1e6429ac0dbd139"
MULTIPART = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
"""A multipart body's boundary and header as curl -F sends them."""
PUBLIC = "known: id, strategy, samples, variants, seed, temperature"
PARIS = [(48.8566, 2.3522), (40.7128, -74.006), (48.8606, 2.3376), (51.5072, -0.1276), (48.853, 2.3499)]
"""Scripted LLM answers: three in Paris, New York and London as outliers."""


def serve_config(locate_env: dict[str, Any], **options: Any) -> Config:
    """The config of `georag serve --store STORE [options]` (options by parameter name: ``llm``,
    ``samples``, ``served_llm_timeout_s`` for --llm-timeout-s, ``max_requests``, ...)."""
    return config_from({"store": locate_env["store"], **options}, require=("store",))


@contextmanager
def serving(locate_env: dict[str, Any], family: str = "qwen2-vl", **options: Any) -> Iterator[TestClient]:
    """The app of `georag serve --store STORE [options]` (encoder: the store's), started and stopped."""
    app = build_app(serve_config(locate_env, **options), family=family)
    with TestClient(app) as client:
        yield client


def _photo(locate_env: dict[str, Any], i: int = 0) -> bytes:
    return Path(locate_env["queries"][i]).read_bytes()


def _multipart(*parts: tuple[str, bytes], end: bytes = b"--\r\n") -> bytes:
    """A multipart/form-data body byte for byte as curl -F sends it: per part its header lines and its
    content; ``end``: what follows the last boundary (``--\\r\\n``: the closing delimiter)."""
    out = b""
    for head, content in parts:
        out += b"--" + BOUNDARY.encode() + b"\r\n" + head.encode() + b"\r\n\r\n" + content + b"\r\n"
    return out + b"--" + BOUNDARY.encode() + end


def _file(content: bytes, name: str = "file", filename: str = "photo.jpg") -> tuple[str, bytes]:
    """A file part as curl -F name=@filename sends it."""
    head = f'Content-Disposition: form-data; name="{name}"; filename="{filename}"\r\nContent-Type: image/jpeg'
    return head, content


def _field(name: str, value: str | bytes) -> tuple[str, bytes]:
    """A field part as curl -F name=value sends it."""
    return f'Content-Disposition: form-data; name="{name}"', value if isinstance(
        value, bytes
    ) else value.encode()


_OPENING = _multipart(_file(b""))[: -len(BOUNDARY) - 8]
"""The start of a body as curl -F file=@photo.jpg sends it, up to the photo's first byte."""


def _untimed(response: Any) -> dict[str, Any]:
    """A 200's result without its timings (which differ from one run to the next)."""
    assert response.status_code == 200, response.text
    out = response.json()
    del out["evidence"]["timings"]
    return cast(dict[str, Any], out)


def _error(response: Any, status: int, code: str, words: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code and words in body["error"], body
    assert not LEAKS.search(body["error"]), body


def _top1_by_brute_force(locate_env: dict[str, Any], photo: Path) -> tuple[int, float, float, float]:
    """(row, lat, lon, margin over the runner-up) of the photo's most similar store row, float64."""
    from georag.encoder import load_encoder
    from georag.store.store import GeoStore

    query = load_encoder(locate_env["tiny"]).encode([photo]).embeddings[0].astype(np.float64)
    store = GeoStore.open(locate_env["store"])
    db = np.concatenate([np.asarray(s, dtype=np.float64) for s in store.embedding_shards()])
    scores = (db / np.linalg.norm(db, axis=1, keepdims=True)) @ (query / np.linalg.norm(query))
    first, second = np.argsort(-scores)[:2]
    return int(first), float(store.lat[first]), float(store.lon[first]), float(scores[first] - scores[second])


def _haversine_medoid(points: list[tuple[float, float]]) -> tuple[float, float]:
    p = np.radians(np.array(points))
    lat, lon = p[:, 0], p[:, 1]
    a = (
        np.sin((lat[:, None] - lat[None]) / 2) ** 2
        + np.cos(lat[:, None]) * np.cos(lat[None]) * np.sin((lon[:, None] - lon[None]) / 2) ** 2
    )
    return points[int(np.argmin(np.arcsin(np.sqrt(a)).sum(axis=1)))]


def _scripted(body: dict[str, Any]) -> list[str]:
    return [json.dumps({"latitude": a, "longitude": b}) for a, b in PARIS]


def test_knn_answers_the_top_neighbor_of_a_real_photo(locate_env: dict[str, Any]) -> None:
    with serving(locate_env) as client:
        checked = 0
        for i in range(4):
            row, lat, lon, margin = _top1_by_brute_force(locate_env, locate_env["queries"][i])
            if margin < 1e-4:
                continue  # a near-tie: float32 search may rank either first
            r = client.post(f"/v1/locate?id=q{i}.jpg", content=_photo(locate_env, i))
            assert r.status_code == 200, r.text
            out = r.json()
            assert (out["lat"], out["lon"]) == (lat, lon)
            assert (out["id"], out["strategy"], out["fallback"]) == (f"q{i}.jpg", "knn", None)
            assert out["evidence"]["neighbors"]["near"][0]["row"] == row
            assert len(out["evidence"]["neighbors"]["near"]) == 16
            medoid = client.post("/v1/locate?strategy=knn-medoid", content=_photo(locate_env, i))
            assert medoid.status_code == 200 and medoid.json()["strategy"] == "knn-medoid"
            checked += 1
    assert checked >= 2


def test_rag_answers_the_medoid_of_the_llm_answers(locate_env: dict[str, Any]) -> None:
    with StandIn(script=_scripted) as llm, serving(locate_env, llm=llm.url, samples=5) as client:
        assert client.get("/v1/info").json()["default_strategy"] == "rag"
        r = client.post("/v1/locate?id=p.jpg&seed=3", content=_photo(locate_env))
        seen = llm.seen
    assert r.status_code == 200, r.text
    out = r.json()
    assert (out["lat"], out["lon"]) == _haversine_medoid(PARIS)
    assert (out["lat"], out["lon"]) in PARIS[::2] and out["confidence"] == 0.6  # 3 of 5 agree on Paris
    assert out["strategy"] == "rag" and len(out["evidence"]["answers"]) == 5
    assert len(seen) == 1 and (seen[0].body["n"], seen[0].body["seed"]) == (5, 3)
    parts = seen[0].body["messages"][1]["content"]
    assert any(p.get("type") == "image_url" for p in parts), "the photo goes to the LLM"


def test_rag_without_an_llm_is_refused_clearly(locate_env: dict[str, Any]) -> None:
    with serving(locate_env) as client:
        info = client.get("/v1/info").json()
        r = client.post("/v1/locate?strategy=rag", content=_photo(locate_env))
    assert (info["default_strategy"], info["strategies"]) == ("knn", ["knn", "knn-medoid"])
    _error(r, 400, "INVALID_ARG", "strategy rag needs an LLM and this server has none")


def test_bad_images_are_400_without_internals(locate_env: dict[str, Any], tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not a photo")
    photo = _photo(locate_env)
    with serving(locate_env) as client:
        _error(
            client.post("/v1/locate", content=b"\x89PNG\r\n" + bytes(100)), 400, "INVALID_ARG", "bad image"
        )
        _error(client.post("/v1/locate", content=text.read_bytes()), 400, "INVALID_ARG", "bad image")
        _error(client.post("/v1/locate", content=photo[:200]), 400, "INVALID_ARG", "bad image")
        _error(client.post("/v1/locate", content=b""), 400, "INVALID_ARG", "the body is empty")
        assert client.post("/v1/locate", content=photo).status_code == 200, "the server goes on"


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ("samples=0", "samples must be an integer in [1, 16]"),
        ("samples=two", "samples must be an integer"),
        ("samples=1_0", "samples must be an integer"),
        ("samples=%2B5", "samples must be an integer"),  # +5
        ("samples=%205", "samples must be an integer"),  # " 5"
        ("samples=007", "samples must be an integer"),
        ("seed=0x10", "seed must be"),
        ("temperature=1e0", "temperature must be"),
        ("temperature=%2B1", "temperature must be"),
        ("temperature=0.5%20", "temperature must be"),
        ("seed=-1", "seed must be"),
        ("strategy=gps", "strategy must be one of"),
        ("temperature=9", "temperature must be"),
        ("temperature=nan", "temperature must be"),
        ("variants=rag:x", "prompt variant"),
        ("variants=rag:99:99", "more references than this server retrieves"),
        ("id=../../etc/passwd", "id must be"),
        ("bogus=1", "unknown query parameter 'bogus'"),
        ("id=a&id=b", "given more than once"),
        ("test_marker=[[stall]]", "only by model repositories generated for tests"),
    ],
)
def test_bad_parameters_are_400(locate_env: dict[str, Any], query: str, words: str) -> None:
    with serving(locate_env) as client:
        _error(client.post(f"/v1/locate?{query}", content=_photo(locate_env)), 400, "INVALID_ARG", words)


def test_query_numbers_as_json_writes_them_are_accepted(locate_env: dict[str, Any]) -> None:
    with serving(locate_env) as client:
        for query in ("samples=10&seed=0&temperature=0", "seed=2147483647&temperature=1.25", "samples=1"):
            assert client.post(f"/v1/locate?{query}", content=_photo(locate_env)).status_code == 200, query


def test_oversized_bodies_are_413(locate_env: dict[str, Any]) -> None:
    cap = 1 << 19
    photo = _photo(locate_env)
    assert len(photo) <= cap, "the test photo must fit under the cap"

    def chunks(total: int) -> Iterator[bytes]:
        for start in range(0, total, 4096):
            yield bytes(min(4096, total - start))

    with serving(locate_env, max_image_mb=0.5) as client:
        assert client.get("/v1/info").json()["max_image_bytes"] == cap
        _error(client.post("/v1/locate", content=bytes(cap + 1)), 413, "INVALID_ARG", "at most 0.5 MiB")
        _error(client.post("/v1/locate", content=chunks(cap + 1)), 413, "INVALID_ARG", "at most 0.5 MiB")
        _error(client.post("/v1/locate", content=bytes(cap)), 400, "INVALID_ARG", "bad image")  # just fits
        _error(client.post("/v1/locate", content=chunks(cap)), 400, "INVALID_ARG", "bad image")
        assert client.post("/v1/locate", content=chunks(len(photo))).status_code == 400  # zeros: no image
        assert client.post("/v1/locate", content=photo).status_code == 200


def test_multipart_uploads_answer_as_the_raw_body(locate_env: dict[str, Any]) -> None:
    photo = _photo(locate_env)
    with serving(locate_env) as client:
        raw = _untimed(client.post("/v1/locate?id=q.jpg", content=photo))
        medoid = _untimed(client.post("/v1/locate?id=q.jpg&strategy=knn-medoid", content=photo))
        assert (raw["strategy"], medoid["strategy"]) == ("knn", "knn-medoid")

        def post(query: str, body: bytes) -> dict[str, Any]:
            return _untimed(client.post(f"/v1/locate{query}", content=body, headers=MULTIPART))

        assert post("?id=q.jpg", _multipart(_file(photo))) == raw  # curl -F file=@photo.jpg
        assert post("?id=q.jpg", _multipart(_file(photo, name="photo"))) == raw, "the only file part"
        assert post("?id=q.jpg", _multipart(_field("file", photo))) == raw, "the part named file"
        assert post("?id=q.jpg", b"preamble\r\n" + _multipart(_file(photo)) + b"epilogue") == raw
        # Parameters in form fields, before or after the file, and with others in the query.
        assert post("", _multipart(_field("id", "q.jpg"), _file(photo))) == raw
        fields = _multipart(_field("id", "q.jpg"), _file(photo), _field("strategy", "knn-medoid"))
        assert post("", fields) == medoid
        assert post("?id=q.jpg", _multipart(_file(photo), _field("strategy", "knn-medoid"))) == medoid
        # httpx's own encoding (a boundary of its own, the fields first; requests' and browsers' are alike)
        r = client.post("/v1/locate", files={"file": ("q.jpg", photo, "image/jpeg")}, data={"id": "q.jpg"})
        assert _untimed(r) == raw
        _error(
            client.post("/v1/locate", content=_multipart(_file(photo[:200])), headers=MULTIPART),
            400, "INVALID_ARG", "bad image",
        )  # fmt: skip


def test_multipart_bodies_are_capped_while_they_are_read(locate_env: dict[str, Any]) -> None:
    cap = 1 << 19

    def post(body: Any) -> Any:
        return client.post("/v1/locate", content=body, headers=MULTIPART)

    with serving(locate_env, max_image_mb=0.5) as client:
        _error(post(_multipart(_file(bytes(cap + 1)))), 413, "INVALID_ARG", "at most 0.5 MiB")  # the file
        _error(post(_multipart(_file(bytes(cap)))), 400, "INVALID_ARG", "bad image")  # just fits
        fields = [_field(key, "1") for key in ("samples", "seed")]
        _error(post(_multipart(_file(bytes(cap)), *fields)), 400, "INVALID_ARG", "bad image")
        # The body past the image cap and the framing allowance: refused from its Content-Length...
        _error(post(bytes(cap + MULTIPART_ALLOWANCE + 1)), 413, "INVALID_ARG", "at most 0.5 MiB")

        def stream() -> Iterator[bytes]:  # ...or, sent chunked, once it passes them (before the body ends
            yield _OPENING  # there: test_the_cli_serves_over_http; TestClient reads it all first)
            for _ in range(64):  # 4 MiB
                yield bytes(64 << 10)

        _error(post(stream()), 413, "INVALID_ARG", "at most 0.5 MiB")
        assert post(_multipart(_file(_photo(locate_env)))).status_code == 200, "the server goes on"


_LONG_ID = "a" * 1025


@pytest.mark.parametrize(
    ("query", "content_type", "body", "words"),
    [
        ("", "multipart/form-data", _multipart(_file(b"x")), "needs a boundary"),
        ("", "multipart/form-data; boundary=", _multipart(_file(b"x")), "needs a boundary"),
        ("", None, b"no boundary at all", "malformed multipart body: its boundary is not in it"),
        ("", None, _multipart(_file(b"x"))[: -len(BOUNDARY) - 8], "does not end with its closing boundary"),
        ("", None, _multipart(_file(b"x"), end=b""), "does not end with its closing boundary"),
        ("", None, _multipart(_file(b"x")).replace(b"\r\nContent-Disposition", b" x\r\nContent-D", 1),
         "malformed multipart body: Did not find CR at end of boundary"),
        ("", None, _multipart(("Content-Type: image/jpeg", b"x")), "needs \"Content-Disposition: form-data"),
        ("", None, _multipart(('Content-Disposition: form-data; filename="a.jpg"', b"x")), "name=...\""),
        ("", None, _multipart(('Content-Disposition: attachment; name="file"', b"x")), "form-data; name"),
        ("", None, _multipart(('Content-Disposition form-data; name="file"', b"x")),
         "invalid character 32 in header"),
        ("", None, _multipart(_file(b"x")).replace(b"\r\n\r\nx", b"\r\nx"), "invalid character 13 in header"),
        ("", None, _multipart((_file(b"x")[0] + "\r\n" + _field("id", "")[0], b"x")),
         "two content-disposition headers"),
        ("", None, _multipart((_file(b"")[0] + "\r\nContent-Transfer-Encoding: base64", b"eA==")),
         "must not be transfer-encoded"),
        ("", None, _multipart(_field("id", "a")), "the multipart body has no file part"),
        ("", None, _multipart(_file(b"x"), _file(b"y", name="other")), "has 2 file parts"),
        ("", None, _multipart(_file(b"x", filename="a.jpg"), _field("file", b"y")), "has 2 file parts"),
        ("", None, _multipart(_file(b"")), "the file part is empty"),
        ("", None, _multipart(_file(b"x"), _field("bogus", "1")), f"unknown form field 'bogus'; {PUBLIC}"),
        ("", None, _multipart(_file(b"x"), _field("id", "a"), _field("id", "b")), "given more than once"),
        ("", None, _multipart(_file(b"x"), _field("samples", "0")), "samples must be an integer in [1, 16]"),
        ("", None, _multipart(_file(b"x"), _field("strategy", "gps")), "strategy must be one of"),
        ("", None, _multipart(_file(b"x"), _field("id", b"\xff")), "form field 'id' is not UTF-8 text"),
        ("", None, _multipart(_file(b"x"), _field("id", _LONG_ID)), "longer than 1024 bytes"),
        ("", None, _multipart(_file(b"x"), *[_field("id", "a")] * 16), "at most 16 parts"),
        ("?seed=1", None, _multipart(_file(b"x"), _field("seed", "2")),
         "parameter 'seed' is given both in the query and in the form"),
        ("?samples=0", None, _multipart(_file(b"x")), "samples must be"),  # the query still checked first
        ("?bogus=1", None, _multipart(_file(b"x")), "unknown query parameter 'bogus'"),
        ("", None, b"", "the body is empty"),
    ],
)  # fmt: skip
def test_bad_multipart_bodies_are_400(query: str, content_type: str | None, body: bytes, words: str) -> None:
    from georag.serving.http_app import create_app

    headers = {"Content-Type": content_type} if content_type else MULTIPART
    with TestClient(create_app(_Holding(0.0))) as c:
        _error(c.post(f"/v1/locate{query}", content=body, headers=headers), 400, "INVALID_ARG", words)
        # The parts are read as given: the one file part is the image, the fields its parameters.
        r = c.post(
            "/v1/locate?strategy=knn", content=_multipart(_field("id", "f"), _file(b"x")), headers=MULTIPART
        )
        assert r.status_code == 200 and r.json() == {"id": "f"}


def test_test_marker_is_named_only_by_servers_allowing_it() -> None:
    from georag.serving.http_app import create_app

    form = _multipart(_file(b"x"), _field("bogus", "1"))
    with TestClient(create_app(_Holding(0.0))) as c:
        for r in (
            c.post("/v1/locate?bogus=1", content=b"photo"),
            c.post("/v1/locate", content=form, headers=MULTIPART),
        ):
            _error(r, 400, "INVALID_ARG", PUBLIC)
            assert "test_marker" not in r.text
        r = c.post("/v1/locate?strategy=knn&test_marker=[[stall]]", content=b"photo")
        _error(
            r, 400, "INVALID_ARG", "test_marker is accepted only by model repositories generated for tests"
        )
    with TestClient(create_app(_Holding(0.0, allow_test_markers=True))) as c:
        _error(c.post("/v1/locate?bogus=1", content=b"photo"), 400, "INVALID_ARG", f"{PUBLIC}, test_marker")
        r = c.post("/v1/locate?strategy=knn&test_marker=[[stall]]&id=m", content=b"photo")
        assert r.status_code == 200 and r.json() == {"id": "m"}
        multipart = _multipart(_file(b"x"), _field("test_marker", "[[stall]]"), _field("id", "m"))
        assert c.post("/v1/locate?strategy=knn", content=multipart, headers=MULTIPART).json() == {"id": "m"}
    # The Triton model's check (parse_params) names the same keys.
    for allowed, listed in ((False, PUBLIC), (True, f"{PUBLIC}, test_marker")):
        with pytest.raises(BadRequest, match=re.escape(listed) + "$"):
            parse_params('{"bogus": 1}', allow_test_markers=allowed)


def test_a_stalled_llm_ends_the_request_in_bounded_time(locate_env: dict[str, Any]) -> None:
    with (
        StandIn(mode="stall", stall_s=20) as llm,
        serving(locate_env, llm=llm.url, served_llm_timeout_s=0.5) as client,
    ):
        start = time.monotonic()
        r = client.post("/v1/locate", content=_photo(locate_env))
        took = time.monotonic() - start
        _error(r, 504, "UNAVAILABLE", "the LLM step did not answer within 0.5 s")
        assert took < 5.0
        assert client.post("/v1/locate?strategy=knn", content=_photo(locate_env)).status_code == 200
    with StandIn(mode="stall", stall_s=20) as llm, serving(locate_env, llm=llm.url, deadline_s=1.0) as client:
        start = time.monotonic()
        r = client.post("/v1/locate", content=_photo(locate_env))
        _error(r, 504, "UNAVAILABLE", "ran past its 1 s deadline in the LLM step")
        assert time.monotonic() - start < 5.0


def test_an_llm_error_is_502(locate_env: dict[str, Any]) -> None:
    with StandIn(mode="bad_request") as llm, serving(locate_env, llm=llm.url) as client:
        _error(client.post("/v1/locate", content=_photo(locate_env)), 502, "INTERNAL", "the LLM step failed")


def test_a_timed_out_llm_call_is_sent_once_and_frees_its_thread(locate_env: dict[str, Any]) -> None:
    # The client of georag gets the 504 and may retry; the server must not retry behind its back, holding
    # the LLM thread (and the LLM) for a request already answered.
    with (
        StandIn(mode="stall", stall_s=20) as llm,
        serving(locate_env, llm=llm.url, served_llm_timeout_s=0.5, max_requests=1) as client,
    ):
        _error(client.post("/v1/locate", content=_photo(locate_env)), 504, "UNAVAILABLE", "did not answer")
        time.sleep(1.5)  # past the timeout and any retry's backoff
        assert len(llm.seen) == 1, "one client request, one LLM request"
        _error(client.post("/v1/locate", content=_photo(locate_env)), 504, "UNAVAILABLE", "did not answer")
        assert len(llm.seen) == 2, "the next request reaches the LLM"


def test_the_variants_of_one_request_are_sent_at_once(locate_env: dict[str, Any]) -> None:
    # max_requests 1: still every variant of the running request goes to the LLM at once (0.4 s each
    # one after the other would pass the 1 s timeout).
    with (
        StandIn(script=_scripted, delay_s=0.4) as llm,
        serving(locate_env, llm=llm.url, served_llm_timeout_s=1.0, max_requests=1) as client,
    ):
        for variants in ("zero,rag:5:5", "zero,rag:5:5,rag:10:10,rag:16:16"):
            r = client.post(f"/v1/locate?variants={variants}", content=_photo(locate_env))
            assert r.status_code == 200, r.text
        assert len(llm.seen) == 6 and llm.peak_in_flight == 4


def test_an_unreachable_llm_is_502_without_its_name(locate_env: dict[str, Any]) -> None:
    url = "openai://gpu-node-7.invalid:9/v1?model=secret-model"
    with serving(locate_env, llm=url, served_llm_timeout_s=5.0) as client:
        r = client.post("/v1/locate", content=_photo(locate_env))
        info = client.get("/v1/info").text
    _error(r, 502, "INTERNAL", "the LLM step failed")
    for name in ("gpu-node-7", "invalid", "secret-model"):
        assert name not in r.text and name not in info, name


def _post_in_thread(client: TestClient, query: str, photo: bytes) -> tuple[threading.Thread, list[Any]]:
    got: list[Any] = []
    thread = threading.Thread(target=lambda: got.append(client.post(f"/v1/locate?{query}", content=photo)))
    thread.start()
    return thread, got


def _wait_for(condition: Any, timeout_s: float = 10.0) -> None:
    end = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < end, "timed out waiting"
        time.sleep(0.01)


def test_a_full_server_refuses_at_once_and_a_queued_request_waits(locate_env: dict[str, Any]) -> None:
    photo = _photo(locate_env)
    options = {"max_requests": 1, "served_llm_timeout_s": 1.5}
    with (
        StandIn(mode="stall", stall_s=20) as llm,
        serving(locate_env, llm=llm.url, max_queue=0, **options) as c,
    ):
        first, got = _post_in_thread(c, "id=first", photo)
        _wait_for(lambda: len(llm.seen) == 1)  # the first request holds the only slot, waiting for the LLM
        start = time.monotonic()
        busy = c.post("/v1/locate?strategy=knn", content=photo)
        assert time.monotonic() - start < 1.0
        _error(busy, 503, "UNAVAILABLE", "the server is busy: it already holds 1 of at most 1 requests")
        assert busy.headers["retry-after"] == "1"
        read: list[int] = []

        def large() -> Iterator[bytes]:  # 8 MiB, under the cap
            for _ in range(128):
                read.append(1)
                yield bytes(64 << 10)

        _error(c.post("/v1/locate?strategy=knn", content=large()), 503, "UNAVAILABLE", "the server is busy")
        multipart = c.post("/v1/locate?strategy=knn", content=large(), headers=MULTIPART)
        _error(multipart, 503, "UNAVAILABLE", "the server is busy")
        assert not read, "a full server refuses before reading the body, multipart too"
        first.join(10.0)
        _error(got[0], 504, "UNAVAILABLE", "the LLM step did not answer")
        assert c.post("/v1/locate?strategy=knn", content=photo).status_code == 200, "the slot is free again"
    with (
        StandIn(mode="stall", stall_s=20) as llm,
        serving(locate_env, llm=llm.url, max_queue=1, **options) as c,
    ):
        first, got = _post_in_thread(c, "id=first", photo)
        _wait_for(lambda: len(llm.seen) == 1)
        second, got_second = _post_in_thread(c, "strategy=knn", photo)  # waits for the slot
        time.sleep(0.3)
        assert not got_second, "the second request waits while the first holds the slot"
        _error(c.post("/v1/locate?strategy=knn", content=photo), 503, "UNAVAILABLE", "holds 2 of at most 2")
        first.join(10.0)
        second.join(10.0)
        assert got[0].status_code == 504 and got_second[0].status_code == 200


class _Holding(Pipeline):
    """A pipeline answering ``{"id": ...}`` after ``hold_s`` whatever its deadline (0.5 s), so that the
    first request holds its slot past the deadline of those waiting for it."""

    def __init__(self, hold_s: float, **limits: Any) -> None:
        config = Config(serve=ServeConfig(deadline_s=0.5, **limits))
        super().__init__(config, cast(Any, None), cast(Any, None))
        self.hold_s = hold_s
        self.started = 0

    async def run(
        self, image: bytes, params: RequestParams, *, arrived: float | None = None
    ) -> dict[str, Any]:
        self.started += 1
        await asyncio.sleep(self.hold_s)
        return {"id": params.id}


def test_a_request_waiting_past_its_deadline_is_503() -> None:
    from georag.serving.http_app import create_app

    pipeline = _Holding(1.5, max_requests=1, max_queue=1)
    with TestClient(create_app(pipeline)) as c:
        first, got = _post_in_thread(c, "id=first&strategy=knn", b"photo")
        _wait_for(lambda: pipeline.started == 1)
        start = time.monotonic()
        late = c.post("/v1/locate?strategy=knn", content=b"photo")
        assert time.monotonic() - start < 1.2
        _error(late, 503, "UNAVAILABLE", "could not start within its deadline")
        first.join(10.0)
        assert got[0].status_code == 200 and got[0].json() == {"id": "first"}
        assert pipeline.started == 1


@contextmanager
def _uvicorn(app: Any) -> Iterator[int]:
    """Serves ``app`` with uvicorn on a free port, in a thread; yields the port."""
    import uvicorn

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        _wait_for(lambda: server.started)
        yield port
    finally:
        server.should_exit = True
        thread.join(10.0)


def test_slow_uploads_are_408_and_a_full_server_reads_no_body() -> None:
    from georag.serving.http_app import create_app

    pipeline = _Holding(3.0, max_requests=1, max_queue=0)
    with _uvicorn(create_app(pipeline)) as port:
        for headers in ({}, MULTIPART):  # a body trickling in past the 0.5 s deadline, raw or multipart
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10.0)
            try:
                start = time.monotonic()
                conn.putrequest("POST", "/v1/locate?strategy=knn")
                conn.putheader("Content-Length", str(100 << 10))
                for name, value in headers.items():
                    conn.putheader(name, value)
                conn.endheaders()
                conn.send(_OPENING if headers else b"")
                for _ in range(3):
                    conn.send(bytes(1024))
                    time.sleep(0.15)
                answer = conn.getresponse()
                body = json.loads(answer.read())
                assert time.monotonic() - start < 3.0 and pipeline.started == 0
            finally:
                conn.close()
            assert answer.status == 408 and body["code"] == "INVALID_ARG", headers
            assert "did not arrive within the request's deadline" in body["error"]
        # The slot held (for 3 s): the next request is refused from its headers, its 10 MiB never sent.
        holder = threading.Thread(target=_raw_post, args=(port, {"Content-Length": "5"}, b"photo"))
        holder.start()
        _wait_for(lambda: pipeline.started == 1)
        start = time.monotonic()
        status, body = _raw_post(port, {"Content-Length": str(10 << 20)}, b"")
        assert time.monotonic() - start < 1.0
        assert (status, body["code"]) == (503, "UNAVAILABLE") and "the server is busy" in body["error"]
        holder.join(10.0)


def test_a_client_hanging_up_mid_upload_is_no_failure(caplog: pytest.LogCaptureFixture) -> None:
    from georag.serving.http_app import create_app

    app = create_app(_Holding(0.0))
    incoming: list[dict[str, Any]] = [
        {"type": "http.request", "body": bytes(100), "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/v1/locate", "raw_path": b"/v1/locate", "query_string": b"strategy=knn",
        "root_path": "", "headers": [(b"host", b"testserver")], "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }  # fmt: skip
    with caplog.at_level(logging.INFO, logger="georag"), TestClient(app) as client:
        assert client.portal is not None
        client.portal.call(app, scope, receive, send)
    assert sent[0]["status"] == 400
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info], caplog.text
    assert any("disconnected" in r.getMessage() for r in caplog.records), caplog.text


def test_health_info_and_shutdown(locate_env: dict[str, Any]) -> None:
    from georag.serving.http_app import create_app

    closed: list[bool] = []
    pipeline = _pipeline(locate_env)

    def close() -> None:
        closed.append(True)
        pipeline.steps.close()

    app = create_app(pipeline, on_close=close)
    with TestClient(app) as client:
        assert client.get("/health/live").status_code == 200
        assert client.get("/health/ready").status_code == 200
        info = client.get("/v1/info")
        assert not closed
    assert closed == [True], "on_close runs at shutdown"
    after = TestClient(app)  # no lifespan: not started, so not ready
    assert after.get("/health/live").status_code == 200
    _error(after.get("/health/ready"), 503, "UNAVAILABLE", "not ready")
    _error(after.post("/v1/locate", content=b"x"), 503, "UNAVAILABLE", "not ready")
    facts = info.json()
    assert {k: facts[k] for k in ("llm", "family", "k_near", "k_far", "variants", "deadline_s")} == {
        "llm": False, "family": None, "k_near": 16, "k_far": 16, "variants": ["rag:16:16"],
        "deadline_s": 120.0,
    }  # fmt: skip
    assert facts["max_image_bytes"] == 20 << 20 and facts["sampling"]["n"] == 5
    assert not LEAKS.search(info.text) and str(locate_env["store"]) not in info.text
    _error(TestClient(app).get("/v2/nothing"), 404, "INVALID_ARG", "Not Found")
    wrong = TestClient(app).get("/v1/locate")
    _error(wrong, 405, "INVALID_ARG", "Method Not Allowed")
    assert wrong.headers["allow"] == "POST", "the headers of starlette's errors are kept"


def test_info_reports_the_chat_format_in_effect(locate_env: dict[str, Any]) -> None:
    triton = "triton://127.0.0.1:9/llm?protocol=http"  # not contacted before a request
    for llm, family in (
        (f"{triton}&family=internvl2", "internvl2"),  # the URL's, not --family
        (triton, "qwen2.5-vl"),  # --family
        ("openai://127.0.0.1:9/v1?model=m", None),  # the server applies its own
        (None, None),
    ):
        with serving(locate_env, llm=llm, family="qwen2.5-vl") as client:
            info = client.get("/v1/info").json()
        assert (info["llm"], info["family"]) == (llm is not None, family), llm
        assert llm_family(llm, "qwen2.5-vl") == family


def test_info_says_when_there_is_no_llm(locate_env: dict[str, Any]) -> None:
    from georag.serving.http_app import create_app

    pipeline = _pipeline(locate_env)  # no LLM, though the caller names a chat format
    with TestClient(create_app(pipeline, on_close=pipeline.steps.close, family="qwen2-vl")) as client:
        info = client.get("/v1/info").json()
    assert (info["llm"], info["family"]) == (False, None)
    assert (info["strategies"], info["default_strategy"]) == (["knn", "knn-medoid"], "knn")
    with StandIn() as llm, serving(locate_env, llm=llm.url) as client:
        info = client.get("/v1/info").json()
    assert info["llm"] is True and info["strategies"] == ["rag", "knn", "knn-medoid"]


def _pipeline(locate_env: dict[str, Any]) -> Any:
    from georag.encoder import load_encoder
    from georag.serving.local_steps import LocalSteps
    from georag.store.store import GeoStore

    enc = load_encoder(locate_env["tiny"])
    steps = LocalSteps(enc.backend, GeoStore.open(locate_env["store"]), None)
    return Pipeline(Config(), enc.spec, steps, has_llm=False)


def test_cli_refuses_another_encoder_and_adds_the_family(locate_env: dict[str, Any], tmp_path: Path) -> None:
    from click.testing import CliRunner

    from encoder_fixtures import make_tiny_siglip
    from georag.cli import main

    other = make_tiny_siglip(tmp_path / "other", seed=3)
    r = CliRunner().invoke(main, ["serve", "--store", str(locate_env["store"]), "--encoder", str(other)])
    assert r.exit_code != 0 and "use the store's encoder" in r.output
    assert with_family("triton://h:8001/m", "internvl2") == "triton://h:8001/m?family=internvl2"
    assert (
        with_family("triton://h:8001/m?family=qwen2-vl", "internvl2") == "triton://h:8001/m?family=qwen2-vl"
    )
    assert with_family("openai://h:1/v1?model=x", "internvl2") == "openai://h:1/v1?model=x"


def test_the_encoder_check_is_shared(locate_env: dict[str, Any]) -> None:
    from georag.errors import GeoRagError
    from georag.store.store import GeoStore, check_encoder

    store = GeoStore.open(locate_env["store"])
    check_encoder(store, store.encoder, store.dim)
    with pytest.raises(
        GeoRagError, match=r"\(d=\d+\) but the encoder is 'other' \(d=7\); use the store's encoder"
    ):
        check_encoder(store, "other", 7)


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--temperature", "nan"),
        ("--temperature", "inf"),
        ("--max-image-mb", "inf"),
        ("--max-image-mb", "nan"),
        ("--llm-timeout-s", "nan"),
        ("--llm-timeout-s", "inf"),
        ("--deadline-s", "inf"),
        ("--deadline-s", "nan"),
    ],
)
def test_cli_refuses_non_finite_numbers(
    locate_env: dict[str, Any], option: str, value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uvicorn
    from click.testing import CliRunner

    from georag.cli import main

    def run(*args: Any, **kw: Any) -> None:
        raise AssertionError(f"{option} {value} was accepted: the server would start")

    monkeypatch.setattr(uvicorn, "run", run)
    r = CliRunner().invoke(main, ["serve", "--store", str(locate_env["store"]), option, value])
    assert r.exit_code == 2 and f"Invalid value for '{option}'" in r.output, r.output


def test_one_message_says_fastapi_is_missing(
    locate_env: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from georag.cli import main
    from georag.errors import MissingDependencyError
    from georag.serving.http_app import create_app

    words = "georag serve needs FastAPI and uvicorn: pip install fastapi uvicorn"
    pipeline = _Holding(0.0)
    monkeypatch.setitem(sys.modules, "uvicorn", None)
    r = CliRunner().invoke(main, ["serve", "--store", str(locate_env["store"])])
    assert r.exit_code == 1 and words in r.output, r.output
    fastapi = sys.modules["fastapi"]
    monkeypatch.setitem(sys.modules, "fastapi", None)
    config = Config(store=str(locate_env["store"]))
    for make in (lambda: build_app(config), lambda: create_app(pipeline)):
        with pytest.raises(MissingDependencyError, match=re.escape(words)):
            make()
    # Without python-multipart (either module name), the app is not made: it reads form uploads.
    monkeypatch.setitem(sys.modules, "fastapi", fastapi)
    for name in [name for name in sys.modules if name.split(".")[0] in ("python_multipart", "multipart")]:
        monkeypatch.setitem(sys.modules, name, None)  # its submodules too: imported, they would be found
    for name in ("python_multipart", "multipart"):
        monkeypatch.setitem(sys.modules, name, None)
    words = "needs python-multipart for form uploads: pip install fastapi uvicorn python-multipart"
    for make in (lambda: build_app(config), lambda: create_app(pipeline)):
        with pytest.raises(MissingDependencyError, match=re.escape(words)):
            make()
    # Importing the app's module needs neither FastAPI nor python-multipart (both are imported lazily).
    blocked = "import sys; sys.modules.update(fastapi=None, python_multipart=None, multipart=None)"
    code = f"{blocked}; import georag.serving.http_app, georag.serving.forms"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


# The real command, on a free port.


def _free_port() -> int:
    from triton_server import free_ports

    return free_ports(1)[0]


def _raw_post(port: int, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
    """POSTs with exactly these headers and body bytes (no terminating chunk is added); the answer."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10.0)
    try:
        conn.putrequest("POST", "/v1/locate", skip_accept_encoding=True)
        for name, value in headers.items():
            conn.putheader(name, value)
        conn.endheaders()
        conn.send(body)
        answer = conn.getresponse()
        return answer.status, json.loads(answer.read())
    finally:
        conn.close()


def test_the_cli_serves_over_http(locate_env: dict[str, Any], tmp_path: Path) -> None:
    args = ["--store", str(locate_env["store"]), "--max-image-mb", "1"]
    log = tmp_path / "serve.log"
    with serve_process(args, log, cli_options=("-v",)) as served:
        port, base = served.port, served.base
        assert get(f"{base}/health/live") == 200
        _, lat, lon, margin = _top1_by_brute_force(locate_env, locate_env["queries"][0])
        request = urllib.request.Request(f"{base}/v1/locate?id=q.jpg", data=_photo(locate_env), method="POST")
        with urllib.request.urlopen(request, timeout=30.0) as answer:
            out = json.loads(answer.read())
        assert out["strategy"] == "knn" and out["id"] == "q.jpg"
        if margin >= 1e-4:
            assert (out["lat"], out["lon"]) == (lat, lon)
        if shutil.which("curl"):  # the README's example, as curl sends it
            photo = str(locate_env["queries"][0])
            sent = subprocess.run(
                ["curl", "-sS", "-m", "30", "-F", f"file=@{photo}", "-F", "id=q.jpg", f"{base}/v1/locate"],
                capture_output=True, check=True, timeout=60,
            )  # fmt: skip
            by_curl = json.loads(sent.stdout)
            for result in (by_curl, out):
                del result["evidence"]["timings"]
            assert by_curl == out
        # Refused from the Content-Length alone: the 2 MiB it announces are never sent.
        status, body = _raw_post(port, {"Content-Length": str(2 << 20)}, b"")
        assert (status, body["code"]) == (413, "INVALID_ARG") and "at most 1.0 MiB" in body["error"]
        # Chunked: refused once the chunks pass the cap, though the body has not ended.
        chunk = bytes(64 << 10)
        stream = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(17))
        status, body = _raw_post(port, {"Transfer-Encoding": "chunked"}, stream)
        assert (status, body["code"]) == (413, "INVALID_ARG")
        # Multipart: past the cap and the framing allowance, announced or streamed (its 17 chunks of
        # 64 KiB pass 1 MiB + 16 KiB; no terminating chunk is sent).
        status, body = _raw_post(port, {"Content-Length": str(2 << 20), **MULTIPART}, b"")
        assert (status, body["code"]) == (413, "INVALID_ARG") and "at most 1.0 MiB" in body["error"]
        head = b"%x\r\n%s\r\n" % (len(_OPENING), _OPENING)
        status, body = _raw_post(port, {"Transfer-Encoding": "chunked", **MULTIPART}, head + stream)
        assert (status, body["code"]) == (413, "INVALID_ARG") and "at most 1.0 MiB" in body["error"]
        assert get(f"{base}/health/ready") == 200, "the server goes on"
    text = log.read_text()
    assert served.returncode in (0, -signal.SIGTERM), text[-3000:]  # uvicorn re-raises the signal it got
    assert "georag serve: stopped" in text, "the lifespan shutdown ran (on_close)"


def test_vpr_guided_is_served_only_over_a_store_with_the_partition(locate_env: dict[str, Any]) -> None:
    from georag.errors import ConfigError

    with StandIn() as llm, serving(locate_env, llm=llm.url) as client:
        assert client.get("/v1/info").json()["strategies"] == ["rag", "knn", "knn-medoid"]
        r = client.post("/v1/locate?strategy=vpr-guided", content=_photo(locate_env))
        _error(r, 400, "INVALID_ARG", "strategy vpr-guided is not served here")
    with pytest.raises(ConfigError, match=r"--strategy vpr-guided cannot be served: .*no submap"):
        build_app(serve_config(locate_env, llm="openai://127.0.0.1:9/v1?model=m", strategy="vpr-guided"))
    with pytest.raises(ConfigError, match="--strategy rag needs an LLM"):
        build_app(serve_config(locate_env, strategy="rag"))
    with pytest.raises(ConfigError, match=r"\(--samples\) is 17: a served request asks for 16 answers"):
        build_app(serve_config(locate_env, samples=17))
