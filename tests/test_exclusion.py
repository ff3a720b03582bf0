"""Leakage control: the search never returns excluded rows and returns exactly the top k of the others."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from georag.cli import main
from georag.config import ExclusionConfig
from georag.errors import GeoRagError
from georag.geo.coords import haversine_km
from georag.locate.exclusion import ExcludingSearch, QueryTruth
from georag.store.build import BuildRequest, build_source
from georag.store.store import GeoStore
from georag.types import Neighbors
from reference import check_neighbors
from store_fixtures import IM2GPS3K_CSV, write_csv

D = 16


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> GeoStore:
    """600 rows by 6 authors, clustered around 3 places, so exclusions remove many of the best rows."""
    root = tmp_path_factory.mktemp("excl")
    rng = np.random.default_rng(0)
    centres = np.array([[48.85, 2.35], [40.71, -74.0], [35.68, 139.69]])
    place = rng.integers(0, 3, 600)
    lat = centres[place, 0] + rng.normal(0, 0.3, 600)
    lon = centres[place, 1] + rng.normal(0, 0.3, 600)
    rows = [
        {"IMG_ID": f"r{i}.jpg", "AUTHOR": f"a{i % 6}", "LAT": f"{lat[i]:.6f}", "LON": f"{lon[i]:.6f}"}
        for i in range(600)
    ]
    meta = write_csv(root / "meta.csv", rows)
    emb = rng.standard_normal((600, D)).astype(np.float32)
    emb[:, 0] += 3 * place  # similar embeddings at the same place: the nearest rows are the excludable ones
    np.save(root / "emb.npy", emb)
    req = BuildRequest(
        store=root / "s", dataset="im2gps3k", metadata=meta, encoder="toy", embeddings=root / "emb.npy"
    )
    build_source(req, add=False)
    return GeoStore.open(root / "s")


@pytest.mark.parametrize(
    "exclusion",
    [ExclusionConfig(same_author=True), ExclusionConfig(radius_km=50), ExclusionConfig(True, 25.0)],
)
def test_excluding_search_is_the_top_k_of_the_allowed_rows(
    store: GeoStore, exclusion: ExclusionConfig
) -> None:
    db = store.embeddings(np.arange(store.ntotal))
    authors = np.array(store.metadata.column("author").to_pylist(), dtype=object)
    rng = np.random.default_rng(1)
    q_rows = rng.choice(store.ntotal, 12, replace=False)
    queries = db[q_rows] + rng.normal(0, 0.05, (12, D)).astype(np.float32)
    truths = [QueryTruth(float(store.lat[r]), float(store.lon[r]), str(authors[r])) for r in q_rows]
    res, dropped = ExcludingSearch(store, exclusion).search(queries, truths, 16, 16)
    assert dropped.sum() > 0
    for i, t in enumerate(truths):
        allowed = np.ones(store.ntotal, dtype=bool)
        if exclusion.same_author:
            allowed &= authors != t.author
        if exclusion.radius_km is not None:
            allowed &= haversine_km(store.lat, store.lon, t.lat, t.lon) > exclusion.radius_km
        one = Neighbors(*(a[i : i + 1] for a in (res.near_ids, res.near_scores, res.far_ids, res.far_scores)))
        check_neighbors(
            one, db, queries[i : i + 1], 16, 16, allowed=np.flatnonzero(allowed), normalize_db=False
        )
    np.testing.assert_array_equal(res.near_lat, store.lat[res.near_ids])


def test_exclusion_options_are_checked() -> None:
    with pytest.raises(GeoRagError, match=">= 0 km"):
        ExclusionConfig(radius_km=-1)
    assert str(ExclusionConfig(True, 25.0)) == "same author and within 25 km of the truth"
    assert not ExclusionConfig().active


def _rows(p: Path) -> list[dict[str, str]]:
    with open(p, newline="") as f:
        return list(csv.DictReader(f))


def test_leakage_inflates_street_level_accuracy_and_the_exclusions_remove_it(
    locate_env: dict[str, object], tmp_path: Path
) -> None:
    """The store holds the query photos themselves (the worst leak): exact copies are found at 0 km."""
    from store_fixtures import real_rows, rows_with_images

    store = Path(str(locate_env["root"])) / "store"
    gallery = GeoStore.open(store)
    in_store = set(gallery.metadata.column("image_id").to_pylist())
    photos = [
        Path(str(locate_env["queries"][0])).parent / r["IMG_ID"]
        for r in rows_with_images()
        if r["IMG_ID"] in in_store
    ][:30]  # type: ignore[index]
    base = ["locate", *map(str, photos), "--store", str(store), "--encoder", str(locate_env["tiny"])]
    truth = ["--truth", str(IM2GPS3K_CSV)]
    runs = {}
    for name, extra in (
        ("leaky", []),
        ("author", ["--exclude-same-author"]),
        ("radius", ["--exclude-radius-km", "1"]),
    ):
        out = tmp_path / f"{name}.csv"
        r = CliRunner().invoke(main, [*base, *truth, *extra, "--out", str(out)])
        assert r.exit_code == 0, r.output
        runs[name] = out
    true = {r["IMG_ID"]: r for r in real_rows()}

    def within_1km(path: Path) -> float:
        rows = _rows(path)
        d = [
            haversine_km(
                float(x["lat"]), float(x["lon"]), float(true[x["id"]]["LAT"]), float(true[x["id"]]["LON"])
            )
            for x in rows
        ]
        return float(np.mean(np.array(d) <= 1.0))

    assert within_1km(runs["leaky"]) == 1.0  # every photo finds itself
    assert within_1km(runs["radius"]) == 0.0  # by construction nothing within 1 km may help
    authors = gallery.metadata.column("author").to_pylist()
    for line in (tmp_path / "author.jsonl").read_text().splitlines():
        rec = json.loads(line)
        mine = true[rec["id"]]["AUTHOR"]
        assert all(
            authors[n["row"]] != mine
            for n in rec["evidence"]["neighbors"]["near"] + rec["evidence"]["neighbors"]["far"]
        )
        assert rec["evidence"]["excluded_rows"] >= 1  # at least the photo itself
    r = CliRunner().invoke(main, [*base, "--exclude-same-author", "--out", str(tmp_path / "x.csv")])
    assert r.exit_code != 0 and "needs the photos' truth" in r.output


def test_near_duplicates_list_every_pair_above_the_bar(locate_env: dict[str, object], tmp_path: Path) -> None:
    from georag.encoder import load_encoder
    from georag.store.duplicates import near_duplicates
    from store_fixtures import unit_rows

    store = GeoStore.open(Path(str(locate_env["root"])) / "store")
    folder = Path(str(locate_env["queries"][0])).parent  # type: ignore[index]
    photos = [folder / n for n in store.metadata.column("image_id").to_pylist()[:8]] + locate_env["queries"][
        :4
    ]  # type: ignore[operator]
    enc = load_encoder(Path(str(locate_env["tiny"]))).encode(photos, ids=[p.name for p in photos])
    db = unit_rows(store.embeddings(np.arange(store.ntotal)))
    cos = unit_rows(enc.embeddings) @ db.T
    bar = float(np.quantile(cos, 0.995))  # a bar that a few dozen pairs pass
    pairs = near_duplicates(store, enc.embeddings, list(enc.ids), bar, k=4)  # k=4 forces the widening
    got = {(p.query, p.row) for p in pairs}
    clear = np.abs(cos - bar) > 1e-4  # float16 rows: pairs at the bar itself may go either way
    want = {(enc.ids[i], int(r)) for i, r in zip(*np.nonzero((cos >= bar) & clear), strict=True)}
    assert want <= got
    assert all((q, r) in want for q, r in got if clear[enc.ids.index(q), r])
    assert {p.query for p in pairs} >= {p.name for p in photos[:8]}  # each gallery photo finds itself
    r = CliRunner().invoke(
        main,
        ["index", "near-duplicates", str(store.path), *map(str, photos[:8]),
         "--encoder", str(locate_env["tiny"]), "--threshold", "0.999", "--out", str(tmp_path / "pairs.csv")],
    )  # fmt: skip
    assert r.exit_code == 0 and "8 of 8 photos have a gallery row" in r.output, r.output
    assert len(_rows(tmp_path / "pairs.csv")) >= 8
