"""Country codes: normalise names and codes to ISO 3166-1 alpha-2, and reverse geocode coordinates offline."""

from __future__ import annotations

import logging
from functools import lru_cache
from types import ModuleType

import numpy as np
import numpy.typing as npt

from georag.errors import InputError, MissingDependencyError

log = logging.getLogger(__name__)

# Everyday English names and codes that pycountry's ISO tables do not list (it knows "Russian Federation",
# not "Russia"; "GB", not "UK"). Keys are casefolded.
_ALIASES = {
    "uk": "GB",
    "great britain": "GB",
    "britain": "GB",
    "england": "GB",
    "scotland": "GB",
    "wales": "GB",
    "northern ireland": "GB",
    "russia": "RU",
    "korea": "KR",
    "south korea": "KR",
    "north korea": "KP",
    "turkey": "TR",
    "holland": "NL",
    "the netherlands": "NL",
    "ivory coast": "CI",
    "cape verde": "CV",
    "czechia": "CZ",
    "laos": "LA",
    "syria": "SY",
    "macedonia": "MK",
    "burma": "MM",
    "swaziland": "SZ",
    "vatican": "VA",
    "vatican city": "VA",
    "usa": "US",
    "u.s.a.": "US",
    "u.s.": "US",
    "america": "US",
    "united states of america": "US",
    "uae": "AE",
    "east timor": "TL",
    "palestine": "PS",
    "kosovo": "XK",
    "xk": "XK",  # Kosovo: a user-assigned code, used by GeoNames and most datasets
    "micronesia": "FM",
    "the bahamas": "BS",
    "the gambia": "GM",
    "brunei": "BN",
    "moldova": "MD",
    "tanzania": "TZ",
    "venezuela": "VE",
    "bolivia": "BO",
    "iran": "IR",
    "vietnam": "VN",
    "taiwan": "TW",
}


def _pycountry() -> ModuleType:
    try:
        import pycountry
    except ImportError as exc:
        raise MissingDependencyError("country names need pycountry: pip install pycountry") from exc
    return pycountry


@lru_cache(maxsize=4096)
def normalize_country(text: str | None) -> str | None:
    """The ISO 3166-1 alpha-2 code (upper case) for a country code or name, or None when unknown.

    Accepts alpha-2 / alpha-3 codes, ISO names and official names in any case (``"fr"``, ``"FRA"``,
    ``"France"``, ``"French Republic"``) and common English names that ISO spells differently
    (``"Russia"``, ``"UK"``, ``"Turkey"``). Empty text and unknown names give None, never a guess.
    """
    if text is None:
        return None
    key = " ".join(str(text).split()).strip(" .,;:")
    if not key:
        return None
    alias = _ALIASES.get(key.casefold())
    if alias is not None:
        return alias
    try:
        return str(_pycountry().countries.lookup(key).alpha_2)
    except LookupError:
        return None


def _reverse_geocode() -> ModuleType:
    try:
        import reverse_geocode
    except ImportError as exc:
        raise MissingDependencyError(
            "reverse geocoding needs the offline package reverse_geocode: pip install reverse_geocode"
        ) from exc
    return reverse_geocode


def countries_at(lat: npt.ArrayLike, lon: npt.ArrayLike, *, chunk: int = 200_000) -> npt.NDArray[np.str_]:
    """The ISO alpha-2 country code at each coordinate, offline (GeoNames cities of 1000+ people).

    Uses the ``reverse_geocode`` package: the country of the nearest populated place. Its nearest
    place is found by distance in degrees, not on the sphere, so a point near the date line or a pole,
    or far out at sea, can get a neighboring country; for grouping a photo database by country
    (submaps) that is the accepted trade-off of an offline lookup. Raises InputError for coordinates
    out of range or not finite.
    """
    la = np.asarray(lat, dtype=np.float64).ravel()
    lo = np.asarray(lon, dtype=np.float64).ravel()
    if la.shape != lo.shape:
        raise InputError(f"lat and lon differ in length: {la.size} vs {lo.size}")
    bad = ~(np.isfinite(la) & np.isfinite(lo) & (np.abs(la) <= 90) & (np.abs(lo) <= 180))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputError(f"coordinate {i} is not a valid latitude/longitude: ({la[i]}, {lo[i]})")
    out = np.empty(la.size, dtype="<U2")
    if not la.size:
        return out
    rg = _reverse_geocode()
    for start in range(0, la.size, chunk):
        pts = np.stack([la[start : start + chunk], lo[start : start + chunk]], axis=1)
        # Many photos share coordinates; geocode each distinct point once.
        uniq, inverse = np.unique(pts, axis=0, return_inverse=True)
        codes = np.array([r["country_code"] for r in rg.search(uniq.tolist())], dtype="<U2")
        out[start : start + chunk] = codes[inverse.ravel()]
    return out
