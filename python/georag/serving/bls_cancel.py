"""A decoupled BLS call its caller can cancel: the LLM step's call, cancelled when its deadline passes.

What the Python backend allows (triton-inference-server/python_backend):

* ``InferenceRequest.exec(decoupled=True)`` returns a response iterator only once the FIRST response is in
  (``InferRequest::Exec`` in src/infer_request.cc waits for it; ``async_exec`` runs the same call on the
  event loop's default executor). Before that there is nothing to cancel, and the thread waits.
* ``ResponseIterator.cancel()`` cancels the server request behind an iterator: added in python_backend
  r25.04 (Triton 2.57, commit 7f21b67, PR #398 "add BLS decoupled response iterator's cancel() method";
  README "Cancelling decoupled BLS requests"). Triton 2.51 (nvidia-pytriton 0.7.0, the tests' server)
  has no such method: there a BLS call cannot be cancelled at all.
* The vLLM backend checks ``response_sender.is_cancelled()`` after each engine step, aborts the vLLM
  request and, when streaming, sends a final CANCELLED response (triton-inference-server/vllm_backend
  src/model.py ``_infer``).

So a call is cancellable only where the iterator has ``cancel`` (`cancel_supported`) AND the request
streams (its first response comes after the first decoding step, not with the whole answer). Streamed
responses carry each sequence's new text without its index, and vLLM V1 streams the n sequences of an
n > 1 request one child at a time (vllm/v1/engine/parallel_sampling.py ``get_outputs``), so only
requests for ONE answer stream (see `georag.serving.triton_glue.BlsSteps.generate`); the others, and
every call on an older Triton, hold their lane thread until the LLM answers (the lane bounds how many).
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Iterable
from typing import Any

STUB_MODULE = "c_python_backend_utils"
"""The Python backend stub's embedded module, which holds ``ResponseIterator`` (not re-exported by
``triton_python_backend_utils``)."""


def cancel_supported() -> bool:
    """Whether this stub's decoupled BLS response iterator has ``cancel()`` (python_backend r25.04+)."""
    try:
        module = importlib.import_module(STUB_MODULE)
    except ImportError:
        return False
    return callable(getattr(getattr(module, "ResponseIterator", None), "cancel", None))


class CancellableCall:
    """One decoupled BLS call: `run` (on a lane thread) starts it and reads every response; `cancel` (from
    the caller that gave up) cancels the server request as soon as its response iterator exists, so the
    model stops and `run` returns, freeing its thread, once the model sends its final response."""

    def __init__(self, start: Callable[[], Iterable[Any]]) -> None:
        """``start()`` sends the request and returns its response iterator (``exec(decoupled=True)``)."""
        self._start = start
        self._lock = threading.Lock()
        self._iterator: Iterable[Any] | None = None
        self._cancelled = False

    @property
    def cancelled(self) -> bool:
        """Whether `cancel` was called."""
        return self._cancelled

    def run(self) -> list[Any]:
        """Every response of the call, in order (blocks until the final one)."""
        iterator = self._start()
        with self._lock:
            self._iterator = iterator
            cancel_now = self._cancelled
        if cancel_now:  # the caller gave up while the first response was awaited
            _cancel(iterator)
        return list(iterator)

    def cancel(self) -> None:
        """Cancels the call: now if it has started answering, else as soon as its first response is in."""
        with self._lock:
            self._cancelled = True
            iterator = self._iterator
        if iterator is not None:
            _cancel(iterator)


def _cancel(iterator: Iterable[Any]) -> None:
    """``iterator.cancel()`` where the stub has it (a no-op on older ones: the call runs to its end)."""
    cancel = getattr(iterator, "cancel", None)
    if callable(cancel):
        cancel()
