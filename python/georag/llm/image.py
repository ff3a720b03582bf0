"""The photo as the LLM receives it: the file's own bytes when small enough, else a downscaled JPEG."""

from __future__ import annotations

import io

from georag.encoder.images import load_image, to_rgb
from georag.types import Photo

MAX_BYTES = 4 << 20
"""Files up to 4 MiB in a format every server decodes are sent as they are (default)."""
MAX_SIDE = 1536
"""Larger or other files are re-encoded as JPEG with the long side at most 1536 px (Qwen2-VL's
max_pixels default is about 1280 x 1280; the server downsizes further as configured)."""
_SENT_AS_IS = {b"\xff\xd8\xff": "image/jpeg", b"\x89PNG": "image/png"}


def llm_photo(data: bytes) -> Photo:
    """The photo for an LLM request from its file's bytes; ImageLoadError for an unreadable image."""
    if len(data) <= MAX_BYTES:
        for magic, mime in _SENT_AS_IS.items():
            if data.startswith(magic):
                return Photo(data, mime)
    image = to_rgb(load_image(data))
    image.thumbnail((MAX_SIDE, MAX_SIDE))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    return Photo(out.getvalue(), "image/jpeg")
