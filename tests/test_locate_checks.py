"""The LLM check before a run, the failure budget during it, and photo ids from paths."""

from __future__ import annotations

import csv
import json
import shutil
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from georag.cli import main
from georag.errors import InputError, LLMError
from georag.llm.backends import LLMCheckError, check_llm
from georag.llm.openai_client import OpenAIClient
from georag.llm.retry import RetryPolicy
from georag.llm.triton_client import TritonClient
from georag.locate.geolocator import photo_ids
from openai_standin import StandIn, answer

NO_RETRIES = RetryPolicy(retries=0)


def _unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Listing:
    """A server answering GETs from a path -> (status, JSON) table (404 otherwise); records the paths."""

    def __init__(self, routes: dict[str, tuple[int, Any]]) -> None:
        self.routes = routes
        self.paths: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                outer.paths.append(self.path)
                status, doc = outer.routes.get(self.path, (404, {"error": "no route"}))
                payload = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> _Listing:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def listing() -> Iterator[_Listing]:
    models = {"object": "list", "data": [{"id": "served-vl", "object": "model"}, {"id": "other"}]}
    with _Listing(
        {
            "/v1/models": (200, models),
            "/v2/models/ready-vl/ready": (200, {}),
            "/v2/models/loading-vl/ready": (400, {"error": "model not ready"}),
        }
    ) as server:
        yield server


# -- the clients' check --


def test_openai_check_lists_the_models(listing: _Listing) -> None:
    base = f"openai://127.0.0.1:{listing.port}/v1?model="
    with OpenAIClient.from_url(base + "served-vl", policy=NO_RETRIES) as client:
        client.check()
    with (
        OpenAIClient.from_url(base + "typo-vl", policy=NO_RETRIES) as client,
        pytest.raises(LLMError, match=r"does not serve model 'typo-vl'; it serves 'other', 'served-vl'"),
    ):
        client.check()
    assert listing.paths == ["/v1/models", "/v1/models"]


def test_openai_check_falls_back_to_a_one_token_request_where_listing_is_refused() -> None:
    with StandIn() as server:  # answers no GET
        with OpenAIClient.from_url(server.url, policy=NO_RETRIES) as client:
            client.check()
        (probe,) = server.seen
        assert probe.body["max_tokens"] == 1 and probe.body["model"] == server.model
        server.mode = "bad_request"
        with (
            OpenAIClient.from_url(server.url, policy=NO_RETRIES) as client,
            pytest.raises(LLMError, match="HTTP 400"),
        ):
            client.check()


def test_openai_check_of_a_server_that_is_down() -> None:
    url = f"openai://127.0.0.1:{_unused_port()}/v1?model=x"
    with OpenAIClient.from_url(url, policy=NO_RETRIES) as client, pytest.raises(LLMCheckError) as err:
        check_llm(client)
    assert "cannot be used" in str(err.value) and "Connection" in str(err.value)


def test_triton_http_check_asks_the_ready_endpoint(listing: _Listing) -> None:
    base = f"triton://127.0.0.1:{listing.port}/"
    with TritonClient.from_url(base + "ready-vl?protocol=http", policy=NO_RETRIES) as client:
        client.check()
    with (
        TritonClient.from_url(base + "loading-vl?protocol=http", policy=NO_RETRIES) as client,
        pytest.raises(LLMError, match="'loading-vl' is unknown or not ready"),
    ):
        client.check()
    assert listing.paths == ["/v2/models/ready-vl/ready", "/v2/models/loading-vl/ready"]


def test_triton_check_of_a_server_that_is_down_never_shows_the_password() -> None:
    url = f"triton://user:hunter2@127.0.0.1:{_unused_port()}/m?protocol=http"
    with TritonClient.from_url(url, policy=NO_RETRIES) as client, pytest.raises(LLMCheckError) as err:
        check_llm(client)
    assert "hunter2" not in str(err.value) and "triton://127.0.0.1" in str(err.value)


# -- ids --


def test_ids_from_names_refuse_two_files_of_one_name_and_say_what_to_do(tmp_path: Path) -> None:
    a, b = tmp_path / "cam1" / "IMG_0001.jpg", tmp_path / "cam2" / "IMG_0001.jpg"
    assert photo_ids([a, a, b.parent / "x.jpg"]) == ([a, b.parent / "x.jpg"], ["IMG_0001.jpg", "x.jpg"])
    with pytest.raises(InputError, match="--id-from path"):
        photo_ids([a, b])


def test_ids_from_paths_are_relative_to_the_common_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    a, b = Path("day/cam1/IMG_0001.jpg"), Path("day/cam2/sub/IMG_0001.jpg")
    photos, ids = photo_ids([a, b, Path("day/./cam1/IMG_0001.jpg")], "path")
    assert photos == [a, b] and ids == ["cam1/IMG_0001.jpg", "cam2/sub/IMG_0001.jpg"]
    assert photo_ids([tmp_path / a, b], "path")[1] == ids  # absolute or relative: one file, one id
    assert photo_ids([a], "path")[1] == ["IMG_0001.jpg"]


# -- georag locate --


def _args(env: dict[str, object], paths: list[Path], out: Path, *extra: str) -> list[str]:
    return ["locate", *map(str, paths), "--store", str(env["store"]), "--encoder", str(env["tiny"]),
            "--out", str(out), "--llm-retries", "0", *extra]  # fmt: skip


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_an_unreachable_llm_is_a_usage_error_before_any_photo(
    locate_env: dict[str, object], tmp_path: Path
) -> None:
    queries = locate_env["queries"][:2]  # type: ignore[index]
    url = f"triton://user:hunter2@127.0.0.1:{_unused_port()}/m?protocol=http"
    r = CliRunner().invoke(main, _args(locate_env, queries, tmp_path / "p.csv", "--llm", url))
    assert r.exit_code == 2 and "the LLM cannot be used" in r.output, r.output
    assert "hunter2" not in r.output and not (tmp_path / "p.csv").exists()
    with StandIn(mode="bad_request", error_message="model 'x' does not exist") as server:
        r = CliRunner().invoke(main, _args(locate_env, queries, tmp_path / "p.csv", "--llm", server.url))
    assert r.exit_code == 2 and "does not exist" in r.output, r.output


def test_a_run_whose_llm_fails_stops_at_the_budget_and_resumes(
    locate_env: dict[str, object], tmp_path: Path
) -> None:
    queries = locate_env["queries"][:5]  # type: ignore[index]
    out = tmp_path / "p.csv"
    flags = ("--samples", "1", "--llm-concurrency", "1")
    with StandIn() as server:
        answered = []

        def two_then_fail(body: dict[str, Any]) -> str:
            if body.get("max_tokens") != 1:
                answered.append(1)
                if len(answered) == 2:
                    server.mode = "bad_request"  # the third photo's request and later ones fail
            return json.dumps(answer(0))

        server.script = two_then_fail
        r = CliRunner().invoke(main, _args(locate_env, queries, out, "--llm", server.url, *flags))
        assert r.exit_code == 1, r.output
        assert "stopped: every LLM request failed for 1 photo(s) (none is allowed" in r.output
        assert "HTTP 400" in r.output
        assert [row["strategy"] for row in _rows(out)] == ["rag", "rag"]  # finished photos kept
        server.mode, server.script = "ok", None
        r = CliRunner().invoke(main, _args(locate_env, queries, out, "--llm", server.url, *flags))
    assert r.exit_code == 0 and "located 3 photos" in r.output and "resumed: 2 already done" in r.output
    assert [row["id"] for row in _rows(out)] == [q.name for q in queries]
    assert all(row["strategy"] == "rag" for row in _rows(out))


def test_a_budget_lets_that_many_photos_fall_back(locate_env: dict[str, object], tmp_path: Path) -> None:
    queries = locate_env["queries"][:4]  # type: ignore[index]
    with StandIn() as server:
        server.script = lambda body: _fail_after_check(server, body)
        r = CliRunner().invoke(
            main,
            _args(locate_env, queries, tmp_path / "p.csv", "--llm", server.url, "--llm-concurrency", "1",
                  "--llm-max-failures", "2"),
        )  # fmt: skip
    assert r.exit_code == 1 and "failed for 3 photo(s) (2 are allowed" in r.output, r.output
    rows = _rows(tmp_path / "p.csv")
    assert [row["strategy"] for row in rows] == ["rag>knn", "rag>knn"]
    assert all("every LLM request failed" in row["fallback"] for row in rows)


def _fail_after_check(server: StandIn, body: dict[str, Any]) -> str:
    if body.get("max_tokens") == 1:
        server.mode = "bad_request"
    return json.dumps(answer(0))


def test_photos_of_one_name_in_two_folders_are_located_with_ids_from_paths(
    locate_env: dict[str, object], tmp_path: Path
) -> None:
    q: list[Path] = locate_env["queries"]  # type: ignore[assignment]
    photos = [tmp_path / "in" / "cam1" / "IMG_0001.jpg", tmp_path / "in" / "cam2" / "IMG_0001.jpg"]
    for src, dst in zip(q[:2], photos, strict=True):
        dst.parent.mkdir(parents=True)
        shutil.copyfile(src, dst)
    out = tmp_path / "p.csv"
    r = CliRunner().invoke(main, _args(locate_env, [tmp_path / "in" / "cam1", tmp_path / "in" / "cam2"], out))
    assert r.exit_code != 0 and "--id-from path" in r.output, r.output
    args = _args(locate_env, [photos[0].parent, photos[1].parent], out, "--id-from", "path")
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0 and "located 2 photos" in r.output, r.output
    rows = _rows(out)
    assert [row["id"] for row in rows] == ["cam1/IMG_0001.jpg", "cam2/IMG_0001.jpg"]
    assert rows[0]["lat"] != rows[1]["lat"] or rows[0]["lon"] != rows[1]["lon"]  # two photos, not one twice
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0 and "located 0 photos" in r.output and "resumed: 2 already done" in r.output
    r = CliRunner().invoke(main, _args(locate_env, [photos[0]], out))  # ids from names: other settings
    assert r.exit_code != 0 and "id_from" in r.output, r.output
