"""The stages of a Ray build that run on the workers: decode images (CPU tasks), embed pixels (an actor pool).

Every work item flows through both stages as one row, so the driver sees each item exactly once: a row
carries its pixels, then its raw embedding, or the reason it produced none. The reasons are those of a
local build (`georag.store.build`): "image not found: NAME in WHERE", "cannot read image: ...", the
decoder's own message, "BACKEND: ..." for a failed backend call. Nothing here imports Ray: the functions
are handed to Ray Data by `georag.distributed.ray_build`.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from georag.errors import EncoderError, ImageLoadError

if TYPE_CHECKING:
    from georag.config import EncoderConfig
    from georag.encoder.encoder import Encoder
    from georag.encoder.images import ImageSource
    from georag.encoder.preprocess import ProcessorSpec
    from georag.store.image_catalog import ImageCatalog

log = logging.getLogger(__name__)

ITEM = "item"
"""Work-list position of the row (int64)."""
IMAGE_ID = "image_id"
"""The dataset's image id (text)."""
IMAGE_NAME = "image_name"
"""The image's name in the folder or tar shards (text; input only)."""
PIXELS = "pixels"
"""(3, H, W) float32 preprocessed pixels (zeros for a failed item; decode output only)."""
EMBEDDING = "embedding"
"""(d,) float32 raw embedding (zeros for a failed item; encode output only)."""
REASON = "reason"
"""Why the item produced no row; "" when it did."""

Batch = dict[str, npt.NDArray[Any]]
"""A Ray Data batch in numpy format: column name -> array."""


@dataclass(frozen=True)
class EncoderIdentity:
    """What the driver needs of the encoder the actors run: its identity and its preprocessing."""

    model_id: str
    dim: int
    backend: str
    spec: ProcessorSpec
    batch_size: int


def load_stage_encoder(config: EncoderConfig, default_model: str, device: str | None) -> Encoder:
    """The encoder of ``config`` (``default_model`` when it names none) on ``device`` (None: the config's)."""
    from georag.encoder import load_encoder_from

    if device is not None and config.device is None:
        config = replace(config, device=device)
    return load_encoder_from(config, default_model)


def describe_encoder(config: EncoderConfig, default_model: str, device: str | None) -> EncoderIdentity:
    """Loads the encoder once (where an encoder actor would run) and says what it is."""
    enc = load_stage_encoder(config, default_model, device)
    return EncoderIdentity(enc.model_id, enc.dim, enc.backend.name, enc.spec, enc.batch_size)


@functools.lru_cache(maxsize=4)
def _catalog(images: tuple[str, ...]) -> tuple[ImageCatalog, str]:
    """The image catalog of a build and its description, opened once per worker process."""
    from georag.store.image_catalog import open_catalog

    catalog = open_catalog([Path(p) for p in images])
    return catalog, catalog.describe()


def decode_batch(batch: Batch, *, images: tuple[str, ...], spec: ProcessorSpec, threads: int = 1) -> Batch:
    """Finds, reads and preprocesses the images of a batch of items (``threads`` decode threads)."""
    from georag.encoder.batches import iter_batches

    catalog, where = _catalog(images)
    ids = [str(i) for i in batch[IMAGE_ID]]
    reasons = [""] * len(ids)
    positions: list[int] = []
    sources: list[ImageSource] = []
    for pos, name in enumerate(str(n) for n in batch[IMAGE_NAME]):
        ref = catalog.locate(name)
        if ref is None:
            reasons[pos] = f"image not found: {name} in {where}"
            continue
        try:
            sources.append(ref.load())
        except (OSError, ImageLoadError) as exc:  # an unreadable file or tar member fails alone
            reasons[pos] = f"cannot read image: {exc}"
            continue
        positions.append(pos)
    pixels = np.zeros((len(ids), 3, spec.height, spec.width), dtype=np.float32)
    where_of = {ids[p]: p for p in positions}
    if sources:
        named = [ids[p] for p in positions]
        for got in iter_batches(sources, spec, len(sources), ids=named, workers=threads):
            for row, image_id in enumerate(got.ids):
                pixels[where_of[image_id]] = got.pixels[row]
            for failure in got.failures:
                reasons[where_of[failure.id]] = failure.reason
    return {
        ITEM: np.asarray(batch[ITEM], dtype=np.int64),
        IMAGE_ID: np.asarray(ids, dtype=object),
        PIXELS: pixels,
        REASON: np.asarray(reasons, dtype=object),
    }


class EncodeStage:
    """The actor of the encode pool: loads the encoder once, then embeds batches of decoded items."""

    def __init__(self, config: EncoderConfig, default_model: str, device: str | None) -> None:
        self.encoder = load_stage_encoder(config, default_model, device)

    def __call__(self, batch: Batch) -> Batch:
        """Embeds the decoded items of ``batch`` in the encoder's micro-batches; a failed backend call
        fails its items alone, as in `Encoder.encode`."""
        backend = self.encoder.backend
        reasons = np.asarray(batch[REASON], dtype=object).copy()
        todo = np.flatnonzero(reasons == "")
        out = np.zeros((len(reasons), self.encoder.dim), dtype=np.float32)
        step = self.encoder.micro_batch
        for start in range(0, todo.size, step):
            rows = todo[start : start + step]
            try:
                out[rows] = backend.embed(np.ascontiguousarray(batch[PIXELS][rows], dtype=np.float32))
            except EncoderError as exc:
                log.warning("%d images failed in the %s backend: %s", rows.size, backend.name, exc)
                reasons[rows] = f"{backend.name}: {exc}"
        return {ITEM: batch[ITEM], IMAGE_ID: batch[IMAGE_ID], EMBEDDING: out, REASON: reasons}
