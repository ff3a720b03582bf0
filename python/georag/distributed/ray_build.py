"""`georag index build / add --ray`: a store's images decoded and encoded on a Ray cluster, with Ray Data.

The pipeline: the uncommitted work items (a Ray Dataset cut from the reader's table) -> `decode_batch` in CPU
tasks (find the image in the folder or tar shards, read, decode, preprocess) -> `EncodeStage`, an actor
pool (one GPU per actor where the cluster has GPUs, else CPUs) -> streamed back to the driver in item
order. The driver groups the items into the build's slices and commits each one through the local build
(`georag.store.build.build_source` with a `SliceMaker`): the same lock, manifest, crash rules, resumption,
failure and rejection lists and progress line; a killed driver resumes at the first uncommitted shard,
and Ray Data retries the tasks and restarts the actors of a killed worker.

Only the driver writes the store. Every worker reads the images by the paths the build was given, so the
images (not the store) must be on a filesystem all nodes see, at the same path; georag must be importable
on every node (installed, or shipped with Ray's ``runtime_env``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from georag.config import EncoderConfig
from georag.distributed.build_stages import (
    IMAGE_ID,
    IMAGE_NAME,
    ITEM,
    EncoderIdentity,
    EncodeStage,
    decode_batch,
    describe_encoder,
)
from georag.distributed.cluster import LocalCluster, RaySession, cluster_gpus, connect
from georag.distributed.collect import collect_slices
from georag.errors import ConfigError, EncoderError, GeoRagError
from georag.store.build import BuildReport, BuildRequest, build_source

if TYPE_CHECKING:
    from georag.datasets import DatasetRecords
    from georag.encoder.encoder import Encoder
    from georag.encoder.preprocess import ProcessorSpec
    from georag.store.build import _Slice
    from georag.store.manifest import SourceInfo

log = logging.getLogger(__name__)

_DECODE_FLOOR_BYTES = 512 * 2**20
"""A decode worker: Python with numpy, Pillow and pyarrow (about 120 MiB), and the full-size photos of a
batch while they decode (Ray measured up to 360 MiB for 32 IM2GPS3k photos)."""


def _threads(cpus: float) -> int:
    """Decode threads of a task given ``cpus`` CPUs (at least one)."""
    return max(1, int(cpus))


def _decode_memory(batch: int, spec: ProcessorSpec) -> int:
    """Heap bytes a decode task reserves: three copies of its batch's float32 pixels (decoded, stacked,
    returned) above the worker's own. Reserving it also keeps the stages apart: Ray Data fuses stages
    with equal remote arguments, which would decode inside the encoder actors."""
    return _DECODE_FLOOR_BYTES + 3 * batch * 3 * spec.height * spec.width * 4


@dataclass(frozen=True)
class RayBuildOptions:
    """Where and how wide a Ray build runs."""

    address: str | None = None
    """The cluster ("host:port" of its head, "auto", "ray://host:port"); None: a local one for the build."""
    local: LocalCluster = field(default_factory=LocalCluster)
    """Resources of the local cluster started when ``address`` is None."""
    batch_size: int | None = None
    """Items per decode and encode batch; None: the encoder's batch size."""
    encoders: int | None = None
    """Encoder actors; None: one per GPU of the cluster, or 1 on a CPU-only cluster."""
    encoder_gpus: float | None = None
    """GPUs per encoder actor; None: 1 where the cluster has GPUs, else 0 (the actor runs on CPUs)."""
    encoder_cpus: float = 1.0
    """CPUs per encoder actor (its torch / onnxruntime threads on a CPU-only cluster); default 1."""
    decoders: int | None = None
    """Decode tasks at once at most; None: as many as the free CPUs allow."""
    decode_cpus: float = 1.0
    """CPUs per decode task (its decode threads); default 1."""
    block_items: int = 256
    """Items per input block of the dataset (the unit Ray Data schedules and retries); default 256."""

    def __post_init__(self) -> None:
        for name in ("batch_size", "encoders", "decoders", "block_items"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"ray build option {name} must be an integer >= 1, got {value!r}")
        for name in ("encoder_gpus", "encoder_cpus", "decode_cpus"):
            value = getattr(self, name)
            if value is not None and not value >= 0:
                raise ConfigError(f"ray build option {name} must be >= 0, got {value!r}")


def build_source_ray(
    req: BuildRequest,
    *,
    add: bool,
    encoder: EncoderConfig | None = None,
    options: RayBuildOptions | None = None,
    progress: bool = False,
) -> BuildReport:
    """`georag.store.build.build_source` with the images decoded and encoded on a Ray cluster.

    ``encoder``: the encoder each actor loads (default: ``req.encoder`` on the torch backend; its device
    defaults to "cuda" on an actor with a GPU). The result is the local build's: the same rows in the same
    order, the same metadata, failures and rejections, embeddings equal to float16 rounding. Precomputed
    embeddings (``req.embeddings``) need no encoder: that build runs here, in this process. Ray is
    started (or joined) only when there are images left to encode.
    """
    if req.embeddings is not None:
        log.info("precomputed embeddings need no encoder: the build runs in this process, not on Ray")
        return build_source(req, add=add, progress=progress)
    run = _RayBuild(req, encoder or EncoderConfig(model=req.encoder), options or RayBuildOptions())
    try:
        return build_source(req, add=add, encoder_factory=run.identify, progress=progress, slices=run.slices)
    finally:
        run.close()


class _PoolBackend:
    """The encoder backend as the driver sees it: the actors' identity; embedding runs only in them."""

    preferred_micro_batch: int | None = None

    def __init__(self, identity: EncoderIdentity) -> None:
        self.name = f"ray({identity.backend})"
        self.height, self.width, self.dim = identity.spec.height, identity.spec.width, identity.dim

    def embed(self, pixels: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        raise EncoderError("a Ray build embeds in its encoder actors, not in the driver")


class _RayBuild:
    """One Ray build: the connection, the encoder's identity, and the pipeline of the remaining items."""

    def __init__(self, req: BuildRequest, encoder: EncoderConfig, options: RayBuildOptions) -> None:
        self.req, self.encoder, self.options = req, encoder, options
        self.session: RaySession | None = None
        self.identity: EncoderIdentity | None = None
        self.gpus = 0.0

    def _ray(self) -> Any:
        if self.session is None:
            self.session = connect(self.options.address, self.options.local)
            asked = self.options.encoder_gpus
            self.gpus = float(asked if asked is not None else (1 if cluster_gpus(self.session.ray) else 0))
        return self.session.ray

    @property
    def _device(self) -> str | None:
        return "cuda" if self.gpus > 0 else None

    def identify(self) -> Encoder:
        """Loads the encoder once where an encoder actor would run; the driver's stand-in for it."""
        from georag.encoder.encoder import Encoder

        ray = self._ray()
        task = ray.remote(describe_encoder).options(num_cpus=self.options.encoder_cpus, num_gpus=self.gpus)
        try:
            ident = ray.get(task.remote(self.encoder, self.req.encoder, self._device))
        except ray.exceptions.RayTaskError as exc:
            if isinstance(exc.cause, GeoRagError):  # e.g. a model that does not load: its own message
                raise exc.cause from None
            raise
        self.identity = ident
        return Encoder(_PoolBackend(ident), ident.spec, model_id=ident.model_id, batch_size=ident.batch_size)

    def slices(self, records: DatasetRecords, src: SourceInfo, shard_rows: int) -> Iterator[_Slice]:
        """The slices of the items from ``src.next_input`` on, encoded by the pipeline (a `SliceMaker`)."""
        if self.identity is None:
            self.identify()
        assert self.identity is not None
        batches = self._dataset(records, src.next_input, tuple(src.images)).iter_batches(
            batch_size=None, batch_format="numpy"
        )
        try:
            yield from collect_slices(batches, records, src.next_input, shard_rows, self.identity.dim)
        finally:
            close = getattr(batches, "close", None)
            if close is not None:
                close()

    def _dataset(self, records: DatasetRecords, start: int, images: tuple[str, ...]) -> Any:
        ray = self._ray()
        import ray.data as rd

        assert self.identity is not None
        context = rd.DataContext.get_current()
        context.execution_options.preserve_order = True  # items come back in order: one slice pending
        context.enable_progress_bars = False  # the build's own progress line is the one shown
        context.print_on_execution_start = False
        opts = self.options
        batch = opts.batch_size or self.identity.batch_size
        table = records.table.slice(start)
        items = pa.table(
            {
                ITEM: pa.array(np.arange(start, start + table.num_rows, dtype=np.int64)),
                IMAGE_ID: table.column("image_id"),
                IMAGE_NAME: table.column("image_name"),
            }
        )
        blocks = [items.slice(i, opts.block_items) for i in range(0, items.num_rows, opts.block_items)]
        encoders = opts.encoders or (max(1, int(cluster_gpus(ray) / self.gpus)) if self.gpus else 1)
        decoded = rd.from_arrow(blocks).map_batches(
            decode_batch,  # type: ignore[arg-type]  # takes the numpy batches that batch_format asks for
            batch_size=batch,
            batch_format="numpy",
            fn_kwargs={"images": images, "spec": self.identity.spec, "threads": _threads(opts.decode_cpus)},
            num_cpus=opts.decode_cpus,
            compute=rd.TaskPoolStrategy(size=opts.decoders) if opts.decoders else None,
            memory=_decode_memory(batch, self.identity.spec),
            udf_modifying_row_count=False,
        )
        return decoded.map_batches(
            EncodeStage,
            batch_size=batch,
            batch_format="numpy",
            fn_constructor_kwargs={
                "config": self.encoder,
                "default_model": self.req.encoder,
                "device": self._device,
            },
            compute=rd.ActorPoolStrategy(size=encoders),
            num_cpus=opts.encoder_cpus,
            num_gpus=self.gpus,
            udf_modifying_row_count=False,
        )

    def close(self) -> None:
        if self.session is not None:
            self.session.close()
