"""Geolocator: photos in, predictions out, the stages overlapped (encode + search | LLM requests in flight).

A producer thread decodes, encodes and searches batches of photos; the calling thread hands each photo's
route (its strategy, `georag.strategies`) to a pool of ``llm.concurrency`` workers, which answer the route's
requests (LLM prompts, a restricted search of the store), and yields predictions IN INPUT ORDER as they
complete. Queues between the stages are bounded, so memory does not grow with the number of photos, and
throughput is set by the slowest stage. A photo that cannot be read, or whose every LLM request fails,
becomes a prediction with an error or a fallback, never a crash (unless a failure budget, ``max_failures``
of `Geolocator.locate`, says the run should stop). Exclusions (leakage control) apply to the
global search and to every restricted search.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from georag.config import Config
from georag.errors import ConfigError, ImageLoadError, InputError, LLMError
from georag.geo.calibration import load_calibration
from georag.geo.exif import flag_exif_gps
from georag.llm.image import llm_photo
from georag.locate.api import GeolocatorAPI
from georag.locate.budget import FailureBudget
from georag.locate.exclusion import ExcludingSearch, QueryTruth
from georag.store.store import EXACT, check_encoder
from georag.strategies.registry import make_strategy
from georag.strategies.route import Answers, Ask, Found, Search, finish, run_route
from georag.types import Photo, Prediction, Retrieved

if TYPE_CHECKING:
    from georag.encoder.encoder import Encoder
    from georag.llm.client import LLMClient
    from georag.store.store import GeoStore

log = logging.getLogger(__name__)

_END = object()


class Geolocator(GeolocatorAPI):
    """Locates photos with a store, an encoder and (for the routes that ask one) a multimodal LLM client.

    `from_store`, `predict`, `predict_many` and `close` (the Python API, `georag.locate.api`) open one on a
    store folder and locate a photo or a stream of them; `locate` is the batch driver under them."""

    def __init__(
        self,
        store: GeoStore,
        encoder: Encoder,
        llm: LLMClient | None,
        config: Config | None = None,
        *,
        truth: Mapping[str, QueryTruth] | None = None,
    ) -> None:
        """Refuses an encoder other than the store's (its embeddings would not be comparable).

        ``truth`` (by photo id, else by file name) is needed by the exclusions of ``config.exclusion``: a
        photo without a truth entry then gets an error instead of a search that might leak.
        """
        self.config = config or Config()
        if self.config.exclusion.active and truth is None:
            raise ConfigError(
                f"excluding {self.config.exclusion} needs the photos' truth (--truth FILE): their true "
                "location and author"
            )
        self.truth = truth
        self._excluding = (
            ExcludingSearch(store, self.config.exclusion) if self.config.exclusion.active else None
        )
        check_encoder(store, encoder.model_id, encoder.dim)
        # Resolved now, so a missing partition is one clear error before any photo, not one per photo.
        self.strategy = make_strategy(self.config.strategy, store)
        self.calibration = load_calibration(self.config.strategy.calibration, self.strategy.name)
        if self.strategy.needs_llm and llm is None:
            raise ConfigError(
                f"the {self.strategy.name} strategy needs an LLM (--llm triton://... or openai://...); "
                "or use knn"
            )
        self.store, self.encoder, self.llm = store, encoder, llm
        self._owns_llm = False  # True when `from_store` opened the client: `close` closes it
        self._depths: dict[int, Geolocator] = {}  # `predict(top_k=...)`: Geolocators drawing on top_k rows
        self._lock = threading.Lock()
        self._llm_failed: dict[str, str] = {}  # photo id -> its last LLM error, until `locate` yields it
        self._k_near = max(self.config.search.k_near, self.strategy.k_near)
        self._index = self.config.search.index
        store.index(self._index)  # built or read now: a missing index fails before any photo
        if self.strategy.needs_embedding:
            # Restricted searches (a submap) are exact, whatever the global index; built now, not by
            # several workers at once.
            store.index(EXACT)

    def locate_one(self, path: str | Path) -> Prediction:
        """One photo, through the same stages (run to the end: an unfinished run would cancel the client)."""
        (pred,) = self.locate([Path(path)])
        return pred

    def locate(
        self,
        paths: Sequence[Path | bytes],
        *,
        skip: Iterable[str] = (),
        ids: Sequence[str] | None = None,
        max_failures: int | None = None,
        budget: FailureBudget | None = None,
    ) -> Iterator[Prediction]:
        """Predictions for ``paths`` in input order, skipping ids in ``skip`` (photos finished by an earlier
        run). Close the iterator to stop early.

        ``paths`` may hold encoded images (bytes) too, when ``ids`` names them.
        ``ids``: one per path, unique (`photo_ids`); default the file names, which must then be unique.
        ``max_failures``: how many photos whose every LLM request failed may fall back before the run stops
        with `LLMFailureBudgetError` (raised in place of the prediction that exceeds it; the predictions
        yielded before it stand); -1: never stop; None (default): the config's ``llm.max_failures``.
        ``budget``: a `FailureBudget` to spend instead (``max_failures`` then unused), shared by several
        calls that make one run (`predict_many` streams its input through one call per chunk).
        """
        todo: list[tuple[Path | bytes, str]]
        if ids is None:
            files = [Path(p) for p in paths if not isinstance(p, bytes)]
            if len(files) < len(paths):
                raise InputError("encoded images (bytes) need ids: pass ids=[...], one per photo")
            todo = [(p, p.name) for p in unique_paths(files)]
        else:
            if len(ids) != len(paths):
                raise InputError(f"{len(ids)} ids for {len(paths)} photos")
            if len(set(ids)) != len(ids):
                raise InputError("photo ids must be unique")
            todo = [(_source(p), i) for p, i in zip(paths, ids, strict=True)]
        done = set(skip)
        todo = [(p, i) for p, i in todo if i not in done]
        with self._lock:
            self._llm_failed.clear()
        if budget is None:
            budget = FailureBudget(self.config.llm.max_failures if max_failures is None else max_failures)
        stop = threading.Event()
        retrieved: queue.Queue[Any] = queue.Queue(maxsize=4 * self.encoder.batch_size)
        worker = threading.Thread(target=self._encode_and_search, args=(todo, retrieved, stop), daemon=True)
        worker.start()
        in_flight = self.config.llm.concurrency
        pool = ThreadPoolExecutor(max_workers=in_flight, thread_name_prefix="georag-llm")
        pending: deque[Future[Prediction] | Prediction] = deque()
        finished = False
        try:
            while True:
                try:
                    item = retrieved.get(timeout=0.05)
                except queue.Empty:
                    while pending and _ready(pending[0]):
                        yield self._spend(budget, _result(pending.popleft()))
                    continue
                if item is _END:
                    break
                if isinstance(item, BaseException):
                    raise item
                if isinstance(item, Prediction):
                    pending.append(item)
                elif self.strategy.needs_llm:
                    pending.append(pool.submit(self._safely, *item))
                else:
                    pending.append(self._safely(*item))
                # Bounded window: wait for the oldest when enough photos are in flight.
                while pending and (_ready(pending[0]) or len(pending) >= 2 * in_flight):
                    yield self._spend(budget, _result(pending.popleft()))
            while pending:
                yield self._spend(budget, _result(pending.popleft()))
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

    def _spend(self, budget: FailureBudget, pred: Prediction) -> Prediction:
        """``pred``, counted against ``budget`` when every LLM request of its photo failed."""
        return budget.check(pred, self._llm_failed.pop(pred.id, None))  # atomic: workers add other ids

    def _safely(self, found: Retrieved, path: Path | bytes, timings: dict[str, float]) -> Prediction:
        """Runs one photo's route; an unexpected error becomes that photo's error, never the run's end. The
        prediction is flagged when the photo's EXIF carries GPS, and calibrated when a calibration is set."""
        try:
            pred = flag_exif_gps(finish(self._route(found, path, timings), found, timings), path)
            return pred if self.calibration is None else self.calibration.apply(pred)
        except Exception as exc:  # a client or library bug must cost one photo, not the batch
            log.exception("%s: unexpected error", found.id)
            pred = Prediction(
                found.id, strategy=self.strategy.name, error=f"internal error: {type(exc).__name__}: {exc}"
            )
            return finish(pred, found, timings)

    def _route(self, found: Retrieved, path: Path | bytes, timings: dict[str, float]) -> Prediction:
        photo: Photo | None = None
        if self.strategy.needs_llm:
            try:
                photo = llm_photo(_read(path))
            except ImageLoadError as exc:
                return Prediction(found.id, strategy=self.strategy.name, error=str(exc))
        truth = self._truth_of(found.id) if self._excluding is not None else None
        route = self.strategy.route(found, photo)
        llm = self.llm
        assert llm is not None or not self.strategy.needs_llm
        asked: list[Answers] = []

        def ask(a: Ask) -> Answers:
            answers = ask_llm(llm, a)
            asked.append(answers)
            return answers

        pred = run_route(route, ask, lambda s: self._search_within(s, truth), timings)
        replies = [r for answers in asked for r in answers]
        if replies and all(isinstance(r, LLMError) for r in replies):
            # Every request failed (not: answers that did not parse): what the failure budget counts.
            with self._lock:
                self._llm_failed[found.id] = str(replies[-1])
        return pred

    def _truth_of(self, image_id: str) -> QueryTruth | None:
        """The truth of a photo by its id, else by its file name (ids that are paths: `photo_ids`)."""
        if self.truth is None:
            return None
        found = self.truth.get(image_id)
        if found is None and "/" in image_id:
            found = self.truth.get(image_id.rsplit("/", 1)[1])
        return found

    def _search_within(self, search: Search, truth: QueryTruth | None) -> Found:
        """The top ``search.k`` allowed rows of the ranges. With exclusions it over-fetches (2k + 16,
        doubling) until k rows are allowed or the whole submap was seen, so the answer is the exact top k
        allowed."""
        q = np.ascontiguousarray(np.asarray(search.embedding, dtype=np.float32).reshape(1, -1))
        k = search.k
        if self._excluding is None or truth is None:
            return Found.of(self.store.search(q, k, 0, row_ranges=search.row_ranges, index=EXACT))
        fetch = 2 * k + 16
        while True:
            fetch = min(fetch, search.rows)
            res = self.store.search(q, fetch, 0, row_ranges=search.row_ranges, index=EXACT)
            ids = res.near_ids[0]
            keep = (ids >= 0) & ~self._excluding.excluded(ids, truth)
            if int(keep.sum()) >= k or fetch >= search.rows:
                assert res.near_lat is not None and res.near_lon is not None
                dropped = int(((ids >= 0) & ~keep).sum())
                sel = np.flatnonzero(keep)[:k]
                return Found(
                    ids[sel], res.near_scores[0][sel], res.near_lat[0][sel], res.near_lon[0][sel], dropped
                )
            fetch *= 2

    def _encode_and_search(
        self, photos: list[tuple[Path | bytes, str]], out: queue.Queue[Any], stop: threading.Event
    ) -> None:
        """Producer thread: encode a batch, search it, hand each photo on (or its error), in input order."""
        try:
            bs = self.encoder.batch_size
            for start in range(0, len(photos), bs):
                if stop.is_set():
                    return
                chunk = photos[start : start + bs]
                t0 = time.perf_counter()
                enc = self.encoder.encode([p for p, _ in chunk], ids=[i for _, i in chunk], progress=False)
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
                    truths = {x: self._truth_of(x) for x in enc.ids} if self._excluding is not None else {}
                    if self._excluding is not None:
                        keep = [i for i in keep if truths[enc.ids[i]] is not None]
                        for x in [x for x in enc.ids if truths[x] is None]:
                            failed[x] = (
                                "no truth for this photo: --exclude-* needs its true location and author"
                            )
                    embeddings, ids = enc.embeddings[keep], [enc.ids[i] for i in keep]
                    k_far = self.config.search.k_far
                    if self._excluding is None:
                        res = self.store.search(embeddings, self._k_near, k_far, index=self._index)
                    else:
                        res, dropped = self._excluding.search(
                            embeddings,
                            [_known(truths[x]) for x in ids],
                            self._k_near,
                            k_far,
                            index=self._index,
                        )
                        excluded = {x: int(c) for x, c in zip(ids, dropped, strict=True)}
                    keep_embedding = self.strategy.needs_embedding
                    for row, image_id in enumerate(ids):
                        found[image_id] = res.retrieved(
                            row, image_id, embeddings[row].copy() if keep_embedding else None
                        )
                t2 = time.perf_counter()
                timings = {
                    "encode_s": round((t1 - t0) / len(chunk), 5),
                    "search_s": round((t2 - t1) / max(len(enc), 1), 5),
                }
                for p, image_id in chunk:
                    if image_id in found:
                        extra = {"excluded_rows": excluded[image_id]} if image_id in excluded else {}
                        item: Any = (found[image_id], p, {**timings, **extra})
                    else:
                        reason = failed.get(image_id, "not encoded")
                        item = Prediction(
                            image_id, strategy=self.strategy.name, error=reason, evidence={"timings": timings}
                        )
                    _put(out, item, stop)
        except BaseException as exc:  # handed to the consumer, which raises it
            _put(out, exc, stop)
        finally:
            _put(out, _END, stop)


def ask_llm(llm: LLMClient | None, ask: Ask) -> Answers:
    """One round's prompts, one after the other on the calling thread; a failed request is that prompt's
    answer (the route decides what it means), never an exception."""
    if llm is None:
        raise ConfigError("this route asks an LLM, and none is configured")
    out: list[Any] = []
    for prompt in ask.prompts:
        try:
            out.append(llm.generate(prompt, ask.sampling))
        except LLMError as exc:
            out.append(exc)
    return tuple(out)


def _known(truth: QueryTruth | None) -> QueryTruth:
    assert truth is not None  # photos without a truth were left out of the search
    return truth


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


ID_FROM = ("name", "path")
"""How `photo_ids` names photos: by file name (default) or by path relative to the photos' common folder."""


def photo_ids(paths: Sequence[str | Path], id_from: str = "name") -> tuple[list[Path], list[str]]:
    """The photos (repeats of one file dropped) and their ids, in input order.

    ``"name"``: the file name; two different files of one name are an InputError. ``"path"``: the path
    relative to the common folder of all the photos, with ``/`` separators (``cam1/IMG_0001.jpg``), so files
    of one name in different folders are told apart; the same inputs give the same ids, so a resumed run
    skips exactly the finished photos (a run over another set of folders may have another common folder).
    """
    if id_from == "name":
        photos = unique_paths([Path(p) for p in paths])
        return photos, [p.name for p in photos]
    if id_from != "path":
        raise ConfigError(f"id_from must be one of {', '.join(ID_FROM)}, got {id_from!r}")
    seen: dict[str, Path] = {}
    for p in paths:
        full = os.path.normpath(os.path.abspath(p))
        seen.setdefault(full, Path(p))
    if not seen:
        return [], []
    root = os.path.commonpath([os.path.dirname(f) for f in seen])
    ids = [Path(os.path.relpath(f, root)).as_posix() for f in seen]
    return list(seen.values()), ids


def unique_paths(paths: list[Path]) -> list[Path]:
    """The paths with repeats dropped; GeoRagError when two different files share a name (the id)."""
    seen: dict[str, Path] = {}
    out = []
    for p in paths:
        if p.name in seen:
            if seen[p.name] != p:
                raise InputError(
                    f"two photos share the file name {p.name!r} ({seen[p.name]} and {p}): "
                    "ids are file names; use --id-from path (ids relative to the photos' common folder) "
                    "or locate them in separate runs"
                )
            continue
        seen[p.name] = p
        out.append(p)
    return out


def _source(p: str | Path | bytes) -> Path | bytes:
    """A photo as the encoder and the LLM step read it: its path, or its encoded bytes as given."""
    return p if isinstance(p, bytes) else Path(p)


def _read(path: Path | bytes) -> bytes:
    if isinstance(path, bytes):
        return path
    try:
        if not path.is_file():  # never open a FIFO (it would wait for a writer) or a device
            raise ImageLoadError(f"cannot read {path}: not a regular file")
        return path.read_bytes()
    except OSError as exc:
        raise ImageLoadError(f"cannot read {path}: {exc}") from exc
