"""The pipeline's steps in this process: an encoder backend, a GeoStore and an `LLMClient`.

What `georag serve` and the in-process baselines of `benchmarks/bench_triton.py` run, where the `georag`
Triton model runs BLS calls (`georag.serving.triton_glue.BlsSteps`). Blocking calls run on lanes of their
own (`georag.serving.workers.Lane`) so the event loop keeps taking requests:

- the encoder runs one call at a time on a thread of its own: one call already uses every core, and a
  TensorRT execution context must not be driven from two threads at once;
- the search likewise, on another thread (the C++ core spreads one search over every core);
- LLM requests, which mostly wait, get a lane of ``llm_threads`` threads that never queues (a full one
  means the LLM holds every call it was sent: refused at once). Size it for the LLM calls in flight, not
  the requests: a request sends one call per prompt variant, all at once.

A step that runs past its time limit is abandoned by the pipeline; an abandoned LLM call is ENDED at once
(its `georag.llm.transport.Abort` shuts its connection or cancels its gRPC stream), so its thread is free
again and a stalled LLM cannot hold more threads than the calls waiting on it. An encoder or search call
cannot be interrupted and runs to its end.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from georag.config import Sampling
from georag.encoder.backends.base import Backend
from georag.errors import LLMError
from georag.llm.client import LLMClient
from georag.llm.retry import TransientError
from georag.llm.transport import Abort, abortable
from georag.serving.errors import StepFailed
from georag.serving.pipeline import Embedding, Ranges
from georag.serving.retrieval import search_one
from georag.serving.workers import Lane
from georag.store.store import GeoStore
from georag.types import Completion, Neighbors, Prompt

log = logging.getLogger(__name__)

T = TypeVar("T")


class LocalSteps:
    """`georag.serving.pipeline.Steps` run here; ``llm`` may be None for knn-only serving."""

    def __init__(
        self,
        backend: Backend,
        store: GeoStore,
        llm: LLMClient | None,
        *,
        llm_threads: int = 64,
    ) -> None:
        if backend.dim != store.dim:
            raise ValueError(
                f"the encoder makes {backend.dim}-d embeddings but the store holds {store.dim}-d rows"
            )
        if llm_threads < 1:
            raise ValueError(f"llm_threads must be >= 1, got {llm_threads}")
        self.backend, self.store, self.llm = backend, store, llm
        self._encoder = Lane("encoder", 1, what="encoder")
        self._search = Lane("search", 1, what="store search")
        self._llm = Lane("llm", llm_threads, queue=False, what="LLM")

    async def embed(self, pixels: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """(3, H, W) preprocessed pixels -> (d,) raw embedding."""
        out = await self._encoder.run(lambda: self.backend.embed(pixels[None]))
        return np.asarray(out[0], dtype=np.float32)

    async def retrieve(
        self, embedding: Embedding, k_near: int, k_far: int, ranges: Ranges = None
    ) -> Neighbors:
        """(d,) raw embedding -> its k_near nearest and k_far farthest store rows, within ``ranges``
        when given (BadRequest for a NaN, infinite, all-zero or near-zero embedding, as the Triton
        retrieval model answers). The store's own index searches (`GeoStore.open(..., index=...)`)."""
        return await self._search.run(lambda: search_one(self.store, embedding, k_near, k_far, ranges))

    async def generate(self, prompt: Prompt, sampling: Sampling) -> Completion:
        """One request to the LLM client (its own time limit applies), ended at once when the pipeline
        stops waiting for it. A failure is StepFailed with a fixed message: the client's error names its
        endpoint and the upstream's text, kept for the log (an unreachable or overloaded LLM counts as
        not serving, `georag.serving.health`)."""
        llm = self.llm
        if llm is None:
            raise StepFailed("this server has no LLM; ask for strategy knn or knn-medoid")
        abort = Abort()
        try:
            return await self._llm.run(_bound(abort, lambda: llm.generate(prompt, sampling)))
        except LLMError as exc:
            log.warning("georag: the LLM step failed: %s", exc)
            transient = isinstance(exc, TransientError) or isinstance(exc.__cause__, TransientError)
            raise StepFailed("the LLM step failed (see the server log)", down=transient) from None
        except asyncio.CancelledError:  # the step's limit or the deadline passed, or the server stops
            abort.fire()
            raise

    def close(self) -> None:
        """Stops the worker threads (after their current call) and the LLM client."""
        if self.llm is not None:
            self.llm.close()
        for lane in (self._llm, self._search, self._encoder):
            lane.close()


def _bound(abort: Abort, call: Callable[[], T]) -> Callable[[], T]:
    """``call`` run with ``abort`` bound to it (on the thread that runs it)."""

    def run() -> T:
        with abortable(abort):
            return call()

    return run
