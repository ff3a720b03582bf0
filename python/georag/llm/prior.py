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

Several samples then vote (`georag.strategies.prior.vote_prior`): the most common country, the medoid
of the coordinates, and their agreement.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from string import Template
from typing import Any

from georag.geo.countries import normalize_country
from georag.llm.parse import parse_coordinates

# The JSON span finder and repairing loader of the coordinate parser: one notion of "a JSON object in an
# answer" for coordinates and countries alike.
from georag.llm.parse_formats import _brace_spans, _load
from georag.types import Prompt

__all__ = ["PriorAnswer", "build_prior_prompt", "parse_country", "parse_prior"]

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
