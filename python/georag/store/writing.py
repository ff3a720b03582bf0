"""Writer discipline: one writer at a time, fresh file names, leftovers of interrupted steps removed.

Every writer (build, add, build-ann, submaps) holds the lock, writes NEW files under names no committed file
has, commits them with one manifest save, and only then deletes the files the new manifest no longer lists.
A crash at any point therefore leaves the last committed store intact; what it wrote is unlisted and is
removed by the next writer.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import secrets
from collections.abc import Iterable, Iterator
from pathlib import Path

from georag.errors import StoreError
from georag.store.files import fsync_dir
from georag.store.manifest import FOLDERS, MANIFEST, Manifest

log = logging.getLogger(__name__)

LOCK = ".lock"


@contextlib.contextmanager
def store_lock(store: Path) -> Iterator[None]:
    """An exclusive lock on the store for writers (two writers would interleave their commits)."""
    store.mkdir(parents=True, exist_ok=True)
    with open(store / LOCK, "a+b") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise StoreError(f"{store} is being written by another georag process; wait for it") from exc
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def fresh_name(manifest: Manifest, folder: str, stem: str, suffix: str) -> str:
    """A relative path ``folder/stem-<random>.suffix`` that no committed file has."""
    while True:
        rel = f"{folder}/{stem}-{secrets.token_hex(4)}{suffix}"
        if rel not in manifest.files:
            return rel


def is_leftover_only(store: Path) -> bool:
    """True when a folder without a manifest holds nothing but what an interrupted first build leaves."""
    for p in store.iterdir():
        if p.name == LOCK or p.name.startswith(f"{MANIFEST}.tmp-"):
            continue
        if p.is_dir() and p.name in FOLDERS:
            continue
        return False
    return True


def remove_leftovers(store: Path, manifest: Manifest | None) -> None:
    """Deletes the files of the store's folders that ``manifest`` does not list (all of them when None)."""
    listed = manifest.files if manifest is not None else {}
    for sub in FOLDERS:
        folder = store / sub
        if not folder.is_dir():
            continue
        for p in folder.iterdir():
            if f"{sub}/{p.name}" not in listed and p.is_file():
                log.info("removing %s/%s, left by an interrupted step", sub, p.name)
                p.unlink()
    for p in store.glob(f"{MANIFEST}.tmp-*"):
        p.unlink()


def delete_unlisted(store: Path, manifest: Manifest, paths: Iterable[str]) -> None:
    """After a commit: deletes those of ``paths`` that the committed manifest no longer lists."""
    for rel in paths:
        if rel not in manifest.files:
            (store / rel).unlink(missing_ok=True)


def sync_folder(store: Path, folder: str) -> None:
    """Makes new files in a store folder durable before the manifest that lists them is written."""
    fsync_dir(store / folder)
