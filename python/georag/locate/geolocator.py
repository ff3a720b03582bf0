"""Geolocator: photos in, predictions out, the stages overlapped (encode | search | LLM requests in flight).

Three stages run at once: a thread decodes and encodes batches of photos, a thread searches the store for
each encoded batch, and the calling thread hands each photo to a pool of ``max_in_flight`` LLM workers and
yields predictions IN INPUT ORDER as they complete. Queues between the stages are bounded, so memory does
not grow with the number of photos, and throughput is set by the slowest stage. A photo that cannot be
read, or whose every LLM request fails, becomes a prediction with an error or a fallback, never a crash.
On the vpr-guided route the worker asks for the photo's prior and searches the prior's submap itself (the
photo's embedding travels with it); the search thread's global search is its fallback.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from georag.errors import GeoRagError, ImageLoadError
from georag.llm.prompts import PromptVariant
from georag.locate.exclusion import ExcludingSearch, Exclusion, QueryTruth
from georag.locate.llm_image import llm_image
from georag.locate.prediction import Prediction
from georag.store.store import check_encoder
from georag.strategies.knn import KNN_MODES, knn_predict
from georag.strategies.rag import RagConfig, rag_predict
from georag.strategies.retrieved import Retrieved
from georag.strategies.vpr_guided import VPR, VprConfig, VprRoute

if TYPE_CHECKING:
    from georag.encoder.encoder import Encoder
    from georag.llm.client import LLMClient
    from georag.store.store import GeoStore

log = logging.getLogger(__name__)

STRATEGIES = ("rag", *KNN_MODES, VPR)
_END = object()


@dataclass(frozen=True)
class LocateConfig:
    """What `Geolocator` does for each photo."""

    strategy: str = "rag"
    """"rag" (needs an LLM), "knn" (top-1 neighbour), "knn-medoid" (medoid of the top k) or "vpr-guided"
    (needs an LLM and a submap partition of the store); default rag."""
    k_near: int = 16
    """Similar rows retrieved per photo; default 16 (prompt variants show at most this many)."""
    k_far: int = 16
    """Dissimilar rows retrieved per photo; default 16."""
    rag: RagConfig = field(default_factory=RagConfig)
    """Prompt variants, sampling and selection of the rag route."""
    max_in_flight: int = 16
    """Photos whose LLM requests run at once; default 16."""
    knn_k: int = 16
    """Neighbours the knn-medoid baseline takes the medoid of; default 16."""
    exclusion: Exclusion = field(default_factory=Exclusion)
    """Gallery rows a query may not retrieve (same author, near the truth); default none. Needs the truth."""
    vpr: VprConfig = field(default_factory=VprConfig)
    """Prior, submap and re-ranking of the vpr-guided route (and its hybrid with rag, which uses ``rag``);
    default: country submaps, 5 prior samples, top 16 re-ranked with weight 0.5."""

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise GeoRagError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        if self.k_near < 1 or self.k_far < 0 or self.max_in_flight < 1 or self.knn_k < 1:
            raise GeoRagError("k_near, max_in_flight and knn_k must be >= 1 and k_far >= 0")
        for v in self.rag.variants:
            if v.k_near > self.k_near or v.k_far > self.k_far:
                raise GeoRagError(
                    f"prompt variant {v} shows more references than are retrieved (k_near={self.k_near}, "
                    f"k_far={self.k_far}); raise --k-near/--k-far"
                )


class Geolocator:
    """Locates photos with a store, an encoder and (for the rag route) a multimodal LLM client."""

    def __init__(
        self,
        store: GeoStore,
        encoder: Encoder,
        llm: LLMClient | None,
        config: LocateConfig | None = None,
        *,
        truth: Mapping[str, QueryTruth] | None = None,
    ) -> None:
        """Refuses an encoder other than the store's (its embeddings would not be comparable).

        ``truth`` (by image file name) is needed by the exclusions of ``config.exclusion``: a photo without
        a truth entry then gets an error instead of a search that might leak.
        """
        self.config = config or LocateConfig()
        if self.config.exclusion.active and truth is None:
            raise GeoRagError(
                f"excluding {self.config.exclusion} needs the photos' truth (--truth FILE): their true "
                "location and author"
            )
        self.truth = truth
        self._excluding = (
            ExcludingSearch(store, self.config.exclusion) if self.config.exclusion.active else None
        )
        check_encoder(store, encoder.model_id, encoder.dim)
        if self.config.strategy in ("rag", VPR) and llm is None:
            raise GeoRagError(
                f"the {self.config.strategy} strategy needs an LLM (--llm triton://... or openai://...); "
                "or use knn"
            )
        self.store, self.encoder, self.llm = store, encoder, llm
        # Resolved now, so a missing partition is one clear error before any photo, not one per photo.
        self._vpr: VprRoute | None = None
        if self.config.strategy == VPR:
            self._vpr = VprRoute(store, self.config.vpr, excluding=self._excluding)

    @property
    def _k_near(self) -> int:
        """Rows the search thread retrieves: the vpr-guided fallback re-ranks ``rerank_k`` of them."""
        if self._vpr is not None:
            return max(self.config.k_near, self.config.vpr.rerank_k)
        return self.config.k_near

    def locate_one(self, path: str | Path) -> Prediction:
        """One photo, through the same stages."""
        return next(self.locate([Path(path)]))

    def locate(self, paths: Sequence[Path], *, skip: Iterable[str] = ()) -> Iterator[Prediction]:
        """Predictions for ``paths`` in input order (ids: file names, which must be unique), skipping ids in
        ``skip`` (photos finished by an earlier run). Close the iterator to stop early."""
        todo = unique_paths([Path(p) for p in paths])
        done = set(skip)
        todo = [p for p in todo if p.name not in done]
        stop = threading.Event()
        retrieved: queue.Queue[Any] = queue.Queue(maxsize=4 * self.encoder.batch_size)
        worker = threading.Thread(target=self._encode_and_search, args=(todo, retrieved, stop), daemon=True)
        worker.start()
        pool = ThreadPoolExecutor(max_workers=self.config.max_in_flight, thread_name_prefix="georag-llm")
        pending: deque[Future[Prediction] | Prediction] = deque()
        finished = False
        try:
            while True:
                try:
                    item = retrieved.get(timeout=0.05)
                except queue.Empty:
                    while pending and _ready(pending[0]):
                        yield _result(pending.popleft())
                    continue
                if item is _END:
                    break
                if isinstance(item, BaseException):
                    raise item
                if isinstance(item, Prediction):
                    pending.append(item)
                else:
                    pending.append(self._dispatch(item, pool))
                # Bounded window: wait for the oldest when enough photos are in flight.
                while pending and (_ready(pending[0]) or len(pending) >= 2 * self.config.max_in_flight):
                    yield _result(pending.popleft())
            while pending:
                yield _result(pending.popleft())
            finished = True
        finally:
            stop.set()
            if not finished and self.llm is not None:
                # Stopped early (closed, Ctrl-C, an error): no retries or queued requests; the attempts in
                # flight end within their timeout, and their results are not wanted.
                self.llm.cancel()
            while worker.is_alive():  # unblock the producer if it waits on a full queue
                try:
                    retrieved.get_nowait()
                except queue.Empty:
                    worker.join(0.05)
            pool.shutdown(wait=True, cancel_futures=True)

    def _dispatch(
        self, item: tuple[Retrieved, dict[str, float]], pool: ThreadPoolExecutor
    ) -> Future[Prediction] | Prediction:
        found, timings = item
        if self.config.strategy in KNN_MODES:
            pred = knn_predict(found, self.config.strategy, self.config.knn_k)
            return _with_evidence(pred, found, timings)
        route = self._vpr_guided if self._vpr is not None else self._rag
        return pool.submit(self._safely, route, found, timings)

    def _safely(
        self,
        route: Callable[[Retrieved, dict[str, float]], Prediction],
        found: Retrieved,
        timings: dict[str, float],
    ) -> Prediction:
        """Runs one photo's route; an unexpected error becomes that photo's error, never the run's end."""
        try:
            return route(found, timings)
        except Exception as exc:  # a client or library bug must cost one photo, not the batch
            log.exception("%s: unexpected error", found.id)
            pred = Prediction(
                found.id, strategy=self.config.strategy, error=f"internal error: {type(exc).__name__}: {exc}"
            )
            return _with_evidence(pred, found, timings)

    def _vpr_guided(self, found: Retrieved, timings: dict[str, float]) -> Prediction:
        assert self.llm is not None and self._vpr is not None
        try:
            image, mime = llm_image(found.path)
        except ImageLoadError as exc:
            return _with_evidence(Prediction(found.id, strategy=VPR, error=str(exc)), found, timings)
        truth = self.truth.get(found.id) if self.truth is not None and self._excluding is not None else None
        pred = self._vpr.predict(found, image, mime, self.llm, self.config.rag, truth)
        return _with_evidence(pred, found, {**timings, **pred.evidence.pop("timings", {})})

    def _rag(self, found: Retrieved, timings: dict[str, float]) -> Prediction:
        assert self.llm is not None
        try:
            image, mime = llm_image(found.path)
        except ImageLoadError as exc:
            return _with_evidence(Prediction(found.id, strategy="rag", error=str(exc)), found, timings)
        t0 = time.perf_counter()
        pred = rag_predict(found, image, mime, self.llm, self.config.rag)
        timings = {**timings, "llm_s": round(time.perf_counter() - t0, 4)}
        return _with_evidence(pred, found, timings)

    def _encode_and_search(self, paths: list[Path], out: queue.Queue[Any], stop: threading.Event) -> None:
        """Producer thread: encode a batch, search it, hand each photo on (or its error), in input order."""
        try:
            bs = self.encoder.batch_size
            for start in range(0, len(paths), bs):
                if stop.is_set():
                    return
                chunk = paths[start : start + bs]
                t0 = time.perf_counter()
                enc = self.encoder.encode(chunk, ids=[p.name for p in chunk], progress=False)
                t1 = time.perf_counter()
                found: dict[str, Retrieved] = {}
                failed = {f.id: f.reason for f in enc.failures}
                excluded: dict[str, int] = {}
                if len(enc):
                    # A NaN or zero embedding would make the whole batch's search raise: it fails alone.
                    norms = np.linalg.norm(enc.embeddings.astype(np.float64), axis=1)
                    usable = np.isfinite(norms) & (norms > 0)
                    keep = [i for i in range(len(enc)) if usable[i]]
                    for i in np.flatnonzero(~usable):
                        failed[enc.ids[i]] = "the encoder returned a zero or non-finite embedding"
                    if self._excluding is not None:
                        assert self.truth is not None
                        keep = [i for i in keep if enc.ids[i] in self.truth]
                        for x in [x for x in enc.ids if x not in self.truth]:
                            failed[x] = (
                                "no truth for this photo: --exclude-* needs its true location and author"
                            )
                    embeddings, ids = enc.embeddings[keep], [enc.ids[i] for i in keep]
                    if self._excluding is None:
                        res = self.store.search(embeddings, self._k_near, self.config.k_far)
                    else:
                        assert self.truth is not None
                        res, dropped = self._excluding.search(
                            embeddings, [self.truth[x] for x in ids], self._k_near, self.config.k_far
                        )
                        excluded = {x: int(c) for x, c in zip(ids, dropped, strict=True)}
                    n = res.neighbors
                    by_name = {p.name: p for p in chunk}
                    for i, image_id in enumerate(ids):
                        found[image_id] = Retrieved(
                            image_id, by_name[image_id],
                            n.near_ids[i], n.near_scores[i], res.near_lat[i], res.near_lon[i],
                            n.far_ids[i], n.far_scores[i], res.far_lat[i], res.far_lon[i],
                            embeddings[i].copy() if self._vpr is not None else None,
                        )  # fmt: skip
                t2 = time.perf_counter()
                timings = {
                    "encode_s": round((t1 - t0) / len(chunk), 5),
                    "search_s": round((t2 - t1) / max(len(enc), 1), 5),
                }
                for p in chunk:
                    if p.name in found:
                        extra = {"excluded_rows": excluded[p.name]} if p.name in excluded else {}
                        item: Any = (found[p.name], {**timings, **extra})
                    else:
                        reason = failed.get(p.name, "not encoded")
                        item = Prediction(
                            p.name, strategy=self.config.strategy, error=reason, evidence={"timings": timings}
                        )
                    _put(out, item, stop)
        except BaseException as exc:  # handed to the consumer, which raises it
            _put(out, exc, stop)
        finally:
            _put(out, _END, stop)


def _put(out: queue.Queue[Any], item: Any, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            out.put(item, timeout=0.1)
            return
        except queue.Full:
            continue


def _ready(p: Future[Prediction] | Prediction) -> bool:
    return isinstance(p, Prediction) or p.done()


def _result(p: Future[Prediction] | Prediction) -> Prediction:
    return p if isinstance(p, Prediction) else p.result()


def _with_evidence(pred: Prediction, found: Retrieved, timings: dict[str, float]) -> Prediction:
    timings = dict(timings)
    extra = {"excluded_rows": int(timings.pop("excluded_rows"))} if "excluded_rows" in timings else {}
    pred.evidence = {"neighbors": found.evidence(), **extra, **pred.evidence, "timings": timings}
    return pred


def unique_paths(paths: list[Path]) -> list[Path]:
    """The paths with repeats dropped; GeoRagError when two different files share a name (the id)."""
    seen: dict[str, Path] = {}
    out = []
    for p in paths:
        if p.name in seen:
            if seen[p.name] != p:
                raise GeoRagError(
                    f"two photos share the file name {p.name!r} ({seen[p.name]} and {p}): "
                    "ids are file names; "
                    "locate them in separate runs"
                )
            continue
        seen[p.name] = p
        out.append(p)
    return out


def default_variants(k_near: int, k_far: int) -> tuple[PromptVariant, ...]:
    """The default prompt: rag with all retrieved references."""
    return (PromptVariant("rag", k_near, k_far),)
