"""Store test helpers: the real IM2GPS3k metadata and images, subsets of them, and a build runner."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest

from encoder_fixtures import SHARED_IMAGES

SHARED = SHARED_IMAGES.parents[1]
IM2GPS3K_CSV = SHARED / "im2gps3k" / "im2gps3k_places365.csv"
YFCC4K_CSV = SHARED / "yfcc4k" / "yfcc4k_places365.csv"
HEADER = ["IMG_ID", "AUTHOR", "LAT", "LON", "S3_Label"]


def need_shared() -> None:
    """Skips the calling test when ../shared/data (metadata and the 300 images) is absent."""
    if not IM2GPS3K_CSV.is_file() or not SHARED_IMAGES.is_dir():
        pytest.skip(f"needs the shared IM2GPS3k data at {SHARED}")


def real_rows() -> list[dict[str, str]]:
    """The real IM2GPS3k metadata rows, read with the csv module (an independent reader)."""
    with open(IM2GPS3K_CSV, newline="") as f:
        return list(csv.DictReader(f))


def rows_with_images(n: int | None = None) -> list[dict[str, str]]:
    """Real rows whose image is among the shared 300, in file order (the first n)."""
    have = {p.name for p in SHARED_IMAGES.iterdir()}
    rows = [r for r in real_rows() if r["IMG_ID"] in have]
    return rows if n is None else rows[:n]


def write_csv(path: Path, rows: list[dict[str, str]]) -> Path:
    """Writes rows (IM2GPS columns) as a CSV."""
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=HEADER, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k, "0") for k in HEADER})
    return path


def image_folder(dst: Path, rows: list[dict[str, str]]) -> Path:
    """A folder holding copies of the shared images of ``rows``."""
    dst.mkdir(parents=True, exist_ok=True)
    for r in rows:
        src = SHARED_IMAGES / r["IMG_ID"]
        if src.is_file():
            shutil.copyfile(src, dst / r["IMG_ID"])
    return dst


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length in float64 (the reference the store's normalization is checked against)."""
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)
