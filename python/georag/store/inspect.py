"""Looking at a store without trusting it: a summary (`index info`); the full check (`index verify`) is
`georag.store.verify`, re-exported here."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from georag.errors import GeoRagError
from georag.store.manifest import MANIFEST, Manifest
from georag.store.verify import VerifyReport, verify_store

__all__ = ["VerifyReport", "store_info", "verify_store"]

log = logging.getLogger(__name__)


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
