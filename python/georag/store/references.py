"""The cross-references inside a store manifest, checked: nothing a one-entry edit can change goes unnoticed.

Every file the manifest lists has one role (a shard's embeddings or metadata, a source's failures or
rejections, an ANN index, a submap partition) and every role names a listed file; shards are contiguous and
in row order; a source's own shards cover its work list from item 0 to ``next_input`` in order, under the
names the build gives them (``shards/<source>-<slice>``), and their counts add up to the source's; the
sources' rows add up to the shards' (an emptied shard list is refused). Only the manifest is looked at here;
`georag.store.metadata.shard_table_problem` checks each shard's rows against it.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from georag.errors import StoreError

if TYPE_CHECKING:
    from georag.store.manifest import Manifest, ShardInfo, SourceInfo

REORDERED = "*"
"""The source of a shard written by a reorder (`georag index submaps --reorder`): its rows mix sources."""
REORDER_PREFIX = "shards/_r"
"""How the files of a reordered shard are named (no source name can start with "_")."""


def check_references(m: Manifest, origin: object) -> None:
    """StoreError naming ``origin`` and the first inconsistency, unless every cross-reference holds."""
    problem = _first_problem(m)
    if problem:
        raise StoreError(f"{origin} is malformed: {problem}; the store is damaged")


def _first_problem(m: Manifest) -> str | None:
    return _files_problem(m) or _shards_problem(m) or _sources_problem(m)


def _roles(m: Manifest) -> list[tuple[str, str]]:
    """(file, role) for every file reference of the manifest, in manifest order."""
    out: list[tuple[str, str]] = []
    for i, s in enumerate(m.shards):
        out += [(s.embeddings, f"the embeddings of shard {i}"), (s.metadata, f"the metadata of shard {i}")]
    for src in m.sources:
        out += [(rel, f"a failures list of source {src.name!r}") for rel in src.failure_files]
        if src.rejections_file is not None:
            out.append((src.rejections_file, f"the rejections of source {src.name!r}"))
    out += [(a.file, f"ANN index {name!r}") for name, a in m.ann.items()]
    out += [(s.file, f"submaps {name!r}") for name, s in m.submaps.items()]
    return out


def _files_problem(m: Manifest) -> str | None:
    used = _roles(m)
    for rel, role in used:
        if rel not in m.files:
            return f"{role} is {rel}, which has no checksum entry"
    counts = Counter(rel for rel, _ in used)
    for rel, _ in used:
        if counts[rel] > 1:
            others = [r for f, r in used if f == rel]
            return f"{rel} is named {counts[rel]} times ({'; '.join(others)}): each file has one role"
    unused = sorted(set(m.files) - set(counts))
    if unused:
        return (
            f"{unused[0]} has a checksum entry but no role in the store (no shard, source or index names it)"
        )
    for name, a in m.ann.items():
        if not (a.file.startswith(f"ann/{name}-") and a.file.endswith(".faiss")):
            return f"ANN index {name!r} names {a.file}, not a file ann/{name}-*.faiss"
        if a.rows < 0:
            return f"ANN index {name!r} has {a.rows} rows"
    for name, s in m.submaps.items():
        if not (s.file.startswith(f"submaps/{name}-") and s.file.endswith(".npz")):
            return f"submaps {name!r} name {s.file}, not a file submaps/{name}-*.npz"
        if s.rows < 0 or s.count < 0:
            return f"submaps {name!r} have {s.rows} rows in {s.count} submaps"
    return None


def _shards_problem(m: Manifest) -> str | None:
    expected = 0
    names = {src.name for src in m.sources}
    for i, s in enumerate(m.shards):
        if s.first_row != expected or s.rows < 0:
            return (
                f"shard {i} ({s.embeddings}) starts at row {s.first_row} with {s.rows} rows, "
                f"expected row {expected}"
            )
        expected += s.rows
        stem = s.embeddings.removesuffix(".npy")
        if not s.embeddings.endswith(".npy") or s.metadata != f"{stem}.parquet":
            return (
                f"shard {i} pairs {s.embeddings} with {s.metadata}: "
                "a shard's files are <name>.npy and <name>.parquet"
            )
        if s.source == REORDERED:
            problem = _reordered_problem(i, s, stem)
        elif s.source in names:
            problem = _slice_problem(i, s, stem, m.shard_rows)
        else:
            problem = (
                f"shard {i} ({s.embeddings}) belongs to source {s.source!r}, which the store does not have"
            )
        if problem:
            return problem
    return None


def _reordered_problem(i: int, s: ShardInfo, stem: str) -> str | None:
    if not stem.startswith(REORDER_PREFIX) or (s.input_start, s.input_end, s.failed) != (-1, -1, 0):
        return f"shard {i} ({s.embeddings}) is marked reordered but is not named or numbered as one"
    return None


def _slice_problem(i: int, s: ShardInfo, stem: str, shard_rows: int) -> str | None:
    """A built shard covers one slice of its source's work list, under the name the build gives it."""
    size = s.input_end - s.input_start
    if s.input_start < 0 or s.input_start % shard_rows or not 0 < size <= shard_rows:
        return (
            f"shard {i} ({s.embeddings}) covers items [{s.input_start}, {s.input_end}), "
            f"not a slice of {shard_rows}"
        )
    if s.failed < 0 or s.rows + s.failed != size:
        return f"shard {i} ({s.embeddings}) has {s.rows} rows and {s.failed} failures for {size} items"
    if stem != f"shards/{s.source}-{s.input_start // shard_rows:06d}":
        slice_no = s.input_start // shard_rows
        return f"shard {i} ({s.embeddings}) is not the file of slice {slice_no} of {s.source!r}"
    return None


def _sources_problem(m: Manifest) -> str | None:
    seen: set[str] = set()
    for src in m.sources:
        if src.name in seen:
            return f"source {src.name!r} appears twice"
        seen.add(src.name)
        problem = _source_problem(m, src)
        if problem:
            return problem
    stored = sum(src.rows for src in m.sources)
    if stored != m.num_rows:
        return (
            f"the sources hold {stored} rows but the shards {m.num_rows} (a shard entry is missing or extra)"
        )
    return None


def _source_problem(m: Manifest, src: SourceInfo) -> str | None:
    name = src.name
    if not 0 <= src.next_input <= src.input_rows <= src.total_rows:
        return f"source {name!r} is at item {src.next_input} of {src.input_rows} ({src.total_rows} data rows)"
    if src.complete and src.next_input != src.input_rows:
        return f"source {name!r} is marked complete at item {src.next_input} of {src.input_rows}"
    if src.rows < 0 or src.failed < 0 or src.rows + src.failed != src.next_input:
        return f"source {name!r} has {src.rows} rows and {src.failed} failures for {src.next_input} items"
    if src.rejections_file not in (None, f"sources/{name}.rejected.jsonl"):
        return f"source {name!r} names {src.rejections_file} as its rejections"
    own = [s for s in m.shards if s.source == name]
    if not own:
        if src.next_input and not any(s.source == REORDERED for s in m.shards):
            return f"source {name!r} has processed {src.next_input} items but no shard holds them"
        stray = [
            f
            for f in src.failure_files
            if not (f.startswith(f"shards/{name}-") and f.endswith(".failures.jsonl"))
        ]
        return f"source {name!r} names {stray[0]} as a failures list" if stray else None
    end = 0
    for s in own:
        if s.input_start != end:
            return (
                f"the shards of source {name!r} skip or repeat items: "
                f"{s.embeddings} starts at item {s.input_start}, not {end}"
            )
        end = s.input_end
    if end != src.next_input:
        return f"the shards of source {name!r} end at item {end}, the source at {src.next_input}"
    if sum(s.rows for s in own) != src.rows or sum(s.failed for s in own) != src.failed:
        return f"the shards of source {name!r} do not add up to its {src.rows} rows and {src.failed} failures"
    expected = [s.embeddings.removesuffix(".npy") + ".failures.jsonl" for s in own if s.failed]
    if src.failure_files != expected:
        return f"source {name!r} lists failures files {src.failure_files}, its shards {expected}"
    return None
