"""ShardedIndex: the exact search of a store whose rows are split among Ray actors, merged exactly.

The store's rows are cut into N contiguous ranges; each is held by a Ray actor (`ShardSearcher`) that
memory-maps its part of the shard files and searches it with the exact core. A query is sent to every
shard holding rows it may search (``row_ranges`` are cut per shard), and the shards' near and far lists are
merged (`georag.distributed.merge`): the result equals a single-process search of the whole store, ids,
scores, order and padding. Network traffic per query batch: the (B, d) queries out to each shard (one
object, shared by the shards of a node), B x (k_near + k_far) x 12 bytes back from each.

Every node reads the store at the path this process opened it from: a filesystem all nodes see, mounted
at the same place. A shard that dies during a query fails that query (`ShardUnavailableError`, never a
hang: every wait has a time limit) once Ray has restarted its actor, which opens its rows again, so the
next query is answered. A shard that does not answer in time is killed and restarted the same way.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from georag.distributed.cluster import ClusterError
from georag.distributed.merge import check_ranges, local_ranges, merge_neighbors, shard_bounds
from georag.distributed.shard_actor import ShardSearcher
from georag.errors import ConfigError, StoreError
from georag.search.flat import FlatIndex
from georag.search.protocol import IndexBase, Queries, Ranges
from georag.store.manifest import Manifest
from georag.types import Neighbors

if TYPE_CHECKING:
    from georag.store.store import GeoStore

log = logging.getLogger(__name__)


class ShardUnavailableError(ClusterError):
    """A shard of a sharded search died or did not answer in time; that query failed, the shard restarts."""


@dataclass(frozen=True)
class ShardOptions:
    """How a store's rows are spread over Ray actors."""

    shards: int = 2
    """Actors, each holding one contiguous range of rows (about ntotal / shards rows); default 2."""
    cpus_per_shard: float = 1.0
    """CPUs Ray reserves for each actor; its search threads are this many (at least 1); default 1."""
    timeout_s: float = 60.0
    """Longest wait for the shards' answers to one query before it fails; default 60 s."""
    start_timeout_s: float = 300.0
    """Longest wait for the shards to open their rows, at start and after a restart; default 300 s."""
    concurrency: int = 1
    """Queries one actor searches at once (threads of the actor); default 1."""
    max_restarts: int = -1
    """Restarts of a dead shard actor (-1: without limit); default -1."""
    spread: bool = True
    """Place the actors on as many nodes as possible (Ray's SPREAD scheduling); default True."""

    def __post_init__(self) -> None:
        for name in ("shards", "concurrency"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"sharded search option {name} must be an integer >= 1, got {value!r}")
        for name in ("timeout_s", "start_timeout_s", "cpus_per_shard"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"sharded search option {name} must be > 0, got {getattr(self, name)!r}")

    @property
    def threads(self) -> int:
        """Search threads of each shard."""
        return max(1, int(self.cpus_per_shard))


class ShardedIndex(IndexBase):
    """The exact index of ``store``, its rows split among Ray actors (see the module docstring).

    Takes the `georag.search.protocol.Index` contract whole: near rows by descending score, far rows by
    ascending score, ties by lower id, (-1, NaN) padding, ``row_ranges`` checked as the core checks them,
    queries checked (TypeError / ValueError) before anything is sent. ``ray``: the connected ``ray``
    module (`georag.distributed.cluster.connect`). :meth:`close` ends the actors.
    """

    tuning_keywords = ("num_threads",)

    def __init__(self, store: GeoStore, options: ShardOptions, ray: ModuleType) -> None:
        manifest, sha = Manifest.load_hashed(store.path)
        if manifest.shard_files() != store.manifest.shard_files():
            raise StoreError(f"{store.path} changed since it was opened; open it again")
        self._ray = ray
        self.options = options
        self._ntotal, self._dim = store.ntotal, store.dim
        self.bounds = [(lo, hi) for lo, hi in shard_bounds(store.ntotal, options.shards) if hi > lo]
        """The [lo, hi) rows of each shard actor, in order."""
        self._probe = FlatIndex(np.ones((1, store.dim), dtype=np.float32))  # checks queries as the core does
        _check_room(ray, len(self.bounds), options.cpus_per_shard)
        actor = ray.remote(ShardSearcher).options(
            num_cpus=options.cpus_per_shard,
            max_restarts=options.max_restarts,
            max_task_retries=0,  # a query in flight when its shard dies fails; it is not run twice
            max_concurrency=options.concurrency,
            scheduling_strategy="SPREAD" if options.spread else "DEFAULT",
        )
        where = str(store.path.resolve())  # the actors' working folder is not this process's
        self.actors = [actor.remote(where, sha, lo, hi, options.threads) for lo, hi in self.bounds]
        try:
            self.pids = self._start()  # (pid, rows) of each shard's actor when it started
        except BaseException:
            self.close()
            raise
        log.info("sharded search over %d rows: %d shards %s", self._ntotal, len(self.bounds), self.bounds)

    @property
    def ntotal(self) -> int:
        """Rows of the store, over all shards."""
        return self._ntotal

    @property
    def dim(self) -> int:
        """Embedding dimension d."""
        return self._dim

    def __repr__(self) -> str:
        return f"ShardedIndex(ntotal={self._ntotal}, dim={self._dim}, shards={self.bounds})"

    def _search(
        self, queries: Queries, k_near: int, k_far: int, ranges: Ranges, tuning: dict[str, int]
    ) -> Neighbors:
        self._probe.search(queries, 0, 0)  # TypeError / ValueError for queries the shards would refuse
        if ranges is not None:
            ranges = check_ranges(ranges, self._ntotal)
        b = int(queries.shape[0])
        if b == 0 or (k_near == 0 and k_far == 0):
            return merge_neighbors([], b, k_near, k_far)
        shared = self._ray.put(np.ascontiguousarray(queries))
        threads = tuning.get("num_threads")
        calls = []
        for i, (lo, hi) in enumerate(self.bounds):
            mine = local_ranges(ranges, lo, hi)
            if mine is None or mine.size:
                calls.append((i, self.actors[i].search.remote(shared, k_near, k_far, mine, threads)))
        return merge_neighbors(self._answers(calls), b, k_near, k_far)

    def _start(self) -> list[tuple[int, int]]:
        """Waits for every shard to open its rows (``start_timeout_s``): (pid, rows) of each."""
        calls = [(i, actor.ready.remote()) for i, actor in enumerate(self.actors)]
        late = self._late(calls, self.options.start_timeout_s)
        if late:
            raise ShardUnavailableError(
                f"the sharded search could not start: {self._names(late)} did not open its rows within "
                f"{self.options.start_timeout_s:g} s (a node short of CPUs or memory, or a slow filesystem)"
            )
        out = []
        for i, ref in calls:
            try:
                out.append(self._ray.get(ref))
            except self._ray.exceptions.RayActorError as exc:
                raise ShardUnavailableError(
                    f"the sharded search could not start: {self._names([i])} failed ({_cause(exc)})"
                ) from exc
        return out

    def _answers(self, calls: list[tuple[int, Any]]) -> list[Neighbors]:
        """The shards' answers to one query; ShardUnavailableError when a shard died during it or did not
        answer within ``timeout_s`` (then it is killed), raised once Ray has restarted the shard (or after
        ``start_timeout_s``), so that the next query finds every shard up."""
        ray = self._ray
        late = self._late(calls, self.options.timeout_s)
        if late:
            for i in late:
                ray.kill(self.actors[i], no_restart=False)
            raise ShardUnavailableError(
                f"a sharded query failed: {self._names(late)} did not answer within "
                f"{self.options.timeout_s:g} s; {self._await_restart(late)}. Retry the query, or raise the "
                "time limit if the shards are slow rather than stuck"
            )
        out = []
        for i, ref in calls:
            try:
                out.append(ray.get(ref))
            except ray.exceptions.RayActorError as exc:
                raise ShardUnavailableError(
                    f"a sharded query failed: {self._names([i])} died during it ({_cause(exc)}); "
                    f"{self._await_restart([i])}. Retry the query"
                ) from exc
        return out

    def _late(self, calls: list[tuple[int, Any]], timeout_s: float) -> list[int]:
        """The shards of ``calls`` whose answer did not come within ``timeout_s``."""
        refs = [ref for _, ref in calls]
        _, late = self._ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
        return [i for i, ref in calls if ref in late]

    def _await_restart(self, shards: list[int]) -> str:
        """Waits (``start_timeout_s`` at most) until Ray has restarted ``shards``; says how that went."""
        ray = self._ray
        deadline = time.monotonic() + self.options.start_timeout_s
        for i in shards:
            while True:
                try:
                    ray.get(self.actors[i].ready.remote(), timeout=max(deadline - time.monotonic(), 0.1))
                    break
                except ray.exceptions.ActorDiedError as exc:
                    return f"it did not come back ({_cause(exc)}): open the store again"
                except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
                    if time.monotonic() >= deadline:
                        return "Ray is still restarting it"
                    time.sleep(0.2)
        return "it was restarted" if len(shards) == 1 else "they were restarted"

    def _names(self, shards: list[int]) -> str:
        return ", ".join(f"shard {i} (rows {self.bounds[i][0]}..{self.bounds[i][1] - 1})" for i in shards)

    def close(self) -> None:
        """Ends the shard actors (they are not restarted); the index cannot search afterwards."""
        for actor in self.actors:
            self._ray.kill(actor, no_restart=True)
        self.actors = []


def _check_room(ray: ModuleType, shards: int, cpus: float) -> None:
    """ConfigError when the cluster has fewer CPUs than the shards reserve (they would wait forever)."""
    have = float(ray.cluster_resources().get("CPU", 0.0))
    if shards * cpus > have:
        raise ConfigError(
            f"{shards} shards of {cpus:g} CPU each need {shards * cpus:g} CPUs but the Ray cluster has "
            f"{have:g}: use fewer shards, fewer CPUs per shard, or a larger cluster"
        )


def _cause(exc: BaseException) -> str:
    """The last line of a Ray error that names an exception (its root cause), else its first line."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    named = [line for line in lines if "Error:" in line or "Exception:" in line]
    text = named[-1] if named else (lines[0] if lines else type(exc).__name__)
    return text[:300]
