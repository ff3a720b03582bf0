"""The pipeline's steps in this process: an encoder backend, a GeoStore and an `LLMClient`.

What `georag serve` and the in-process baselines of `benchmarks/bench_triton.py` run, where the `georag`
Triton model runs BLS calls (`georag.serving.triton_glue.BlsSteps`). Blocking calls run in worker threads
so the event loop keeps taking requests:

- the encoder runs one call at a time on a thread of its own: one call already uses every core, and a
  TensorRT execution context must not be driven from two threads at once;
- the search likewise, on another thread (the C++ core spreads one search over every core);
- LLM requests, which mostly wait, get a pool of ``llm_threads`` threads. Size it for the LLM calls in
  flight, not the requests: a request sends one call per prompt variant, all at once.

A step that runs past its time limit is abandoned by the pipeline, but its thread runs on until the call
returns: give the LLM client a per-request timeout no longer than the step's limit and no retries beyond it
(`georag serve` does), so an abandoned call frees its thread in time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from georag.config import Sampling
from georag.encoder.backends.base import Backend
from georag.errors import LLMError
from georag.llm.client import LLMClient
from georag.serving.errors import StepFailed
from georag.serving.pipeline import Embedding, Ranges
from georag.serving.retrieval import search_one
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
        self._encoder = ThreadPoolExecutor(1, thread_name_prefix="georag-encoder")
        self._search = ThreadPoolExecutor(1, thread_name_prefix="georag-search")
        self._llm_pool = ThreadPoolExecutor(llm_threads, thread_name_prefix="georag-llm")

    async def embed(self, pixels: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """(3, H, W) preprocessed pixels -> (d,) raw embedding."""
        out = await _run(self._encoder, lambda: self.backend.embed(pixels[None]))
        return np.asarray(out[0], dtype=np.float32)

    async def retrieve(
        self, embedding: Embedding, k_near: int, k_far: int, ranges: Ranges = None
    ) -> Neighbors:
        """(d,) raw embedding -> its k_near nearest and k_far farthest store rows, within ``ranges``
        when given (BadRequest for a NaN, infinite or all-zero embedding, as the Triton retrieval model
        answers). The store's own index searches (`GeoStore.open(..., index=...)`)."""
        return await _run(self._search, lambda: search_one(self.store, embedding, k_near, k_far, ranges))

    async def generate(self, prompt: Prompt, sampling: Sampling) -> Completion:
        """One request to the LLM client (its own time limit applies). A failure is StepFailed with a
        fixed message: the client's error names its endpoint and the upstream's text, kept for the log."""
        llm = self.llm
        if llm is None:
            raise StepFailed("this server has no LLM; ask for strategy knn or knn-medoid")
        try:
            return await _run(self._llm_pool, lambda: llm.generate(prompt, sampling))
        except LLMError as exc:
            log.warning("georag: the LLM step failed: %s", exc)
            raise StepFailed("the LLM step failed (see the server log)") from None

    def close(self) -> None:
        """Stops the worker threads (after their current call) and the LLM client."""
        if self.llm is not None:
            self.llm.close()
        for pool in (self._llm_pool, self._search, self._encoder):
            pool.shutdown(wait=False, cancel_futures=True)


async def _run(pool: ThreadPoolExecutor, fn: Callable[[], T]) -> T:
    return await asyncio.get_running_loop().run_in_executor(pool, fn)
