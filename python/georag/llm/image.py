"""The photo as the LLM receives it: the file's own bytes when small enough, else a downscaled JPEG."""

from __future__ import annotations

import io

from PIL import Image

from georag.encoder.images import decoding
from georag.types import Photo

MAX_BYTES = 4 << 20
"""Files up to 4 MiB in a format every server decodes are sent as they are (default)."""
MAX_SIDE = 1536
"""Larger or other files are re-encoded as JPEG with the long side at most 1536 px (Qwen2-VL's
max_pixels default is about 1280 x 1280; the server downsizes further as configured)."""
_SENT_AS_IS = {b"\xff\xd8\xff": "image/jpeg", b"\x89PNG": "image/png"}


def llm_photo(data: bytes, decoded: Image.Image | None = None) -> Photo:
    """The photo for an LLM request from its file's bytes; ImageLoadError for an unreadable image.

    ``decoded``: the same file already decoded by `georag.encoder.images` (the served pipeline decodes
    once for the encoder and the LLM); None: decoded here when it must be re-encoded, under the same
    pixel budget."""
    if len(data) <= MAX_BYTES:
        for magic, mime in _SENT_AS_IS.items():
            if data.startswith(magic):
                return Photo(data, mime)
    if decoded is not None:
        return _jpeg(decoded)
    with decoding(data) as image:
        return _jpeg(image)


def _jpeg(image: Image.Image) -> Photo:
    """``image`` as a JPEG with its long side at most MAX_SIDE (a new, small image: ``image`` is kept)."""
    width, height = image.size
    scale = MAX_SIDE / max(width, height)
    if scale < 1:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        image = image.resize(size, Image.Resampling.BICUBIC, reducing_gap=2.0)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    return Photo(out.getvalue(), "image/jpeg")
