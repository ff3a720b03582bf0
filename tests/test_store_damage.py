"""A damaged, edited or hostile store is refused (StoreError naming the file) or answers as the intact one.

The damage matrix (every file kind x bit flip / truncation / deletion / swap / swapped or duplicated manifest
entries) and 240 seeded manifest mutations run through `damage_campaign.judge`: no traceback, no silent
wrong answer, and `verify` never says OK about a store that `open` refuses. Then the regressions of each
class one by one: cross-references, hostile manifests, damage the quick check cannot see, and a run's
settings file. benchmarks/bench_store_damage.py runs the larger campaign, with kill -9.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

import damage_campaign as dc
from georag.cli import main
from georag.errors import OutputError, StoreError
from georag.locate.output import PredictionWriter
from georag.store.files import quick_fingerprint
from georag.store.store import GeoStore
from georag.store.verify import verify_store
from georag.types import Prediction

pytest.importorskip("faiss")


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> dc.Baseline:
    return dc.Baseline.of(dc.build_store(tmp_path_factory.mktemp("damage")))


@pytest.fixture
def store(base: dc.Baseline, tmp_path: Path) -> Path:
    """A fresh copy of the intact store, to damage."""
    shutil.copytree(base.store, tmp_path / "store")
    return tmp_path / "store"


def _manifest(store: Path) -> dict[str, Any]:
    return json.loads((store / "manifest.json").read_text())


def _save(store: Path, m: dict[str, Any] | str) -> None:
    (store / "manifest.json").write_text(m if isinstance(m, str) else json.dumps(m))


def _cli(*args: str) -> Any:
    return CliRunner().invoke(main, list(args))


@pytest.mark.parametrize("op", dc.OPS)
@pytest.mark.parametrize("kind", dc.KINDS)
def test_every_file_kind_and_damage_is_refused_or_answers_as_before(
    base: dc.Baseline, tmp_path: Path, kind: str, op: str
) -> None:
    for seed in range(2):
        what, outcome = dc.trial(base, tmp_path / "work", kind, op, seed)
        assert outcome.survived, f"{what}: {outcome}"
        if kind != "manifest":  # every byte of these small files is checked: the damage is always seen
            assert outcome.kind == "refused", f"{what}: not noticed"


def test_manifest_fuzzing_never_crashes_nor_answers_wrong(base: dc.Baseline, tmp_path: Path) -> None:
    text = (base.store / "manifest.json").read_text()
    counts: Counter[str] = Counter()
    lost = []
    for seed in range(240):
        work = tmp_path / "work"
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(base.store, work)
        mutated, what = dc.mutate(text, np.random.default_rng(seed))
        (work / "manifest.json").write_bytes(mutated.encode("utf-8", "surrogateescape"))
        outcome = dc.judge(work, base, damaged=False)
        counts[outcome.kind] += 1
        if not outcome.survived:
            lost.append(f"seed {seed}: {what}: {outcome}")
    assert not lost, "\n".join(lost)
    assert counts["refused"] > 150 and counts["identical"] > 10  # the mutations do bite, and not all of them


# Item 1: every cross-reference of the manifest is checked, by open and by verify.


def _swap(m: dict[str, Any], i: int, j: int, *fields: str) -> None:
    for f in fields:
        m["shards"][i][f], m["shards"][j][f] = m["shards"][j][f], m["shards"][i][f]


def _emptied(m: dict[str, Any]) -> None:
    m["shards"] = []


def _emptied_with_files(m: dict[str, Any]) -> None:
    for s in m.pop("shards"):
        del m["files"][s["embeddings"]], m["files"][s["metadata"]]
    m["shards"] = []


EDITS = {
    "metadata names of two equal shards swapped": (lambda m: _swap(m, 0, 3, "metadata"), "pairs"),
    "embeddings names of two equal shards swapped": (lambda m: _swap(m, 5, 6, "embeddings"), "pairs"),
    "both names swapped": (lambda m: _swap(m, 0, 3, "embeddings", "metadata"), "not the file of slice"),
    "shard entries swapped but first_row": (
        lambda m: _swap(m, 5, 6, "embeddings", "metadata", "input_start", "input_end"),
        "skip or repeat items",
    ),
    "a shard entry repeated": (lambda m: m["shards"].insert(2, dict(m["shards"][1])), "named 2 times"),
    "the shard list emptied": (_emptied, "no role"),
    "the shard list and its files emptied": (_emptied_with_files, "no shard holds them"),
    "one file in two roles": (
        lambda m: m["sources"][0]["failure_files"].__setitem__(1, m["sources"][0]["failure_files"][0]),
        "named 2 times",
    ),
    "a source listed twice": (
        lambda m: m["sources"].append({**m["sources"][1], "rejections_file": None}),
        "source 'second' appears twice",
    ),
    "an ANN entry naming a .npy": (
        lambda m: m["ann"]["flat"].__setitem__("file", m["shards"][0]["embeddings"]),
        "named 2 times",
    ),
}


@pytest.mark.parametrize("edit", EDITS)
def test_cross_references_are_checked_by_open_and_verify(store: Path, edit: str) -> None:
    change, message = EDITS[edit]
    m = _manifest(store)
    change(m)
    _save(store, m)
    with pytest.raises(StoreError, match=message) as refused:
        GeoStore.open(store)
    assert str(store / "manifest.json") in str(refused.value)
    with pytest.raises(StoreError, match=message):
        verify_store(store)
    result = _cli("index", "verify", str(store))
    assert result.exit_code == 1 and "manifest.json" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize(
    ("field", "problem"),
    [
        ("metadata", r"row 0 has row_id 46, expected 0: it is another shard's metadata"),
        (
            "embeddings",
            r"belongs with embeddings of SHA-256 \w+\.\.\., not the shard's \w+\.\.\.: the embeddings",
        ),
    ],
)
def test_shard_files_exchanged_with_their_checksums_are_caught(store: Path, field: str, problem: str) -> None:
    # A consistent manifest whose two equal-sized shards' files were exchanged on disk and in the checksums:
    # only the rows themselves (metadata) or the embeddings SHA-256 the metadata records tell.
    m = _manifest(store)
    a, b = m["shards"][0][field], m["shards"][3][field]
    assert m["shards"][0]["rows"] == m["shards"][3]["rows"]
    m["files"][a], m["files"][b] = m["files"][b], m["files"][a]
    _save(store, m)
    (store / a).rename(store / "x")
    (store / b).rename(store / a)
    (store / "x").rename(store / b)
    meta = m["shards"][0]["metadata"]
    with pytest.raises(StoreError, match=rf"^{store / meta} {problem}"):
        GeoStore.open(store)
    report = verify_store(store)
    assert report.state == "DAMAGED" and report.problems[0].startswith(f"{meta}: ")


# Item 5: a malformed manifest is a StoreError naming it, never a traceback.


def _text_edit(find: str, replace: str) -> Any:
    return lambda text: text.replace(find, replace, 1)


HOSTILE = {
    "100000 deep": (_text_edit('"ann":{', '"ann":{"x":' + "[" * 100_000 + "]" * 100_000 + ","), "nested"),
    "a 5000-digit integer": (_text_edit('"dim":', '"dim":' + "9" * 5000 + ',"d":'), "5000 digits"),
    "NaN": (_text_edit('"dim":', '"dim":NaN,"d":'), "NaN is not a JSON number"),
    "a repeated key": (_text_edit('"ann":{', '"ann":{"flat":{},'), "appears twice"),
    "not UTF-8": (lambda text: "\udcff" + text, "not a readable store manifest"),
    "a list": (lambda text: f"[{text}]", "not a georag store manifest"),
    "17 MiB": (lambda text: text + " " * (17 << 20), "larger than 16 MiB"),
}


@pytest.mark.parametrize("hostile", HOSTILE)
def test_a_hostile_manifest_is_a_store_error_naming_it(store: Path, hostile: str) -> None:
    change, message = HOSTILE[hostile]
    text = change((store / "manifest.json").read_text())
    (store / "manifest.json").write_bytes(text.encode("utf-8", "surrogateescape"))
    with pytest.raises(StoreError, match=message) as refused:
        GeoStore.open(store)
    assert str(store / "manifest.json") in str(refused.value)
    for command in ("verify", "info"):
        result = _cli("index", command, str(store))
        assert result.exit_code == 1 and not isinstance(result.exception, StoreError | RecursionError)
        assert "manifest.json" in result.output and "Traceback" not in result.output


def test_a_faiss_entry_holding_other_bytes_is_refused_when_used(store: Path) -> None:
    m = _manifest(store)
    rel = m["ann"]["flat"]["file"]
    shutil.copyfile(store / m["shards"][0]["embeddings"], store / rel)  # the checksum entry made to match
    m["files"][rel] = m["files"][m["shards"][0]["embeddings"]]
    _save(store, m)
    s = GeoStore.open(store)  # the exact search is not blocked by an optional index
    with pytest.raises(StoreError, match=rf"{rel} is not a faiss index.*build-ann"):
        s.index("flat")


# Item 2: verify checks what open checks; a full check for long-running readers; damaged rows named.


def test_verify_checks_the_quick_fingerprints_open_compares(store: Path) -> None:
    m = _manifest(store)
    rel = m["shards"][1]["embeddings"]
    m["files"][rel]["quick"] = "0" * 64
    _save(store, m)
    with pytest.raises(StoreError, match="fingerprint"):
        GeoStore.open(store)
    report = verify_store(store)
    assert not report.ok and report.problems == [
        f"{rel}: the quick fingerprint the manifest records is not the file's (the manifest entry was "
        "edited): every open of the store refuses it"
    ]


def test_verify_reports_unfinished_sources(store: Path) -> None:
    m = _manifest(store)
    m["sources"][1]["complete"] = False
    _save(store, m)
    with pytest.raises(StoreError, match="not finished"):
        GeoStore.open(store)
    report = verify_store(store)
    assert report.state == "INCOMPLETE" and not report.ok and not report.problems
    result = _cli("index", "verify", str(store))
    assert result.exit_code == 1
    assert "UNFINISHED second: 33 of 33 items; re-run its build command" in result.output
    assert result.output.rstrip().endswith("INCOMPLETE")


def test_verify_checks_the_manifest_against_a_published_hash(store: Path) -> None:
    import hashlib

    published = hashlib.sha256((store / "manifest.json").read_bytes()).hexdigest()
    good = _cli("index", "verify", str(store), "--expect-sha256", published.upper())
    assert good.exit_code == 0 and f"SHA-256 {published} (the expected hash)" in good.output
    bad = _cli("index", "verify", str(store), "--expect-sha256", "ab" * 32)
    assert (
        bad.exit_code == 1 and f"CORRUPT  manifest.json: SHA-256 {published}, not the expected" in bad.output
    )


def test_damage_the_quick_check_cannot_see_is_caught_by_a_full_check(tmp_path: Path) -> None:
    store = dc.big_store(tmp_path)
    intact = GeoStore.open(store)
    check = intact.verify_in_background()
    assert intact.verify_in_background() is check  # started once
    assert check.wait(60) and check.state == "passed"
    assert intact.integrity() == {
        "check": "full", "state": "passed", "checked_bytes": check.total_bytes,
        "total_bytes": check.total_bytes, "problems": [],
    }  # fmt: skip

    shard = store / intact.manifest.shards[0].embeddings
    at = dc.quick_gaps(shard)[0][0] + 1000
    fingerprint = quick_fingerprint(shard)
    with open(shard, "r+b") as f:
        f.seek(at)
        f.write(b"\x00\x7c")  # one float16 value becomes +Inf
    assert quick_fingerprint(shard) == fingerprint  # the limit of the quick check, on purpose
    quick = GeoStore.open(store)
    assert quick.integrity() == {"check": "quick", "state": "passed"}
    with pytest.raises(StoreError, match=rf"{shard} was changed after the store was written \(its SHA-256"):
        GeoStore.open(store, verify="full")
    assert verify_store(store).problems == [
        f"{shard.relative_to(store)}: content changed (SHA-256 differs from the manifest)"
    ]
    check = quick.verify_in_background()
    assert check.wait(60) and check.state == "failed"
    status = quick.integrity()
    assert status["state"] == "failed" and str(shard.relative_to(store)) in status["problems"][0]


def test_a_damaged_row_a_search_meets_names_its_shard_file(base: dc.Baseline, store: Path) -> None:
    s = GeoStore.open(store)
    s.flat_index()  # its sample is checked now; the rows stay on disk and are read in place
    info = s.manifest.shards[3]
    row = info.first_row + 5
    query = s.embeddings([row])
    shard = store / info.embeddings
    header = len(shard.read_bytes()) - info.rows * s.dim * 2
    with open(shard, "r+b") as f:  # the file changes under the open store (a disk error, a stray write)
        f.seek(header + 5 * s.dim * 2)
        f.write((np.asarray(query, dtype=np.float16) * 3).tobytes())
    for index in ("exact", "flat"):
        with pytest.raises(StoreError) as met:
            s.search(query, 3, 3, index=index)
        assert str(met.value).startswith(f"{shard}: row 5 (store row {row}) has norm 2.99")
        assert f"run `georag index verify {store}`" in str(met.value)


def test_served_rows_are_checked_once_and_a_new_damaged_one_is_still_met(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = GeoStore.open(store)
    read: list[int] = []
    embeddings = s.embeddings
    monkeypatch.setattr(s, "embeddings", lambda rows: read.append(len(rows)) or embeddings(rows))
    first = s.embeddings([0])
    read.clear()
    res = s.search(first, 4, 4)
    served = np.unique(np.concatenate([res.near_ids.ravel(), res.far_ids.ravel()]))
    assert read == [served.size]  # every row returned was read and checked ...
    s.search(first, 4, 4)
    assert read == [served.size]  # ... once
    info = s.manifest.shards[-1]
    row = info.first_row + info.rows - 1  # a row not served yet, then damaged
    assert row not in served
    query = s.embeddings([row])
    shard = store / info.embeddings
    with open(shard, "r+b") as f:
        f.seek(len(shard.read_bytes()) - s.dim * 2)
        f.write((np.asarray(query, dtype=np.float16) * 3).tobytes())
    named = rf"^{shard}: row {info.rows - 1} \(store row {row}\) has norm (2\.99|3\.00)"
    with pytest.raises(StoreError, match=named):
        s.search(query, 3, 3)


def test_a_bad_row_in_the_index_sample_names_its_shard_file(store: Path) -> None:
    s = GeoStore.open(store)
    info = s.manifest.shards[1]
    shard = store / info.embeddings
    header = len(shard.read_bytes()) - info.rows * s.dim * 2
    with open(shard, "r+b") as f:
        f.seek(header)
        f.write(np.full(s.dim, np.nan, dtype=np.float16).tobytes())
    with pytest.raises(StoreError, match=rf"^{shard}: row 0 \(store row {info.first_row}\) has a NaN/Inf"):
        s.flat_index()


# Item 6: a run's settings file is replaced atomically, and a damaged one names itself and the way out.


def _writer(out: Path, settings: dict[str, Any]) -> PredictionWriter:
    return PredictionWriter.open(out, settings)


def test_a_cut_settings_file_names_itself_and_resuming_keeps_finished_photos(tmp_path: Path) -> None:
    out, settings = tmp_path / "preds.csv", {"strategy.name": "knn", "search.k_near": 16}
    with _writer(out, settings) as w:
        w.write(Prediction("a.jpg", 1.0, 2.0, 0.5, "knn"))
    side = tmp_path / "preds.settings.json"
    side.write_text(side.read_text()[:10])
    with pytest.raises(OutputError) as refused:
        _writer(out, settings)
    message = str(refused.value)
    assert message.startswith(f"{side} is not readable JSON") and f"delete {side} and run again" in message
    assert f"{tmp_path / 'preds.jsonl'} are intact" in message
    side.unlink()
    with _writer(out, settings) as w:
        assert [p.id for p in w.done] == ["a.jpg"]
    assert json.loads(side.read_text()) == settings


def test_the_settings_file_is_replaced_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "preds.csv"
    _writer(out, {"k": 1}).close()
    side = tmp_path / "preds.settings.json"
    before = side.read_bytes()

    def crash(*args: object) -> None:
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(os, "replace", crash)
        with pytest.raises(KeyboardInterrupt):
            _writer(out, {"k": 1})
    assert side.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if "settings" in p.name) == ["preds.settings.json"]
