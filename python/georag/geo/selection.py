"""Selection rules: one answer from several candidate coordinates (an LLM's samples), chosen by name.

=============  ============================================================================================
``medoid``     the candidate with the least sum of great-circle distances to all candidates
``geomedian``  the geometric median on the sphere (`georag.geo.geomedian`): the POINT with the least sum of
               distances, usually no candidate itself
``cluster``    the densest ball of radius R (candidates within R km of one of them,
               `georag.geo.clusters`), and the medoid of its members
``first``      the first candidate that parsed (what a single-sample system answers)
``support``    the candidate that the most retrieved neighbours lie within R km of (the G3 / GeoRanker idea
               of scoring candidates against the gallery, without a trained model); ties: more candidates
               within R km, then the medoid order. Without neighbours, ``cluster`` stands in and says so.
=============  ============================================================================================

``with_neighbors`` (medoid and geomedian only): the neighbours pull on the choice too, without being
candidates (`georag.geo.select.medoid`'s ``also_*``); the medoid stays a candidate.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from georag.errors import ConfigError, InputError
from georag.geo.clusters import CLUSTER_KM, densest_members, medoid_of
from georag.geo.geomedian import geometric_median
from georag.geo.select import medoid, pairwise_km

SELECTION_RULES = ("medoid", "geomedian", "cluster", "first", "support")
"""Every rule by name (``--select``)."""
PULLED_BY_NEIGHBORS = ("medoid", "geomedian")
"""The rules that ``with_neighbors`` applies to."""


@dataclass(frozen=True)
class Candidates:
    """What a rule chooses from: the parsed answers, and the retrieved neighbours (possibly none)."""

    lat: npt.NDArray[np.float64]
    lon: npt.NDArray[np.float64]
    near_lat: npt.NDArray[np.float64]
    near_lon: npt.NDArray[np.float64]

    @classmethod
    def of(
        cls,
        lat: npt.ArrayLike,
        lon: npt.ArrayLike,
        near_lat: npt.ArrayLike | None = None,
        near_lon: npt.ArrayLike | None = None,
    ) -> Candidates:
        """Float arrays of the candidates and neighbours (NaN neighbours, i.e. padding, dropped)."""
        la = np.asarray(lat, dtype=np.float64).ravel()
        lo = np.asarray(lon, dtype=np.float64).ravel()
        if la.shape != lo.shape:
            raise InputError(f"candidates: {la.size} latitudes but {lo.size} longitudes")
        nla = np.asarray([] if near_lat is None else near_lat, dtype=np.float64).ravel()
        nlo = np.asarray([] if near_lon is None else near_lon, dtype=np.float64).ravel()
        if nla.shape != nlo.shape:
            raise InputError(f"neighbours: {nla.size} latitudes but {nlo.size} longitudes")
        keep = np.isfinite(nla) & np.isfinite(nlo)
        return cls(la, lo, nla[keep], nlo[keep])

    def __len__(self) -> int:
        return int(self.lat.size)


@dataclass(frozen=True)
class Choice:
    """The answer a rule chose."""

    lat: float
    lon: float
    index: int | None
    """The candidate chosen; None when the answer is no candidate (the geometric median)."""
    rule: str
    """The rule that chose it (``cluster`` where ``support`` had no neighbours)."""
    note: str | None = None
    """Why another rule stood in, else None."""


def check_rule(rule: str, *, with_neighbors: bool = False) -> None:
    """ConfigError for an unknown rule, or ``with_neighbors`` with a rule it does not apply to."""
    if rule not in SELECTION_RULES:
        raise ConfigError(f"unknown selection rule {rule!r}; choose one of {', '.join(SELECTION_RULES)}")
    if with_neighbors and rule not in PULLED_BY_NEIGHBORS:
        raise ConfigError(
            f"--with-neighbors weighs the neighbours into {' or '.join(PULLED_BY_NEIGHBORS)}; the {rule!r} "
            "rule does not take it (support scores candidates by the neighbours by itself)"
        )


def choose(
    rule: str, cands: Candidates, *, radius_km: float = CLUSTER_KM, with_neighbors: bool = False
) -> Choice:
    """The answer of ``rule`` among ``cands`` (see the module docstring). InputError without candidates."""
    check_rule(rule, with_neighbors=with_neighbors)
    if len(cands) == 0:
        raise InputError("no candidates to choose from")
    if rule == "support" and cands.near_lat.size == 0:
        picked = _RULES["cluster"](cands, radius_km, with_neighbors)
        return Choice(
            *_at(cands, picked), picked, "cluster", "no neighbours to score against: cluster stood in"
        )
    if rule == "geomedian":
        pts_lat, pts_lon = cands.lat, cands.lon
        if with_neighbors:
            pts_lat = np.concatenate([pts_lat, cands.near_lat])
            pts_lon = np.concatenate([pts_lon, cands.near_lon])
        la, lo = geometric_median(pts_lat, pts_lon)
        return Choice(la, lo, None, rule)
    picked = _RULES[rule](cands, radius_km, with_neighbors)
    return Choice(*_at(cands, picked), picked, rule)


def _at(cands: Candidates, i: int) -> tuple[float, float]:
    return float(cands.lat[i]), float(cands.lon[i])


def _first(cands: Candidates, radius_km: float, with_neighbors: bool) -> int:
    return 0


def _medoid(cands: Candidates, radius_km: float, with_neighbors: bool) -> int:
    if with_neighbors:
        return medoid(cands.lat, cands.lon, also_lat=cands.near_lat, also_lon=cands.near_lon)
    return medoid(cands.lat, cands.lon)


def _cluster(cands: Candidates, radius_km: float, with_neighbors: bool) -> int:
    d = pairwise_km(cands.lat, cands.lon)
    return medoid_of(d, densest_members(d, radius_km))


def _support(cands: Candidates, radius_km: float, with_neighbors: bool) -> int:
    to_near = pairwise_km(
        np.concatenate([cands.lat, cands.near_lat]), np.concatenate([cands.lon, cands.near_lon])
    )
    n = len(cands)
    backing = (to_near[:n, n:] <= radius_km).sum(axis=1)
    among = to_near[:n, :n]
    agreeing = (among <= radius_km).sum(axis=1)
    # lexsort: the last key is the primary one; remaining ties go to the earlier candidate.
    order = np.lexsort((np.arange(n), among.sum(axis=1), -agreeing, -backing))
    return int(order[0])


_RULES: dict[str, Callable[[Candidates, float, bool], int]] = {
    "medoid": _medoid,
    "cluster": _cluster,
    "first": _first,
    "support": _support,
}
