"""The `georag` model's BLS calls (`BlsSteps`) against a recording stand-in for the Python backend's
``triton_python_backend_utils``: outputs asked for in CPU memory, GPU outputs copied through DLPack, and
an abandoned LLM call cancelled where the stub can cancel it.

The stand-in follows the Python backend's API as its source defines it (triton-inference-server/
python_backend src/pb_stub.cc: ``InferenceRequest(..., preferred_memory=PreferredMemory(type, id))``,
``Tensor.is_cpu()``, ``Tensor.to_dlpack()``, ``ResponseIterator.cancel()`` from r25.04). The real CPU
tritonserver of tests/test_triton_repo.py runs the same code with a real stub (Triton 2.51: preferred
memory, no cancel).
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from georag.config import Config, Sampling
from georag.serving import triton_glue
from georag.serving.errors import StepFailed
from georag.serving.triton_glue import BlsLanes, BlsSteps
from georag.types import Prompt

PROMPT = Prompt(system="s", user="where?", image=b"\xff\xd8\xff\xe0", image_mime="image/jpeg")


@dataclass(frozen=True)
class PreferredMemory:
    preferred_memory_type: str
    preferred_device_id: int = 0


class Tensor:
    """A pb_utils.Tensor; ``cpu=False`` stands for GPU memory (``as_numpy`` refuses it, as the stub does)."""

    def __init__(self, name: str, array: Any, *, cpu: bool = True) -> None:
        self._name, self.array, self.cpu = name, np.asarray(array), cpu

    def name(self) -> str:
        return self._name

    def is_cpu(self) -> bool:
        return self.cpu

    def as_numpy(self) -> Any:
        if not self.cpu:
            raise RuntimeError("Tensor is stored in GPU and cannot be converted to NumPy.")
        return self.array

    def to_dlpack(self) -> Any:
        import torch

        return torch.utils.dlpack.to_dlpack(torch.from_numpy(np.ascontiguousarray(self.array)))


@dataclass
class Response:
    outputs: dict[str, Tensor] = field(default_factory=dict)
    err: Any = None

    def has_error(self) -> bool:
        return self.err is not None

    def error(self) -> Any:
        return self.err


@dataclass
class Error:
    text: str
    kind: str = "INTERNAL"

    def message(self) -> str:
        return self.text

    def code(self) -> str:
        return self.kind


def fake_utils(answer: Callable[[Any, bool], Any], *, preferred_memory: bool = True) -> Any:
    """A ``triton_python_backend_utils``: every InferenceRequest is recorded in ``.requests``, and
    ``exec(decoupled)`` returns ``answer(request, decoupled)``. Without ``preferred_memory`` the module
    is a stub before 23.04: no PreferredMemory, and InferenceRequest refuses the argument."""
    requests: list[Any] = []

    class InferenceRequest:
        def __init__(self, **kwargs: Any) -> None:
            if "preferred_memory" in kwargs and not preferred_memory:
                raise TypeError("__init__(): incompatible constructor arguments")
            self.kwargs = kwargs
            self.inputs = {t.name(): t.array for t in kwargs["inputs"]}
            requests.append(self)

        def exec(self, decoupled: bool = False) -> Any:
            return answer(self, decoupled)

    module = types.SimpleNamespace(
        Tensor=Tensor,
        InferenceRequest=InferenceRequest,
        TRITONSERVER_MEMORY_CPU="CPU",
        TRITONSERVER_MEMORY_GPU="GPU",
        TritonError=types.SimpleNamespace(
            INTERNAL="INTERNAL", UNAVAILABLE="UNAVAILABLE", NOT_FOUND="NOT_FOUND"
        ),
        get_output_tensor_by_name=lambda response, name: response.outputs.get(name),
        requests=requests,
    )
    if preferred_memory:
        module.PreferredMemory = PreferredMemory
    return module


class ResponseIterator:
    """A decoupled BLS answer: ``first`` at once, then (streamed) it waits for ``more`` or ``cancel()``;
    cancelled, it ends with a CANCELLED final response, as the vLLM backend does."""

    def __init__(self, first: Response, more: list[Response] | None = None, *, stall_s: float = 0.0) -> None:
        self._pending = [first, *(more or [])]
        self._stall_s = stall_s
        self.cancelled = threading.Event()
        self.finished = threading.Event()
        self.cancel_calls = 0

    def cancel(self) -> None:
        self.cancel_calls += 1
        self.cancelled.set()

    def __iter__(self) -> Iterator[Response]:
        try:
            yield self._pending.pop(0)
            if self._stall_s and self.cancelled.wait(self._stall_s):
                yield Response(err=Error("Request was cancelled", "CANCELLED"))
                return
            yield from self._pending
        finally:
            self.finished.set()


class LegacyIterator(ResponseIterator):
    """The same on a stub before r25.04: no ``cancel``."""

    cancel = None  # type: ignore[assignment]


@pytest.fixture
def install(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Any]]:
    """Installs a fake pb_utils (and, ``cancellable``, a stub module whose ResponseIterator has cancel)."""

    def put(utils: Any, *, cancellable: bool = False) -> Any:
        monkeypatch.setitem(sys.modules, "triton_python_backend_utils", utils)
        stub = types.SimpleNamespace(ResponseIterator=ResponseIterator if cancellable else LegacyIterator)
        monkeypatch.setitem(sys.modules, "c_python_backend_utils", stub)
        triton_glue.pb.cache_clear()
        return utils

    yield put
    triton_glue.pb.cache_clear()


def _steps() -> BlsSteps:
    return BlsSteps("enc", "retrieval", "llm", "qwen2-vl", Config(), lanes=BlsLanes(1, 1, 2))


def _embeddings(*, cpu: bool) -> Callable[[Any, bool], Response]:
    def answer(request: Any, decoupled: bool) -> Response:
        pixels = request.inputs["pixel_values"]
        return Response({"embeddings": Tensor("embeddings", pixels.reshape(1, -1)[:, :4] * 2.0, cpu=cpu)})

    return answer


def _text(*parts: str) -> Response:
    return Response({"text_output": Tensor("text_output", np.array([p.encode() for p in parts], np.object_))})


def test_every_bls_request_asks_for_cpu_outputs(install: Callable[..., Any]) -> None:
    def answer(request: Any, decoupled: bool) -> Any:
        if request.kwargs["model_name"] == "enc":
            return _embeddings(cpu=True)(request, decoupled)
        if request.kwargs["model_name"] == "llm":
            return ResponseIterator(_text("paris"))
        return Response(err=Error("no store here"))

    utils = install(fake_utils(answer))
    steps = _steps()
    pixels = np.arange(12, dtype=np.float32).reshape(3, 2, 2)
    got = asyncio.run(steps.embed(pixels))
    np.testing.assert_array_equal(got, pixels.reshape(-1)[:4] * 2.0)
    with pytest.raises(StepFailed, match="no store here"):
        asyncio.run(steps.retrieve(got, 4, 4))
    assert asyncio.run(steps.generate(PROMPT, Sampling(n=1))).texts == ("paris",)
    steps.close()
    assert [r.kwargs["model_name"] for r in utils.requests] == ["enc", "retrieval", "llm"]
    for request in utils.requests:
        assert request.kwargs["preferred_memory"] == PreferredMemory("CPU", 0)


def test_a_stub_before_preferred_memory_is_not_given_it(install: Callable[..., Any]) -> None:
    utils = install(fake_utils(_embeddings(cpu=True), preferred_memory=False))
    steps = _steps()
    got = asyncio.run(steps.embed(np.ones((3, 2, 2), np.float32)))
    steps.close()
    np.testing.assert_array_equal(got, np.full(4, 2.0, np.float32))
    assert "preferred_memory" not in utils.requests[0].kwargs


def test_an_output_left_in_gpu_memory_is_copied_through_dlpack(install: Callable[..., Any]) -> None:
    pytest.importorskip("torch")
    install(fake_utils(_embeddings(cpu=False)))
    steps = _steps()
    pixels = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 2, 2)
    got = asyncio.run(steps.embed(pixels))  # as_numpy() of that tensor raises
    steps.close()
    np.testing.assert_array_equal(got, pixels.reshape(-1)[:4] * 2.0)


def test_an_output_in_gpu_memory_without_torch_fails_naming_the_fix(
    install: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    install(fake_utils(_embeddings(cpu=False)))
    monkeypatch.setitem(sys.modules, "torch.utils.dlpack", None)  # import fails
    steps = _steps()
    with pytest.raises(StepFailed, match=r"GPU memory.*install torch"):
        asyncio.run(steps.embed(np.ones((3, 2, 2), np.float32)))
    steps.close()


@pytest.mark.parametrize(
    ("cancellable", "n", "streams"),
    [(True, 1, True), (True, 3, False), (False, 1, False)],
)
def test_llm_calls_stream_only_where_they_can_be_cancelled(
    install: Callable[..., Any], cancellable: bool, n: int, streams: bool
) -> None:
    """Streamed responses carry the new text of each step: joined into one answer. Several answers are
    never streamed (vLLM V1 streams them one sequence at a time, without an index)."""

    def answer(request: Any, decoupled: bool) -> Any:
        assert decoupled
        if bool(request.inputs["stream"][0]):
            return ResponseIterator(_text("pa"), [_text("ri"), _text("s"), Response()])
        return ResponseIterator(_text(*["paris"] * n), [Response()])

    utils = install(fake_utils(answer), cancellable=cancellable)
    steps = _steps()
    assert steps.cancellable is cancellable
    completion = asyncio.run(steps.generate(PROMPT, Sampling(n=n)))
    steps.close()
    assert bool(utils.requests[0].inputs["stream"][0]) is streams
    assert bool(utils.requests[0].inputs["exclude_input_in_output"][0])
    assert completion.texts == ("paris",) * n


def _until(done: Callable[[], bool], timeout_s: float = 2.0) -> None:
    end = time.monotonic() + timeout_s
    while not done() and time.monotonic() < end:
        time.sleep(0.01)
    assert done()


def _abandon(steps: BlsSteps, wait_s: float) -> None:
    async def run() -> None:
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(steps.generate(PROMPT, Sampling(n=1)), wait_s)

    asyncio.run(run())


def test_an_abandoned_llm_call_is_cancelled_and_frees_its_thread(install: Callable[..., Any]) -> None:
    calls: list[ResponseIterator] = []

    def answer(request: Any, decoupled: bool) -> ResponseIterator:
        calls.append(ResponseIterator(_text("Pa"), [_text("ris")], stall_s=10.0))
        return calls[0]

    install(fake_utils(answer), cancellable=True)
    steps = _steps()
    _abandon(steps, 0.3)
    assert calls[0].finished.wait(2.0), "the lane thread still waits for the LLM"
    assert calls[0].cancel_calls == 1
    steps.close()


def test_a_call_abandoned_before_its_first_response_is_cancelled_when_it_comes(
    install: Callable[..., Any],
) -> None:
    first_in, calls = threading.Event(), []

    def answer(request: Any, decoupled: bool) -> ResponseIterator:
        first_in.wait(5.0)  # exec returns only once the first response is in
        calls.append(ResponseIterator(_text("Pa"), [_text("ris")], stall_s=10.0))
        return calls[0]

    install(fake_utils(answer), cancellable=True)
    steps = _steps()
    _abandon(steps, 0.2)
    first_in.set()
    _until(lambda: bool(calls))
    assert calls[0].finished.wait(2.0)
    assert calls[0].cancel_calls == 1
    steps.close()


def test_without_cancel_an_abandoned_call_runs_to_its_end(install: Callable[..., Any]) -> None:
    """Triton before 25.04 (the tests' 2.51 among them): nothing to cancel; the call holds its thread
    until the LLM answers (what the LLM lane bounds)."""
    calls: list[ResponseIterator] = []

    def answer(request: Any, decoupled: bool) -> ResponseIterator:
        calls.append(LegacyIterator(_text("paris"), [Response()], stall_s=0.6))
        return calls[0]

    utils = install(fake_utils(answer), cancellable=False)
    steps = _steps()
    _abandon(steps, 0.2)
    assert not bool(utils.requests[0].inputs["stream"][0])
    assert not calls[0].finished.wait(0.2)
    assert calls[0].finished.wait(2.0) and not calls[0].cancelled.is_set()
    steps.close()
