"""The vote of the vpr-guided route's prior: several samples' countries and coordinates -> one prior.

The country is the most common one the samples name; a tie goes to the country whose samples' coordinates
are the most central (least mean sum of great-circle distances to all parsed coordinates), then to the one
named first. The coordinates are the geodesic medoid of every sample that stated coordinates; the
agreement is the share of the requested samples within 100 km of it. Parsing one answer is
`georag.llm.prior.parse_prior`.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from georag.errors import LLMError
from georag.geo.coords import haversine_km
from georag.geo.select import agreement, medoid
from georag.llm.prior import PriorAnswer, parse_prior
from georag.types import Completion, Prompt


@dataclass
class Prior:
    """The voted prior of one photo and the samples behind it."""

    country: str | None
    """The most common country of the samples (ISO alpha-2), None when no sample named one."""
    lat: float | None
    """The geodesic medoid of the samples' coordinates, None when no sample stated coordinates."""
    lon: float | None
    agreement: float
    """The share of the requested samples whose coordinates lie within 100 km of (lat, lon); 0 without."""
    asked: int
    """Samples requested."""
    answers: list[PriorAnswer | None] = field(default_factory=list)
    """One per answer text received (None: nothing parsed)."""
    texts: list[str] = field(default_factory=list)
    """The raw answers."""
    votes: dict[str, int] = field(default_factory=dict)
    """Samples per country, in order of first mention."""
    errors: list[str] = field(default_factory=list)
    """Why the request failed, if it did."""

    @property
    def has_coordinates(self) -> bool:
        """True when some sample stated coordinates."""
        return self.lat is not None and self.lon is not None

    @property
    def parsed(self) -> bool:
        """True when some sample stated a country or coordinates."""
        return self.country is not None or self.has_coordinates

    def evidence(self) -> dict[str, Any]:
        """The JSONL record of the prior."""
        return {
            "country": self.country,
            "lat": self.lat,
            "lon": self.lon,
            "agreement": round(self.agreement, 4),
            "asked": self.asked,
            "votes": self.votes,
            "samples": [
                {
                    "text": self.texts[i] if i < len(self.texts) else None,
                    "country": a.country if a else None,
                    "parsed": [a.lat, a.lon] if a is not None and a.has_coordinates else None,
                }
                for i, a in enumerate(self.answers)
            ],
            "llm_errors": self.errors,
        }


def vote_prior(answers: Sequence[PriorAnswer | None], asked: int) -> Prior:
    """The prior the samples agree on (see the module docstring); ``asked`` = samples requested."""
    with_xy = [a for a in answers if a is not None and a.has_coordinates]
    la = np.array([a.lat for a in with_xy], dtype=np.float64)
    lo = np.array([a.lon for a in with_xy], dtype=np.float64)
    votes = Counter(a.country for a in answers if a is not None and a.country is not None)
    country = None
    if votes:
        top = max(votes.values())
        tied = [c for c, n in votes.items() if n == top]
        if len(tied) == 1 or not with_xy:
            country = tied[0]
        else:
            # Ties: the country whose samples sit most centrally among all stated coordinates.
            spread = haversine_km(la[:, None], lo[:, None], la[None, :], lo[None, :]).sum(axis=1)
            best = math.inf
            for c in tied:
                mine = [i for i, a in enumerate(with_xy) if a.country == c]
                score = float(spread[mine].mean()) if mine else math.inf
                if country is None or score < best:
                    country, best = c, score
    lat = lon = None
    conf = 0.0
    if with_xy:
        chosen = medoid(la, lo)
        lat, lon = float(la[chosen]), float(lo[chosen])
        conf = agreement(la, lo, chosen, asked)
    return Prior(country, lat, lon, conf, asked, list(answers), votes=dict(votes))


def prior_of(done: Completion | LLMError, prompt: Prompt, asked: int) -> Prior:
    """The prior of one answered (or failed) prior request of ``asked`` samples: a failed request gives an
    empty prior with the error recorded (the route then searches the whole store), never an exception."""
    if not isinstance(done, Completion):
        prior = vote_prior([], asked)
        prior.errors.append(str(done))
        return prior
    prior = vote_prior([parse_prior(t, prompt=prompt.user) for t in done.texts], asked)
    prior.texts = list(done.texts)
    return prior
