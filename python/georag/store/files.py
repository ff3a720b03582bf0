"""Durable file writes and checksums for the store: atomic replace with fsync, SHA-256, quick fingerprints."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import numpy.typing as npt

_BLOCK = 1 << 20
# The quick fingerprint hashes this many evenly spread blocks of each file plus its size: an open reads a
# few MiB per file instead of the whole 46 GB, and still catches a truncated, replaced or overwritten file.
_QUICK_BLOCKS = 16
_QUICK_BLOCK_BYTES = 1 << 16


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The SHA-256 of a whole file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def quick_fingerprint(path: str | os.PathLike[str]) -> str:
    """A SHA-256 over the size and 16 evenly spread 64 KiB blocks: cheap on open, not a full checksum."""
    size = os.path.getsize(path)
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        if size <= _QUICK_BLOCKS * _QUICK_BLOCK_BYTES:
            digest.update(f.read())
        else:
            step = (size - _QUICK_BLOCK_BYTES) // (_QUICK_BLOCKS - 1)
            for i in range(_QUICK_BLOCKS):
                f.seek(i * step)
                digest.update(f.read(_QUICK_BLOCK_BYTES))
    return digest.hexdigest()


class _HashingWriter(io.RawIOBase):
    """A write-only file wrapper that hashes and counts what passes through."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self.digest = hashlib.sha256()
        self.bytes = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self.digest.update(view)
        self.bytes += view.nbytes
        return self._raw.write(view)


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Makes a rename or a new file in ``path`` durable (power loss), where the OS allows it."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike[str]) -> Iterator[_HashingWriter]:
    """Writes ``path`` through a temporary file that replaces it only once complete and fsynced.

    A crash at any point leaves either the old file or the new one, never a half-written one; a
    leftover ``*.tmp-<pid>`` is ignored by readers and removed by the next build. Yields a writer whose
    ``digest`` and ``bytes`` describe the content.
    """
    path = Path(path)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as raw:
            writer = _HashingWriter(raw)
            yield writer
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_npy(path: str | os.PathLike[str], array: npt.NDArray[Any]) -> tuple[str, int]:
    """Saves ``array`` as .npy atomically; returns (sha256, bytes)."""
    with atomic_writer(path) as w:
        np.lib.format.write_array(w, np.ascontiguousarray(array), allow_pickle=False)
    return w.digest.hexdigest(), w.bytes


def write_bytes(path: str | os.PathLike[str], data: bytes) -> tuple[str, int]:
    """Writes ``data`` atomically; returns (sha256, bytes)."""
    with atomic_writer(path) as w:
        w.write(data)
    return w.digest.hexdigest(), w.bytes


def write_json(path: str | os.PathLike[str], payload: Any, *, indent: int | None = 1) -> tuple[str, int]:
    """Writes ``payload`` as JSON atomically (``indent=None``: compact); returns (sha256, bytes)."""
    text = json.dumps(payload, indent=indent, separators=None if indent else (",", ":"))
    return write_bytes(path, (text + "\n").encode())


def write_jsonl(path: str | os.PathLike[str], rows: list[dict[str, Any]]) -> tuple[str, int]:
    """Writes one JSON object per line atomically; returns (sha256, bytes)."""
    return write_bytes(path, "".join(json.dumps(r) + "\n" for r in rows).encode())
