#!/usr/bin/env python
"""Store damage campaign: how a damaged, edited or interrupted store is met; a table of class, tried,
survived, lost.

Classes (tests/damage_campaign.py has the store, the damage and the judge; tests/test_store_damage.py runs
a few of each):

  <kind> x <damage>   every file kind (embeddings, metadata, failures, rejections, ann, submaps, manifest)
                      x bit flip / truncation / deletion / swap on disk / swapped or duplicated manifest
                      entries, ``--seeds`` trials each
  manifest fuzzing    ``--fuzz`` seeded random mutations of the manifest (JSON edits and text edits)
  2 MiB shard         a bit flipped in the half of a shard the quick open check does not read, the search
                      asked about that very row: opened quick (the default; the search compares the row
                      with the CRC32 its metadata records), and opened with verify="full" (what `georag
                      serve --verify full` or the background check gives)
  kill -9 build       `georag index build --from-embeddings` killed at a random moment once it has begun
                      to commit shards, then resumed
  kill -9 reorder     `georag index submaps --by country --reorder` killed at a random moment once it has
                      begun to write the reordered shards, then re-run
  kill -9 locate      `georag locate` over ``--kill-photos`` generated pictures (a tiny SigLIP exported to
                      ONNX, a store of random rows) killed at a random moment once it has begun to write its
                      predictions, then re-run (it resumes): knn, and rag against a stand-in
                      OpenAI-compatible server on 127.0.0.1 (tests/openai_standin.py)

A trial survives when every answer is a StoreError or identical to the intact store's, `verify` never says
OK about a store that open refuses, and (kills) the store afterwards is the old one or the new one and a
re-run finishes it identical to an uninterrupted run; for locate, the killed run's CSV and JSONL hold only
complete rows, each the uninterrupted run's row for that photo, and the re-run's hold every photo once, as
the uninterrupted run has them. Lost: a traceback, or a silently different answer. Everything runs in
temporary folders on this machine; about 6 minutes with the defaults on 2 cores.

  python benchmarks/bench_store_damage.py [--seeds 10] [--fuzz 2000] [--kills 10] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import damage_campaign as dc  # noqa: E402
from georag.errors import StoreError  # noqa: E402
from georag.store.build import BuildRequest, build_source  # noqa: E402
from georag.store.partition import make_submaps  # noqa: E402
from georag.store.store import GeoStore  # noqa: E402
from georag.store.verify import verify_store  # noqa: E402
from openai_standin import StandIn  # noqa: E402
from store_fixtures import write_csv  # noqa: E402
from timing import log  # noqa: E402


@dataclass
class Row:
    """One class of the table."""

    name: str
    outcomes: Counter[str] = field(default_factory=Counter)
    lost: list[str] = field(default_factory=list)

    def add(self, outcome: dc.Outcome, what: str) -> None:
        self.outcomes[outcome.kind] += 1
        if not outcome.survived:
            self.lost.append(f"{what}: {outcome.kind} {outcome.detail}".strip())

    @property
    def tried(self) -> int:
        return sum(self.outcomes.values())

    @property
    def survived(self) -> int:
        return self.tried - len(self.lost)


def damage_matrix(base: dc.Baseline, work: Path, seeds: int) -> Iterator[Row]:
    for kind in dc.KINDS:
        for op in dc.OPS:
            row = Row(f"{kind} x {op}")
            for seed in range(seeds):
                what, outcome = dc.trial(base, work, kind, op, seed)
                row.add(outcome, what)
            yield row


def fuzzing(base: dc.Baseline, work: Path, count: int) -> Row:
    row = Row("manifest fuzzing (random mutations)")
    text = (base.store / "manifest.json").read_text()
    for seed in range(count):
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(base.store, work)
        mutated, what = dc.mutate(text, np.random.default_rng(seed))
        (work / "manifest.json").write_bytes(mutated.encode("utf-8", "surrogateescape"))
        row.add(dc.judge(work, base, damaged=False), f"seed {seed}: {what}")
    return row


def big_shard(root: Path, seeds: int) -> Iterator[Row]:
    """A bit flipped where the quick check does not look, in the row the query asks about."""
    root.mkdir(parents=True)
    store = dc.big_store(root)
    shutil.copytree(store, root / "intact")  # the reference reads its own files, never the damaged ones
    intact = GeoStore.open(root / "intact")
    shard = store / intact.manifest.shards[0].embeddings
    header = shard.stat().st_size - intact.ntotal * intact.dim * 2
    gaps = dc.quick_gaps(shard)
    pristine = shard.read_bytes()
    for verify in ("quick", "full"):
        row = Row(f"embeddings bit flip, 2 MiB shard, outside the quick blocks (open {verify})")
        rng = np.random.default_rng(11)
        for _ in range(seeds):
            lo, hi = gaps[int(rng.integers(len(gaps)))]
            at = int(rng.integers(max(lo, header), hi))
            target = (at - header) // (intact.dim * 2)
            query = intact.embeddings([target])
            expected = dc.neighbors(intact.search(query, 5, 5))
            data = bytearray(pristine)
            data[at] ^= 1 << int(rng.integers(8))
            shard.write_bytes(bytes(data))
            what = f"byte {at} (row {target})"
            try:
                got = dc.neighbors(GeoStore.open(store, verify=verify).search(query, 5, 5))  # type: ignore[arg-type]
                outcome = dc.Outcome("identical") if dc.same(got, expected) else _wrong(got, expected)
            except StoreError:
                outcome = dc.Outcome("refused")
            except Exception as exc:
                outcome = dc.Outcome("crash", repr(exc))
            row.add(outcome, what)
        shard.write_bytes(pristine)
        yield row


def _wrong(got: tuple[np.ndarray, ...], expected: tuple[np.ndarray, ...]) -> dc.Outcome:
    """A different answer, and how different: other rows, or the same rows with other scores."""
    if np.array_equal(got[0], expected[0]) and np.array_equal(got[2], expected[2]):
        diff = max(float(np.max(np.abs(got[i] - expected[i]))) for i in (1, 3))
        return dc.Outcome("wrong", f"the same rows, scores off by up to {diff:.2g}")
    return dc.Outcome("wrong", "other rows")


def _dataset(root: Path, rows: int, d: int = 32) -> tuple[Path, Path]:
    rng = np.random.default_rng(5)
    lat, lon = rng.uniform(-50, 65, rows), rng.uniform(-170, 170, rows)
    meta = write_csv(
        root / "kill.csv",
        [{"IMG_ID": f"k{i}.jpg", "LAT": f"{lat[i]:.5f}", "LON": f"{lon[i]:.5f}"} for i in range(rows)],
    )
    np.save(root / "kill.npy", rng.standard_normal((rows, d)).astype(np.float32))
    return meta, root / "kill.npy"


def _snapshot(store: Path) -> tuple[object, np.ndarray]:
    s = GeoStore.open(store)
    return s.metadata, s.embeddings(np.arange(s.ntotal))


def _equal(a: tuple[object, np.ndarray], b: tuple[object, np.ndarray]) -> bool:
    return bool(a[0].equals(b[0])) and np.array_equal(a[1], b[1])  # type: ignore[attr-defined]


def _kill_trials(name: str, count: int, one: Callable[[np.random.Generator], tuple[bool, str]]) -> Row:
    """Trials until ``count`` of them killed the command (at most 3 x ``count`` trials)."""
    row = Row(name)
    rng = np.random.default_rng(13)
    kills = 0
    for i in range(3 * count):
        try:
            killed, problem = one(rng)
        except Exception as exc:
            killed, problem = True, f"{type(exc).__name__}: {exc}"
        kills += killed
        kind = "wrong" if problem else "killed" if killed else "finished first"
        row.add(dc.Outcome(kind, problem), f"trial {i}")
        if kills >= count:
            break
    return row


def kill_build(root: Path, count: int, rows: int) -> Row:
    """`index build` killed while it commits shards, then resumed: the rows of an uninterrupted build."""
    meta, emb = _dataset(root, rows)
    req = BuildRequest(
        store=root / "ref", dataset="im2gps3k", metadata=meta, encoder="toy/model", embeddings=emb,
        shard_rows=max(rows // 50, 1),
    )  # fmt: skip
    build_source(req, add=False)
    reference = _snapshot(root / "ref")
    store = root / "killed"
    cmd = [*dc.CLI, "index", "build", "--dataset", "im2gps3k", "--metadata", str(meta),
           "--from-embeddings", str(emb), "--encoder", "toy/model", "--out", str(store),
           "--shard-rows", str(req.shard_rows)]  # fmt: skip
    writing = (store / "manifest.json").is_file
    window = dc.writing_window(cmd, writing)

    def one(rng: np.random.Generator) -> tuple[bool, str]:
        shutil.rmtree(store, ignore_errors=True)
        killed = dc.killed(cmd, writing, window, rng)
        try:
            GeoStore.open(store)
        except StoreError as exc:
            if "re-run its build command" not in str(exc):
                return killed, f"the interrupted store is refused for another reason: {exc}"
        problems = verify_store(store).problems
        if problems:
            return killed, f"the interrupted store is damaged: {problems[:2]}"
        build_source(replace(req, store=store), add=False)
        report = verify_store(store)
        if not report.ok or report.unlisted:
            return killed, f"after the resume: {report.problems[:2]}, unlisted {report.unlisted[:2]}"
        return killed, "" if _equal(_snapshot(store), reference) else "resumed rows differ from the reference"

    return _kill_trials("kill -9 georag index build, then resume", count, one)


def kill_reorder(root: Path, count: int) -> Row:
    """`index submaps --reorder` killed while it writes: the old store or the new one, then re-run."""
    source = root / "ref"  # the store kill_build made
    before = _snapshot(source)
    done = root / "reordered"
    shutil.copytree(source, done)
    make_submaps(done, "country", reorder=True)
    after = _snapshot(done)
    store = root / "killed-reorder"
    cmd = [*dc.CLI, "index", "submaps", str(store), "--by", "country", "--reorder"]

    def writing() -> bool:
        return any(p.name.startswith("_r") for p in (store / "shards").iterdir())

    shutil.copytree(source, store)
    window = dc.writing_window(cmd, writing)

    def one(rng: np.random.Generator) -> tuple[bool, str]:
        shutil.rmtree(store, ignore_errors=True)
        shutil.copytree(source, store)
        killed = dc.killed(cmd, writing, window, rng)
        problems = verify_store(store).problems
        if problems:
            return killed, f"the interrupted store is damaged: {problems[:2]}"
        now = _snapshot(store)
        if not (_equal(now, before) or _equal(now, after)):
            return killed, "the interrupted store is neither the old one nor the reordered one"
        make_submaps(store, "country", reorder=True)
        report = verify_store(store)
        if not report.ok or report.unlisted:
            return killed, f"after the re-run: {report.problems[:2]}, unlisted {report.unlisted[:2]}"
        same = _equal(_snapshot(store), after)
        return killed, "" if same else "the re-run differs from an uninterrupted one"

    return _kill_trials("kill -9 georag index submaps --reorder", count, one)


def kill_locate(root: Path, count: int, photos: int) -> Iterator[Row]:
    """`georag locate` killed while it writes its predictions, then re-run (it resumes): knn (no LLM), and
    rag against a stand-in OpenAI-compatible server on 127.0.0.1."""
    args = dc.locate_setup(root, photos)
    yield _locate_kills(f"knn, {photos} photos", dc.route_args(args, "knn"), root / "knn", count)
    with StandIn() as server:
        rag = dc.route_args(args, "rag", server.url)
        yield _locate_kills(f"rag, {photos} photos, stand-in LLM", rag, root / "rag", count)


def _locate_kills(what: str, args: list[str], root: Path, count: int) -> Row:
    job = dc.LocateKill.of(args, root)
    return _kill_trials(
        f"kill -9 georag locate ({what}), then resume", count, lambda rng: job.trial(root, rng)
    )


def print_table(rows: list[Row]) -> None:
    width = max(len(r.name) for r in rows)
    print(f"{'class':<{width}}  {'tried':>6}  {'survived':>8}  {'lost':>4}  how")
    for r in rows:
        how = ", ".join(f"{kind} {n}" for kind, n in sorted(r.outcomes.items()))
        print(f"{r.name:<{width}}  {r.tried:>6}  {r.survived:>8}  {len(r.lost):>4}  {how}")
    total = sum(r.tried for r in rows), sum(r.survived for r in rows), sum(len(r.lost) for r in rows)
    print(f"{'all':<{width}}  {total[0]:>6}  {total[1]:>8}  {total[2]:>4}")
    for r in rows:
        for line in r.lost[:5]:
            print(f"LOST {r.name}: {line}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=10, help="trials per file kind x damage class")
    ap.add_argument("--fuzz", type=int, default=2000, help="manifest mutations")
    ap.add_argument("--kills", type=int, default=10, help="kill -9 trials per command (0: none)")
    ap.add_argument("--kill-rows", type=int, default=20000, help="rows of the store the kills build")
    ap.add_argument("--kill-photos", type=int, default=300, help="photos of the locate runs the kills kill")
    ap.add_argument("--json", type=Path, default=None, help="also write the table here")
    args = ap.parse_args()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="georag-damage-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        base = dc.Baseline.of(dc.build_store(root / "campaign"))
        for row in damage_matrix(base, root / "work", args.seeds):
            rows.append(row)
        log(f"damage matrix: {sum(r.tried for r in rows)} trials in {time.perf_counter() - t0:.0f} s")
        rows.append(fuzzing(base, root / "work", args.fuzz))
        log(f"fuzzing: {args.fuzz} mutations, {time.perf_counter() - t0:.0f} s so far")
        rows += list(big_shard(root / "big", args.seeds * 2))
        if args.kills:
            (root / "kills").mkdir()
            rows.append(kill_build(root / "kills", args.kills, args.kill_rows))
            rows.append(kill_reorder(root / "kills", args.kills))
            rows += list(kill_locate(root / "locate", args.kills, args.kill_photos))
            log(f"kills done, {time.perf_counter() - t0:.0f} s so far")
    print_table(rows)
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                [{"class": r.name, "tried": r.tried, "survived": r.survived, "lost": r.lost} for r in rows],
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
