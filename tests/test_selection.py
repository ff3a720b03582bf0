"""Selection rules and regions, each against an independent reference: a brute-force grid for the
geometric median, plain-Python loops for the densest ball, the medoid and the support scores, and the 160
real GPT-4o sample sets (skipped when ../shared/data is absent)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from georag.config import Config, RagConfig, Sampling, StrategyConfig, parse_variants
from georag.errors import ConfigError, InputError
from georag.evaluate.sample_sets import read_sample_sets
from georag.geo.clusters import densest_members, regions
from georag.geo.geomedian import geometric_median, sum_of_distances_km
from georag.geo.select import pairwise_km
from georag.geo.selection import SELECTION_RULES, Candidates, check_rule, choose
from georag.strategies.registry import make_strategy
from georag.types import Completion, Photo, Retrieved

ANSWERS = Path(__file__).resolve().parents[2] / "shared" / "data" / "llm_answers" / "answers.jsonl"
R = 6371.0


def _hav(a: tuple[float, float], b: tuple[float, float]) -> float:
    la1, lo1, la2, lo2 = map(math.radians, (*a, *b))
    h = math.sin((la2 - la1) / 2) ** 2 + math.cos(la1) * math.cos(la2) * math.sin((lo2 - lo1) / 2) ** 2
    return 2 * R * math.asin(min(1.0, math.sqrt(h)))


def _cost(points: list[tuple[float, float]], at: tuple[float, float]) -> float:
    return sum(_hav(p, at) for p in points)


def _grid_minimum(
    points: list[tuple[float, float]], centre: tuple[float, float], half: float, step: float
) -> tuple[float, tuple[float, float]]:
    """The least sum of distances over a lat/lon grid of +-half degrees around centre (brute force)."""
    best = (math.inf, centre)
    for la in np.arange(centre[0] - half, centre[0] + half + 1e-9, step):
        for lo in np.arange(centre[1] - half, centre[1] + half + 1e-9, step):
            c = _cost(points, (float(la), float(lo)))
            if c < best[0]:
                best = (c, (float(la), float(lo)))
    return best


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_geometric_median_matches_a_brute_force_grid(seed: int) -> None:
    rng = np.random.default_rng(seed)
    pts = [(float(a), float(b)) for a, b in zip(rng.uniform(44, 48, 7), rng.uniform(1, 7, 7), strict=True)]
    got = geometric_median([p[0] for p in pts], [p[1] for p in pts])
    # coarse grid over the whole hull, then a fine one around its best cell
    _, coarse = _grid_minimum(pts, (46.0, 4.0), 3.0, 0.1)
    best, fine = _grid_minimum(pts, coarse, 0.1, 0.002)
    assert _cost(pts, got) <= best + 1e-6, "no grid point does better than the median"
    assert _hav(got, fine) < 1.0, "and the grid's best point is within a grid cell of it"
    assert sum_of_distances_km([p[0] for p in pts], [p[1] for p in pts], *got) == pytest.approx(
        _cost(pts, got)
    )


def test_geometric_median_of_repeated_answers_and_across_the_date_line() -> None:
    # Three identical answers outweigh two others: the repeated point is the median (Vardi-Zhang).
    lat, lon = [48.85, 48.85, 48.85, 45.76, 43.30], [2.35, 2.35, 2.35, 4.83, 5.37]
    assert geometric_median(lat, lon) == pytest.approx((48.85, 2.35), abs=1e-9)
    # Points on both sides of 180 degrees: the median sits by the date line, not near longitude 0.
    la, lo = geometric_median([10.0, 10.5, 9.5], [179.9, -179.8, 179.7])
    assert abs(abs(lo) - 180.0) < 0.5 and 9.5 < la < 10.5
    # Two points: any point between them is optimal; the cost is their distance.
    two = [(40.0, -3.0), (41.0, 2.0)]
    m = geometric_median([40.0, 41.0], [-3.0, 2.0])
    assert _cost(two, m) == pytest.approx(_hav(*two), rel=1e-9)
    with pytest.raises(InputError):
        geometric_median([], [])


def _brute_densest(points: list[tuple[float, float]], radius: float) -> list[int]:
    best: tuple[int, float, int] | None = None
    for i, p in enumerate(points):
        inside = [j for j, q in enumerate(points) if _hav(p, q) <= radius]
        key = (-len(inside), sum(_hav(p, points[j]) for j in inside), i)
        if best is None or key < best:
            best = key
    assert best is not None
    return [j for j, q in enumerate(points) if _hav(points[best[2]], q) <= radius]


PARIS3 = [(48.8566, 2.3522), (48.86, 2.34), (48.85, 2.36)]
LYON2 = [(45.764, 4.8357), (45.75, 4.85)]
TOKYO = (35.68, 139.69)


def test_the_cluster_rule_is_the_medoid_of_the_densest_ball() -> None:
    pts = [LYON2[0], TOKYO, PARIS3[0], LYON2[1], PARIS3[1], PARIS3[2]]
    lat, lon = [p[0] for p in pts], [p[1] for p in pts]
    for radius in (5.0, 25.0, 500.0, 20000.0):
        members = densest_members(pairwise_km(lat, lon), radius).tolist()
        assert members == _brute_densest(pts, radius)
        c = choose("cluster", Candidates.of(lat, lon), radius_km=radius)
        inner = [pts[j] for j in members]
        assert (c.lat, c.lon) == inner[int(np.argmin([_cost(inner, p) for p in inner]))]
    c = choose("cluster", Candidates.of(lat, lon), radius_km=25.0)
    assert (c.lat, c.lon) == PARIS3[0] and c.index == 2 and c.rule == "cluster"


def test_first_medoid_and_geomedian_rules() -> None:
    pts = [TOKYO, *PARIS3, *LYON2]
    lat, lon = [p[0] for p in pts], [p[1] for p in pts]
    cands = Candidates.of(lat, lon)
    assert choose("first", cands).index == 0
    m = choose("medoid", cands)
    assert m.index == int(np.argmin([_cost(pts, p) for p in pts]))
    g = choose("geomedian", cands)
    assert g.index is None and _cost(pts, (g.lat, g.lon)) <= _cost(pts, pts[m.index]) + 1e-9


def test_the_support_rule_counts_neighbours_near_each_candidate() -> None:
    pts = [*PARIS3, *LYON2]
    lat, lon = [p[0] for p in pts], [p[1] for p in pts]
    near = [(45.76, 4.84), (45.70, 4.80), (45.80, 4.90), (48.85, 2.35)]  # three by Lyon, one by Paris
    cands = Candidates.of(lat, lon, [n[0] for n in near] + [math.nan], [n[1] for n in near] + [math.nan])
    c = choose("support", cands, radius_km=25.0)
    backing = [sum(_hav(p, n) <= 25.0 for n in near) for p in pts]
    assert c.index == int(np.argmax(backing)) == 3 and c.rule == "support" and c.note is None
    # ties in backing go to the candidate with more agreeing candidates, then the medoid order
    tie = choose("support", Candidates.of(lat, lon, [0.0], [0.0]), radius_km=25.0)
    assert tie.index in (0, 1, 2)
    # without neighbours the cluster rule stands in, and says so
    alone = choose("support", Candidates.of(lat, lon), radius_km=25.0)
    assert alone.rule == "cluster" and alone.note and (alone.lat, alone.lon) == PARIS3[0]


def test_unknown_rules_and_misused_options_are_clear_errors() -> None:
    assert set(SELECTION_RULES) == {"medoid", "geomedian", "cluster", "first", "support"}
    with pytest.raises(ConfigError, match="unknown selection rule"):
        check_rule("mode")
    with pytest.raises(ConfigError, match="with-neighbors"):
        check_rule("cluster", with_neighbors=True)
    with pytest.raises(ConfigError, match="unknown selection rule"):
        Config().with_values({"strategy.rag.select": "best"})
    with pytest.raises(ConfigError, match="select_km"):
        Config().with_values({"strategy.rag.select_km": -1.0})
    with pytest.raises(InputError):
        choose("medoid", Candidates.of([], []))
    assert Config().with_values({"strategy.rag.select": "geomedian"}).strategy.rag.select == "geomedian"


def test_regions_are_the_densest_balls_in_turn_with_shares_of_the_samples_asked() -> None:
    rome = [(41.90, 12.50), (41.89, 12.49)]
    pts = [*PARIS3, TOKYO, *rome, PARIS3[0], (48.87, 2.33)]
    lat, lon = [p[0] for p in pts], [p[1] for p in pts]
    found = regions(lat, lon, asked=10, k=3, radius_km=25.0)
    assert [r.count for r in found] == [5, 2, 1]
    assert [r.share for r in found] == [0.5, 0.2, 0.1]  # 2 of the 10 samples asked did not answer
    paris = [p for p in pts if p[0] > 48]
    centre = paris[int(np.argmin([_cost(paris, p) for p in paris]))]
    assert (found[0].lat, found[0].lon) == centre
    assert found[0].radius_km == pytest.approx(max(_hav(centre, p) for p in paris))
    assert (found[2].lat, found[2].lon, found[2].radius_km) == (*TOKYO, 0.0)
    assert len(regions(lat, lon, asked=10, k=2)) == 2 and regions([], [], asked=5) == []
    radius = round(found[0].radius_km, 3)
    want = {"lat": centre[0], "lon": centre[1], "radius_km": radius, "count": 5, "share": 0.5}
    assert found[0].record() == want


def _item() -> Retrieved:
    k = 4
    near_lat, near_lon = np.array([45.76, 45.7, 45.8, 10.0]), np.array([4.84, 4.8, 4.9, 10.0])
    return Retrieved(
        "photo.jpg",
        np.arange(k, dtype=np.int64), np.linspace(0.9, 0.5, k).astype(np.float32), near_lat, near_lon,
        np.arange(100, 100 + k, dtype=np.int64), np.linspace(-0.5, -0.1, k).astype(np.float32),
        -near_lat, near_lon,
    )  # fmt: skip


@pytest.mark.parametrize("rule", SELECTION_RULES)
def test_the_rag_route_chooses_by_the_configured_rule_and_reports_regions(rule: str) -> None:
    pts = [TOKYO, *PARIS3, *LYON2]
    texts = [json.dumps({"latitude": a, "longitude": b}) for a, b in pts] + ["I cannot tell"]
    cfg = RagConfig(variants=parse_variants("zero"), sampling=Sampling(n=7), select=rule, regions=2)
    route = make_strategy(StrategyConfig("rag", rag=cfg)).route(_item(), Photo(b"\xff\xd8 fake"))
    next(route)
    with pytest.raises(StopIteration) as stop:
        route.send((Completion(tuple(texts), 0.01),))
    pred = stop.value.value
    expected = choose(
        rule, Candidates.of([p[0] for p in pts], [p[1] for p in pts], _item().near_lat, _item().near_lon)
    )
    assert (pred.lat, pred.lon) == (expected.lat, expected.lon)
    assert pred.evidence["select"]["rule"] == rule and pred.evidence["chosen"] == expected.index
    assert pred.confidence == pytest.approx(sum(_hav(p, (pred.lat, pred.lon)) <= 100 for p in pts) / 7)
    assert pred.evidence["asked"] == 7
    assert [r["count"] for r in pred.regions] == [3, 2] and pred.regions[0]["share"] == round(3 / 7, 4)


needs_answers = pytest.mark.skipif(not ANSWERS.is_file(), reason="../shared/data/llm_answers is absent")


@needs_answers
def test_the_real_sample_sets_read_as_160_sets_of_10() -> None:
    sets = read_sample_sets(ANSWERS, source_contains="result-mp-16-images-20-new")
    assert len(sets) == 160 and {s.asked for s in sets} == {10}
    assert len({s.photo for s in sets}) == 40
    assert sorted({s.prompt for s in sets}) == ["10_rag", "15_rag", "5_rag", "zs"]
    assert sum(s.lat.size for s in sets) == 1273 and sum(s.lat.size == 0 for s in sets) == 3
    assert all(not np.any((s.lat == 0) & (s.lon == 0)) for s in sets), "a failed answer is never (0, 0)"


@needs_answers
def test_rules_on_the_real_sets_match_brute_force_and_the_published_table() -> None:
    sets = read_sample_sets(ANSWERS, source_contains="result-mp-16-images-20-new")
    hits = {rule: np.zeros(5) for rule in ("first", "medoid")}
    for s in sets:
        if s.lat.size == 0:
            continue
        pts = list(zip(s.lat.tolist(), s.lon.tolist(), strict=True))
        truth = (s.true_lat, s.true_lon)
        brute = {"first": pts[0], "medoid": pts[int(np.argmin([_cost(pts, p) for p in pts]))]}
        for rule, ref in brute.items():
            c = choose(rule, Candidates.of(s.lat, s.lon))
            assert (c.lat, c.lon) == ref
            hits[rule] += [_hav(ref, truth) <= t for t in (1, 25, 200, 750, 2500)]
    # The README's table (benchmarks/bench_selection.py): of 160 sets.
    assert hits["medoid"].tolist() == [22, 52, 88, 103, 120]
    assert hits["first"].tolist() == [22, 50, 83, 100, 117]
