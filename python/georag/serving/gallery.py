"""Thumbnails of a store's gallery rows, for the map page: read from the images the store was built from.

A store keeps, per row, its source and the dataset's image id, and per source the image folder or tar
shards it was built from (`georag.store.manifest.SourceInfo.images`). A thumbnail is found only through
those: the row number selects the metadata row, the source's catalog (`georag.store.image_catalog`) finds
the image by its id (names that are absolute or climb out with ``..`` are never found), the file is read
only up to `MAX_SOURCE_BYTES`, decoded by the safe loader (`georag.encoder.images.load_image`) and
re-encoded as a small JPEG. Nothing else of the disk is reachable. A store built from embeddings alone
has no images: `GalleryImages.of` returns None, and the page shows no thumbnails.
"""

from __future__ import annotations

import io
import logging
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from georag.errors import GeoRagError, ImageLoadError

log = logging.getLogger(__name__)

THUMBNAIL_SIDE = 256
"""Longest side of a thumbnail in pixels (default 256)."""
MAX_SOURCE_BYTES = 32 << 20
"""Largest gallery image read to make a thumbnail (default 32 MiB); larger ones get none."""
CACHED = 512
"""Thumbnails kept in memory (default 512, about 10 KiB each)."""


class GalleryImages:
    """Thumbnails of the rows of a store (a `georag.GeoStore`: its ``metadata`` and ``manifest``)."""

    def __init__(self, store: Any, *, side: int = THUMBNAIL_SIDE, cached: int = CACHED) -> None:
        """Use :meth:`of`."""
        self._metadata = store.metadata
        self._images = {s.name: list(s.images) for s in store.manifest.sources if s.images}
        self._side = side
        self._cached = cached
        self._catalogs: dict[str, Any] = {}
        self._cache: OrderedDict[int, bytes | None] = OrderedDict()
        self._lock = threading.Lock()

    @classmethod
    def of(cls, store: Any) -> GalleryImages | None:
        """The thumbnails of ``store``, or None when it has no image locations (built from embeddings, or
        not a GeoStore)."""
        manifest = getattr(store, "manifest", None)
        if getattr(store, "metadata", None) is None or manifest is None:
            return None
        if not any(getattr(s, "images", None) for s in getattr(manifest, "sources", ())):
            return None
        return cls(store)

    def thumbnail(self, row: int) -> bytes | None:
        """Row ``row``'s image as a JPEG of at most ``side`` pixels a side, or None when the row does not
        exist or its image cannot be found, read or decoded. Blocking (reads a file): call it in a thread."""
        if not 0 <= row < self._metadata.num_rows:
            return None
        with self._lock:
            if row in self._cache:
                self._cache.move_to_end(row)
                return self._cache[row]
        made = self._make(row)
        with self._lock:
            self._cache[row] = made
            while len(self._cache) > self._cached:
                self._cache.popitem(last=False)
        return made

    def _make(self, row: int) -> bytes | None:
        source = self._metadata.column("source")[row].as_py()
        image_id = self._metadata.column("image_id")[row].as_py()
        catalog = self._catalog(source)
        ref = catalog.locate(image_id) if catalog is not None and image_id else None
        if ref is None:
            return None
        try:
            if ref.size is not None and ref.size > MAX_SOURCE_BYTES:
                return None
            data = ref.load()
            if isinstance(data, Path):
                with data.open("rb") as f:
                    data = f.read(MAX_SOURCE_BYTES + 1)
                if len(data) > MAX_SOURCE_BYTES:
                    return None
            return _jpeg_thumbnail(data, self._side)
        except (ImageLoadError, OSError) as exc:
            log.info("no thumbnail for gallery row %d: %s", row, exc)
            return None

    def _catalog(self, source: str) -> Any:
        """The image catalog of ``source``, opened once (None, and one warning, when it cannot be)."""
        with self._lock:
            if source in self._catalogs:
                return self._catalogs[source]
        paths = self._images.get(source)
        catalog = None
        if paths:
            from georag.store.image_catalog import open_catalog

            try:
                catalog = open_catalog(paths)
            except GeoRagError as exc:
                log.warning("gallery images of source %r cannot be opened, no thumbnails: %s", source, exc)
        with self._lock:
            return self._catalogs.setdefault(source, catalog)


def _jpeg_thumbnail(data: bytes, side: int) -> bytes:
    """The image ``data`` decoded safely and re-encoded as a JPEG of at most ``side`` pixels a side."""
    from georag.encoder.images import load_image

    image = load_image(data)
    image.thumbnail((side, side))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=82)
    return out.getvalue()
