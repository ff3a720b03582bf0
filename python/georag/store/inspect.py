"""Looking at a store without trusting it: a summary (`index info`), a full checksum pass (`index verify`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from georag.errors import GeoRagError
from georag.progress import progress as progress_display
from georag.store.files import sha256_file
from georag.store.manifest import MANIFEST, Manifest

log = logging.getLogger(__name__)


@dataclass
class VerifyReport:
    """The result of re-hashing every file a store's manifest lists."""

    store: Path
    """The store checked."""
    checked: int = 0
    """Files hashed."""
    bytes: int = 0
    """Bytes hashed."""
    problems: list[str] = field(default_factory=list)
    """One line per missing, resized or changed file, or inconsistent shard."""
    unlisted: list[str] = field(default_factory=list)
    """Files in the store's folders that the manifest does not list (leftovers of an interrupted step)."""

    @property
    def ok(self) -> bool:
        """True when every listed file is present and unchanged."""
        return not self.problems


def verify_store(path: str | Path, *, progress: bool = False) -> VerifyReport:
    """Re-hashes every file of the store (SHA-256); checks each shard's array header against the manifest."""
    root = Path(path)
    manifest = Manifest.load(root)
    report = VerifyReport(root)
    total = sum(e.bytes for e in manifest.files.values())
    with progress_display(total, desc="verify", unit="B", unit_scale=True, enabled=progress) as bar:
        for rel, entry in sorted(manifest.files.items()):
            p = root / rel
            if not p.is_file():
                report.problems.append(f"{rel}: missing")
                continue
            size = p.stat().st_size
            if size != entry.bytes:
                report.problems.append(
                    f"{rel}: {size} bytes, the manifest says {entry.bytes} (truncated or replaced)"
                )
                bar.update(entry.bytes)
                continue
            if sha256_file(p) != entry.sha256:
                report.problems.append(f"{rel}: content changed (SHA-256 differs from the manifest)")
            report.checked += 1
            report.bytes += size
            bar.update(size)
    for s in manifest.shards:
        if s.embeddings in manifest.files and not any(s.embeddings in p for p in report.problems):
            try:
                arr = np.load(root / s.embeddings, mmap_mode="r" if s.rows else None, allow_pickle=False)
                if arr.shape != (s.rows, manifest.dim) or arr.dtype != np.dtype(manifest.dtype):
                    report.problems.append(
                        f"{s.embeddings}: holds {arr.dtype} {arr.shape}, expected {s.rows} rows"
                    )
            except (OSError, ValueError) as exc:
                report.problems.append(f"{s.embeddings}: not a readable .npy ({exc})")
    for sub in ("shards", "sources", "ann", "submaps"):
        if (root / sub).is_dir():
            report.unlisted += sorted(
                f"{sub}/{p.name}" for p in (root / sub).iterdir() if f"{sub}/{p.name}" not in manifest.files
            )
    return report


def store_info(path: str | Path) -> dict[str, Any]:
    """A JSON-ready summary: encoder, dimension, rows per source, submaps, ANN indexes, sizes on disk."""
    root = Path(path)
    manifest = Manifest.load(root)
    sizes = {"embeddings": 0, "metadata": 0, "ann": 0, "submaps": 0, "other": 0}
    for rel, e in manifest.files.items():
        kind = (
            "embeddings"
            if rel.endswith(".npy")
            else "metadata"
            if rel.endswith(".parquet")
            else "ann"
            if rel.startswith("ann/")
            else "submaps"
            if rel.startswith("submaps/")
            else "other"
        )
        sizes[kind] += e.bytes
    submaps: dict[str, Any] = {}
    for name, info in manifest.submaps.items():
        entry: dict[str, Any] = {"scheme": info.scheme, "count": info.count, "contiguous": info.contiguous}
        if info.rows != manifest.num_rows:
            entry["stale"] = (
                f"covers {info.rows} rows but the store has {manifest.num_rows} (rows were added since); "
                f"recompute with `georag index submaps {root} --by {info.scheme}`"
            )
        try:
            from georag.store.submaps import load_submaps

            sub = load_submaps(root / info.file, expected_rows=info.rows)
            largest = sorted(sub.sizes().items(), key=lambda kv: -kv[1])[:10]
            entry["largest"] = dict(largest)
            entry["ranges"] = len(sub.starts)
        except (GeoRagError, OSError) as exc:
            entry["error"] = str(exc)
        submaps[name] = entry
    return {
        "store": str(root),
        "format_version": manifest.format_version,
        "encoder": manifest.encoder,
        "dim": manifest.dim,
        "dtype": manifest.dtype,
        "rows": manifest.num_rows,
        "shards": len(manifest.shards),
        "created": manifest.created,
        "updated": manifest.updated,
        "sources": [
            {
                "name": s.name,
                "format": s.format,
                "rows": s.rows,
                "complete": s.complete,
                "progress": f"{s.next_input}/{s.input_rows}",
                "failed": s.failed,
                "rejected": s.rejected,
                "metadata": s.metadata_path,
            }
            for s in manifest.sources
        ],
        "submaps": submaps,
        "ann": {
            n: {"factory": a.factory, "rows": a.rows, "bytes": manifest.files[a.file].bytes}
            for n, a in manifest.ann.items()
        },
        "bytes": sizes,
        "manifest": str(root / MANIFEST),
    }
