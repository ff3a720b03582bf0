"""Store test helpers: the real IM2GPS3k metadata and images, subsets of them, and a build runner."""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from encoder_fixtures import SHARED_IMAGES
from georag.store.files import quick_fingerprint, write_bytes
from georag.store.metadata import EMBEDDINGS_SHA256, ROW_CRC32, to_parquet_bytes

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


def rewrite_metadata(store: Path, shard: int, change: Callable[[pa.Table], pa.Table]) -> None:
    """Rewrites shard ``shard``'s metadata file as ``change`` makes its table, and its manifest entry to
    match (a consistent edit: only the file's content tells)."""
    m = json.loads((store / "manifest.json").read_text())
    rel = m["shards"][shard]["metadata"]
    table = pq.read_table(store / rel)
    bound = table.schema.metadata[EMBEDDINGS_SHA256].decode()
    sha, size = write_bytes(store / rel, to_parquet_bytes(change(table), bound))
    m["files"][rel] = {"sha256": sha, "bytes": size, "quick": quick_fingerprint(store / rel)}
    (store / "manifest.json").write_text(json.dumps(m))


def without_row_checksums(store: Path) -> None:
    """Makes ``store`` what a georag of store format version 1 wrote: metadata files without the row
    checksum column, and format version 1."""
    m = json.loads((store / "manifest.json").read_text())
    for i in range(len(m["shards"])):
        rewrite_metadata(store, i, lambda table: table.drop_columns([ROW_CRC32]))
    m = json.loads((store / "manifest.json").read_text())
    m["format_version"] = 1
    (store / "manifest.json").write_text(json.dumps(m))
