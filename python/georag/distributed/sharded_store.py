"""A GeoStore whose exact searches run on Ray: `georag locate / serve --ray ADDRESS --shards N`.

`open_sharded_store` opens the store as `GeoStore.open` does (the metadata and coordinates stay in this
process) and starts a `ShardedIndex` over its rows. Every exact search of the store then goes through the
shards: whole-store searches, ``row_ranges`` and submaps, and the exclusions built on them
(`georag.locate.exclusion`), with the same answers as a single-process search. faiss indexes and "cuda"
stay local. `ShardedGeoStore.close` ends the actors (and the Ray cluster georag started).
"""

from __future__ import annotations

import os
from typing import Any

from georag.distributed.cluster import LocalCluster, RaySession, connect
from georag.distributed.sharded_search import ShardedIndex, ShardOptions
from georag.store.store import GeoStore


class ShardedGeoStore(GeoStore):
    """A `GeoStore` whose "exact" index is a `ShardedIndex`; made by `open_sharded_store`."""

    sharded: ShardedIndex | None = None
    """The sharded exact index (None once closed)."""
    session: RaySession | None = None

    def flat_index(self, *, num_threads: int = 0) -> ShardedIndex:  # type: ignore[override]
        """The exact index over all rows: the shards (``num_threads`` is each shard's own, fixed at start)."""
        if self.sharded is None:
            raise RuntimeError(f"the sharded search of {self.path} was closed")
        return self.sharded

    def close(self) -> None:
        """Ends the shard actors, then disconnects from Ray (stopping a cluster georag started)."""
        if self.sharded is not None:
            self.sharded.close()
            self.sharded = None
        if self.session is not None:
            self.session.close()
            self.session = None

    def __enter__(self) -> ShardedGeoStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_sharded_store(
    path: str | os.PathLike[str],
    *,
    address: str | None,
    options: ShardOptions | None = None,
    local: LocalCluster | None = None,
    **open_kwargs: Any,
) -> ShardedGeoStore:
    """Opens the store at ``path`` (``open_kwargs``: those of `GeoStore.open`) with its exact index split
    into ``options.shards`` Ray actors on the cluster at ``address`` (None: a local cluster, ``local``
    its resources). The actors have opened their rows when this returns; close the store to end them."""
    session = connect(address, local)
    try:
        store = ShardedGeoStore.open(path, **open_kwargs)
        assert isinstance(store, ShardedGeoStore)
        store.session = session
        store.sharded = ShardedIndex(store, options or ShardOptions(), session.ray)
    except BaseException:
        session.close()
        raise
    return store


LOCAL = "local"
"""The address that means "a local Ray cluster for this process" (`--ray` without an address)."""


def open_store(
    path: str | os.PathLike[str], *, ray: str | None = None, shards: int = 0, **open_kwargs: Any
) -> GeoStore:
    """`GeoStore.open` (``shards`` 0), or `open_sharded_store` with ``shards`` actors on the Ray cluster at
    ``ray`` ("local" or None: a local cluster); the one call `georag locate / serve` make."""
    if shards <= 0:
        return GeoStore.open(path, **open_kwargs)
    address = None if ray in (None, "", LOCAL) else ray
    return open_sharded_store(path, address=address, options=ShardOptions(shards=shards), **open_kwargs)
