"""Finds every latitude/longitude pair an LLM answer states, in each written form, with its place in the text.

Used by :func:`georag.llm.parse.parse_coordinates`, which picks the final answer among these candidates.
Forms, strongest first (the ``tier`` of a :class:`Candidate`, lower is stronger):

0. ``json``: an object with latitude/longitude keys (``lat``/``lon``/``lng``/``long`` too, any case,
   values numbers or numeric strings), also when the object is not valid JSON (single quotes, trailing
   commas, Python ``None``).
1. ``labelled``: ``latitude: 48.85, longitude: 2.35``, ``48.85 latitude and 2.35 longitude``, ``the
   latitude and longitude are 48.85 and 2.35``, markdown lists of the same.
2. ``lettered``: ``51.5073° N, 0.1276° W``, ``N 51.5, W 0.12``, ``48°51'29.6"N 2°17'40.2"E``.
3. ``bare``: ``(48.8566, 2.3522)``, two decimals with a point each, not part of a longer list of numbers.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from dataclasses import dataclass
from typing import Any

JSON, LABELLED, LETTERED, BARE = 0, 1, 2, 3


@dataclass(frozen=True)
class Candidate:
    """One stated pair: the values as written (not range-checked), its form and where it ends."""

    lat: float
    lon: float
    tier: int
    """JSON, LABELLED, LETTERED or BARE."""
    start: int
    end: int


# Models write minus as U+2212 and degrees/primes in several look-alike characters. An en dash is a
# minus only where it stands as a sign (after a space or bracket, before a digit); elsewhere it is a range.
_CHAR_MAP = str.maketrans(
    {
        "\u2212": "-",
        "\u2012": "-",
        "\ufe63": "-",
        "\uff0d": "-",
        "\u00ba": "°",
        "\u02da": "°",
        "\u2032": "'",
        "\u2019": "'",
        "\u2033": '"',
        "\u201d": '"',
        "\u201c": '"',
    }
)
_EN_DASH_SIGN = re.compile(r"(?<![\w.])\u2013(?=\d)")


def normalize(text: str) -> str:
    """Text with one spelling of minus, degree, prime and double prime (same length, so spans carry)."""
    return _EN_DASH_SIGN.sub("-", text.translate(_CHAR_MAP))


# A coordinate value as written: optional hemisphere letter before, a signed decimal degree, optional
# minutes and seconds after a degree sign, optional hemisphere letter or word after (not when one stands
# before: in "N 40.7 W 74.0" the W belongs to the next value). Never glued to a word or to a longer
# number, so "2250 feet" or "N-4062" give no value.
_VALUE = r"""
(?<![\w.])
(?:(?P<{p}pre>(?-i:[NSEW]))\s?(?=[-+]?\d))?
(?P<{p}deg>[-+]?\d{{1,3}}(?:\.\d+)?)(?!\.?\d)
(?:
  \s?(?:°|\bdeg(?:rees?)?\b)
  (?:\s?(?P<{p}min>\d{{1,2}}(?:\.\d+)?)\s?'(?!')
     (?:\s?(?P<{p}sec>\d{{1,2}}(?:\.\d+)?)\s?(?:"|'')?)?
  )?
)?
(?({p}pre)|(?:\s?(?P<{p}hemi>(?-i:[NSEW])\b|(?i:north|south|east|west)\b))?)
"""


def _value(p: str) -> str:
    return _VALUE.format(p=p)


_VALUE_RE = re.compile(_value(""), re.VERBOSE)


def _letter(m: re.Match[str], p: str) -> str:
    """The hemisphere letter of value group ``p`` ("N", "S", "E", "W"), or ""."""
    return (m.group(p + "hemi") or m.group(p + "pre") or "")[:1].upper()


def _degrees(m: re.Match[str], p: str, axis: str) -> float | None:
    """The signed degrees of value group ``p`` on ``axis`` ("lat" or "lon").

    None for a letter of the other axis or minutes/seconds of 60 or more. An explicit minus wins over the
    hemisphere letter: models write "-112.29° W" meaning -112.29, and "-3.53° E" for Granada (-3.6), so
    a letter only gives the sign to an unsigned number.
    """
    deg = m.group(p + "deg")
    value = abs(float(deg))
    for part, scale in (("min", 60.0), ("sec", 3600.0)):
        if m.group(p + part):
            amount = float(m.group(p + part))
            if amount >= 60.0:
                return None
            value += amount / scale
    letter = _letter(m, p)
    if letter and (letter in "NS") != (axis == "lat"):
        return None
    if deg.startswith("-") or (not deg.startswith("+") and letter in ("S", "W")):
        value = -value
    return value


# ---- form 0: JSON objects --------------------------------------------------------------------------

_LAT_WORDS = frozenset({"lat", "latitude"})
_LON_WORDS = frozenset({"lon", "lng", "long", "longitude"})
_KEY_WORDS = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+")


def _key_axis(key: str) -> str | None:
    words = {w.lower() for w in _KEY_WORDS.findall(key)}
    is_lat, is_lon = bool(words & _LAT_WORDS), bool(words & _LON_WORDS)
    return "lat" if is_lat and not is_lon else "lon" if is_lon and not is_lat else None


def _json_number(value: Any, axis: str) -> float:
    """Degrees of a JSON value; NaN for one that is no coordinate (null, "unknown", a wrong letter)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    m = _VALUE_RE.fullmatch(value.strip()) if isinstance(value, str) else None
    degrees = _degrees(m, "", axis) if m else None
    return math.nan if degrees is None else degrees


def _json_pairs(obj: Any) -> list[tuple[float, float]]:
    """Every dict with a latitude and a longitude key, depth first in document order.

    A dict whose values are no numbers ({"latitude": null, ...}) still counts, with NaN values: it is the
    model's statement that it has no answer, and the range check turns it into None when it is final.
    """
    out: list[tuple[float, float]] = []
    if isinstance(obj, dict):
        found: dict[str, float] = {}
        for key, value in obj.items():
            axis = _key_axis(str(key))
            if axis is not None and axis not in found:
                found[axis] = _json_number(value, axis)
            elif isinstance(value, (dict, list)):
                out.extend(_json_pairs(value))
        if "lat" in found and "lon" in found:
            out.append((found["lat"], found["lon"]))
    elif isinstance(obj, list):
        for item in obj:
            out.extend(_json_pairs(item))
    return out


# Repairs for the usual malformed JSON of LLMs; tried only when json.loads refuses the text as written.
_REPAIRS = (
    (re.compile(r",\s*([}\]])"), r"\1"),  # trailing commas
    (re.compile(r"'([^'\"\n]*)'"), r'"\1"'),  # single-quoted keys and strings
    (re.compile(r"([{,]\s*)([A-Za-z_]\w*)\s*:"), r'\1"\2":'),  # bare keys
    (re.compile(r"\bNone\b"), "null"),
)


def _load(span: str) -> Any:
    try:
        return json.loads(span)
    except ValueError:
        pass
    for pattern, repl in _REPAIRS:
        span = pattern.sub(repl, span)
    try:
        return json.loads(span)
    except ValueError:
        return None


def _brace_spans(text: str) -> list[tuple[int, int]]:
    """Outermost ``{...}`` spans, by brace depth (braces inside strings are rare enough in answers)."""
    spans: list[tuple[int, int]] = []
    depth = start = 0
    for i, ch in enumerate(text):
        if ch == "{":
            if depth == 0:
                start = i
            depth += 1
        elif ch == "}" and depth > 0:
            depth -= 1
            if depth == 0:
                spans.append((start, i + 1))
    return spans


def json_candidates(text: str) -> list[Candidate]:
    """Form 0: pairs from objects that load as JSON (after repair); the last pair of an object ends it."""
    out: list[Candidate] = []
    for start, end in _brace_spans(text):
        obj = _load(text[start:end])
        out.extend(Candidate(lat, lon, JSON, start, end) for lat, lon in _json_pairs(obj))
    return out


# ---- form 1: labelled pairs ------------------------------------------------------------------------

_LAT = r"(?<![a-z])lat(?:itude)?(?![a-z])"
# "long" is an English word: it is a label only as a key ("long": / long=) or right before a number.
_LON = r"(?<![a-z])(?:lon(?:gitude)?|lng|long(?=[\"'*]?\s*[:=]|\s?[-+]?\d))(?![a-z])"
_LON_JOINT = r"(?<![a-z])(?:lon(?:gitude)?|lng|long)(?![a-z])"
# Between a label and its value: punctuation, markdown, quotes and a few words ("is approximately"),
# never another label, a digit, a sign or the end of a sentence.
_NOT_LABEL = rf"(?!{_LAT}|{_LON_JOINT})"
_FILL = rf"(?:{_NOT_LABEL}[^\d\n+\-.;!?]){{0,40}}?"
# Between the first value and the second label ("\n- **", "\n2. ", markdown lists), or a joint label and
# its values ("of Vancouver, British Columbia, Canada are"): no digits but a list item's number.
_SEP = rf"(?:{_NOT_LABEL}(?:\n\s?\d{{1,2}}[.)]\s|[^\d;!?])){{0,40}}?"
_JOINT_SEP = rf"(?:{_NOT_LABEL}[^\d+\-;!?]){{0,80}}?"
_BOTH = r"\s?(?:,|\band\b|/|;)?\s?"
_POST = r"(?:\s?(?:°|degrees?))?[\s*_\"']{0,3}"

_LABELLED_RE = re.compile(
    "|".join(
        (
            rf"{_LAT}{_FILL}{_value('a')}{_SEP}{_LON}{_FILL}{_value('b')}",
            rf"{_LON}{_FILL}{_value('c')}{_SEP}{_LAT}{_FILL}{_value('d')}",
            rf"{_value('e')}{_POST}{_LAT}{_SEP}{_value('f')}{_POST}{_LON}",
            rf"{_value('g')}{_POST}{_LON}{_SEP}{_value('h')}{_POST}{_LAT}",
            # one label for both: "latitude and longitude ... are 42.35 and -71.05 (respectively)"
            rf"(?P<ll>{_LAT}\s?(?:and|&|/|,|-)\s?{_LON_JOINT}){_JOINT_SEP}{_value('i')}{_BOTH}{_value('j')}",
            rf"(?P<rev>{_LON_JOINT}\s?(?:and|&|/|,|-)\s?{_LAT}){_JOINT_SEP}{_value('k')}{_BOTH}{_value('l')}",
        )
    ),
    re.VERBOSE | re.IGNORECASE,
)

_GROUPS = (("a", "b", False), ("c", "d", True), ("e", "f", False), ("g", "h", True))


def labelled_candidates(text: str) -> list[Candidate]:
    """Form 1: a latitude label and a longitude label each with its value, or one label for both."""
    out: list[Candidate] = []
    for m in _LABELLED_RE.finditer(text):
        if m.group("ll") is not None:
            first, second, swapped = "i", "j", False
        elif m.group("rev") is not None:
            first, second, swapped = "k", "l", True
        else:
            first, second, swapped = next(g for g in _GROUPS if m.group(g[0] + "deg") is not None)
        a = _degrees(m, first, "lon" if swapped else "lat")
        b = _degrees(m, second, "lat" if swapped else "lon")
        if a is not None and b is not None:
            lat, lon = (b, a) if swapped else (a, b)
            out.append(Candidate(lat, lon, LABELLED, m.start(), m.end()))
    return out


# ---- form 2: hemisphere letters and degrees-minutes-seconds -----------------------------------------

# What may stand between the two values of one lettered pair.
_PAIR_SEP = re.compile(r"\s?(?:,|;|/|\band\b|\bby\b)?\s?", re.IGNORECASE)


def _degree_like(m: re.Match[str]) -> bool:
    return "." in m["deg"] or "°" in m[0] or "deg" in m[0].lower()


def lettered_candidates(text: str) -> list[Candidate]:
    """Form 2: one N/S value next to one E/W value, either order; two DMS values need no letters.

    Values with a letter need a degree sign or a decimal point ("40° N", "40.7 N"), so that road names
    and compass words ("Route 66 E, 12 N") give no pair.
    """
    out: list[Candidate] = []
    values = list(_VALUE_RE.finditer(text))
    # Neighboring values one by one (not one regex over pairs), so that a stray number before a pair
    # cannot swallow its first value.
    for ma, mb in itertools.pairwise(values):
        if not _PAIR_SEP.fullmatch(text, ma.end(), mb.start()):
            continue
        la, lb = _letter(ma, ""), _letter(mb, "")
        dms = ma.group("min") is not None and mb.group("min") is not None
        if la and lb and (la in "NS") != (lb in "NS") and _degree_like(ma) and _degree_like(mb):
            (mlat, mlon) = (ma, mb) if la in "NS" else (mb, ma)
        elif dms and not la and not lb:
            mlat, mlon = ma, mb
        else:
            continue
        lat, lon = _degrees(mlat, "", "lat"), _degrees(mlon, "", "lon")
        if lat is not None and lon is not None:
            out.append(Candidate(lat, lon, LETTERED, ma.start(), mb.end()))
    return out


# ---- form 3: bare decimal pairs ---------------------------------------------------------------------

_DEC = r"[-+]?\d{1,3}\.\d+"
# Two decimals, comma separated, optionally bracketed, with no number right before or after: a pair in a
# longer list of numbers ("1.5, 2.5, 3.5") is not a pair.
_BARE_RE = re.compile(
    rf"(?<![\w.])(?<!\d,)(?<!\d\s)(?<!\d,\s)[(\[]?\s?(?P<a>{_DEC})\s?,\s?(?P<b>{_DEC})(?!\.?\d)"
    rf"\s?[)\]]?(?!\s?,?\s?[-+]?\d)"
)


# ... nor a number joined by a word or other separator ("1.5, 2.5 or 3.5", "10 to 40.1, -3.5").
_RUN_AFTER = re.compile(r"\s?(?:,|;|/|or\b|and\b|to\b)?\s?[-+]?\d", re.IGNORECASE)
_RUN_BEFORE = re.compile(r"\d\s?(?:,|;|/|\bor|\band|\bto)?\s?$", re.IGNORECASE)


def bare_candidates(text: str) -> list[Candidate]:
    """Form 3: ``lat, lon`` as two decimals with a point each, standing alone."""
    return [
        Candidate(float(m["a"]), float(m["b"]), BARE, m.start(), m.end())
        for m in _BARE_RE.finditer(text)
        if not _RUN_AFTER.match(text, m.end())
        and not _RUN_BEFORE.search(text, max(0, m.start() - 8), m.start())
    ]


def all_candidates(text: str) -> list[Candidate]:
    """Every pair in ``text`` (already normalized), all forms, by position."""
    found = json_candidates(text) + labelled_candidates(text) + lettered_candidates(text)
    found += bare_candidates(text)
    return sorted(found, key=lambda c: (c.end, c.tier))


def in_range(lat: float, lon: float) -> bool:
    """Finite, |lat| <= 90 and |lon| <= 180."""
    return math.isfinite(lat) and math.isfinite(lon) and abs(lat) <= 90.0 and abs(lon) <= 180.0
