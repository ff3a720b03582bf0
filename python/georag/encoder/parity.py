"""Parity of two encoder backends on the same pixels: max abs error and minimum cosine similarity."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image

from georag.encoder.backends.base import Backend
from georag.encoder.images import load_image
from georag.encoder.preprocess import ProcessorSpec
from georag.errors import ExportError, ImageLoadError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")


@dataclass(frozen=True)
class ParityReport:
    """How closely `candidate` reproduces `reference` on the same batch."""

    max_abs: float
    """Largest absolute difference over all embedding entries; no default."""
    min_cosine: float
    """Smallest per-row cosine similarity (float64); no default."""
    n: int
    """Rows compared; no default."""
    reference: str = "torch"
    """Name of the reference backend (default "torch")."""
    candidate: str = "onnxruntime"
    """Name of the compared backend (default "onnxruntime")."""
    images: str = ""
    """Where the pixels came from (a folder, or "synthetic"); default empty."""

    def __str__(self) -> str:
        return (
            f"parity {self.candidate} vs {self.reference} on {self.n} images "
            f"({self.images or 'given pixels'}): "
            f"max abs error {self.max_abs:.3e}, min cosine {self.min_cosine:.8f}"
        )


def parity_check(
    reference: Backend, candidate: Backend, pixels: npt.NDArray[np.float32], *, images: str = ""
) -> ParityReport:
    """Embeds `pixels` with both backends (one batch each) and compares the raw embeddings."""
    a = reference.embed(pixels).astype(np.float64)
    b = candidate.embed(pixels).astype(np.float64)
    if a.shape != b.shape:
        raise ExportError(f"{candidate.name} gives shape {b.shape}, {reference.name} {a.shape}")
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    cos = np.sum(a * b, axis=1) / np.maximum(norms, np.finfo(np.float64).tiny)
    return ParityReport(
        max_abs=float(np.max(np.abs(a - b))) if a.size else 0.0,
        min_cosine=float(np.min(cos)) if len(cos) else 1.0,
        n=len(a),
        reference=reference.name,
        candidate=candidate.name,
        images=images,
    )


def parity_pixels(
    spec: ProcessorSpec, images_dir: str | os.PathLike[str] | None = None, n: int = 8, seed: int = 0
) -> tuple[npt.NDArray[np.float32], str]:
    """Up to `n` preprocessed real images from `images_dir` (sorted by name), else `n` seeded synthetic ones.

    Returns the (n, 3, H, W) pixels and a label saying where they came from.
    """
    rows: list[npt.NDArray[np.float32]] = []
    label = "synthetic"
    if images_dir is not None and Path(images_dir).is_dir():
        files = sorted(p for p in Path(images_dir).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        for p in files:
            if len(rows) == n:
                break
            try:
                rows.append(spec(load_image(p)))
            except (ImageLoadError, ValueError) as exc:
                log.warning("parity: skipping %s: %s", p, exc)
        if rows:
            label = str(images_dir)
    if not rows:
        rng = np.random.default_rng(seed)
        for _ in range(n):
            h, w = rng.integers(spec.height // 2 + 1, 2 * spec.height + 1, size=2)
            rows.append(
                spec(Image.fromarray(rng.integers(0, 256, (int(h), int(w), 3), dtype=np.uint8), "RGB"))
            )
    return np.stack(rows).astype(np.float32, copy=False), label
