"""Tests of georag.llm.openai_client against the local stand-in server in tests/openai_standin.py."""

from __future__ import annotations

import base64
import json
import logging
import socket
import threading
import time

import pytest

from georag.config import Sampling
from georag.errors import ConfigError, LLMError
from georag.llm.openai_client import API_KEY_ENV, OpenAIClient
from georag.llm.retry import RetryPolicy
from georag.types import Completion, Prompt
from openai_standin import PATH, StandIn, answer

FAST = RetryPolicy(retries=2, backoff_s=0.01, max_backoff_s=0.05)
IMAGE = bytes(range(256)) * 3 + b"\x89PNG\r\n\x1a\n\x00\xff"
PROMPT = Prompt(
    system="You are a geolocation expert. Answer JSON.",
    user="Where was this photo taken?",
    image=IMAGE,
    image_mime="image/png",
)
KEY = "sk-test-SECRET-7f3a9c"


@pytest.fixture(autouse=True)
def _no_env_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's own OPENAI_API_KEY must not leak into (or change) the tests."""
    monkeypatch.delenv(API_KEY_ENV, raising=False)


def _client(server: StandIn, **kwargs: object) -> OpenAIClient:
    kwargs.setdefault("policy", FAST)
    kwargs.setdefault("timeout_s", 5.0)
    return OpenAIClient.from_url(server.url, **kwargs)  # type: ignore[arg-type]


def _coords(completion: Completion) -> list[dict[str, float]]:
    return [json.loads(t) for t in completion.texts]


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- request shape --


def test_request_shape() -> None:
    with StandIn() as server, _client(server, api_key=KEY) as client:
        done = client.generate(PROMPT, Sampling(n=3, temperature=0.2, top_p=0.9, max_tokens=64, seed=7))
        (seen,) = server.seen
    assert seen.path == PATH
    assert seen.headers["authorization"] == f"Bearer {KEY}"
    assert seen.headers["content-type"] == "application/json"
    body = seen.body
    assert body["model"] == "standin-vl"
    assert (body["n"], body["temperature"], body["top_p"], body["max_tokens"], body["seed"]) == (
        3,
        0.2,
        0.9,
        64,
        7,
    )
    system, user = body["messages"]
    assert system == {"role": "system", "content": PROMPT.system}
    assert user["role"] == "user"
    image_part, text_part = user["content"]  # the image comes before the text
    assert text_part == {"type": "text", "text": PROMPT.user}
    assert image_part["type"] == "image_url"
    head, data = image_part["image_url"]["url"].split(",", 1)
    assert head == "data:image/png;base64"
    assert base64.b64decode(data, validate=True) == IMAGE
    assert _coords(done) == [answer(i, 7) for i in range(3)]
    assert done.attempts == 1 and not done.echoed and done.seconds > 0


def test_none_seed_omitted_and_no_key_no_header() -> None:
    with StandIn() as server, _client(server) as client:
        client.generate(PROMPT, Sampling())
        (seen,) = server.seen
    assert "seed" not in seen.body
    assert "authorization" not in seen.headers
    assert seen.body["n"] == 1 and seen.body["temperature"] == 0.7


def test_api_key_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(API_KEY_ENV, KEY)
    with StandIn() as server, _client(server) as client:
        client.generate(PROMPT, Sampling())
        assert server.seen[0].headers["authorization"] == f"Bearer {KEY}"


def test_argument_key_wins_over_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(API_KEY_ENV, "sk-from-env")
    with StandIn() as server, _client(server, api_key=KEY) as client:
        client.generate(PROMPT, Sampling())
        assert server.seen[0].headers["authorization"] == f"Bearer {KEY}"


# -- answers --


def test_n_answers_in_choice_order() -> None:
    with StandIn() as server, _client(server) as client:
        done = client.generate(PROMPT, Sampling(n=5))
    assert _coords(done) == [answer(i) for i in range(5)]
    assert len(server.seen) == 1


def test_top_up_when_server_ignores_n() -> None:
    with StandIn(mode="one_choice") as server, _client(server) as client:
        done = client.generate(PROMPT, Sampling(n=4, seed=10))
        seen = server.seen
    assert [s.body["n"] for s in seen] == [4, 3, 2, 1]  # asks only for what is missing
    assert [s.body["seed"] for s in seen] == [10, 11, 12, 13]  # a seed-honouring server answers anew
    assert _coords(done) == [answer(0, s) for s in (10, 11, 12, 13)]
    assert len(set(done.texts)) == 4
    assert done.attempts == 4


def test_top_up_without_seed_sends_no_seed() -> None:
    with StandIn(mode="one_choice") as server, _client(server) as client:
        done = client.generate(PROMPT, Sampling(n=3))
        seen = server.seen
    assert len(done.texts) == 3 and len(seen) == 3
    assert all("seed" not in s.body for s in seen)


def test_content_as_parts_and_null() -> None:
    with StandIn(mode="parts") as server, _client(server) as client:
        assert _coords(client.generate(PROMPT, Sampling(n=2))) == [answer(0), answer(1)]
        server.mode = "null_content"
        assert client.generate(PROMPT, Sampling(n=2)).texts == ("", "")


def test_echo_is_cut() -> None:
    with StandIn(mode="echo") as server, _client(server) as client:
        done = client.generate(PROMPT, Sampling(n=2))
    assert done.echoed
    assert _coords(done) == [answer(0), answer(1)]


# -- failures --


def test_retries_503_then_succeeds() -> None:
    with StandIn(fail_first=2) as server, _client(server) as client:
        done = client.generate(PROMPT, Sampling(n=2))
        assert len(server.seen) == 3
    assert done.attempts == 3
    assert _coords(done) == [answer(0), answer(1)]


def test_gives_up_after_retries() -> None:
    with StandIn(fail_first=10) as server, _client(server) as client:
        with pytest.raises(LLMError, match=r"HTTP 503: server busy.*gave up after 3 attempts"):
            client.generate(PROMPT, Sampling())
        assert len(server.seen) == 3


def test_retry_after_honoured_up_to_cap() -> None:
    policy = RetryPolicy(retries=1, backoff_s=0.001, max_backoff_s=0.3)
    with (
        StandIn(fail_first=1, fail_status=429, retry_after="60") as server,
        _client(server, policy=policy) as c,
    ):
        t0 = time.perf_counter()
        done = c.generate(PROMPT, Sampling())
        elapsed = time.perf_counter() - t0
    assert done.attempts == 2
    assert 0.29 <= elapsed < 2.0  # waited the capped 0.3 s, not the 60 s asked


def test_400_raises_with_message_and_no_retry() -> None:
    with StandIn(mode="bad_request") as server, _client(server) as client:
        with pytest.raises(LLMError, match=r"HTTP 400: this model does not accept images") as info:
            client.generate(PROMPT, Sampling())
        assert len(server.seen) == 1
    assert client.name in str(info.value)


def test_long_error_message_truncated() -> None:
    with (
        StandIn(mode="bad_request", error_message="x" * 5000) as server,
        _client(server) as client,
        pytest.raises(LLMError) as info,
    ):
        client.generate(PROMPT, Sampling())
    message = str(info.value)
    assert "x" * 300 in message and "x" * 301 not in message
    assert len(message) < 500


def test_wrong_path_is_404() -> None:
    with StandIn() as server:
        url = server.url.replace("/v1?", "/v2?")
        with OpenAIClient.from_url(url, policy=FAST) as client, pytest.raises(LLMError, match="HTTP 404"):
            client.generate(PROMPT, Sampling())
        assert len(server.seen) == 1


def test_stall_times_out_without_hanging() -> None:
    policy = RetryPolicy(retries=1, backoff_s=0.01, max_backoff_s=0.01)
    with StandIn(mode="stall") as server, _client(server, timeout_s=0.5, policy=policy) as client:
        t0 = time.perf_counter()
        with pytest.raises(LLMError, match=r"(?i)timed out.*gave up after 2 attempts"):
            client.generate(PROMPT, Sampling())
        elapsed = time.perf_counter() - t0
        assert len(server.seen) == 2
    assert 0.9 <= elapsed < 3.0


def test_down_server_raises_after_retries() -> None:
    url = f"openai://127.0.0.1:{_closed_port()}/v1?model=m"
    with OpenAIClient.from_url(url, policy=FAST, timeout_s=2.0) as client:
        t0 = time.perf_counter()
        with pytest.raises(LLMError, match=r"gave up after 3 attempts"):
            client.generate(PROMPT, Sampling())
    assert time.perf_counter() - t0 < 2.0


@pytest.mark.parametrize(("mode", "expected"), [("malformed", "invalid JSON"), ("no_choices", "no choices")])
def test_bad_200_body_raises_without_retry(mode: str, expected: str) -> None:
    with StandIn(mode=mode) as server, _client(server) as client:
        with pytest.raises(LLMError, match=expected):
            client.generate(PROMPT, Sampling())
        assert len(server.seen) == 1


def test_short_body_is_retried() -> None:
    with StandIn(mode="short_body") as server, _client(server) as client:
        with pytest.raises(LLMError, match=r"IncompleteRead.*gave up after 3 attempts"):
            client.generate(PROMPT, Sampling())
        assert len(server.seen) == 3


# -- the API key stays secret --


def test_api_key_never_shown(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    errors: list[LLMError] = []
    # The server quotes the key back, as OpenAI does for a wrong key; the client must mask it.
    with StandIn(mode="bad_request", error_message=f"Incorrect API key provided: {KEY}") as server:
        client = _client(server, api_key=KEY)
        with pytest.raises(LLMError) as info:
            client.generate(PROMPT, Sampling())
        errors.append(info.value)
        server.mode, server.fail_first = "ok", 10  # retried failures are logged
        with pytest.raises(LLMError) as info:
            client.generate(PROMPT, Sampling())
        errors.append(info.value)
        assert all(s.headers["authorization"] == f"Bearer {KEY}" for s in server.seen)
    down = OpenAIClient.from_url(f"openai://127.0.0.1:{_closed_port()}/v1?model=m", api_key=KEY, policy=FAST)
    with pytest.raises(LLMError) as info:
        down.generate(PROMPT, Sampling())
    errors.append(info.value)
    assert "***" in str(errors[0])
    shown = [str(e) for e in errors] + [repr(e) for e in errors]
    shown += [repr(client), str(client), client.name, repr(down), down.name, caplog.text]
    shown += [r.getMessage() for r in caplog.records]
    assert caplog.records  # something was logged, and none of it has the key
    for text in shown:
        assert KEY not in text
        assert KEY[-6:] not in text


def test_api_key_masked_before_truncation() -> None:
    # A key straddling the 300-character cut must not leave its first half behind.
    with StandIn(mode="bad_request", error_message="y" * 290 + KEY) as server:
        client = _client(server, api_key=KEY)
        with pytest.raises(LLMError) as info:
            client.generate(PROMPT, Sampling())
    assert "sk-test" not in str(info.value) and "SECRET" not in str(info.value)


# -- concurrency --


def test_concurrency_bounds_concurrent_requests() -> None:
    with StandIn(delay_s=0.15) as server, _client(server, concurrency=3) as client:
        results: list[Completion] = []
        failures: list[BaseException] = []

        def work() -> None:
            try:
                results.append(client.generate(PROMPT, Sampling()))
            except BaseException as exc:
                failures.append(exc)

        threads = [threading.Thread(target=work) for _ in range(10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not failures and len(results) == 10
        assert len(server.seen) == 10
        assert server.peak_in_flight == 3


def test_slow_requests_served_concurrently() -> None:
    # The benchmark's setting: ~500 ms latency, 16 requests in flight; sequential would take 8 s.
    with StandIn(delay_s=0.5) as server, _client(server, concurrency=16) as client:
        barrier = threading.Barrier(16)
        failures: list[BaseException] = []

        def work() -> None:
            barrier.wait()
            try:
                client.generate(PROMPT, Sampling())
            except BaseException as exc:
                failures.append(exc)

        threads = [threading.Thread(target=work) for _ in range(16)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - t0
        assert not failures
        assert server.peak_in_flight == 16
    assert elapsed < 2.0


# -- URLs and lifecycle --


def test_from_url_https_and_name() -> None:
    client = OpenAIClient.from_url("openais://llm.example.org/v1?model=Qwen/Qwen2-VL-7B", api_key=KEY)
    assert client.name == "openais://llm.example.org:443/v1?model=Qwen%2FQwen2-VL-7B"
    assert client.model == "Qwen/Qwen2-VL-7B"
    assert "'***'" in repr(client) and KEY not in repr(client)
    plain = OpenAIClient.from_url("openai://127.0.0.1:8000/v1/?model=m")
    assert plain.name == "openai://127.0.0.1:8000/v1?model=m"
    assert "api_key=None" in repr(plain)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/v1?model=m",
        "openai://127.0.0.1:8000/v1",
        "openai://127.0.0.1:8000/v1?model=",
        "openai://127.0.0.1:8000/v1?model=a&model=b",
        "openai://127.0.0.1:8000/v1?model=m&temprature=0",
        "openai://127.0.0.1:notaport/v1?model=m",
    ],
)
def test_from_url_rejects(url: str) -> None:
    with pytest.raises(ConfigError):
        OpenAIClient.from_url(url)


def test_from_url_rejects_credentials_without_showing_them() -> None:
    for url in (f"openai://user:{KEY}@127.0.0.1:8000/v1?model=m", f"openai://h:1/v1?model=m&api_key={KEY}"):
        with pytest.raises(ConfigError) as info:
            OpenAIClient.from_url(url)
        assert KEY not in str(info.value)


def test_bad_arguments() -> None:
    with pytest.raises(ConfigError, match="timeout_s"):
        OpenAIClient.from_url("openai://h:1/v1?model=m", timeout_s=0)
    with pytest.raises(ConfigError, match="concurrency"):
        OpenAIClient.from_url("openai://h:1/v1?model=m", concurrency=0)
    with pytest.raises(ConfigError, match="n must be"):
        Sampling(n=0)  # a request for no answer cannot even be written


def test_cancelled_client_refuses() -> None:
    with StandIn() as server:
        client = _client(server)
        client.cancel()
        with pytest.raises(LLMError, match="cancelled"):
            client.generate(PROMPT, Sampling())
        assert server.seen == []


def test_closed_client_refuses() -> None:
    with StandIn() as server:
        client = _client(server)
        client.close()
        with pytest.raises(LLMError, match="closed"):
            client.generate(PROMPT, Sampling())
        assert server.seen == []
