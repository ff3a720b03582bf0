"""`georag serve`'s access controls: an optional API key (health probes open), the docs routes off by
default, a store checked in the background before requests are served, and TLS with a certificate the test
makes (openssl). Everything on 127.0.0.1."""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("torch")
from fastapi.testclient import TestClient

from georag.cli.serve_cmd import build_app
from georag.serving.auth import authorized
from serve_process import serve_process
from test_serve import _photo, serve_config

KEY = "k" * 24


def _client(locate_env: dict[str, Any], **kw: Any) -> TestClient:
    return TestClient(build_app(serve_config(locate_env), **kw))


def test_an_api_key_guards_every_route_but_the_probes(locate_env: dict[str, Any]) -> None:
    with _client(locate_env, api_key=KEY) as client:
        photo = _photo(locate_env)
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {KEY}"}):
            answer = client.post("/v1/locate", content=photo, headers=headers)
            assert answer.status_code == 401 and answer.json() == {
                "error": "unauthorized",
                "code": "UNAUTHENTICATED",
            }
            assert client.get("/v1/info", headers=headers).status_code == 401
            assert client.get("/", headers=headers).status_code == 401
        assert client.get("/health/live").status_code == 200
        assert client.get("/health/ready").status_code == 200
        ok = client.post("/v1/locate?id=a.jpg", content=photo, headers={"Authorization": f"Bearer {KEY}"})
        assert ok.status_code == 200 and ok.json()["id"] == "a.jpg"
    assert authorized(f"bearer {KEY}", KEY.encode()) and not authorized(None, KEY.encode())


def test_the_docs_routes_are_off_unless_asked_for(locate_env: dict[str, Any]) -> None:
    with _client(locate_env) as client:
        for route in ("/docs", "/redoc", "/openapi.json"):
            assert client.get(route).status_code == 404
    with _client(locate_env, docs=True) as client:
        assert client.get("/openapi.json").status_code == 200


def test_a_background_store_check_holds_requests_until_it_passes(locate_env: dict[str, Any]) -> None:
    with _client(locate_env, store_check="background") as client:
        end = time.monotonic() + 60
        while client.get("/health/ready").status_code != 200:
            answer = client.get("/health/ready").json()
            assert "store check" in answer["error"] or "not ready" in answer["error"]
            assert time.monotonic() < end, "the background check never passed"
            time.sleep(0.05)
        assert client.post("/v1/locate", content=_photo(locate_env)).status_code == 200


@contextmanager
def _cli_server(
    locate_env: dict[str, Any],
    tmp_path: Path,
    *args: str,
    env: dict[str, str] | None = None,
    context: ssl.SSLContext | None = None,
) -> Iterator[int]:
    """`georag serve --store STORE ARGS` in a process of its own, ready; yields its port, stopped after."""
    with serve_process(
        ["--store", str(locate_env["store"]), *args], tmp_path / "serve.log", env=env, context=context
    ) as served:
        yield served.port


def test_tls_with_a_certificate_made_here(locate_env: dict[str, Any], tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("no openssl to make a certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    env = {**os.environ, "GEORAG_API_KEY": KEY}
    trusted = ssl.create_default_context(cafile=str(cert))
    tls = ("--ssl-certfile", str(cert), "--ssl-keyfile", str(key))
    with _cli_server(locate_env, tmp_path, *tls, env=env, context=trusted) as port:
        request = urllib.request.Request(
            f"https://127.0.0.1:{port}/v1/locate?id=t.jpg", data=_photo(locate_env), method="POST",
            headers={"Authorization": f"Bearer {KEY}"},
        )  # fmt: skip
        with urllib.request.urlopen(request, context=trusted, timeout=30) as answer:
            assert json.loads(answer.read())["id"] == "t.jpg"
        with pytest.raises(urllib.error.HTTPError) as refused:  # the key from GEORAG_API_KEY is required
            urllib.request.urlopen(f"https://127.0.0.1:{port}/v1/info", context=trusted, timeout=10)
        refused.value.close()
        assert refused.value.code == 401
        with pytest.raises((urllib.error.URLError, ConnectionError)):  # plain HTTP is not served
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health/live", timeout=5)


@pytest.mark.parametrize(
    "length_headers",
    [b"Content-Length: abc\r\n", b"Content-Length: -3\r\n", b"Content-Length: 5\r\nContent-Length: 7\r\n"],
    ids=["not-a-number", "negative", "two-values"],
)
def test_a_bad_content_length_gets_400_not_a_reset(
    locate_env: dict[str, Any], tmp_path: Path, length_headers: bytes
) -> None:
    import socket

    with (
        _cli_server(locate_env, tmp_path) as port,
        socket.create_connection(("127.0.0.1", port), timeout=10) as conn,
    ):
        conn.sendall(b"POST /v1/locate HTTP/1.1\r\nHost: x\r\n" + length_headers + b"\r\nhello")
        assert conn.recv(64).startswith(b"HTTP/1.1 400 ")
