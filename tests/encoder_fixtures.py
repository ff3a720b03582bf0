"""Encoder test helpers: a tiny seeded random SigLIP vision model saved as safetensors; image lists."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from georag.encoder.tiny import TINY_DIM, TINY_SIZE, make_tiny_siglip

__all__ = ["TINY_DIM", "TINY_SIZE", "make_tiny_siglip"]

REPO = Path(__file__).resolve().parents[1]
SHARED_IMAGES = REPO.parent / "shared" / "data" / "im2gps3k" / "images"


def png_bytes(seed: int, size: tuple[int, int] = (48, 40)) -> bytes:
    """A small seeded random RGB PNG, as bytes."""
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB").save(buf, "PNG")
    return buf.getvalue()


def write_images(folder: Path, n: int, seed: int = 0) -> list[Path]:
    """Writes `n` small random PNGs into `folder`; returns their paths in order."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        p = folder / f"img{i:03d}.png"
        p.write_bytes(png_bytes(seed + i))
        paths.append(p)
    return paths


def shared_images(n: int) -> list[Path]:
    """The first `n` real JPEGs of the shared im2gps3k sample (sorted by name); empty when absent."""
    if not SHARED_IMAGES.is_dir():
        return []
    return sorted(SHARED_IMAGES.glob("*.jpg"))[:n]
