"""Store damage and manifest fuzzing: a small store with every kind of file, ways to damage it, and a judge.

Used by tests/test_store_damage.py (the fast cases) and benchmarks/bench_store_damage.py (the campaign).
A trial copies the pristine store, damages the copy one way, then opens it and asks every question a reader
asks (exact, submap-restricted and faiss searches, the metadata). It survives when each answer is either a
StoreError or identical to the pristine store's, and `verify_store` does not say OK about a store that
``GeoStore.open`` refuses; it is lost on any other exception (a traceback) or any other answer (a silent
wrong answer).
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from georag.errors import StoreError
from georag.locate.output import CSV_FIELDS
from georag.store.ann import build_ann
from georag.store.build import BuildRequest, build_source
from georag.store.partition import make_submaps
from georag.store.store import GeoStore
from georag.store.verify import verify_store
from store_fixtures import write_csv

D = 16
SHARD_ROWS = 16
KINDS = ("embeddings", "metadata", "failures", "rejections", "ann", "submaps", "manifest")
"""Every kind of file a store holds."""
OPS = ("bit flip", "truncation", "deletion", "swap", "swapped entries", "duplicate entry")
"""Every way a file is damaged: on disk (the first four) or in the manifest's references to it."""
ANN = {"flat": "Flat", "hnsw": "HNSW8"}
"""The faiss indexes of the store (two, so that their files can be swapped)."""


def _source(folder: Path, name: str, n: int, seed: int, rejected: int, failed: tuple[int, ...]) -> Path:
    """A metadata CSV of ``n`` rows (row ``rejected`` with an impossible latitude) and embeddings whose
    ``failed`` rows are zero; returns the CSV (the .npy is beside it, same stem)."""
    rng = np.random.default_rng(seed)
    lat, lon = rng.uniform(-50, 65, n), rng.uniform(-170, 170, n)
    lat[rejected] = 95.0
    rows = [
        {"IMG_ID": f"{name}-{i}.jpg", "AUTHOR": f"a{i % 5}", "LAT": f"{lat[i]:.5f}", "LON": f"{lon[i]:.5f}"}
        for i in range(n)
    ]
    emb = rng.standard_normal((n, D)).astype(np.float32)
    emb[list(failed)] = 0.0
    np.save(folder / f"{name}.npy", emb)
    return write_csv(folder / f"{name}.csv", rows)


def build_store(root: Path) -> Path:
    """Two sources (each with a rejected row, one with failed rows, shards of equal and unequal size), a
    country and a k-means partition, and two faiss indexes: every kind of store file, at least twice."""
    root.mkdir(parents=True, exist_ok=True)
    store = root / "store"
    for name, n, seed, rejected, failed, add in (
        ("im2gps3k", 66, 1, 0, (20, 40), False),
        ("second", 34, 2, 3, (), True),
    ):
        meta = _source(root, name, n, seed, rejected, failed)
        req = BuildRequest(
            store=store,
            dataset="im2gps3k",
            metadata=meta,
            encoder="toy/model",
            embeddings=meta.with_suffix(".npy"),
            source=name,
            shard_rows=None if add else SHARD_ROWS,
        )
        build_source(req, add=add)
    make_submaps(store, "country")
    make_submaps(store, "kmeans", k=2)
    for name, factory in ANN.items():
        build_ann(GeoStore.open(store), factory, name=name)
    return store


Answers = dict[str, Any]
"""Per question: its answer (a tuple of arrays, or a table), or the StoreError message."""


def queries(store: Path) -> np.ndarray:
    """Four queries near stored rows (so that near and far neighbors are well defined)."""
    s = GeoStore.open(store)
    rng = np.random.default_rng(7)
    return (s.embeddings([0, 17, 50, s.ntotal - 1]) + 0.05 * rng.standard_normal((4, s.dim))).astype(
        np.float32
    )


def ask(store: GeoStore, q: np.ndarray) -> Answers:
    """Every question a reader asks of an open store; a StoreError is an answer ("refused: ...")."""
    questions: dict[str, Callable[[], Any]] = {
        "exact": lambda: neighbors(store.search(q, 5, 5)),
        "kmeans": lambda: neighbors(store.search(q, 3, 3, submap=("kmeans2", "c000"))),
        "country": lambda: neighbors(store.search(q, 3, 3, submap=("country", _largest_country(store)))),
        **{
            f"ann {name}": (lambda name=name: neighbors(store.search(q, 5, 5, index=name)))  # type: ignore[misc]
            for name in ANN
        },
        "rows": lambda: store.metadata,
        "embeddings": lambda: store.embeddings(np.arange(store.ntotal)),
    }
    out: Answers = {}
    for name, question in questions.items():
        try:
            out[name] = question()
        except StoreError as exc:
            out[name] = f"refused: {exc}"
    return out


def _largest_country(store: GeoStore) -> str:
    sizes = store.submaps("country").sizes()
    return max(sizes, key=lambda name: (sizes[name], name))


def neighbors(res: Any) -> tuple[np.ndarray, ...]:
    """The arrays of a store search's answer."""
    return (res.near_ids, res.near_scores, res.far_ids, res.far_scores, res.near_lat, res.near_lon)


def same(a: Any, b: Any) -> bool:
    """Answers equal bit for bit (NaN padding equal to NaN)."""
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(
            x.shape == y.shape and np.array_equal(x, y, equal_nan=x.dtype.kind == "f")
            for x, y in zip(a, b, strict=True)
        )
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        return a.shape == b.shape and np.array_equal(a, b)
    if hasattr(a, "equals") and type(a) is type(b):
        return bool(a.equals(b))
    return False


@dataclass
class Outcome:
    """How a damaged store was met: ``kind`` "refused" (StoreError somewhere, never a wrong answer),
    "identical" (every answer as before), "wrong" (an answer differs), "crash" (another exception) or
    "inconsistent" (`verify` says OK about a store that open refuses, or missed damage it must see)."""

    kind: str
    detail: str = ""

    @property
    def survived(self) -> bool:
        return self.kind not in LOST


LOST = ("wrong", "crash", "inconsistent")
"""Outcomes that lose a trial (any other kind survives it)."""


@dataclass
class Baseline:
    """The pristine store and its answers."""

    store: Path
    queries: np.ndarray
    answers: Answers = field(default_factory=dict)

    @classmethod
    def of(cls, store: Path) -> Baseline:
        q = queries(store)
        return cls(store, q, ask(GeoStore.open(store), q))


def judge(store: Path, base: Baseline, *, damaged: bool, verify: str = "quick") -> Outcome:
    """Opens the (damaged) ``store`` with ``verify``, asks every question, runs `verify_store` (see the
    module). ``damaged``: bytes of a listed file changed, so `verify_store` must not say OK."""
    try:
        refused_at_open = False
        try:
            answers = ask(GeoStore.open(store, verify=verify), base.queries)  # type: ignore[arg-type]
        except StoreError:
            refused_at_open = True
            answers = {}
        wrong = [k for k, v in answers.items() if not isinstance(v, str) and not same(v, base.answers[k])]
        try:
            verify_ok = verify_store(store).ok
        except StoreError:
            verify_ok = False
    except Exception:
        return Outcome("crash", traceback.format_exc(limit=-3))
    if wrong:
        return Outcome("wrong", f"different answers to {wrong}")
    if verify_ok and (refused_at_open or damaged):
        return Outcome("inconsistent", "verify says OK")
    refused = refused_at_open or any(isinstance(v, str) for v in answers.values())
    return Outcome("refused" if refused else "identical")


# Damage to files on disk, and to the manifest's references to them.


def files_of(store: Path, kind: str) -> list[str]:
    """The store's files of ``kind`` (relative paths, manifest order)."""
    m = json.loads((store / "manifest.json").read_text())
    if kind == "manifest":
        return ["manifest.json"]
    suffix = {
        "embeddings": ".npy",
        "metadata": ".parquet",
        "failures": ".failures.jsonl",
        "rejections": ".rejected.jsonl",
        "ann": ".faiss",
        "submaps": ".npz",
    }[kind]
    return [rel for rel in m["files"] if rel.endswith(suffix)]


def damage(store: Path, kind: str, op: str, rng: np.random.Generator) -> str:
    """Damages one file of ``kind`` of ``store`` by ``op`` (see `OPS`); returns what was done."""
    if op in ("swapped entries", "duplicate entry") or (kind == "manifest" and op == "swap"):
        return _edit_references(store, kind, op, rng)
    rels = files_of(store, kind)
    rel = rels[int(rng.integers(len(rels)))]
    path = store / rel
    data = bytearray(path.read_bytes())
    if op == "bit flip":
        at = int(rng.integers(len(data)))
        data[at] ^= 1 << int(rng.integers(8))
        path.write_bytes(bytes(data))
        return f"{rel}: bit flipped at byte {at}"
    if op == "truncation":
        cut = int(rng.integers(len(data)))
        path.write_bytes(bytes(data[:cut]))
        return f"{rel}: cut to {cut} of {len(data)} bytes"
    if op == "deletion":
        path.unlink()
        return f"{rel}: deleted"
    if op == "swap":
        other = _partner(store, rel, rels, rng)
        tmp = path.with_name(path.name + ".swap")
        path.rename(tmp)
        (store / other).rename(path)
        tmp.rename(store / other)
        return f"{rel} and {other} swapped on disk"
    raise ValueError(op)


def _partner(store: Path, rel: str, rels: list[str], rng: np.random.Generator) -> str:
    """Another file of the same kind, of the same size where there is one (the harder case)."""
    others = [r for r in rels if r != rel]
    same_size = [r for r in others if (store / r).stat().st_size == (store / rel).stat().st_size]
    pool = same_size or others
    return pool[int(rng.integers(len(pool)))]


def _edit_references(store: Path, kind: str, op: str, rng: np.random.Generator) -> str:
    """Swaps two references to files of ``kind`` in the manifest, or makes two roles name one file."""
    m = json.loads((store / "manifest.json").read_text())
    slots = _slots(m, kind)
    i, j = _pair(m, kind, len(slots), rng)
    (a, ka), (b, kb) = slots[i], slots[j]
    if op == "duplicate entry":
        if kind == "manifest":
            k = int(rng.integers(len(m["shards"])))
            m["shards"].insert(k + 1, dict(m["shards"][k]))
            what = f"shard entry {k} repeated"
        else:
            a[ka] = b[kb]
            what = f"{kind}: two roles name {b[kb]}"
    else:
        a[ka], b[kb] = b[kb], a[ka]
        what = f"{kind}: manifest references {a[ka]} and {b[kb]} swapped"
    (store / "manifest.json").write_text(json.dumps(m))
    return what


def _pair(m: dict[str, Any], kind: str, n: int, rng: np.random.Generator) -> tuple[int, int]:
    """Two different slots; for shards, two of the same row count (the case a size check cannot see)."""
    if kind in ("embeddings", "metadata", "manifest"):
        rows = [s["rows"] for s in m["shards"]]
        pairs = [(i, j) for i in range(n) for j in range(n) if i != j and rows[i] == rows[j]]
        if pairs:
            i, j = pairs[int(rng.integers(len(pairs)))]
            return i, j
    i, j = (int(x) for x in rng.choice(n, size=2, replace=False))
    return i, j


def _slots(m: dict[str, Any], kind: str) -> list[tuple[Any, Any]]:
    """(container, key) of every manifest reference to a file of ``kind`` ("manifest": whole shards)."""
    if kind == "manifest":
        return [(m["shards"], i) for i in range(len(m["shards"]))]
    if kind in ("embeddings", "metadata"):
        return [(s, kind) for s in m["shards"]]
    if kind == "failures":
        return [(src["failure_files"], i) for src in m["sources"] for i in range(len(src["failure_files"]))]
    if kind == "rejections":
        return [(src, "rejections_file") for src in m["sources"]]
    section = "ann" if kind == "ann" else "submaps"
    return [(entry, "file") for entry in m[section].values()]


def big_store(root: Path, rows: int = 16384, d: int = 64) -> Path:
    """A store of one float16 shard of 2 MiB, of which the quick check reads half."""
    rng = np.random.default_rng(3)
    lat, lon = rng.uniform(-50, 60, rows), rng.uniform(-170, 170, rows)
    meta = write_csv(
        root / "big.csv",
        [{"IMG_ID": f"b{i}.jpg", "LAT": f"{lat[i]:.4f}", "LON": f"{lon[i]:.4f}"} for i in range(rows)],
    )
    np.save(root / "big.npy", rng.standard_normal((rows, d)).astype(np.float32))
    req = BuildRequest(
        store=root / "big", dataset="im2gps3k", metadata=meta, encoder="toy/model",
        embeddings=root / "big.npy", shard_rows=rows,
    )  # fmt: skip
    build_source(req, add=False)
    return root / "big"


def quick_gaps(path: Path) -> list[tuple[int, int]]:
    """The [start, end) byte ranges of ``path`` that its quick fingerprint does not read (as
    `georag.store.files.quick_fingerprint` picks its 16 blocks of 64 KiB)."""
    size, block, count = path.stat().st_size, 1 << 16, 16
    if size <= block * count:
        return []
    step = (size - block) // (count - 1)
    return [(i * step + block, (i + 1) * step) for i in range(count - 1) if (i + 1) * step > i * step + block]


def trial(base: Baseline, work: Path, kind: str, op: str, seed: int) -> tuple[str, Outcome]:
    """One damage trial on a fresh copy of the pristine store in ``work``: (what was done, outcome)."""
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(base.store, work)
    what = damage(work, kind, op, np.random.default_rng(seed))
    return what, judge(work, base, damaged=op in ("bit flip", "truncation", "deletion", "swap"))


# Manifest fuzzing: one random, seeded mutation of the manifest's JSON or of its text.

_ODD_VALUES: tuple[Any, ...] = (0, -1, 1, 2**31, 2**63 - 1, "", "x", "../x", None, True, [], {}, 1.5)


def _nodes(doc: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """The path of every value of ``doc`` (the root excluded)."""
    out: list[tuple[Any, ...]] = []
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else ()
    for key, value in items:
        out.append((*path, key))
        out += _nodes(value, (*path, key))
    return out


def _get(doc: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        doc = doc[key]
    return doc


def _leaves(doc: Any) -> list[Any]:
    return [v for p in _nodes(doc) if not isinstance(v := _get(doc, p), dict | list)]


def mutate(text: str, rng: np.random.Generator) -> tuple[str, str]:
    """``text`` (a manifest) with one random mutation, and what it was."""
    doc = json.loads(text)
    op = str(rng.choice(["set", "bump", "delete", "duplicate", "swap", "rename", "unknown", "text"]))
    if op == "text":
        return _mutate_text(text, doc, rng)
    paths = _nodes(doc)
    path = paths[int(rng.integers(len(paths)))]
    parent, key = _get(doc, path[:-1]), path[-1]
    what = f"{op} {'.'.join(map(str, path))}"
    if op == "set":
        pool = [*_ODD_VALUES, *_leaves(doc)]
        parent[key] = pool[int(rng.integers(len(pool)))]
        what += f" = {parent[key]!r}"[:80]
    elif op == "bump":
        value = parent[key]
        if isinstance(value, int) and not isinstance(value, bool):
            parent[key] = value + int(rng.choice([-16, -1, 1, 16]))
        elif isinstance(value, bool):
            parent[key] = not value
        elif isinstance(value, str) and value:
            at = int(rng.integers(len(value)))
            parent[key] = value[:at] + chr((ord(value[at]) + 1) % 0x80 or 0x41) + value[at + 1 :]
        what += f" -> {parent[key]!r}"[:80]
    elif op == "delete":
        del parent[key]
    elif op == "duplicate":
        if isinstance(parent, list):
            parent.insert(int(key), json.loads(json.dumps(parent[key])))
        else:
            parent[f"{key}x"] = json.loads(json.dumps(parent[key]))
    elif op == "swap":
        siblings = list(parent) if isinstance(parent, dict) else list(range(len(parent)))
        other = siblings[int(rng.integers(len(siblings)))]
        what += f" <-> {other}"
        parent[key], parent[other] = parent[other], parent[key]
        if len(path) >= 3:  # and the same field of two sibling entries (shard i's file <-> shard j's)
            grand, mine = _get(doc, path[:-2]), path[-2]
            names = list(grand) if isinstance(grand, dict) else list(range(len(grand)))
            theirs = names[int(rng.integers(len(names)))]
            a, b = grand[mine], grand[theirs]
            if isinstance(a, dict) and isinstance(b, dict) and key in a and key in b:
                a[key], b[key] = b[key], a[key]
                what += f"; {key} of {mine} <-> {theirs}"
    elif op == "rename" and isinstance(parent, dict):
        keys = list(parent)
        new = keys[int(rng.integers(len(keys)))] if rng.random() < 0.5 else f"{key}2"
        parent[new] = parent.pop(key)
        what += f" -> {new}"
    elif isinstance(parent, dict):
        parent["unexpected"] = 1
        what = f"unknown key in {'.'.join(map(str, path[:-1]))}"
    return json.dumps(doc), what


def _mutate_text(text: str, doc: Any, rng: np.random.Generator) -> tuple[str, str]:
    kind = str(rng.choice(["byte", "cut", "deep", "digits", "duplicate key", "bom"]))
    if kind == "byte":
        at = int(rng.integers(len(text)))
        data = bytearray(text.encode())
        data[at] ^= 1 << int(rng.integers(8))
        return data.decode("utf-8", "surrogateescape"), f"text: bit flipped at byte {at}"
    if kind == "cut":
        at = int(rng.integers(len(text)))
        return text[:at], f"text: cut at {at}"
    if kind == "deep":
        depth = int(rng.choice([20, 1000, 100_000]))
        return text.replace(
            '"ann":{', f'"ann":{{"deep":{"[" * depth}{"]" * depth},', 1
        ), f"text: {depth} deep"
    if kind == "digits":
        digits = int(rng.choice([20, 5000]))
        return text.replace('"dim":', f'"dim":{"9" * digits}, "x":', 1), f"text: a {digits}-digit int"
    if kind == "duplicate key":
        rel = next(iter(doc["files"]))
        entry = json.dumps(doc["files"][rel])
        return text.replace('"files":{', f'"files":{{"{rel}":{entry},', 1), f"text: {rel} listed twice"
    return "\ufeff" + text, "text: a byte-order mark"


# kill -9: a command killed at a random moment of its writing (benchmarks/bench_store_damage.py times it).


def run_until(
    cmd: list[str], writing: Callable[[], bool], then: Callable[[subprocess.Popen[bytes]], None]
) -> int:
    """Starts ``cmd``, waits until ``writing()`` holds (or the command ended), calls ``then(proc)``, and
    returns the command's exit status (SIGKILLed, if still running after that)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while proc.poll() is None and not writing() and time.monotonic() < deadline:
            time.sleep(0.002)
        then(proc)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    return proc.returncode


def writing_window(cmd: list[str], writing: Callable[[], bool]) -> float:
    """Seconds from the moment ``cmd`` starts writing to its end, in an uninterrupted run (which must
    succeed)."""
    started: list[float] = []

    def wait(proc: subprocess.Popen[bytes]) -> None:
        started.append(time.perf_counter())
        proc.wait()

    if run_until(cmd, writing, wait) != 0:
        raise RuntimeError(f"the uninterrupted run failed: {' '.join(cmd)}")
    return time.perf_counter() - started[0]


def killed(cmd: list[str], writing: Callable[[], bool], window: float, rng: np.random.Generator) -> bool:
    """Runs ``cmd`` and SIGKILLs it at a random moment of its writing ``window``; True when it was killed
    (False: it finished first)."""

    def kill(proc: subprocess.Popen[bytes]) -> None:
        try:
            proc.wait(timeout=float(rng.uniform(0, window)))
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)

    return run_until(cmd, writing, kill) == -signal.SIGKILL


# kill -9 of `georag locate` while it writes its predictions, then the same command again (it resumes).

CLI = [sys.executable, "-c", "from georag.cli import main; main()"]
"""`georag` in a child process (what the kills kill)."""


def locate_setup(root: Path, photos: int = 300, rows: int = 2000) -> list[str]:
    """A tiny SigLIP exported to ONNX, a store of ``rows`` random rows built for it, and ``photos`` generated
    pictures in ``root``: the arguments of `georag locate` over them, without --out, --strategy or --llm.
    ONNX, so that a killed run starts in about a second (the torch backend spends seconds importing
    transformers); what is killed, the writing of the predictions, is the same for every backend."""
    from encoder_fixtures import TINY_DIM, make_tiny_siglip, write_images
    from georag.encoder import export_onnx

    tiny = make_tiny_siglip(root / "tiny")
    exported = export_onnx(tiny, root / "tiny-onnx").parent
    rng = np.random.default_rng(17)
    lat, lon = rng.uniform(-50, 65, rows), rng.uniform(-170, 170, rows)
    meta = write_csv(
        root / "gallery.csv",
        [{"IMG_ID": f"g{i}.jpg", "LAT": f"{lat[i]:.5f}", "LON": f"{lon[i]:.5f}"} for i in range(rows)],
    )
    np.save(root / "gallery.npy", rng.standard_normal((rows, TINY_DIM)).astype(np.float32))
    req = BuildRequest(
        store=root / "store", dataset="im2gps3k", metadata=meta, encoder=str(tiny),
        embeddings=root / "gallery.npy",
    )  # fmt: skip
    build_source(req, add=False)
    write_images(root / "photos", photos)
    return ["locate", str(root / "photos"), "--store", str(root / "store"),
            "--encoder", str(exported), "--backend", "onnxruntime"]  # fmt: skip


def route_args(args: list[str], route: str, llm: str | None = None) -> list[str]:
    """`locate_setup`'s ``args`` on ``route``: knn (retrieval only), or rag asking the OpenAI-compatible
    server ``llm`` for 2 samples a photo."""
    if route == "knn":
        return [*args, "--strategy", "knn"]
    assert llm is not None, "rag needs an LLM"
    return [*args, "--strategy", route, "--llm", llm, "--samples", "2"]


@dataclass(frozen=True)
class LocateOutput:
    """A `georag locate` run's files, read back: CSV rows and JSONL records (timings left out) by photo id,
    and what is wrong with them (duplicates, torn or foreign rows)."""

    rows: dict[str, dict[str, str]]
    records: dict[str, Any]
    problems: tuple[str, ...]

    @classmethod
    def read(cls, csv_path: Path) -> LocateOutput:
        problems: list[str] = []
        rows = _csv_rows(csv_path, problems)
        records = _jsonl_records(csv_path.with_suffix(".jsonl"), problems)
        problems += [f"{i} in the CSV, not in the JSONL" for i in rows.keys() - records.keys()]
        return cls(rows, records, tuple(problems))

    def against(self, whole: LocateOutput, *, complete: bool) -> str:
        """The first difference from the uninterrupted run's output ``whole`` ("" when none): every row and
        record must be that photo's row in ``whole``; ``complete``: every photo must be there."""
        if self.problems:
            return "; ".join(self.problems[:3])
        for what, mine, theirs in (("row", self.rows, whole.rows), ("record", self.records, whole.records)):
            wrong = [i for i, v in mine.items() if theirs.get(i) != v]
            if wrong:
                return f"{len(wrong)} {what}(s) differ from the uninterrupted run's, e.g. {mine[wrong[0]]}"
            if complete and mine.keys() != theirs.keys():
                return f"{len(theirs.keys() - mine.keys())} photo(s) missing from the {what}s"
        return ""


def _csv_rows(path: Path, problems: list[str]) -> dict[str, dict[str, str]]:
    """The predictions CSV's rows by id; a torn, short or long row, a repeated id or another header is
    added to ``problems``."""
    text = path.read_text(encoding="utf-8", errors="surrogateescape") if path.exists() else ""
    if text and not text.endswith("\n"):
        problems.append("the CSV's last row is torn")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    rows: dict[str, dict[str, str]] = {}
    for row in reader:
        if None in row or None in row.values():
            problems.append(f"a CSV row of the wrong width: {row}")
        elif row["id"] in rows:
            problems.append(f"{row['id']} twice in the CSV")
        rows[str(row.get("id"))] = row
    if text and tuple(reader.fieldnames or ()) != CSV_FIELDS:
        problems.append(f"the CSV header is {reader.fieldnames}")
    return rows


def _jsonl_records(path: Path, problems: list[str]) -> dict[str, Any]:
    """The evidence JSONL's complete records by id, without their timings (wall times differ between runs);
    a repeated id is added to ``problems``. A cut last line is left out, as a resumed run drops it."""
    records: dict[str, Any] = {}
    for line in path.read_bytes().split(b"\n")[:-1] if path.exists() else []:
        rec = json.loads(line)  # a line that is not JSON raises: the trial is lost
        rec.get("evidence", {}).pop("timings", None)
        if rec["id"] in records:
            problems.append(f"{rec['id']} twice in the JSONL")
        records[rec["id"]] = rec
    return records


@dataclass(frozen=True)
class LocateKill:
    """`georag locate` ``args`` (no --out), its uninterrupted output and the seconds it spends writing."""

    args: tuple[str, ...]
    whole: LocateOutput
    window: float

    @classmethod
    def of(cls, args: list[str], root: Path) -> LocateKill:
        """Runs ``args`` uninterrupted into ``root``/whole.csv: the reference and the writing window."""
        root.mkdir(parents=True, exist_ok=True)
        out = root / "whole.csv"
        window = writing_window([*CLI, *args, "--out", str(out)], _started(out))
        return cls(tuple(args), LocateOutput.read(out), window)

    def trial(self, root: Path, rng: np.random.Generator) -> tuple[bool, str]:
        """Kills the command writing into ``root``/killed.csv (its files removed first) at a random moment,
        judges what it left, runs it again in this process and judges the result: (killed, the first
        problem or "")."""
        out = root / "killed.csv"
        for suffix in (".csv", ".jsonl", ".settings.json"):
            out.with_suffix(suffix).unlink(missing_ok=True)
        cmd = [*self.args, "--out", str(out)]
        was_killed = killed([*CLI, *cmd], _started(out), self.window, rng)
        problem = LocateOutput.read(out).against(self.whole, complete=not was_killed)
        if problem:
            return was_killed, f"after the kill: {problem}"
        from click.testing import CliRunner

        from georag.cli import main

        again = CliRunner().invoke(main, cmd)
        if again.exit_code != 0:
            return was_killed, f"the re-run failed (exit {again.exit_code}): {again.output[-300:]!r}"
        problem = LocateOutput.read(out).against(self.whole, complete=True)
        return was_killed, f"after the re-run: {problem}" if problem else ""


def _started(out: Path) -> Callable[[], bool]:
    """Whether a locate run into ``out`` has written its first prediction."""
    jsonl = out.with_suffix(".jsonl")

    def started() -> bool:
        try:
            return jsonl.stat().st_size > 0
        except OSError:
            return False

    return started
