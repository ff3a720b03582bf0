"""Sharded exact search (georag.distributed): the exact merge, then Ray actors on a real two-node cluster.

The reference is a single-process `GeoStore.search` of the same store (itself checked against a float64
brute force elsewhere and here): a sharded answer must equal it exactly, ids and scores, order, ties by
lower id, padding, row ranges, submaps and exclusions included.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from georag.config import ExclusionConfig
from georag.distributed.cluster import require_ray
from georag.distributed.merge import check_ranges, local_ranges, merge_neighbors, shard_bounds
from georag.distributed.shard_actor import ShardSearcher
from georag.distributed.sharded_search import ShardOptions
from georag.errors import ConfigError, MissingDependencyError, StoreError
from georag.locate.exclusion import ExcludingSearch, QueryTruth
from georag.store.build import BuildRequest, build_source
from georag.store.manifest import Manifest
from georag.store.partition import make_submaps
from georag.store.store import GeoStore
from georag.types import Neighbors
from reference import check_neighbors
from store_fixtures import real_rows, write_csv

D = 16
N = 700
FIELDS = ("near_ids", "near_scores", "far_ids", "far_scores")


@pytest.fixture(scope="module")
def gallery(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A float16 store of N real IM2GPS3k rows with random embeddings (rows 0-49 repeated as rows 300-349,
    so equal scores straddle shard boundaries), k-means submaps, and queries (one equal to row 10)."""
    root = tmp_path_factory.mktemp("sharded")
    rows = real_rows()[:N]
    if len(rows) < N:
        pytest.skip("needs the shared IM2GPS3k metadata")
    rng = np.random.default_rng(7)
    emb = rng.standard_normal((N, D)).astype(np.float32)
    emb[300:350] = emb[0:50]
    np.save(root / "emb.npy", emb)
    req = BuildRequest(
        store=root / "store",
        dataset="im2gps3k",
        metadata=write_csv(root / "meta.csv", rows),
        embeddings=root / "emb.npy",
        encoder="toy/siglip",
        shard_rows=128,
    )
    build_source(req, add=False)
    make_submaps(root / "store", "kmeans", k=5, seed=1, name="kmeans")
    queries = rng.standard_normal((6, D)).astype(np.float32)
    queries[0] = emb[10]
    truths = np.array([[r["LAT"], r["LON"], r["AUTHOR"]] for r in rows[600:606]])
    ranges = np.array([[690, 700], [5, 40], [120, 260], [30, 50]], dtype=np.int64)
    return {
        "root": root,
        "store": root / "store",
        "queries": queries,
        "truths": truths,
        "ranges": ranges,
    }


def _searchers(store: GeoStore, shards: int) -> list[ShardSearcher]:
    _, sha = Manifest.load_hashed(store.path)
    return [ShardSearcher(str(store.path), sha, lo, hi) for lo, hi in shard_bounds(store.ntotal, shards)]


def _fan_out(
    searchers: list[ShardSearcher], q: np.ndarray, k_near: int, k_far: int, ranges: Any
) -> Neighbors:
    """The sharded search's arithmetic without Ray: the same shard searchers, ranges and merge."""
    checked = None if ranges is None else check_ranges(np.asarray(ranges, dtype=np.int64), searchers[-1].hi)
    parts = []
    for s in searchers:
        mine = local_ranges(checked, s.lo, s.hi)
        if mine is None or mine.size:
            parts.append(s.search(q, k_near, k_far, mine))
    return merge_neighbors(parts, q.shape[0], k_near, k_far)


def _stored(store: GeoStore) -> np.ndarray:
    """The store's rows as searched: float16, normalized before they were rounded."""
    return np.concatenate(list(store.embedding_shards())).astype(np.float32)


def _message(call: Any) -> str:
    try:
        call()
    except ValueError as exc:
        return str(exc)
    return "no error"


def _assert_same(got: Neighbors | dict[str, np.ndarray], want: Neighbors, what: str) -> None:
    for field in FIELDS:
        a = got[field] if isinstance(got, dict) else getattr(got, field)
        np.testing.assert_array_equal(a, getattr(want, field), err_msg=f"{what}: {field}")


@pytest.mark.parametrize("shards", [1, 2, 3, 7])
def test_merged_shards_equal_one_search(gallery: dict[str, Any], shards: int) -> None:
    store = GeoStore.open(gallery["store"])
    searchers = _searchers(store, shards)
    q = gallery["queries"]
    for k in (1, 5, 60):
        for ranges in (None, gallery["ranges"], [(3, 4)], [(0, N)]):
            want = store.search(q, k, k, row_ranges=ranges)
            _assert_same(_fan_out(searchers, q, k, k, ranges), want, f"{shards} shards, k={k}, {ranges}")
    got = _fan_out(searchers, q, N + 5, 4, None)  # more rows asked than the store has: padded
    _assert_same(got, store.search(q, N + 5, 4), "padding")
    assert (got.near_ids[:, N:] == -1).all() and np.isnan(got.near_scores[:, N:]).all()


def test_ties_across_shards_go_to_the_lower_id(gallery: dict[str, Any]) -> None:
    store = GeoStore.open(gallery["store"])
    q = gallery["queries"][:1]  # equal to row 10 and to its copy, row 310 (another shard)
    got = _fan_out(_searchers(store, 2), q, 2, 0, None)
    assert got.near_ids[0].tolist() == [10, 310]
    assert got.near_scores[0, 0] == got.near_scores[0, 1]
    check_neighbors(got, _stored(store), q, 2, 0, normalize_db=False)


def test_range_checks_match_the_core(gallery: dict[str, Any]) -> None:
    store = GeoStore.open(gallery["store"])
    q = gallery["queries"]
    for ranges in ([(-1, 3)], [(5, N + 1)], [(9, 4)], [(6, 6), (8, 8)]):
        core = _message(lambda: store.search(q, 2, 2, row_ranges=ranges))  # noqa: B023
        sharded = _message(lambda: check_ranges(np.asarray(ranges, dtype=np.int64), N))  # noqa: B023
        assert sharded == core != "no error"
    assert check_ranges(np.array([[50, 60], [0, 10], [5, 20], [60, 61]]), N).tolist() == [[0, 20], [50, 61]]


def test_shard_bounds_cover_the_rows_in_order() -> None:
    assert shard_bounds(10, 3) == [(0, 3), (3, 6), (6, 10)]
    assert shard_bounds(2, 3) == [(0, 0), (0, 1), (1, 2)]
    with pytest.raises(ValueError, match="shards must be >= 1"):
        shard_bounds(5, 0)


def test_a_shard_refuses_a_store_changed_since_the_driver_opened_it(gallery: dict[str, Any]) -> None:
    with pytest.raises(StoreError, match="changed since the sharded search opened the store"):
        ShardSearcher(str(gallery["store"]), "0" * 64, 0, 10)


# --- on a real Ray cluster ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def on_cluster(gallery: dict[str, Any]) -> dict[str, Any]:
    """Runs ray_driver_search.py once on a two-node cluster; its results and events."""
    from ray_cluster import RayCluster, skip_unless_possible, tail

    skip_unless_possible()
    root: Path = gallery["root"]
    cases = root / "cases.npz"
    np.savez(cases, queries=gallery["queries"], truths=gallery["truths"], ranges=gallery["ranges"])
    out = root / "out"
    out.mkdir()
    cluster = RayCluster(root)
    try:
        driver = Path(__file__).with_name("ray_driver_search.py")
        done = cluster.run(str(driver), cluster.address, str(gallery["store"]), str(cases), str(out))
    finally:
        cluster.close()
    assert done.returncode == 0, tail(done)
    results = dict(np.load(out / "results.npz"))
    return {"results": results, "events": json.loads((out / "events.json").read_text())}


def _result(on_cluster: dict[str, Any], name: str) -> dict[str, np.ndarray]:
    return {f: on_cluster["results"][f"{name}.{f}"] for f in FIELDS}


def test_actors_on_two_nodes_search_like_one_process(
    gallery: dict[str, Any], on_cluster: dict[str, Any]
) -> None:
    store = GeoStore.open(gallery["store"])
    q = gallery["queries"]
    assert on_cluster["events"]["nodes"] == 2
    assert on_cluster["events"]["bounds"] == [[0, 233], [233, 466], [466, 700]]
    for k in (1, 7, 40):
        _assert_same(_result(on_cluster, f"whole_k{k}"), store.search(q, k, k), f"k={k}")
    _assert_same(_result(on_cluster, "ranges"), store.search(q, 9, 9, row_ranges=gallery["ranges"]), "ranges")
    _assert_same(_result(on_cluster, "one_row"), store.search(q, 3, 3, row_ranges=[(5, 6)]), "one row")
    allowed = np.concatenate([np.arange(a, b) for a, b in check_ranges(gallery["ranges"], N)])
    got = Neighbors(**_result(on_cluster, "ranges"))
    check_neighbors(got, _stored(store), q, 9, 9, allowed=allowed, normalize_db=False)


def test_submaps_and_exclusions_through_the_shards(
    gallery: dict[str, Any], on_cluster: dict[str, Any]
) -> None:
    store = GeoStore.open(gallery["store"])
    q = gallery["queries"]
    names = store.submaps("kmeans").names
    assert len(names) == 5
    for name in names:
        want = store.search(q, 5, 5, submap=("kmeans", name))
        _assert_same(_result(on_cluster, f"submap_{name}"), want, f"submap {name}")
    truths = [QueryTruth(float(a), float(b), str(c)) for a, b, c in gallery["truths"]]
    want, dropped = ExcludingSearch(store, ExclusionConfig(same_author=True, radius_km=500.0)).search(
        q, truths, 6, 6
    )
    _assert_same(_result(on_cluster, "excluding"), want, "exclusions")
    np.testing.assert_array_equal(on_cluster["results"]["excluding_dropped"], dropped)


def test_bad_input_fails_as_in_one_process(on_cluster: dict[str, Any]) -> None:
    events = on_cluster["events"]
    assert events["bad_range"] == {
        "type": "ValueError",
        "message": f"row range 0 [0, {N + 1}) is not within [0, {N})",
    }
    assert (
        events["empty_range"]["message"] == "row_ranges selects no rows; pass None to search the whole index"
    )
    assert events["bad_dtype"]["type"] == "TypeError" and "float32" in events["bad_dtype"]["message"]
    too_many = "5 shards of 1 CPU each need 5 CPUs but the Ray cluster has 2: use fewer shards"
    assert events["too_many_shards"]["type"] == "ConfigError"
    assert events["too_many_shards"]["message"].startswith(too_many)


def test_a_shard_killed_mid_query_fails_that_query_then_recovers(
    gallery: dict[str, Any], on_cluster: dict[str, Any]
) -> None:
    events = on_cluster["events"]
    assert not events["kill_hung"]
    assert events["kill"]["type"] == "ShardUnavailableError"
    assert "a sharded query failed: shard 1 (rows 233..465) died during it" in events["kill"]["message"]
    assert events["kill"]["message"].endswith("it was restarted. Retry the query")
    assert events["kill_pid_after"], "the shard's actor was not restarted"
    store = GeoStore.open(gallery["store"])
    _assert_same(_result(on_cluster, "after_kill"), store.search(gallery["queries"], 7, 7), "after the kill")


def test_a_stuck_shard_times_out_and_is_restarted(
    gallery: dict[str, Any], on_cluster: dict[str, Any]
) -> None:
    events = on_cluster["events"]
    assert events["timeout"]["type"] == "ShardUnavailableError"
    message = events["timeout"]["message"]
    assert "shard 0 (rows 0..232) did not answer within 3 s; it was restarted. Retry the query" in message
    assert 2.9 <= events["timeout_s"] < 60
    assert events["timeout_pid_after"]
    store = GeoStore.open(gallery["store"])
    _assert_same(
        _result(on_cluster, "after_timeout"), store.search(gallery["queries"], 7, 7), "after the timeout"
    )


def test_nothing_imports_ray_until_it_is_used() -> None:
    code = (
        "import sys, georag.distributed.sharded_store, georag.distributed.ray_build, georag.cli; "
        "print('ray' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_without_ray_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed
    with pytest.raises(MissingDependencyError, match=r"pip install 'ray\[data\]'.*'\.\[ray\]'"):
        require_ray()


def test_shard_options_are_checked() -> None:
    with pytest.raises(ConfigError, match="shards must be an integer >= 1"):
        ShardOptions(shards=0)
    with pytest.raises(ConfigError, match="timeout_s must be > 0"):
        ShardOptions(timeout_s=0)
