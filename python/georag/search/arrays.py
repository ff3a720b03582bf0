"""Embedding matrices from disk (.npy, never pickled) and the seeded demo database of the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

from georag.errors import InputError


def load_vectors(path: str | Path, what: str = "vectors") -> npt.NDArray[np.float32]:
    """Loads an (N, d) float32 matrix from a .npy file without unpickling (memory-mapped, read-only).

    float16 is widened to float32; any other dtype or shape is refused with a message that says how to fix it.
    """
    p = Path(path)
    if p.suffix != ".npy":
        raise InputError(f"{what}: {p} is not a .npy file; save the matrix with numpy.save(path, array)")
    try:
        arr = np.load(p, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise InputError(f"{what}: cannot read {p} as a .npy array ({exc})") from exc
    if arr.ndim != 2:
        raise InputError(f"{what}: {p} holds shape {arr.shape}; expected a 2-D (rows, dim) matrix")
    if arr.dtype == np.float16:
        return arr.astype(np.float32)
    if arr.dtype != np.float32:
        raise InputError(
            f"{what}: {p} holds {arr.dtype}; expected float32 (convert with array.astype('float32'))"
        )
    return np.asarray(arr)


def demo_vectors(
    rows: int, dim: int, queries: int, seed: int = 0
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """A seeded stand-in for a photo database: rows drawn around 64 cluster centres, queries near rows.

    Clustered like real embeddings (photos of one region resemble each other), so nearest neighbors are
    meaningful; each query is a perturbed copy of a known database row (returned as the third array), which
    the search should find first.
    """
    if rows < 1 or dim < 1 or queries < 0:
        raise InputError("the demo needs rows >= 1, dim >= 1 and queries >= 0")
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((64, dim), dtype=np.float32)
    db = centres[rng.integers(0, 64, rows)] + 0.5 * rng.standard_normal((rows, dim), dtype=np.float32)
    picks = rng.integers(0, rows, queries)
    q = db[picks] + 0.05 * rng.standard_normal((queries, dim), dtype=np.float32)
    return db, q, picks.astype(np.int64)
