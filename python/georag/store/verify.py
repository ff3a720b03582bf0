"""The full check of a store (`georag index verify`): every byte hashed, every cross-reference followed.

It checks at least what `GeoStore.open` checks, so a store that ``open`` refuses is never reported OK: the
manifest's form and cross-references (`georag.store.references`), every listed file's size, SHA-256 and the
quick fingerprint ``open`` compares, each shard's array header and metadata rows (row ids from the shard's
first row, its row count and source), every row's CRC32 against the one its metadata records (what a
search compares), and unfinished sources. It notes rows built before row checksums
(`georag.store.rowcheck.unchecked_note`): not a problem, but a search checks only their norms.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from georag.errors import StoreError
from georag.progress import progress as progress_display
from georag.store.files import quick_fingerprint, sha256_file
from georag.store.manifest import FOLDERS, Manifest, ShardInfo
from georag.store.metadata import ROW_CRC32, read_checked, row_crc32, shard_table_problem
from georag.store.rowcheck import unchecked_note

log = logging.getLogger(__name__)


@dataclass
class VerifyReport:
    """The result of checking every file a store's manifest lists."""

    store: Path
    """The store checked."""
    checked: int = 0
    """Files hashed."""
    bytes: int = 0
    """Bytes hashed."""
    problems: list[str] = field(default_factory=list)
    """One line per missing, resized or changed file, or inconsistent shard."""
    unfinished: list[str] = field(default_factory=list)
    """One line per source whose build has not finished (the store cannot be opened until it has)."""
    unlisted: list[str] = field(default_factory=list)
    """Files in the store's folders that the manifest does not list (leftovers of an interrupted step)."""
    manifest_sha256: str | None = None
    """SHA-256 of the manifest file that was checked (None when an open store's manifest was given)."""
    notes: list[str] = field(default_factory=list)
    """What a reader should know that is not a problem: rows without a row checksum (built before them)."""

    @property
    def ok(self) -> bool:
        """True when every listed file is present and unchanged and every source is finished."""
        return not self.problems and not self.unfinished

    @property
    def state(self) -> str:
        """ "OK", "DAMAGED" (a problem) or "INCOMPLETE" (only unfinished sources)."""
        return "DAMAGED" if self.problems else "INCOMPLETE" if self.unfinished else "OK"


def verify_store(
    path: str | Path,
    *,
    progress: bool = False,
    expect_sha256: str | None = None,
    manifest: Manifest | None = None,
    on_bytes: Callable[[int], None] | None = None,
    stop: Callable[[], bool] | None = None,
) -> VerifyReport:
    """Checks the store at ``path`` completely (see the module); the report lists what is wrong.

    StoreError when the manifest itself is unreadable or inconsistent. ``expect_sha256``: the SHA-256 the
    manifest file must have (one published with the store): a mismatch is a problem. ``manifest``: check
    against this (an open store's) manifest instead of reading it. ``on_bytes(n)`` is called as files are
    hashed; ``stop()`` returning True ends the check early (the report then says so).
    """
    root = Path(path)
    report = VerifyReport(root)
    if manifest is None:
        manifest, report.manifest_sha256 = Manifest.load_hashed(root)
    if expect_sha256 is not None and report.manifest_sha256 != expect_sha256.strip().lower():
        report.problems.append(
            f"manifest.json: SHA-256 {report.manifest_sha256}, not the expected {expect_sha256.strip()}: "
            "this is not the store that hash was published for (or it changed since)"
        )
    damaged = _check_files(root, manifest, report, progress, on_bytes, stop)
    if stop is not None and stop():
        report.problems.append("the check was stopped before it finished")
        return report
    unchecked = _check_shards(root, manifest, report, damaged)
    note = unchecked_note(unchecked, manifest.num_rows)
    if note is not None:
        report.notes.append(note)
        log.warning("%s: %s", root, note)
    report.unfinished = [
        f"{s.name}: {s.next_input} of {s.input_rows} items; re-run its build command to resume it"
        for s in manifest.sources
        if not s.complete
    ]
    for sub in FOLDERS:
        if (root / sub).is_dir():
            report.unlisted += sorted(
                f"{sub}/{p.name}" for p in (root / sub).iterdir() if f"{sub}/{p.name}" not in manifest.files
            )
    return report


def _check_files(
    root: Path,
    manifest: Manifest,
    report: VerifyReport,
    progress: bool,
    on_bytes: Callable[[int], None] | None,
    stop: Callable[[], bool] | None,
) -> set[str]:
    """Hashes every listed file; returns those with a problem."""
    damaged: set[str] = set()
    total = sum(e.bytes for e in manifest.files.values())
    with progress_display(total, desc="verify", unit="B", unit_scale=True, enabled=progress) as bar:
        for rel, entry in sorted(manifest.files.items()):
            if stop is not None and stop():
                break
            problem = manifest.file_problem(root, rel, "none")
            if problem is None:
                if sha256_file(root / rel) != entry.sha256:
                    problem = "content changed (SHA-256 differs from the manifest)"
                elif quick_fingerprint(root / rel) != entry.quick:
                    problem = (
                        "the quick fingerprint the manifest records is not the file's (the manifest entry "
                        "was edited): every open of the store refuses it"
                    )
                else:
                    report.checked += 1
                    report.bytes += entry.bytes
            if problem is not None:
                report.problems.append(f"{rel}: {problem}")
                damaged.add(rel)
            bar.update(entry.bytes)
            if on_bytes is not None:
                on_bytes(entry.bytes)
    return damaged


def _check_shards(root: Path, manifest: Manifest, report: VerifyReport, damaged: set[str]) -> int:
    """Each intact shard's array header, metadata rows and row checksums against the manifest; returns the
    rows of intact metadata files that record no row checksums."""
    unchecked = 0
    for s in manifest.shards:
        arr = None if s.embeddings in damaged else _shard_array(root, manifest, s, report)
        table = None if s.metadata in damaged else _shard_table(root, manifest, s, report)
        if table is None:
            continue
        if ROW_CRC32 not in table.column_names:
            unchecked += s.rows
        elif arr is not None and (problem := _row_crc32_problem(arr, table)) is not None:
            report.problems.append(f"{s.metadata}: {problem} ({s.embeddings}): a search refuses that row")
    return unchecked


def _shard_array(
    root: Path, manifest: Manifest, s: ShardInfo, report: VerifyReport
) -> npt.NDArray[Any] | None:
    """The shard's embeddings, memory-mapped, when the file is a .npy of the manifest's shape and dtype."""
    try:
        arr: npt.NDArray[Any] = np.load(
            root / s.embeddings, mmap_mode="r" if s.rows else None, allow_pickle=False
        )
    except (OSError, ValueError) as exc:
        report.problems.append(f"{s.embeddings}: not a readable .npy ({exc})")
        return None
    if arr.shape != (s.rows, manifest.dim) or arr.dtype != np.dtype(manifest.dtype):
        report.problems.append(f"{s.embeddings}: holds {arr.dtype} {arr.shape}, expected {s.rows} rows")
        return None
    return arr


def _shard_table(root: Path, manifest: Manifest, s: ShardInfo, report: VerifyReport) -> pa.Table | None:
    """The shard's metadata, when it is the metadata of that shard."""
    try:
        table = read_checked(root / s.metadata, manifest.files[s.metadata].sha256)
    except StoreError as exc:
        report.problems.append(f"{s.metadata}: {exc}")
        return None
    problem = shard_table_problem(table, s.first_row, s.rows, s.source, manifest.files[s.embeddings].sha256)
    if problem is not None:
        report.problems.append(f"{s.metadata}: {problem}")
        return None
    return table


_CRC_ROWS = 1 << 14
"""Rows whose CRC32s are computed at once (a bounded slice of the memory-mapped shard)."""


def _row_crc32_problem(arr: npt.NDArray[Any], table: pa.Table) -> str | None:
    """Which row of ``arr`` does not have the CRC32 ``table`` records for it, or None."""
    recorded = table.column(ROW_CRC32).to_numpy()
    for start in range(0, len(arr), _CRC_ROWS):
        actual = row_crc32(arr[start : start + _CRC_ROWS])
        bad = np.flatnonzero(actual != recorded[start : start + _CRC_ROWS])
        if bad.size:
            i = start + int(bad[0])
            return (
                f"row {i} has CRC32 {int(actual[bad[0]]):08x} but the metadata records {int(recorded[i]):08x}"
            )
    return None
