"""Where candidate answers crowd: the densest ball of radius R, and up to K regions, each a ball's members.

A ball is centred on a candidate and holds every candidate within ``radius_km`` of it (itself included).
The densest ball holds the most; ties go to the ball whose members sit closest to its centre (least sum
of distances), then to the earlier candidate. Its members stand for one place the samples agree on; their
medoid is that place's answer (`densest_members` + `georag.geo.select.medoid`).

`regions` repeats that on what is left: the densest ball's members are region 1, removed; the densest ball
of the rest is region 2; and so on, up to ``k`` regions. A region reports its centre (the members'
medoid), its radius (the farthest member from the centre) and its share of the samples asked, so a user
reads "7 of 10 samples here, 2 there" (answers that did not parse are in no region).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from georag.errors import InputError
from georag.geo.select import pairwise_km

CLUSTER_KM = 25.0
"""Default radius of a ball: candidates within 25 km of its centre (a city) agree."""


def _check_radius(radius_km: float) -> None:
    if not (np.isfinite(radius_km) and radius_km >= 0):
        raise InputError(f"the cluster radius must be a finite distance >= 0 km, got {radius_km!r}")


def densest_members(
    distances_km: npt.NDArray[np.float64], radius_km: float = CLUSTER_KM
) -> npt.NDArray[np.int64]:
    """Indices of the members of the densest ball (see the module docstring), given the (n, n) pairwise
    distances; ascending. InputError for no candidates or a bad radius."""
    _check_radius(radius_km)
    d = np.asarray(distances_km, dtype=np.float64)
    if d.ndim != 2 or d.shape[0] != d.shape[1] or d.shape[0] == 0:
        raise InputError("densest_members needs a square, non-empty distance matrix")
    inside = d <= radius_km
    count = inside.sum(axis=1)
    spread = np.where(inside, d, 0.0).sum(axis=1)
    # lexsort: the last key is the primary one; argmin-style ties go to the lowest index.
    order = np.lexsort((np.arange(d.shape[0]), spread, -count))
    return np.flatnonzero(inside[order[0]]).astype(np.int64)


def medoid_of(distances_km: npt.NDArray[np.float64], members: npt.NDArray[np.int64]) -> int:
    """The member with the least sum of distances to the other members (ties: the earlier one)."""
    sub = distances_km[np.ix_(members, members)]
    return int(members[int(np.argmin(sub.sum(axis=1)))])


@dataclass(frozen=True)
class Region:
    """One place the samples crowd around."""

    lat: float
    """The centre: the medoid of the region's candidates (degrees)."""
    lon: float
    radius_km: float
    """The farthest member's distance from the centre (0 for a single answer or identical ones)."""
    count: int
    """Candidates in the region."""
    share: float
    """``count`` / samples asked: the share of all requested samples that answered here."""

    def record(self) -> dict[str, Any]:
        """The JSON form (the JSONL evidence, GeoJSON, the HTTP answer)."""
        return {
            "lat": self.lat,
            "lon": self.lon,
            "radius_km": round(self.radius_km, 3),
            "count": self.count,
            "share": round(self.share, 4),
        }


REGIONS_K = 3
"""Regions reported per prediction by default."""


def regions(
    lat: npt.ArrayLike,
    lon: npt.ArrayLike,
    asked: int,
    *,
    k: int = REGIONS_K,
    radius_km: float = CLUSTER_KM,
) -> list[Region]:
    """Up to ``k`` regions of the candidates, the most populous first (see the module docstring).
    ``asked``: samples requested (the denominator of the shares; at least the number of candidates)."""
    la = np.asarray(lat, dtype=np.float64).ravel()
    lo = np.asarray(lon, dtype=np.float64).ravel()
    if k < 0:
        raise InputError(f"k must be >= 0 regions, got {k}")
    if la.size == 0 or k == 0:
        return []
    d = pairwise_km(la, lo)
    denominator = max(asked, la.size)
    left = np.arange(la.size)
    out: list[Region] = []
    while left.size and len(out) < k:
        sub = d[np.ix_(left, left)]
        members = left[densest_members(sub, radius_km)]
        centre = medoid_of(d, members)
        out.append(
            Region(
                float(la[centre]),
                float(lo[centre]),
                float(d[centre, members].max()),
                int(members.size),
                members.size / denominator,
            )
        )
        left = np.setdiff1d(left, members)
    return out
