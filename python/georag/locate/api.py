"""What `Geolocator.from_store`, `predict` and `predict_many` add to the batch driver: settings from a few
keywords, ``top_k`` as settings, any kind of image as a source the driver reads, and a failed photo as an
exception for a single-photo call.

::

    with Geolocator.from_store("store/") as geo:           # encoder from the store; no LLM: knn
        pred = geo.predict("photo.jpg", top_k=16)           # a path, bytes or a PIL image
        pred.lat, pred.lon, pred.confidence, pred.neighbors["near"][0]
"""

from __future__ import annotations

import io
import itertools
import os
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from georag.config import Config, PromptVariant, load_config
from georag.errors import ConfigError, GeoRagError, InputError
from georag.locate.budget import FailureBudget
from georag.types import Prediction

if TYPE_CHECKING:
    from typing_extensions import Self

    from georag.encoder.encoder import Encoder
    from georag.llm.client import LLMClient
    from georag.locate.exclusion import QueryTruth
    from georag.store.store import GeoStore

ImageInput = Any
"""What ``predict`` takes: a path (str or os.PathLike), the encoded file (bytes), or a PIL image."""

STREAM_CHUNK = 1024
"""``predict_many`` hands the driver this many images at a time, so a generator of images is read as the
results stream out (memory stays bounded) while the driver still overlaps its stages within a chunk."""


class GeolocatorAPI:
    """The Python API's methods of `georag.Geolocator` (which inherits them): open one on a store folder,
    locate one photo or a stream of them, close what was opened."""

    if TYPE_CHECKING:  # what Geolocator provides
        config: Config
        store: GeoStore
        encoder: Encoder
        llm: LLMClient | None
        truth: Mapping[str, QueryTruth] | None
        _owns_llm: bool
        _depths: dict[int, Self]

        def __init__(
            self,
            store: GeoStore,
            encoder: Encoder,
            llm: LLMClient | None,
            config: Config | None = None,
            *,
            truth: Mapping[str, QueryTruth] | None = None,
        ) -> None: ...

        def locate(
            self,
            paths: Sequence[Path | bytes],
            *,
            skip: Iterable[str] = (),
            ids: Sequence[str] | None = None,
            max_failures: int | None = None,
            budget: FailureBudget | None = None,
        ) -> Iterator[Prediction]: ...

    @classmethod
    def from_store(
        cls,
        store: str | os.PathLike[str],
        llm: str | None = None,
        *,
        encoder: str | None = None,
        strategy: str | None = None,
        config: Config | None = None,
        settings: Mapping[str, Any] | None = None,
    ) -> Self:
        """A Geolocator on the store folder ``store``, its encoder and LLM opened here (``close`` them, or
        use ``with``).

        ``llm``: ``openai://HOST:PORT/v1?model=NAME`` or ``triton://HOST:PORT/MODEL?family=...``, checked
        now (`georag.llm.backends.LLMCheckError` when it cannot answer); None: the config's, by default
        none, and then the route is knn (retrieval only) unless ``strategy`` names another.
        ``encoder``: a hub id or folder; default the one the store's manifest names. ``config``: a
        `georag.config.Config` (`georag.load_config("run.toml")`), default the defaults; ``settings``:
        dotted keys over it (``{"strategy.rag.sampling.n": 3, "llm.timeout_s": 30}``). ConfigError for
        impossible settings, StoreError for a store that is missing or was built with another encoder.
        """
        from georag.distributed.sharded_store import open_store
        from georag.encoder import load_encoder_from
        from georag.llm.backends import check_llm, open_llm_from

        cfg = api_config(store, llm, encoder=encoder, strategy=strategy, config=config, settings=settings)
        client = open_llm_from(cfg.llm)
        try:
            if client is not None and cfg.strategy.needs_llm:
                check_llm(client)
            search = cfg.search
            opened = open_store(cfg.store, ray=search.ray, shards=search.shards, index=search.index)
            geo = cls(opened, load_encoder_from(cfg.encoder, opened.encoder), client, cfg)
        except BaseException:
            if client is not None:
                client.close()
            raise
        geo._owns_llm = True
        return geo

    def predict(self, image: Any, top_k: int | None = None, *, image_id: str | None = None) -> Prediction:
        """Where one photo was taken: a `Prediction` with ``lat``, ``lon``, ``confidence``, ``candidates``
        (the LLM's parsed answers) and ``neighbors`` (the retrieved gallery rows).

        ``image``: a path, the encoded file (bytes) or a PIL image. ``top_k``: how many nearest (and as
        many farthest) gallery photos the prediction draws on: retrieved, shown to the LLM, taken the
        medoid of (`georag.locate.api.with_top_k`); default the config's ``search.k_near`` / ``k_far`` (16).
        ``image_id``: the prediction's id; default the file name, or "image".
        Raises InputError when the photo cannot be read or decoded (the reason in the message), and
        `LLMFailureBudgetError` when every LLM request failed (unless ``llm.max_failures`` allows a
        retrieval fallback, reported in ``fallback``).
        """
        source, name = image_source(image, "image")
        (pred,) = self._at_depth(top_k).locate(
            [source], ids=[image_id or name], max_failures=self.config.llm.max_failures
        )
        return located(pred)

    def predict_many(
        self, images: Iterable[Any], top_k: int | None = None, *, ids: Iterable[str] | None = None
    ) -> Iterator[Prediction]:
        """Predictions for ``images`` (paths, bytes or PIL images; any iterable, read as results stream
        out), one per image IN INPUT ORDER, the stages overlapped as in `locate`. A photo that cannot be
        read is a prediction with ``error`` set (never an exception); ``top_k`` as for `predict`. ``ids``:
        one per image, unique; default the file name, or ``image-<i>`` for the i-th input that is not a
        path (InputError at the first repeated id). Stops with `LLMFailureBudgetError` past
        ``llm.max_failures`` photos whose every LLM request failed, counted over the whole call (as
        `georag locate` counts them over its run), however many chunks the stream is read in.
        """
        geo = self._at_depth(top_k)
        budget = FailureBudget(self.config.llm.max_failures)
        for chunk in chunks(named_sources(images, ids), STREAM_CHUNK):
            yield from geo.locate([s for s, _ in chunk], ids=[i for _, i in chunk], budget=budget)

    def close(self) -> None:
        """Closes the LLM client when `from_store` opened it (a client passed in is the caller's)."""
        if self._owns_llm and self.llm is not None:
            self.llm.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _at_depth(self, top_k: int | None) -> Self:
        """This Geolocator, or one sharing its store, encoder and client that draws on ``top_k`` rows."""
        if top_k is None:
            return self
        if top_k not in self._depths:
            self._depths[top_k] = type(self)(
                self.store, self.encoder, self.llm, with_top_k(self.config, top_k), truth=self.truth
            )
        return self._depths[top_k]


def api_config(
    store: str | os.PathLike[str],
    llm: str | None,
    *,
    encoder: str | None,
    strategy: str | None,
    config: Config | None,
    settings: Mapping[str, Any] | None,
) -> Config:
    """The settings of `Geolocator.from_store`: ``config`` (default: the defaults), then ``settings``
    (dotted keys, as `Config.with_values` takes them), then the named arguments.

    ``llm`` None keeps the config's LLM (default none); ``encoder`` None the config's (default: the store's
    own). Without a strategy named (argument or ``strategy.name`` in ``settings``), a config whose route
    needs an LLM but has none falls back to knn: ``llm=None`` means retrieval only. Prompt variants that
    neither the config nor ``settings`` name follow ``search.k_near`` / ``k_far`` (as on the command line).
    """
    values: dict[str, Any] = {**(settings or {}), "store": os.fspath(store)}
    if llm is not None:
        values["llm.url"] = llm
    if encoder is not None:
        values["encoder.model"] = encoder
    if strategy is not None:
        values["strategy.name"] = strategy
    out = load_config(None, values) if config is None else config.with_values(values)
    if "strategy.name" not in values and out.strategy.needs_llm and out.llm.url.strip().lower() == "none":
        out = out.with_values({"strategy.name": "knn"})
    return out


def with_top_k(config: Config, top_k: int) -> Config:
    """``config`` drawing on the ``top_k`` nearest gallery photos (and ``top_k`` farthest): retrieved
    (``search.k_near`` / ``k_far``), shown to the LLM (every rag prompt variant becomes rag:top_k:top_k;
    zero-shot ones stay), taken the medoid of (knn-medoid's ``knn_k``) and re-ranked (vpr-guided's
    ``rerank_k``)."""
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ConfigError(f"top_k must be an integer >= 1 (gallery photos per side), got {top_k!r}")
    deeper = PromptVariant("rag", top_k, top_k)
    rag = config.strategy.rag
    variants = tuple(dict.fromkeys(v if v.template == "zero" else deeper for v in rag.variants))
    strategy = replace(
        config.strategy,
        knn_k=top_k,
        rag=replace(rag, variants=variants),
        vpr=replace(config.strategy.vpr, rerank_k=top_k),
    )
    return replace(config, search=replace(config.search, k_near=top_k, k_far=top_k), strategy=strategy)


def image_source(image: ImageInput, fallback_id: str) -> tuple[Path | bytes, str]:
    """``image`` as the driver reads it, with its default id: a path and its file name, or the encoded bytes
    (a PIL image is saved losslessly as PNG, after its EXIF orientation) and ``fallback_id``. InputError for
    anything else."""
    if isinstance(image, str | os.PathLike):
        path = Path(image)
        return path, path.name
    if isinstance(image, bytes | bytearray | memoryview):
        return bytes(image), fallback_id
    pil = sys.modules.get("PIL.Image")
    if pil is not None and isinstance(image, pil.Image):
        return _png_bytes(image), fallback_id
    raise InputError(f"an image is a path, the file's bytes or a PIL image, got {type(image).__name__}")


def named_sources(
    images: Iterable[ImageInput], ids: Iterable[str] | None
) -> Iterator[tuple[Path | bytes, str]]:
    """Each image as a source with its id (given, else `image_source`'s: the file name, or ``image-<i>``
    for the i-th input); InputError at the first repeated id, or when ``ids`` are not one per image."""
    given = None if ids is None else iter(ids)
    seen: set[str] = set()
    count = 0
    for count, image in enumerate(images, start=1):
        source, default = image_source(image, f"image-{count - 1}")
        named = None if given is None else next(given, None)
        if given is not None and named is None:
            raise InputError(f"ids: {count - 1} for more images; give one id per image")
        photo_id = default if named is None else str(named)
        if photo_id in seen:
            raise InputError(
                f"photo id {photo_id!r} repeats (ids are file names unless given): pass ids=[...], one "
                "unique id per image"
            )
        seen.add(photo_id)
        yield source, photo_id
    if given is not None and next(given, None) is not None:
        raise InputError(f"ids: more than the {count} images; give one id per image")


def chunks(items: Iterator[tuple[Path | bytes, str]], size: int = STREAM_CHUNK) -> Iterator[list[Any]]:
    """``items`` in lists of at most ``size``, read lazily."""
    while chunk := list(itertools.islice(items, size)):
        yield chunk


def located(pred: Prediction) -> Prediction:
    """``pred`` when it has coordinates. A photo that failed before its search (missing, unreadable, not an
    image) raises InputError with the reason; any other failure GeoRagError."""
    if pred.error is None:
        return pred
    if "neighbors" not in pred.evidence:
        raise InputError(f"cannot locate {pred.id}: {pred.error}")
    raise GeoRagError(f"{pred.id}: {pred.error}")


def _png_bytes(image: Any) -> bytes:
    """A PIL image as PNG bytes, upright (its EXIF orientation applied) and RGB, as the encoder reads it."""
    from PIL import ImageOps

    from georag.encoder.images import to_rgb

    out = io.BytesIO()
    try:
        to_rgb(ImageOps.exif_transpose(image)).save(out, "PNG")
    except (OSError, ValueError, SyntaxError) as exc:  # what Pillow raises for a corrupt or odd image
        raise InputError(f"cannot read the PIL image: {exc}") from exc
    return out.getvalue()
