"""Test driver run inside the Ray test cluster (see ray_cluster.py): a sharded search of a store.

    python ray_driver_search.py ADDRESS STORE CASES.npz OUT_DIR

Searches the cases of CASES.npz through `open_sharded_store` (3 shards on the cluster) and saves every
result in OUT_DIR/results.npz; then kills a shard during a query and stops another past the time limit,
recording the errors and the answers after each in OUT_DIR/events.json. The test compares all of it with
single-process searches.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from georag.config import ExclusionConfig
from georag.distributed.sharded_search import ShardOptions
from georag.distributed.sharded_store import ShardedGeoStore, open_sharded_store
from georag.locate.exclusion import ExcludingSearch, QueryTruth
from georag.types import Neighbors

TIMEOUT_S = 3.0


def main(address: str, store_path: str, cases_path: str, out: str) -> None:
    cases = np.load(cases_path)
    results: dict[str, np.ndarray] = {}
    events: dict[str, Any] = {}
    options = ShardOptions(shards=3, cpus_per_shard=0.5, timeout_s=TIMEOUT_S, start_timeout_s=60)
    with open_sharded_store(store_path, address=address, options=options) as store:
        import ray

        events["nodes"] = len([n for n in ray.nodes() if n["Alive"]])
        events["bounds"] = store.flat_index().bounds
        q = cases["queries"]
        for k in (1, 7, 40):
            keep(results, f"whole_k{k}", store.search(q, k, k))
        keep(results, "ranges", store.search(q, 9, 9, row_ranges=cases["ranges"]))
        keep(results, "one_row", store.search(q, 3, 3, row_ranges=[(5, 6)]))
        for name in store.submaps("kmeans").names:
            keep(results, f"submap_{name}", store.search(q, 5, 5, submap=("kmeans", name)))
        excluding = ExcludingSearch(store, ExclusionConfig(same_author=True, radius_km=500.0))
        truths = [QueryTruth(float(a), float(b), str(c)) for a, b, c in cases["truths"]]
        found, dropped = excluding.search(q, truths, 6, 6)
        keep(results, "excluding", found)
        results["excluding_dropped"] = dropped
        for name, call in {
            "bad_range": lambda: store.search(q, 3, 3, row_ranges=[(0, store.ntotal + 1)]),
            "empty_range": lambda: store.search(q, 3, 3, row_ranges=[(4, 4)]),
            "bad_dtype": lambda: store.search(q.astype(np.float64), 3, 3),
            "too_many_shards": lambda: open_sharded_store(
                store_path, address=address, options=ShardOptions(shards=5, cpus_per_shard=1)
            ),
        }.items():
            events[name] = error_of(call)
        events.update(kill_during_query(store, q))
        keep(results, "after_kill", store.search(q, 7, 7))
        events.update(stop_past_timeout(store, q))
        keep(results, "after_timeout", store.search(q, 7, 7))
    np.savez(Path(out) / "results.npz", **results)
    (Path(out) / "events.json").write_text(json.dumps(events))


def keep(results: dict[str, np.ndarray], name: str, res: Neighbors) -> None:
    for field in ("near_ids", "near_scores", "far_ids", "far_scores"):
        results[f"{name}.{field}"] = getattr(res, field)


def error_of(call: Any) -> dict[str, str]:
    try:
        call()
    except Exception as exc:
        return {"type": type(exc).__name__, "message": str(exc)}
    return {"type": "none", "message": ""}


def shard_pid(store: ShardedGeoStore, shard: int) -> int:
    import ray

    pid, _ = ray.get(store.flat_index().actors[shard].ready.remote(), timeout=60)
    return int(pid)


def kill_during_query(store: ShardedGeoStore, q: np.ndarray) -> dict[str, Any]:
    """Shard 1 is paused, a query sent to it, then the shard killed while the query waits for it."""
    pid = shard_pid(store, 1)
    os.kill(pid, signal.SIGSTOP)
    outcome: dict[str, Any] = {}
    query = threading.Thread(target=lambda: outcome.update(error_of(lambda: store.search(q, 7, 7))))
    query.start()
    time.sleep(0.5)
    os.kill(pid, signal.SIGKILL)
    query.join(timeout=60)
    return {"kill": outcome, "kill_hung": query.is_alive(), "kill_pid_after": shard_pid(store, 1) != pid}


def stop_past_timeout(store: ShardedGeoStore, q: np.ndarray) -> dict[str, Any]:
    """Shard 0 is paused (alive but not answering): the query fails after the time limit."""
    pid = shard_pid(store, 0)
    os.kill(pid, signal.SIGSTOP)
    t0 = time.monotonic()
    outcome = error_of(lambda: store.search(q, 7, 7))
    return {
        "timeout": outcome,
        "timeout_s": time.monotonic() - t0,
        "timeout_pid_after": shard_pid(store, 0) != pid,
    }


if __name__ == "__main__":
    main(*sys.argv[1:])
