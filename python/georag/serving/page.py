"""The map page of `georag serve` and the routes it needs beyond the API: GET /, /static/..., thumbnails.

The page (``static/index.html`` and its script) is a client of the same POST /v1/locate as any other; it
draws the answer on a Leaflet map with country outlines shipped in the package (Natural Earth 1:110m, from
the npm package world-atlas), so it works with no internet. Nothing is built: the files are served as
they lie in the package. The vendored libraries and their licences are in ``static/vendor``.

GET /v1/gallery/{row}/thumbnail answers a small JPEG of a gallery row's image where the store can reach
the image files it was built from (`georag.serving.gallery`), else 404.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import TYPE_CHECKING

from georag.serving.gallery import GalleryImages

if TYPE_CHECKING:
    from fastapi import FastAPI, Response

STATIC = Path(__file__).with_name("static")
"""The page's files, installed with the package."""
THUMBNAIL_THREADS = 4
"""Thumbnails made at once (default 4): reading and decoding them never takes the server's threads."""
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob: https://tile.openstreetmap.org; connect-src 'self'; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'"
)
"""The page's Content-Security-Policy: its own files only, and OpenStreetMap's tiles when switched on
(Leaflet sets inline styles, hence 'unsafe-inline' for styles alone)."""
_ROW = re.compile(r"[0-9]{1,12}")


def add_page(app: FastAPI, gallery: GalleryImages | None) -> None:
    """Adds GET / (the page), /static/... (its files) and /v1/gallery/{row}/thumbnail to ``app``.

    ``gallery``: the store's thumbnails (None: every thumbnail is 404). A missing one raises Starlette's
    HTTPException (404), which the app answers in its error format."""
    from fastapi import Response
    from fastapi.responses import FileResponse
    from fastapi.staticfiles import StaticFiles
    from starlette.exceptions import HTTPException

    app.mount("/static", StaticFiles(directory=STATIC, check_dir=True), name="static")
    made = asyncio.Semaphore(THUMBNAIL_THREADS)

    @app.get("/", include_in_schema=False, response_model=None)
    async def page() -> FileResponse:
        """The map page."""
        return FileResponse(
            STATIC / "index.html",
            media_type="text/html; charset=utf-8",
            headers={"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff"},
        )

    @app.get("/v1/gallery/{row}/thumbnail", response_model=None)
    async def thumbnail(row: str) -> Response:
        """A JPEG of gallery row ``row``'s image, at most 256 pixels a side; 404 where there is none."""
        if not _ROW.fullmatch(row):
            raise HTTPException(404, "no such gallery row: rows are numbered from 0")
        if gallery is None:
            raise HTTPException(404, "this server's store has no gallery images")
        async with made:
            jpeg = await asyncio.to_thread(gallery.thumbnail, int(row))
        if jpeg is None:
            raise HTTPException(404, f"no image for gallery row {int(row)}")
        return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})
