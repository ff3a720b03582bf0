"""The geographic prior of the vpr-guided route: ask for a country and a coordinate guess, parse, vote.

Waheed et al. (2025) first let the multimodal LLM say roughly where a photo is; retrieval then searches only
that part of the store. The prompt (``templates/prior.txt``, with ``system.txt`` as the role) asks for
``{"country": "FR", "latitude": ..., "longitude": ...}``. Each answer is parsed on its own:

* coordinates with `georag.llm.parse.parse_coordinates` (its JSON / labelled / hemisphere / bare forms,
  refusals and (0, 0) placeholders give None);
* the country from the last JSON object holding a ``country`` / ``country_code`` (``countryCode``,
  ``iso_code``, ...) key, else from the last labelled line in prose (``Country: France``,
  ``**Country code:** FR``); a value is tried whole, then without a parenthesis, then by its comma parts
  from the last (``Georgia, USA`` is the US, not Georgia), each through
  `georag.geo.countries.normalize_country` (ISO codes, names, common English names). Free prose without a
  label ("probably somewhere in France") is not mined for names: "not in Italy" would read as Italy.

Several samples then vote (`vote_prior`): the country is the most common one; a tie goes to the country
whose samples' coordinates are the most central (least mean sum of great-circle distances to all parsed
coordinates), then to the one named first. The coordinates are the geodesic medoid of every sample that
stated coordinates; the agreement is the share of the requested samples within 100 km of it.
"""

from __future__ import annotations

import math
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from string import Template
from typing import Any

import numpy as np

from georag.errors import LLMError
from georag.geo.coords import haversine_km
from georag.geo.countries import normalize_country
from georag.llm.client import LLMClient, Prompt, Sampling
from georag.llm.parse import parse_coordinates

# The JSON span finder and repairing loader of the coordinate parser: one notion of "a JSON object in an
# answer" for coordinates and countries alike.
from georag.llm.parse_formats import _brace_spans, _load
from georag.strategies.select import agreement, medoid

__all__ = ["Prior", "PriorAnswer", "ask_prior", "build_prior_prompt", "parse_country", "parse_prior"]

_COUNTRY_KEYS = frozenset(
    {"country", "countrycode", "countryiso", "countryisocode", "countryname", "iso", "isocode", "iso2"}
)
# "Country: France", "**Country code:** FR", "country (ISO) = fr", "Country - Japan"; the value runs to the
# end of the line or to a character that cannot be part of a country name.
_LABEL_RE = re.compile(
    r"(?<![a-z])country(?:[ _-]?(?:code|name|iso))?(?![a-z])[\s*_\"']*(?:\([^)\n]*\))?[\s*_\"']*"
    r"[:=\u2013-][\s*_\"']*([^\n;|\"*{}]+)",
    re.IGNORECASE,
)
# Where a country value on a line runs into the coordinates ("Country: France Latitude: 48.85").
_VALUE_END_RE = re.compile(r"(?<![a-z])(?:lat(?:itude)?|lon(?:gitude)?|lng|coordinates?|gps)(?![a-z])", re.I)


@cache
def _template(name: str) -> Template:
    text = resources.files("georag.llm").joinpath("templates", f"{name}.txt").read_text(encoding="utf-8")
    return Template(text.strip())


def build_prior_prompt(image: bytes, image_mime: str = "image/jpeg") -> Prompt:
    """The prior prompt for one photo: the geolocation role, then the country-and-coordinates question."""
    return Prompt(_template("system").substitute(), _template("prior").substitute(), image, image_mime)


@dataclass(frozen=True)
class PriorAnswer:
    """What one answer states: an ISO alpha-2 country and / or coordinates (None where it states none)."""

    country: str | None = None
    lat: float | None = None
    lon: float | None = None

    @property
    def has_coordinates(self) -> bool:
        """True when the answer stated coordinates."""
        return self.lat is not None and self.lon is not None


def _value_candidates(value: str) -> list[str]:
    """The strings a country value may name, most literal first."""
    value = _VALUE_END_RE.split(value, maxsplit=1)[0]
    out = [value, value.split(". ")[0]]
    for v in list(out):
        outside = re.sub(r"\([^)]*\)", " ", v)
        out += [outside, *re.findall(r"\(([^)]*)\)", v)]
    for v in list(out):
        parts = [p for p in re.split(r",|/|\s-\s", v) if p.strip()]
        if len(parts) > 1:
            out += parts[::-1]  # "City, State, Country": the country comes last
    cleaned = []
    for v in out:
        v = re.sub(r"^\s*(?:the|in)\s+", "", v.strip(" \t.,;:!?'\"*_`"), flags=re.IGNORECASE)
        if v and v not in cleaned:
            cleaned.append(v)
    return cleaned


def _country_of_value(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    for cand in _value_candidates(value):
        code = normalize_country(cand)
        if code is not None:
            return code
    return None


def _json_country_values(obj: Any) -> list[Any]:
    """Values of country keys, depth first in document order."""
    out: list[Any] = []
    if isinstance(obj, dict):
        for key, value in obj.items():
            if re.sub(r"[^a-z0-9]", "", str(key).lower()) in _COUNTRY_KEYS:
                out.append(value)
            elif isinstance(value, dict | list):
                out.extend(_json_country_values(value))
    elif isinstance(obj, list):
        for item in obj:
            out.extend(_json_country_values(item))
    return out


def parse_country(text: str | None) -> str | None:
    """The ISO 3166-1 alpha-2 code of the country an answer states, or None (see the module docstring).

    The last JSON country value decides when there is one (an unknown name there gives None: the final
    answer declined, as with coordinates); otherwise the last labelled line that names a country.
    """
    if not text or not text.strip():
        return None
    values: list[Any] = []
    for start, end in _brace_spans(text):
        values.extend(_json_country_values(_load(text[start:end])))
    if values:
        return _country_of_value(values[-1])
    for m in reversed(list(_LABEL_RE.finditer(text))):
        code = _country_of_value(m.group(1))
        if code is not None:
            return code
    return None


def parse_prior(text: str | None, *, prompt: str | None = None) -> PriorAnswer | None:
    """The country and coordinates one answer states; None when it states neither (a refusal, garbage).

    ``prompt``: the user text asked, so that an echo of it is skipped (see `parse_coordinates`).
    """
    coords = parse_coordinates(text, prompt=prompt)
    if prompt and text and prompt in text:
        text = text[text.rfind(prompt) + len(prompt) :]
    country = parse_country(text)
    if coords is None and country is None:
        return None
    return PriorAnswer(country, *(coords if coords is not None else (None, None)))


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
    seconds: float = 0.0
    """Wall time of the request."""

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
            "llm_seconds": round(self.seconds, 4),
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


def ask_prior(llm: LLMClient, image: bytes, image_mime: str, sampling: Sampling) -> Prior:
    """One request of ``sampling.n`` samples for the photo's prior; a failed request gives an empty prior
    with the error recorded (the route then searches the whole store), never an exception."""
    prompt = build_prior_prompt(image, image_mime)
    t0 = time.perf_counter()
    try:
        done = llm.generate(prompt, sampling)
    except LLMError as exc:
        prior = vote_prior([], sampling.n)
        prior.errors.append(str(exc))
    else:
        answers = [parse_prior(t, prompt=prompt.user) for t in done.texts]
        prior = vote_prior(answers, sampling.n)
        prior.texts = list(done.texts)
    prior.seconds = time.perf_counter() - t0
    return prior
