"""Beyond one machine, on Ray (the extra ``ray``): a store built with Ray Data, searched by Ray actors.

- `georag.distributed.ray_build`: `build_source_ray`, the images of a build decoded by CPU tasks and encoded
  by an actor pool (a GPU per actor where the cluster has GPUs); the driver commits every shard itself.
- `georag.distributed.sharded_search`: `ShardedIndex`, the exact search over a store's rows split into N
  contiguous ranges, one Ray actor each, the per-shard neighbors merged exactly.
- `georag.distributed.sharded_store`: `open_sharded_store`, a `GeoStore` whose exact searches (submaps and
  exclusions included) go through a `ShardedIndex`.

Nothing here imports Ray until a function that needs it runs (`georag.distributed.cluster.require_ray`).
"""

from __future__ import annotations
