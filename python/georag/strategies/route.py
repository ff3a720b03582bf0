"""The strategy protocol: a route is a generator that yields what it needs done and returns a Prediction.

A strategy does no I/O. It turns one photo's retrieved evidence into requests, and their answers into a
`Prediction`:

- ``answers = yield Ask(prompts, sampling)``: send these prompts to the LLM (the served pipeline sends them
  at once, the batch driver one after another in the photo's worker); the driver sends back
  one `Completion` or `LLMError` per prompt, in order (a driver may instead end the whole photo by raising,
  as the served pipeline does for a stalled LLM).
- ``found = yield Search(embedding, k, row_ranges, rows)``: search the store again inside these rows; the
  driver sends back the `Found` rows (after its own exclusions, if any).

Rounds compose with ``yield from`` (vpr-guided asks for a prior, searches its submap, and may then run the
rag route on the re-ranked candidates). The drivers — the threaded batch driver of `georag.locate`, the
async served pipeline of `georag.serving` — run a route with `run_route` / `run_route_async`, which also
time each request by its stage.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from georag.config import Sampling
from georag.errors import LLMError
from georag.types import Completion, Neighbors, Photo, Prediction, Prompt, Retrieved


@dataclass(frozen=True, repr=False)
class Ask:
    """One LLM round: these prompts, each for ``sampling.n`` answers."""

    prompts: tuple[Prompt, ...]
    sampling: Sampling
    stage: str = "llm"
    """The timing key the driver adds this round's wall time to (``{stage}_s``); default "llm"."""

    def __repr__(self) -> str:
        return f"Ask({len(self.prompts)} prompts, n={self.sampling.n}, stage={self.stage!r})"


Answers = tuple[Completion | LLMError, ...]
"""What the driver sends back for an `Ask`: per prompt, its completion or why it failed."""


@dataclass(frozen=True, repr=False)
class Search:
    """A restricted search: the ``k`` rows most similar to ``embedding`` within ``row_ranges``."""

    embedding: npt.NDArray[np.float32]
    """The photo's raw (d,) embedding."""
    k: int
    row_ranges: npt.NDArray[np.int64]
    """(R, 2) [start, end) row ranges (a submap)."""
    rows: int
    """Rows those ranges hold (bounds a driver's over-fetching when it excludes rows)."""
    stage: str = "submap_search"

    def __repr__(self) -> str:
        return f"Search(k={self.k}, ranges={len(self.row_ranges)}, rows={self.rows})"


@dataclass(frozen=True, repr=False)
class Found:
    """The rows a `Search` found, best first, padding dropped."""

    ids: npt.NDArray[np.int64]
    scores: npt.NDArray[np.float32]
    lat: npt.NDArray[np.float64]
    lon: npt.NDArray[np.float64]
    excluded: int = 0
    """Rows the driver's exclusions dropped from what it fetched."""

    @classmethod
    def of(cls, neighbors: Neighbors, excluded: int = 0) -> Found:
        """The near rows of a one-query store search (coordinates attached), padding dropped."""
        rows = neighbors.retrieved(0, "")
        keep = rows.valid_near()
        return cls(
            rows.near_ids[keep], rows.near_scores[keep], rows.near_lat[keep], rows.near_lon[keep], excluded
        )

    def __repr__(self) -> str:
        return f"Found({self.ids.size} rows, excluded={self.excluded})"


Request = Ask | Search
Route = Generator[Request, Any, Prediction]
"""A strategy's work for one photo: yields requests, receives their answers, returns the prediction."""


class Strategy(Protocol):
    """A route by name, set up once (its config, the store's submaps) and run for every photo."""

    name: str
    """The strategy's name in the registry ("rag", "knn", "knn-medoid", "vpr-guided")."""
    needs_llm: bool
    """True when the route asks an LLM (the driver then needs a client and the photo's bytes)."""
    needs_embedding: bool
    """True when the route searches again (`Retrieved.embedding` must be set)."""
    k_near: int
    """Rows the global search must retrieve for it."""

    def route(self, item: Retrieved, image: Photo | None) -> Route:
        """The generator for one photo (``image``: None when the route needs no LLM)."""
        ...


def answer(pred: Prediction) -> Route:
    """A route that needs nothing: it returns ``pred`` at once."""
    return pred
    yield  # a generator function: the driver's first next() returns the prediction


def run_route(
    route: Route,
    ask: Callable[[Ask], Answers],
    search: Callable[[Search], Found],
    timings: dict[str, float],
) -> Prediction:
    """Runs ``route`` to its prediction, answering each request; adds each stage's seconds to ``timings``."""
    reply: Any = None
    while True:
        done, value = _advance(route, reply)
        if done:
            return value  # type: ignore[no-any-return]
        request: Request = value
        t0 = time.perf_counter()
        reply = ask(request) if isinstance(request, Ask) else search(request)
        _add(timings, request.stage, time.perf_counter() - t0)


async def run_route_async(
    route: Route,
    ask: Callable[[Ask], Awaitable[Answers]],
    search: Callable[[Search], Awaitable[Found]],
    timings: dict[str, float],
    *,
    offload: Callable[[Callable[[], tuple[bool, Any]]], Awaitable[tuple[bool, Any]]] | None = None,
) -> Prediction:
    """`run_route` for a driver whose requests are awaited. The route's own work between requests (parsing,
    the medoid, reverse geocoding a prior) runs in a worker thread, so the event loop goes on serving:
    ``offload`` runs it (a server's own bounded pool, under its deadline); default `asyncio.to_thread`."""
    run = offload if offload is not None else asyncio.to_thread
    reply: Any = None
    while True:
        done, value = await run(functools.partial(_advance, route, reply))
        if done:
            return value  # type: ignore[no-any-return]
        request: Request = value
        t0 = time.perf_counter()
        reply = await (ask(request) if isinstance(request, Ask) else search(request))
        _add(timings, request.stage, time.perf_counter() - t0)


def finish(pred: Prediction, item: Retrieved, timings: dict[str, float]) -> Prediction:
    """``pred`` with the photo's neighbors and the stage timings in its evidence (the JSONL record)."""
    timings = {**timings, **pred.evidence.pop("timings", {})}
    extra = {"excluded_rows": int(timings.pop("excluded_rows"))} if "excluded_rows" in timings else {}
    pred.evidence = {
        "neighbors": item.evidence(),
        **extra,
        **pred.evidence,
        "timings": {k: round(v, 5) for k, v in timings.items()},
    }
    return pred


def _advance(route: Route, reply: Any) -> tuple[bool, Any]:
    """(True, the prediction) when ``route`` ends, else (False, its next request); StopIteration cannot
    cross a thread's future."""
    try:
        return False, route.send(reply)
    except StopIteration as stop:
        return True, stop.value


def _add(timings: dict[str, float], stage: str, seconds: float) -> None:
    key = f"{stage}_s"
    timings[key] = timings.get(key, 0.0) + seconds
