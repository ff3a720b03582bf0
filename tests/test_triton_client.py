"""Tests georag.llm.triton_client: URL parsing and naming, and requests to a real tritonserver.

The server tests run tests/triton_models/mllm_standin (a scripted stand-in with the vLLM backend's tensor
contract) on the tritonserver bundled in nvidia-pytriton; they skip, saying why, when no server environment
exists (see tests/triton_server.py). They run over both gRPC streaming and HTTP /generate.
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import json
import random
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from types import ModuleType

import pytest

from georag.config import Sampling
from georag.errors import ConfigError, LLMError, MissingDependencyError
from georag.llm.chat_templates import render_chat
from georag.llm.retry import RetryPolicy, TransientError
from georag.llm.transport import cut_echo
from georag.llm.triton_client import TritonClient, VllmRequest, parse_triton_url, sampling_json
from georag.types import Prompt
from triton_server import TritonServer, run_triton_server, triton_unavailable_reason

MODEL = "mllm_standin"
IMAGE = random.Random(7).randbytes(48_000)  # not a JPEG: the stand-in only checks the base64 and hashes it
FAST_RETRIES = RetryPolicy(retries=2, backoff_s=0.01, max_backoff_s=0.05)
NO_RETRIES = RetryPolicy(retries=0)


def _prompt(user: str = "Where was this photo taken?") -> Prompt:
    return Prompt(system="You are a geolocation expert.", user=user, image=IMAGE)


def _has_tritonclient_grpc() -> bool:
    try:
        importlib.import_module("tritonclient.grpc")
    except ImportError:
        return False
    return True


PROTOCOLS = [
    "http",
    pytest.param(
        "grpc",
        marks=pytest.mark.skipif(not _has_tritonclient_grpc(), reason="tritonclient[grpc] is not installed"),
    ),
]


# URL parsing and naming (no server).


def test_url_defaults() -> None:
    endpoint = parse_triton_url("triton://gpu-box/qwen2vl")
    assert (endpoint.host, endpoint.port, endpoint.model) == ("gpu-box", 8001, "qwen2vl")
    assert (endpoint.family, endpoint.protocol) == ("qwen2-vl", "grpc")
    assert endpoint.name == "triton://gpu-box:8001/qwen2vl"
    assert parse_triton_url("triton://gpu-box/m?protocol=http").port == 8000


def test_url_with_everything() -> None:
    endpoint = parse_triton_url("triton://10.0.0.5:9001/internvl_model?family=InternVL2.5&protocol=HTTP")
    assert (endpoint.host, endpoint.port, endpoint.model) == ("10.0.0.5", 9001, "internvl_model")
    assert (endpoint.family, endpoint.protocol) == ("internvl2.5", "http")


def test_url_ipv6_host_is_bracketed_in_the_name() -> None:
    endpoint = parse_triton_url("triton://[::1]:8001/m")
    assert endpoint.host == "::1"
    assert endpoint.name == "triton://[::1]:8001/m"
    assert endpoint.address == "[::1]:8001"


def test_credentials_never_show_in_name_or_repr() -> None:
    client = TritonClient.from_url("triton://alice:s3cr%40t@host:8000/m?protocol=http")
    assert client.name == "triton://host:8000/m"
    assert "s3cr" not in repr(client) and "alice" not in repr(client)
    assert "s3cr" not in repr(client.endpoint)
    expected = base64.b64encode(b"alice:s3cr@t").decode()
    assert client.endpoint.auth_headers() == {"Authorization": f"Basic {expected}"}
    assert parse_triton_url("triton://host/m").auth_headers() == {}


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://host:8001/m", "not a triton:// URL"),
        ("triton:///m", "no host"),
        ("triton://host:8001", "exactly one model"),
        ("triton://host:8001/a/b", "exactly one model"),
        ("triton://host:8001/m?family=llava", "unknown model family 'llava'.*qwen2-vl"),
        ("triton://host:8001/m?protocol=ws", "protocol must be grpc or http"),
        ("triton://host:8001/m?api_key=x", "unknown parameter"),
        ("triton://host:99999/m", "bad port"),
    ],
)
def test_bad_urls(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_triton_url(url)


def test_errors_about_a_url_do_not_quote_its_password() -> None:
    with pytest.raises(ConfigError) as info:
        parse_triton_url("triton://bob:hunter2@host:8001/m?family=nope")
    assert "hunter2" not in str(info.value)


def test_grpc_without_tritonclient_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.import_module

    def no_tritonclient(name: str, package: str | None = None) -> ModuleType:
        if name.startswith("tritonclient"):
            raise ImportError(f"No module named {name!r}")
        return real(name, package)

    monkeypatch.setattr(importlib, "import_module", no_tritonclient)
    with pytest.raises(MissingDependencyError, match=r"pip install tritonclient\[grpc\]"):
        TritonClient.from_url("triton://host:8001/m")
    TritonClient.from_url("triton://host:8000/m?protocol=http").close()  # HTTP needs no tritonclient


def test_bad_arguments() -> None:
    with pytest.raises(ConfigError, match="timeout_s"):
        TritonClient.from_url("triton://host/m?protocol=http", timeout_s=0)
    with pytest.raises(ConfigError, match="concurrency"):
        TritonClient.from_url("triton://host/m?protocol=http", concurrency=0)


def test_cut_echo() -> None:
    assert cut_echo("PROMPT{answer}", "PROMPT") == ("{answer}", True)
    assert cut_echo("<s>PROMPT{answer}", "PROMPT") == ("{answer}", True)
    assert cut_echo("{answer}", "PROMPT") == ("{answer}", False)


def test_vllm_request_completion_cuts_the_rendered_prompt() -> None:
    request = VllmRequest.of(_prompt(), Sampling(n=2), "qwen2-vl", "r1")
    done = request.completion([request.text + '{"a": 1}', '{"b": 2}'], 0.5, attempts=2)
    assert done.texts == ('{"a": 1}', '{"b": 2}')
    assert (done.echoed, done.seconds, done.attempts) == (True, 0.5, 2)


def test_cancelled_client_refuses_without_sending() -> None:
    # Port 1 on loopback refuses connections: a request that went out would fail differently.
    client = TritonClient.from_url("triton://127.0.0.1:1/m?protocol=http", policy=NO_RETRIES)
    client.cancel()
    with pytest.raises(LLMError, match="cancelled"):
        client.generate(_prompt(), Sampling())


def test_sampling_json_sends_seed_only_when_set() -> None:
    assert json.loads(sampling_json(Sampling(n=3, temperature=0.2, top_p=0.9, max_tokens=64, seed=5))) == {
        "temperature": 0.2,
        "top_p": 0.9,
        "max_tokens": 64,
        "n": 3,
        "seed": 5,
    }
    assert "seed" not in json.loads(sampling_json(Sampling()))


# Against a real tritonserver.


@pytest.fixture(scope="module")
def server() -> Iterator[TritonServer]:
    reason = triton_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    with run_triton_server() as running:
        yield running


def _client(
    server: TritonServer,
    protocol: str,
    *,
    timeout_s: float = 60.0,
    policy: RetryPolicy = FAST_RETRIES,
    concurrency: int = 16,
) -> TritonClient:
    url = server.url(MODEL, protocol)
    return TritonClient.from_url(url, timeout_s=timeout_s, policy=policy, concurrency=concurrency)


def _unused_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_n_answers_with_what_the_server_received(server: TritonServer, protocol: str) -> None:
    sampling = Sampling(n=3, temperature=0.3, top_p=0.8, max_tokens=48, seed=11)
    with _client(server, protocol) as client:
        completion = client.generate(_prompt(), sampling)
    assert (completion.attempts, completion.echoed) == (1, False)
    assert len(completion.texts) == 3
    answers = [json.loads(text) for text in completion.texts]
    for i, answer in enumerate(answers):
        assert answer["latitude"] == pytest.approx(48.8566 + 0.01 * i)
        assert answer["longitude"] == pytest.approx(2.3522 + 0.01 * i)
        received = answer["received"]
        assert received["sample"] == i
        assert received["sampling_parameters"] == {
            "temperature": 0.3,
            "top_p": 0.8,
            "max_tokens": 48,
            "n": 3,
            "seed": 11,
        }
        assert (received["exclude_input_in_output"], received["stream"]) == (True, False)
        assert received["image_count"] == 1
        assert received["image_bytes"] == len(IMAGE)
        assert received["image_sha256"] == [hashlib.sha256(IMAGE).hexdigest()]
        assert received["prompt_chars"] == len(render_chat(_prompt(), "qwen2-vl"))
    assert completion.seconds > 0


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_one_answer(server: TritonServer, protocol: str) -> None:
    with _client(server, protocol) as client:
        completion = client.generate(_prompt(), Sampling(n=1))
    (text,) = completion.texts
    assert json.loads(text)["received"]["sampling_parameters"]["n"] == 1
    assert "seed" not in json.loads(text)["received"]["sampling_parameters"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_echoing_server_is_cut_and_flagged(server: TritonServer, protocol: str) -> None:
    with _client(server, protocol) as client:
        completion = client.generate(_prompt("[[echo]] Where?"), Sampling(n=2))
    assert completion.echoed
    for text in completion.texts:
        assert "<|im_start|>" not in text and "[[echo]]" not in text
        assert json.loads(text)["latitude"] == pytest.approx(48.8566, abs=0.02)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_garbage_comes_back_as_is(server: TritonServer, protocol: str) -> None:
    with _client(server, protocol) as client:
        completion = client.generate(_prompt("[[garbage]] Where?"), Sampling(n=2))
    assert completion.texts == ("I cannot tell.", "I cannot tell.")
    assert not completion.echoed


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_model_error_is_not_retried(server: TritonServer, protocol: str) -> None:
    slow_retries = RetryPolicy(retries=3, backoff_s=5.0)
    with _client(server, protocol, policy=slow_retries) as client:
        start = time.monotonic()
        with pytest.raises(LLMError, match="scripted failure") as info:
            client.generate(_prompt("[[error]]"), Sampling())
    assert not isinstance(info.value, TransientError)
    assert time.monotonic() - start < 2.0  # one attempt, no 5 s backoff


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_unknown_model_is_an_error(server: TritonServer, protocol: str) -> None:
    url = server.url("no_such_model", protocol)
    with TritonClient.from_url(url, policy=RetryPolicy(retries=3, backoff_s=5.0)) as client:
        start = time.monotonic()
        with pytest.raises(LLMError, match="no_such_model"):
            client.generate(_prompt(), Sampling())
    assert time.monotonic() - start < 2.0


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_server_down_fails_quickly_after_retries(protocol: str) -> None:
    url = f"triton://127.0.0.1:{_unused_port()}/{MODEL}?protocol={protocol}"
    with TritonClient.from_url(url, policy=FAST_RETRIES, timeout_s=5.0) as client:
        start = time.monotonic()
        with pytest.raises(LLMError, match="gave up after 3 attempts"):
            client.generate(_prompt(), Sampling())
    assert time.monotonic() - start < 3.0


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_stall_times_out_and_the_client_still_works(server: TritonServer, protocol: str) -> None:
    with _client(server, protocol, timeout_s=2.0, policy=NO_RETRIES) as client:
        start = time.monotonic()
        with pytest.raises(LLMError, match=r"within 2 s"):
            client.generate(_prompt("[[stall]]"), Sampling())
        elapsed = time.monotonic() - start
        assert 1.9 < elapsed < 4.0
        completion = client.generate(_prompt(), Sampling(n=2))
    assert len(completion.texts) == 2


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_stall_is_retried_as_transient(server: TritonServer, protocol: str) -> None:
    policy = RetryPolicy(retries=1, backoff_s=0.01)
    with _client(server, protocol, timeout_s=1.0, policy=policy) as client:
        start = time.monotonic()
        with pytest.raises(LLMError, match="gave up after 2 attempts"):
            client.generate(_prompt("[[stall]]"), Sampling())
    assert time.monotonic() - start < 4.0


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_concurrent_requests_are_bounded(server: TritonServer, protocol: str) -> None:
    with _client(server, protocol, concurrency=4) as client:

        def ask(i: int) -> tuple[str, ...]:
            return client.generate(_prompt(f"[[slow]] photo {i}"), Sampling(n=2, seed=i)).texts

        with ThreadPoolExecutor(max_workers=12) as pool:
            results = list(pool.map(ask, range(24)))
    assert len(results) == 24
    most_in_flight = 0
    for i, texts in enumerate(results):
        assert len(texts) == 2
        received = json.loads(texts[0])["received"]
        assert received["sampling_parameters"]["seed"] == i
        most_in_flight = max(most_in_flight, received["slow_in_flight"])
    assert 1 < most_in_flight <= 4


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_closed_client_refuses(server: TritonServer, protocol: str) -> None:
    client = _client(server, protocol)
    client.generate(_prompt(), Sampling())
    client.close()
    with pytest.raises(LLMError, match="closed"):
        client.generate(_prompt(), Sampling())


def test_stand_in_refuses_an_image_that_is_not_base64(server: TritonServer) -> None:
    body = {"text_input": "hi", "image": ["not base64!"], "exclude_input_in_output": True}
    request = urllib.request.Request(
        f"http://127.0.0.1:{server.http_port}/v2/models/{MODEL}/generate",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=10)
    assert info.value.code == 400
    assert "not valid base64" in info.value.read().decode()
    info.value.close()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_check_asks_whether_the_model_is_ready(server: TritonServer, protocol: str) -> None:
    with _client(server, protocol) as client:
        client.check()
    with (
        TritonClient.from_url(server.url("no_such_model", protocol), policy=FAST_RETRIES) as client,
        pytest.raises(LLMError, match="no_such_model"),
    ):
        client.check()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_check_of_a_server_that_is_down(protocol: str) -> None:
    url = f"triton://127.0.0.1:{_unused_port()}/{MODEL}?protocol={protocol}"
    with (
        TritonClient.from_url(url, policy=FAST_RETRIES, timeout_s=5.0) as client,
        pytest.raises(LLMError, match="gave up after 3 attempts"),
    ):
        client.check()
