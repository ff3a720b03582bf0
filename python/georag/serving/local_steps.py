"""The pipeline's steps in this process: an encoder backend, a GeoStore and an `LLMClient`.

What `georag serve` and the in-process baseline of `benchmarks/bench_triton.py` run, where the `georag`
Triton model runs BLS calls (`georag.serving.triton_glue.BlsSteps`). Blocking calls run in worker threads
so the event loop keeps taking requests: the encoder and the search share one small pool (they use every
core themselves), LLM requests, which mostly wait, get a pool as large as the requests allowed in flight.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import numpy.typing as npt

from georag.encoder.backends.base import Backend
from georag.errors import LLMError
from georag.llm.client import Completion, LLMClient, Prompt, Sampling
from georag.serving.errors import StepFailed
from georag.serving.pipeline import NeighbourArrays
from georag.store.store import GeoStore

log = logging.getLogger(__name__)

Outputs = tuple[npt.NDArray[Any], ...]


def search_outputs(
    store: GeoStore, queries: npt.NDArray[np.float32], k_near: int, k_far: int, index: str | None = None
) -> Outputs:
    """(n, k) arrays in `NeighbourArrays` field order for raw ``queries`` (the retrieval model's outputs)."""
    res = store.search(queries, k_near, k_far, index=index)
    n = res.neighbors
    return (
        n.near_ids.astype(np.int64), n.near_scores.astype(np.float32), res.near_lat, res.near_lon,
        n.far_ids.astype(np.int64), n.far_scores.astype(np.float32), res.far_lat, res.far_lon,
    )  # fmt: skip


class LocalSteps:
    """`georag.serving.pipeline.Steps` run here; ``llm`` may be None for knn-only serving."""

    def __init__(
        self,
        backend: Backend,
        store: GeoStore,
        llm: LLMClient | None,
        *,
        k_near: int = 16,
        k_far: int = 16,
        index: str | None = None,
        llm_threads: int = 64,
    ) -> None:
        if backend.dim != store.dim:
            raise ValueError(
                f"the encoder makes {backend.dim}-d embeddings but the store holds {store.dim}-d rows"
            )
        self.backend, self.store, self.llm = backend, store, llm
        self.k_near, self.k_far, self.index = k_near, k_far, index
        self._compute = ThreadPoolExecutor(2, thread_name_prefix="georag-compute")
        self._llm_pool = ThreadPoolExecutor(max(1, llm_threads), thread_name_prefix="georag-llm")

    async def embed(self, pixels: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """(3, H, W) preprocessed pixels -> (d,) raw embedding."""
        out = await self._run(self._compute, self.backend.embed, pixels[None])
        return np.asarray(out[0], dtype=np.float32)

    async def retrieve(self, embedding: npt.NDArray[np.float32]) -> NeighbourArrays:
        """(d,) raw embedding -> its k_near nearest and k_far farthest store rows."""
        query = np.ascontiguousarray(embedding[None], dtype=np.float32)
        arrays = await self._run(
            self._compute, search_outputs, self.store, query, self.k_near, self.k_far, self.index
        )
        return NeighbourArrays(*(a[0] for a in arrays))

    async def generate(self, prompt: Prompt, sampling: Sampling) -> Completion:
        """One request to the LLM client (its own retries and time limit apply); LLMError -> StepFailed."""
        if self.llm is None:
            raise StepFailed("this server has no LLM; ask for strategy knn or knn-medoid")
        try:
            return await self._run(self._llm_pool, self.llm.generate, prompt, sampling)
        except LLMError as exc:
            log.warning("georag: the LLM step failed: %s", exc)
            raise StepFailed(f"the LLM step failed: {exc}") from None

    def close(self) -> None:
        """Stops the worker threads (after their current call) and the LLM client."""
        if self.llm is not None:
            self.llm.close()
        self._llm_pool.shutdown(wait=False, cancel_futures=True)
        self._compute.shutdown(wait=False, cancel_futures=True)

    @staticmethod
    async def _run(pool: ThreadPoolExecutor, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)
