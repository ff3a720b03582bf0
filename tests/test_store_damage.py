"""A damaged, edited or hostile store is refused (StoreError naming the file) or answers as the intact one.

The damage matrix (every file kind x bit flip / truncation / deletion / swap / swapped or duplicated manifest
entries) and 240 seeded manifest mutations run through `damage_campaign.judge`: no traceback, no silent
wrong answer, and `verify` never says OK about a store that `open` refuses. Then the regressions of each
class one by one: cross-references, hostile manifests, damage the quick check cannot see (a full check
finds it; row checksums refuse it at search time), and a run's settings file.
benchmarks/bench_store_damage.py runs the larger campaign, with kill -9.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import damage_campaign as dc
from georag.cli import main
from georag.errors import OutputError, StoreError
from georag.locate.output import PredictionWriter
from georag.store.build import BuildRequest, build_source
from georag.store.files import quick_fingerprint
from georag.store.metadata import ROW_CRC32
from georag.store.partition import make_submaps
from georag.store.rowcheck import STORED_NORM_TOLERANCE
from georag.store.store import GeoStore
from georag.store.verify import verify_store
from georag.types import Prediction
from store_fixtures import rewrite_metadata, without_row_checksums, write_csv

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
        "total_bytes": check.total_bytes, "problems": [], "row_checksums": True,
    }  # fmt: skip

    shard = store / intact.manifest.shards[0].embeddings
    at = dc.quick_gaps(shard)[0][0] + 1000
    fingerprint = quick_fingerprint(shard)
    with open(shard, "r+b") as f:
        f.seek(at)
        f.write(b"\x00\x7c")  # one float16 value becomes +Inf
    assert quick_fingerprint(shard) == fingerprint  # the limit of the quick check, on purpose
    quick = GeoStore.open(store)
    assert quick.integrity() == {"check": "quick", "state": "passed", "row_checksums": True}
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
        assert "not a normalized embedding: the file is damaged" in str(met.value)
        assert f"run `georag index verify {store}`" in str(met.value)


def test_served_rows_are_checked_once_and_a_new_damaged_one_is_still_met(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = GeoStore.open(store)
    read: list[int] = []
    stored_rows = s.stored_rows
    monkeypatch.setattr(s, "stored_rows", lambda rows: read.append(len(rows)) or stored_rows(rows))
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


# Row checksums: the CRC32 of every row, in its shard's metadata, compared with each row a search serves.


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The intact 2 MiB one-shard store (`dc.big_store`): copy it to damage it."""
    return dc.big_store(tmp_path_factory.mktemp("big"))


def _copy(store: Path, to: Path) -> Path:
    shutil.copytree(store, to)
    return to


def _row_in_a_gap(s: GeoStore) -> tuple[Path, int, int]:
    """The shard file of the one-shard store ``s``, a row wholly in a range its quick fingerprint does not
    read, and the row's first byte."""
    shard = s.path / s.manifest.shards[0].embeddings
    width = s.dim * 2
    header = shard.stat().st_size - s.ntotal * width
    lo, hi = dc.quick_gaps(shard)[3]
    row = -(-(lo - header) // width)
    assert header + (row + 1) * width <= hi
    return shard, row, header + row * width


def _flip(path: Path, at: int, bit: int) -> None:
    with open(path, "r+b") as f:
        f.seek(at)
        byte = f.read(1)[0]
        f.seek(at)
        f.write(bytes([byte ^ (1 << bit)]))


def test_a_flipped_bit_anywhere_in_a_row_is_refused_even_where_the_norm_keeps(
    big: Path, tmp_path: Path
) -> None:
    store = _copy(big, tmp_path / "store")
    shard, row, at = _row_in_a_gap(GeoStore.open(store))
    query = GeoStore.open(big).embeddings([row])
    fingerprint = quick_fingerprint(shard)
    width, by_checksum = GeoStore.open(store).dim * 2, 0
    for offset in (0, 1, width // 2, width // 2 + 1, width - 2, width - 1):
        for bit in range(8):
            _flip(shard, at + offset, bit)
            assert quick_fingerprint(shard) == fingerprint  # outside the blocks the quick check reads
            damaged = GeoStore.open(store)
            norm = float(np.linalg.norm(damaged.embeddings([row]).astype(np.float64)))
            with pytest.raises(StoreError, match=rf"^{shard}: row {row} \(store row {row}\) has ") as met:
                damaged.search(query, 5, 5)
            if abs(norm - 1.0) <= STORED_NORM_TOLERANCE["float16"]:  # the norm check alone would serve it
                assert "has other bytes than were written (CRC32 " in str(met.value), (offset, bit)
                assert f"run `georag index verify {store}`" in str(met.value)
                by_checksum += 1
            else:
                assert "not a normalized embedding" in str(met.value), (offset, bit)
            _flip(shard, at + offset, bit)
    assert by_checksum >= 24  # every low mantissa bit, and more


def test_a_store_built_before_row_checksums_opens_searches_and_says_so(big: Path, tmp_path: Path) -> None:
    store = _copy(big, tmp_path / "store")
    without_row_checksums(store)
    intact, old = GeoStore.open(big), GeoStore.open(store)
    shard, row, at = _row_in_a_gap(old)
    query = intact.embeddings([row])
    assert old.manifest.format_version == 1 and old.metadata.equals(intact.metadata)
    assert dc.same(dc.neighbors(old.search(query, 5, 5)), dc.neighbors(intact.search(query, 5, 5)))
    note = "the store was built before row checksums: a search checks their norms only"
    status = old.integrity()
    assert status["row_checksums"] is False and status["note"].startswith(note)
    report = verify_store(store)
    assert report.ok and len(report.notes) == 1 and report.notes[0].startswith(note)
    shown = _cli("index", "verify", str(store))
    assert shown.exit_code == 0 and f"NOTE     {note}" in shown.output
    _flip(shard, at, 0)  # the lowest mantissa bit of the row's first value: the norm keeps
    res = GeoStore.open(store).search(query, 5, 5)  # served, as before row checksums: the limit they close
    assert res.near_ids[0, 0] == row
    assert not verify_store(store).ok


def test_rows_added_to_an_old_store_have_checksums_and_the_rest_are_named(
    store: Path, tmp_path: Path
) -> None:
    without_row_checksums(store)
    before = GeoStore.open(store).ntotal
    lat, lon = np.linspace(-40, 40, 20), np.linspace(-100, 100, 20)
    rows = [{"IMG_ID": f"t{i}.jpg", "LAT": f"{lat[i]:.4f}", "LON": f"{lon[i]:.4f}"} for i in range(20)]
    np.save(tmp_path / "third.npy", np.random.default_rng(4).standard_normal((20, dc.D)).astype(np.float32))
    req = BuildRequest(
        store=store, dataset="im2gps3k", metadata=write_csv(tmp_path / "third.csv", rows),
        encoder="toy/model", embeddings=tmp_path / "third.npy", source="third",
    )  # fmt: skip
    build_source(req, add=True)
    s = GeoStore.open(store)
    assert s.manifest.format_version == 2 and s.row_checksums.missing == before
    note = s.integrity()["note"]
    assert note.startswith(f"{before} of its {before + 20} rows were built before row checksums")
    assert verify_store(store).notes == [note]
    old, new = s.manifest.shards[0], s.manifest.shards[-1]
    queries = s.embeddings([old.first_row, new.first_row])
    for info in (old, new):  # the lowest mantissa bit of its first row's first value, under the open store
        shard = store / info.embeddings
        _flip(shard, shard.stat().st_size - info.rows * s.dim * 2, 0)
    assert s.search(queries[:1], 3, 3).near_ids[0, 0] == old.first_row  # served: no checksum to compare
    with pytest.raises(
        StoreError, match=rf"^{store / new.embeddings}: row 0 .* other bytes than were written"
    ):
        s.search(queries[1:], 3, 3)


def _crc_column(values: pa.Array) -> Any:
    """A change of a metadata table: its row checksum column replaced by ``values`` (their type, nullable
    when they hold a null)."""

    def change(table: pa.Table) -> pa.Table:
        field = pa.field(ROW_CRC32, values.type, nullable=values.null_count > 0)
        return table.set_column(table.num_columns - 1, field, values[: table.num_rows])

    return change


@pytest.mark.parametrize(
    ("values", "has"),
    [
        (pa.array(np.arange(16), type=pa.int64()), "emb_crc32 int64 not null, a store's"),
        (pa.array([None, *range(1, 16)], type=pa.uint32()), "emb_crc32 uint32, a store's"),
    ],
    ids=["another type", "a row without one"],
)
def test_the_metadata_check_refuses_a_row_checksum_column_of_another_type_or_with_gaps(
    store: Path, values: pa.Array, has: str
) -> None:
    rewrite_metadata(store, 2, _crc_column(values))
    rel = _manifest(store)["shards"][2]["metadata"]
    with pytest.raises(
        StoreError, match=rf"^{store / rel} does not have the store's metadata columns: .*{has}"
    ):
        GeoStore.open(store)
    report = verify_store(store)
    assert report.state == "DAMAGED" and report.problems[0].startswith(f"{rel}: ")


def test_a_row_checksum_that_is_not_its_rows_is_refused_by_search_and_verify(store: Path) -> None:
    info = _manifest(store)["shards"][2]
    crc = pq.read_table(store / info["metadata"]).column(ROW_CRC32).to_numpy().copy()
    crc[0] ^= 1  # row 0's recorded checksum is not its own
    rewrite_metadata(store, 2, _crc_column(pa.array(crc)))
    s = GeoStore.open(store)  # the metadata is consistent with the manifest: only the rows tell
    row = info["first_row"]
    named = rf"^{store / info['embeddings']}: row 0 \(store row {row}\) has other bytes than were written"
    with pytest.raises(StoreError, match=named):
        s.search(s.embeddings([row]), 3, 3)
    assert verify_store(store).problems == [
        f"{info['metadata']}: row 0 has CRC32 {crc[0] ^ 1:08x} but the metadata records {crc[0]:08x} "
        f"({info['embeddings']}): a search refuses that row"
    ]


@pytest.mark.parametrize("version", [0, 3, True, "2"])
def test_only_store_format_versions_1_and_2_are_read(store: Path, version: object) -> None:
    m = _manifest(store)
    m["format_version"] = version
    _save(store, m)
    with pytest.raises(StoreError, match="this georag reads versions 1, 2"):
        GeoStore.open(store)


def test_reorder_refuses_a_row_whose_checksum_does_not_match(big: Path, tmp_path: Path) -> None:
    store = _copy(big, tmp_path / "store")
    s = GeoStore.open(store)
    shard, row, at = _row_in_a_gap(s)
    _flip(shard, at, 0)  # unseen by the quick check of the reorder's open, and by the row's norm
    with pytest.raises(StoreError, match=rf"^{shard}: row {row} .* other bytes than were written"):
        make_submaps(store, "country", reorder=True)
    assert GeoStore.open(store).manifest.shards == s.manifest.shards  # nothing committed


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
