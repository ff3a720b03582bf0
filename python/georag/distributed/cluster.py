"""Ray for georag: imported only when asked for, and connected to a cluster or started locally."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from types import ModuleType

from georag.errors import GeoRagError, MissingDependencyError, extra_hint

log = logging.getLogger(__name__)

RAY_PACKAGES = "'ray[data]'"
"""What the extra ``ray`` installs."""


class ClusterError(GeoRagError):
    """The Ray cluster cannot be reached, or a worker of it failed to answer; the message says what to do."""


def require_ray() -> ModuleType:
    """The ``ray`` module; MissingDependencyError naming the extra when it is not installed."""
    try:
        import ray
    except ImportError as exc:
        raise MissingDependencyError(
            f"distributed builds and sharded searches run on Ray, which is not installed: "
            f"{extra_hint('ray', RAY_PACKAGES)}"
        ) from exc
    return ray


@dataclass(frozen=True)
class LocalCluster:
    """Resources of the single-node cluster georag starts when no address is given."""

    num_cpus: int | None = None
    """CPUs Ray may schedule on; None: all of the machine's."""
    num_gpus: int | None = None
    """GPUs; None: the ones Ray detects."""
    object_store_mib: int | None = None
    """Shared-memory object store in MiB; None: Ray's default (30% of memory)."""


class RaySession:
    """This process's connection to Ray, from `connect`; `close` disconnects only what `connect` opened."""

    def __init__(self, ray: ModuleType, owned: bool) -> None:
        self.ray = ray
        self.owned = owned
        """True when `connect` initialized Ray (and `close` shuts it down)."""

    def close(self) -> None:
        """Disconnects (and stops a local cluster georag started); nothing when the caller owns Ray."""
        if self.owned and self.ray.is_initialized():
            self.ray.shutdown()
        self.owned = False


def connect(address: str | None, local: LocalCluster | None = None) -> RaySession:
    """Joins the Ray cluster at ``address`` ("host:port" of its head, "auto", or "ray://host:port"), or with
    None starts a single-node cluster for this process (``local``: its resources). When Ray is already
    initialized in this process (a caller's own ``ray.init``), that connection is used as it is.

    A cluster georag starts has no dashboard. Ray's own start-up binds the machine's primary interface
    (not only 127.0.0.1); run the process in a network namespace of its own to keep it on loopback.
    """
    ray = require_ray()
    if ray.is_initialized():
        return RaySession(ray, owned=False)
    kwargs: dict[str, object] = {"logging_level": logging.WARNING, "log_to_driver": True}
    if address is None:
        spec = local or LocalCluster()
        kwargs.update(include_dashboard=False, num_cpus=spec.num_cpus, num_gpus=spec.num_gpus)
        if spec.object_store_mib is not None:
            kwargs["object_store_memory"] = spec.object_store_mib * 2**20
    try:
        # "local" always starts a new cluster; None would join one a `ray start` left on this machine.
        ray.init(address=address or "local", **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"the Ray cluster at {address!r}" if address else "a local Ray cluster"
        raise ClusterError(
            f"cannot connect to {where}: {exc}; start one with `ray start --head` and pass its address "
            "(host:port), or give no address to start a local cluster"
        ) from exc
    log.info("connected to Ray: %s", ray.cluster_resources())
    return RaySession(ray, owned=True)


def cluster_gpus(ray: ModuleType) -> int:
    """GPUs the connected cluster has (0 on a CPU-only cluster)."""
    return int(ray.cluster_resources().get("GPU", 0))
