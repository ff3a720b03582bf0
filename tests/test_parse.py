"""parse_coordinates: hand-written answers of every shape, and 2,556 real LLM answers in ../shared/data."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest

from georag.llm.parse import parse_coordinates

ANSWERS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "llm_answers" / "answers.jsonl"


def check(text: str | None, expected: tuple[float, float] | None, prompt: str | None = None) -> None:
    got = parse_coordinates(text, prompt=prompt)
    if expected is None:
        assert got is None, f"{text!r} -> {got}"
    else:
        assert got is not None, f"{text!r} -> None"
        assert got == pytest.approx(expected, abs=1e-9), f"{text!r} -> {got}"
        assert all(type(v) is float for v in got)


# ---- hand-written answers ---------------------------------------------------------------------------

JSON_CASES = {
    "plain": ('{"latitude": 48.8566, "longitude": 2.3522}', (48.8566, 2.3522)),
    "fenced": ('```json\n{"latitude": -33.8688, "longitude": 151.2093}\n```', (-33.8688, 151.2093)),
    "no space": ('{"latitude":21.1667,"longitude":-86.8515}', (21.1667, -86.8515)),
    "integers": ('{"latitude": 40, "longitude": -74}', (40.0, -74.0)),
    "numbers as strings": ('{"latitude": "48.8566", "longitude": "-2.3522"}', (48.8566, -2.3522)),
    "strings with letters": ('{"latitude": "40.7128° N", "longitude": "74.0060° W"}', (40.7128, -74.006)),
    "single quotes": ("{'latitude': 35.6762, 'longitude': 139.6503}", (35.6762, 139.6503)),
    "trailing comma": ('{"latitude": 35.6762, "longitude": 139.6503,}', (35.6762, 139.6503)),
    "bare keys": ("{lat: 10.5, lon: -20.25}", (10.5, -20.25)),
    "lat lng": ('{"lat": 1.25, "lng": 2.5}', (1.25, 2.5)),
    "Lat Long": ('{"Lat": 1.25, "Long": 2.5}', (1.25, 2.5)),
    "LATITUDE": ('{"LATITUDE": 1.25, "LONGITUDE": 2.5}', (1.25, 2.5)),
    "longitude first": ('{"longitude": 2.3522, "latitude": 48.8566}', (48.8566, 2.3522)),
    "other keys between": ('{"latitude": 46.5, "elevation_m": 1200, "longitude": 7.5}', (46.5, 7.5)),
    "nested": ('{"location": {"lat": 35.0, "lng": 139.0}, "confidence": 0.4}', (35.0, 139.0)),
    "camel keys": ('{"gpsLatitude": 12.5, "gpsLongitude": 99.5}', (12.5, 99.5)),
    "unicode minus": ('{"latitude": "\u221233.87", "longitude": 151.21}', (-33.87, 151.21)),
    "two objects, last wins": (
        'First {"latitude": 1.0, "longitude": 2.0}, on reflection {"latitude": 3.0, "longitude": 4.0}',
        (3.0, 4.0),
    ),
    "list, last wins": (
        '[{"latitude": 1.0, "longitude": 2.0}, {"latitude": 3.0, "longitude": 4.0}]',
        (3.0, 4.0),
    ),
    "JSON beats prose": (
        '{"latitude": 45.76, "longitude": 4.83}\nNot Paris (48.8566, 2.3522).',
        (45.76, 4.83),
    ),
    "reason inside": ('{"latitude": 45.76, "longitude": 4.83, "reason": "not (48.85, 2.35)"}', (45.76, 4.83)),
    # G3 GPT-4o, 2 of 1,600 answers: the second key is missing, the pair is still plain.
    "malformed, key missing": ('```json\n{"latitude": 24.303,-76.627}\n```', (24.303, -76.627)),
    "null values": ('{"latitude": null, "longitude": null}', None),
    "Python None": ("{'latitude': None, 'longitude': None}", None),
    "NaN": ('{"latitude": NaN, "longitude": 3.0}', None),
    "final object unknown": (
        '{"latitude": 48.1, "longitude": 11.5}\n{"latitude": "unknown", "longitude": ""}',
        None,
    ),
    "unknown, then an answer": (
        '{"latitude": null, "longitude": null} On reflection: {"lat": 48.1, "lon": 11.5}',
        (48.1, 11.5),
    ),
    "template only": ('{"latitude": <float>, "longitude": <float>}', None),
}

LABELLED_CASES = {
    "colon": ("Latitude: 48.8566, Longitude: 2.3522", (48.8566, 2.3522)),
    "in a sentence": (
        "the exact geolocation is latitude 38.725127 and longitude -9.309927.",
        (38.725127, -9.309927),
    ),
    "unicode minus": ("Latitude: \u221233.8688, Longitude: 151.2093", (-33.8688, 151.2093)),
    "markdown list": ("- **Latitude:** 35.6762\n- **Longitude:** 139.6503", (35.6762, 139.6503)),
    "numbered list": ("1. Latitude: 35.6762\n2. Longitude: 139.6503", (35.6762, 139.6503)),
    "after the value": (
        "the exact location is 41.890906 latitude and 12.492744 longitude.",
        (41.890906, 12.492744),
    ),
    "after, negative": ("-0.9066 latitude, -89.606 longitude", (-0.9066, -89.606)),
    "joint label": (
        "the latitude and longitude of Fenway Park are 42.35888 and -71.0568 respectively.",
        (42.35888, -71.0568),
    ),
    "joint, place with commas": (
        "the latitude and longitude of Vancouver, British Columbia, Canada are 49.260975 and -123.11498.",
        (49.260975, -123.11498),
    ),
    "joint, comma": (
        "The latitude and longitude are approximately 37.749374, -119.58865.",
        (37.749374, -119.58865),
    ),
    "joint, reversed": ("The longitude and latitude are -74.006 and 40.7128.", (40.7128, -74.006)),
    "longitude first": ("Longitude: 2.3522, Latitude: 48.8566", (48.8566, 2.3522)),
    "lat= lon=": ("Estimated at lat=12.5 lon=-7.25", (12.5, -7.25)),
    "Lat / Long": ("Lat 48.85 / Long 2.35", (48.85, 2.35)),
    "with letters": ("Lat: 48.8566 N, Lon: 2.3522 W", (48.8566, -2.3522)),
    "wrong-axis letter": ("Latitude: 48.8566 E, Longitude: 2.3522 N", None),
    "integers": ("latitude 40 and longitude -74", (40.0, -74.0)),
    "last pair wins": (
        "Latitude: 48.85\nLongitude: 2.35\n\nActually, Latitude: 45.76, Longitude: 4.83",
        (45.76, 4.83),
    ),
    "a long way": ("It is a long way from the coast: 40.1 latitude, -3.5 longitude.", (40.1, -3.5)),
}

LETTERED_CASES = {
    "decimal": ("the exact location is 51.5073° N, 0.127647° W.", (51.5073, -0.127647)),
    "south east": ("33.8688° S, 151.2093° E", (-33.8688, 151.2093)),
    "no space": ("48.8566°N 2.3522°E", (48.8566, 2.3522)),
    "no degree sign": ("40.7128 N, 74.0060 W", (40.7128, -74.006)),
    "longitude first": ("74.0060° W, 40.7128° N", (40.7128, -74.006)),
    "letters before": ("N 40.7128, W 74.0060", (40.7128, -74.006)),
    "letters before, no comma": ("N 40.7 W 74.0", (40.7, -74.0)),
    "words": ("40.7 degrees north and 74.0 degrees west", (40.7, -74.0)),
    "integer degrees": ("around 40° N, 74° W", (40.0, -74.0)),
    # An explicit minus wins over the letter (Gemini wrote these for the Grand Canyon and Granada).
    "minus and W": ("the geolocation to be 36.054096° N, -112.14203° W.", (36.054096, -112.14203)),
    "minus and E": ("the geolocation is 37.162221° N, -3.528357° E.", (37.162221, -3.528357)),
    "DMS": ("48°51'29.6\"N 2°17'40.2\"E", (48 + 51 / 60 + 29.6 / 3600, 2 + 17 / 60 + 40.2 / 3600)),
    "DMS primes": (
        "48° 51\u2032 29.6\u2033 N, 2° 17\u2032 40.2\u2033 E",
        (48 + 51 / 60 + 29.6 / 3600, 2 + 17 / 60 + 40.2 / 3600),
    ),
    "DM south": ("33°52\u2032S 151°12\u2032E", (-(33 + 52 / 60), 151.2)),
    "DMS minutes over 59": ("48°75'N 2°17'E", None),
    "road names": ("Take Route 66 E, then 12 N", None),
}

BARE_CASES = {
    "parentheses": ("Paris (48.8566, 2.3522)", (48.8566, 2.3522)),
    "brackets, unicode minus": ("[\u221233.86, 151.21]", (-33.86, 151.21)),
    "en dash as sign": ("at \u201333.86, 151.21", (-33.86, 151.21)),
    "in a sentence": ("This restaurant is located at 41.2588, -72.9257 in Hartford.", (41.2588, -72.9257)),
    "last pair is the answer": (
        "Paris (48.8566, 2.3522) is close, but it is (45.7640, 4.8357).",
        (45.764, 4.8357),
    ),
    "three numbers": ("The coordinates are 34.05, -118.24, 500.0", None),
    "one of three": ("It could be 1.5, 2.5 or 3.5", None),
    "integers": ("in 1845, 12 people", None),
    "en dash range": ("between 40\u201341, somewhere", None),
}

REASONING_CASES = {
    "labelled beats earlier bare": (
        "The sign suggests Paris (48.8566, 2.3522), but the architecture points to Lyon. "
        "Final answer: latitude 45.764, longitude 4.8357.",
        (45.764, 4.8357),
    ),
    "labelled beats later bare": (
        "I estimate latitude 45.764 and longitude 4.8357, not the reference (48.8566, 2.3522).",
        (45.764, 4.8357),
    ),
    "several labelled places, the last": (
        "Geocoding Cortez gives latitude: 37.3489, longitude: -108.5859. The ruins are south of it, "
        "so my answer is latitude: 37.16, longitude: -108.49.",
        (37.16, -108.49),
    ),
}

REFUSAL_CASES = {
    "none": (None, None),
    "empty": ("", None),
    "blank": ("  \n ", None),
    "cannot determine": ("I cannot determine where this photo was taken.", None),
    "sorry": ("I'm sorry, I can't help with that.", None),
    "refusal then guess": (
        "I'm unable to determine the location from the given image.\n\n"
        "However, a creative guess could be:\n\n"
        '```json\n{"latitude": 41.823721, "longitude": -87.974505}\n```',
        (41.823721, -87.974505),
    ),
    "0,0 placeholder": ('{"latitude": 0, "longitude": 0}', None),
    "0.0,0.0 fenced placeholder": ('```json\n{"latitude": 0.0, "longitude": 0.0}\n```', None),
    "0,0 with refusal": ("I cannot determine the location. Latitude: 0, Longitude: 0", None),
    "0,0 unknown": ("Location unknown (0.0, 0.0)", None),
    # Stated in prose without refusal words, 0, 0 is a (poor) answer like any other.
    "0,0 as an answer": ("A buoy in the Gulf of Guinea at 0.0° N, 0.0° E.", (0.0, 0.0)),
    "0 and -90 in JSON": ('{"latitude": 0.0, "longitude": -90.0}', (0.0, -90.0)),
}

RANGE_CASES = {
    "latitude over 90": ('{"latitude": 95.0, "longitude": 10.0}', None),
    "longitude over 180": ("latitude 40.7, longitude 200.0", None),
    "swapped": ('{"latitude": -122.4194, "longitude": 37.7749}', None),
    "edges": ('{"latitude": -90, "longitude": 180}', (-90.0, 180.0)),
    # The final pair is out of range: no fallback to the earlier one.
    "final out of range": (
        "latitude: 48.85, longitude: 2.35. Correction: latitude: 148.85, longitude: 2.35",
        None,
    ),
}


def _cases(table: dict[str, tuple[str | None, tuple[float, float] | None]]) -> Any:
    return pytest.mark.parametrize(("text", "expected"), list(table.values()), ids=list(table))


@_cases(JSON_CASES)
def test_json(text: str, expected: tuple[float, float] | None) -> None:
    check(text, expected)


@_cases(LABELLED_CASES)
def test_labelled(text: str, expected: tuple[float, float] | None) -> None:
    check(text, expected)


@_cases(LETTERED_CASES)
def test_hemisphere_letters_and_dms(text: str, expected: tuple[float, float] | None) -> None:
    check(text, expected)


@_cases(BARE_CASES)
def test_bare_pairs(text: str, expected: tuple[float, float] | None) -> None:
    check(text, expected)


@_cases(REASONING_CASES)
def test_reasoning_then_final_answer(text: str, expected: tuple[float, float] | None) -> None:
    check(text, expected)


@_cases(REFUSAL_CASES)
def test_refusals_and_placeholders(text: str | None, expected: tuple[float, float] | None) -> None:
    check(text, expected)


@_cases(RANGE_CASES)
def test_range_check(text: str, expected: tuple[float, float] | None) -> None:
    check(text, expected)


# ---- echoed prompts ---------------------------------------------------------------------------------

PROMPT = (
    "Where was this photo taken? Give its GPS coordinates.\n"
    "Similar photos were taken at (latitude, longitude): (48.8566, 2.3522), (51.5074, -0.1278), "
    "(52.5200, 13.4050).\n"
    'Reply with one JSON object such as {"latitude": 40.7128, "longitude": -74.0060} and nothing else.'
)


def test_echoed_prompt_is_skipped() -> None:
    answer = "Latitude: 45.764, Longitude: 4.8357"
    # Unaware of the prompt, the JSON example of the echo outranks the labelled answer.
    check(PROMPT + "\n" + answer, (40.7128, -74.006))
    check(PROMPT + "\n" + answer, (45.764, 4.8357), prompt=PROMPT)
    check("USER: " + PROMPT + "\nASSISTANT: " + answer, (45.764, 4.8357), prompt=PROMPT)


def test_rewrapped_echo_is_skipped() -> None:
    echo = " ".join(PROMPT.split())  # lines joined, as some servers return the prompt
    check(echo + "\n\n(45.764, 4.8357)", (45.764, 4.8357), prompt=PROMPT)


def test_echo_alone_is_no_answer() -> None:
    check(PROMPT, None, prompt=PROMPT)
    check(PROMPT + "\n", None, prompt=PROMPT)


def test_repeated_candidate_list_is_no_answer() -> None:
    listed = "(48.8566, 2.3522), (51.5074, -0.1278), (52.5200, 13.4050)"
    check(PROMPT + "\n" + listed, None, prompt=PROMPT)
    check("The similar photos are at " + listed + ".", None, prompt=PROMPT)
    two = '{"latitude": 48.8566, "longitude": 2.3522}\n{"latitude": 51.5074, "longitude": -0.1278}'
    check(two, None, prompt=PROMPT)
    # Without the prompt nothing tells a list of references from an answer: the last pair.
    check("The similar photos are at " + listed + ".", (52.52, 13.405))


def test_one_reference_chosen_is_an_answer() -> None:
    check('{"latitude": 51.5074, "longitude": -0.1278}', (51.5074, -0.1278), prompt=PROMPT)
    mixed = "References (48.8566, 2.3522) and (51.5074, -0.1278) are both far; I say (50.1, 1.2)."
    check(mixed, (50.1, 1.2), prompt=PROMPT)


def test_prompt_not_in_text_changes_nothing() -> None:
    check('{"latitude": 45.764, "longitude": 4.8357}', (45.764, 4.8357), prompt=PROMPT)
    check("I'm sorry, I can't help with that.", None, prompt=PROMPT)
    check('{"latitude": 45.764, "longitude": 4.8357}', (45.764, 4.8357), prompt="")


# ---- the real answers -------------------------------------------------------------------------------

# Parsed answers per source file; a change shows up here first.
EXPECTED_PARSED = {
    "G3-main:15_llm_predict_results_rag": 8,
    "GeoTagrBacked:im2gps_result2_aacf6e5": 94,
    "GeoTagrBacked:im2gps_result3_cc92b43": 103,
    "GeoTagrBacked:im2gps_result_8917997": 94,
    "GeoTagrBacked:im2gps_result_c9fd268": 117,
    "g3-gg:10_llm_predict_results_rag": 365,
    "g3-gg:15_llm_predict_results_rag": 342,
    "g3-gg:5_llm_predict_results_rag": 315,
    "g3-gg:llm_predict_results_zs": 251,
}
EXPECTED_TOTAL = 1689

# Rows where both parse but disagree by more than 1e-4 degrees, with the reason. There are none: on
# all 1,689 rows both parse, georag and the source's parser give the same value.
EXPECTED_DISAGREEMENTS: dict[str, str] = {}

# Rows the source parsed and georag does not. All are Gemini agent answers whose coordinates are the
# agent's structured latitude/longitude fields, not in the reasoning text; texts with no digit at all
# pass by rule, these have digits, none a coordinate (read one by one; benchmarks/parse_report.py).
_G2, _G3, _G8, _G9 = (
    f"GeoTagrBacked:im2gps_result{s}" for s in ("2_aacf6e5", "3_cc92b43", "_8917997", "_c9fd268")
)
SOURCE_ONLY_WITH_DIGITS = {
    f"{_G2}/UnitedKingdom_00019_964966881_426cf82f57_1071_98545448@N00.jpg": "2024 season",
    f"{_G2}/502172768_3a7a22811b_213_69641014@N00.jpg": "100%",
    f"{_G2}/363322243_42e6b4babe_100_26234358@N00.jpg": "platform sign 11-16",
    f"{_G2}/Washington_00077_933052351_c52eb39df8_1294_54699140@N00.jpg": "P-51",
    f"{_G2}/LosAngeles_00023_349121428_aaa440bcc6_132_97332629@N00.jpg": "the 170 freeway",
    f"{_G2}/264192767_4809b75a21_117_35468147630@N01.jpg": "street address and ZIP code",
    f"{_G2}/Wisconsin_00036_1174326080_46cb7b0c2b_1168_10976003@N07.jpg": "a date",
    f"{_G2}/Aruba_00001_99110142_a573655582_34_50517642@N00.jpg": "licence plate V-4082",
    f"{_G3}/363322243_42e6b4babe_100_26234358@N00.jpg": "1200x, 11-16",
    f"{_G3}/Moscow_00007_275816584_98e230bb1e_88_87484925@N00.jpg": "1 W. Chimney Rock Road",
    f"{_G3}/Washington_00077_933052351_c52eb39df8_1294_54699140@N00.jpg": "P-51",
    f"{_G3}/California_00122_361328855_6ace238cbf_134_41894169878@N01.jpg": "shelter number 2",
    f"{_G3}/Vermont_00002_113886360_6cb9ab47bd_41_87434398@N00.jpg": "District School #1",
    f"{_G3}/429881745_35a951f032_187_37718182@N00.jpg": "street address",
    f"{_G8}/530405817_0673660c96_1209_7885919@N07.jpg": "Avenida 9 de Julio",
    f"{_G8}/421350511_ee899b609d_129_85417391@N00.jpg": "centuries, acres",
    f"{_G8}/Washington_00077_933052351_c52eb39df8_1294_54699140@N00.jpg": "P-51D",
    f"{_G8}/Poland_00039_939060542_595e7aa0f0_1297_15632944@N00.jpg": "train number TD45",
    f"{_G8}/Illinois_00010_372417850_1818b0405b_166_41315423@N00.jpg": "street address",
    f"{_G9}/363322243_42e6b4babe_100_26234358@N00.jpg": "1200x",
    f"{_G9}/Vermont_00002_113886360_6cb9ab47bd_41_87434398@N00.jpg": "District School #5",
}
EXPECTED_SOURCE_ONLY = 539

# GPT-4o refusals (G3 replication): no coordinates may be invented for them.
_ZS, _R5, _R10, _R15 = (
    f"g3-gg:{f}" for f in ("llm_predict_results_zs", *(f"{k}_llm_predict_results_rag" for k in (5, 10, 15)))
)
REFUSALS = (
    f"{_ZS}/1005977048_5ccf8b05d3_1201_91728102@N00.jpg#5",  # unable to provide accurate GPS coordinates
    f"{_ZS}/101220879_0a1be45b79_33_24311489@N00.jpg#7",
    f"{_ZS}/1034783376_9e3db4b81a_1016_70323761@N00.jpg#0",  # "I'm sorry, I can't help with that."
    f"{_ZS}/104146945_2722f724b3_19_14542551@N00.jpg#6",  # "I'm sorry, I can't do that."
    f"{_R5}/1005977048_5ccf8b05d3_1201_91728102@N00.jpg#5",
    f"{_R5}/103558896_55f8059bc9_35_73293249@N00.jpg#5",
    f"{_R10}/1001048550_8e4b47d165_1051_78841376@N00.jpg#8",
    f"{_R10}/103404365_f852148f5b_34_73293249@N00.jpg#0",  # unable to determine the coordinates
    f"{_R10}/104138228_eac9608bce_34_19355699@N00.jpg#8",
    f"{_R15}/1014898753_ef4cfaa5d6_1354_96928198@N00.jpg#9",
    f"{_R15}/1019846234_5e471a10e2_1155_97522422@N00.jpg#2",  # "... to generate coordinates based on it."
    f"{_R15}/103404365_f852148f5b_34_73293249@N00.jpg#9",  # typographic apostrophe
    f"{_ZS}/1029739337_ff06001d12_1361_7132415@N03.jpg#6",  # {"latitude": 0.0, "longitude": 0.0}
)
# Refusal, then a guess anyway: the guess is the answer.
REFUSAL_THEN_GUESS = {
    f"{_R5}/1023756068_20c3ffc329_1039_70323761@N00.jpg#8": (40.748817, -73.985428),
    f"{_R10}/103465274_3e879729e0_33_73293249@N00.jpg#7": (45.934498, 7.206186),
    f"{_R15}/1014898753_ef4cfaa5d6_1354_96928198@N00.jpg#7": (41.823721, -87.974505),
    f"{_R15}/103385471_f54982a801_29_73293249@N00.jpg#1": (47.4062, 8.5544),
}


def row_key(row: dict[str, Any]) -> str:
    """``repo:file/id``: ids repeat across a source's files (one per prompt kind or run)."""
    repo = row["source"].split(":")[0].split("@")[0].split("/")[-1]
    stem = row["source"].rsplit("/", 1)[-1].rsplit(".", 1)[0]
    return f"{repo}:{stem}/{row['id']}"


def ref_value(row: dict[str, Any]) -> tuple[float, float] | None:
    """The source parser's value; None for null and for G3's "could not parse" 0, 0."""
    if row["ref_lat"] is None or row["ref_lon"] is None or (row["ref_lat"] == 0 and row["ref_lon"] == 0):
        return None
    return (float(row["ref_lat"]), float(row["ref_lon"]))


@pytest.fixture(scope="module")
def parsed() -> dict[str, tuple[dict[str, Any], tuple[float, float] | None]]:
    """Every real row by key, with georag's value."""
    if not ANSWERS.is_file():
        pytest.skip(f"needs the shared LLM answers at {ANSWERS}")
    with open(ANSWERS, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    out = {row_key(r): (r, parse_coordinates(r["raw_text"])) for r in rows}
    assert len(out) == len(rows) == 2556
    return out


def test_real_parsed_counts(parsed: dict[str, Any]) -> None:
    counts: dict[str, int] = {}
    for key, (_, ours) in parsed.items():
        counts[key.split("/")[0]] = counts.get(key.split("/")[0], 0) + (ours is not None)
    assert counts == EXPECTED_PARSED
    assert sum(counts.values()) == EXPECTED_TOTAL


def test_real_values_in_range(parsed: dict[str, Any]) -> None:
    for key, (_, ours) in parsed.items():
        if ours is not None:
            lat, lon = ours
            assert math.isfinite(lat) and math.isfinite(lon) and abs(lat) <= 90 and abs(lon) <= 180, key
            assert (lat, lon) != (0.0, 0.0), key


def test_real_null_text_gives_none(parsed: dict[str, Any]) -> None:
    nulls = [key for key, (row, _) in parsed.items() if row["raw_text"] is None]
    assert len(nulls) == 283
    assert all(parsed[key][1] is None for key in nulls)


def test_real_agrees_with_source_parser(parsed: dict[str, Any]) -> None:
    disagree = {}
    for key, (row, ours) in parsed.items():
        ref = ref_value(row)
        both = ours is not None and ref is not None
        if both and (abs(ours[0] - ref[0]) > 1e-4 or abs(ours[1] - ref[1]) > 1e-4):
            disagree[key] = (ours, ref)
    assert set(disagree) == set(EXPECTED_DISAGREEMENTS), disagree


def test_real_parses_every_row_the_source_parsed(parsed: dict[str, Any]) -> None:
    missed = set()
    for key, (row, ours) in parsed.items():
        if ref_value(row) is not None and ours is None:
            assert row["ref_note"].startswith("structured"), f"{key}: a text parser's row missed"
            missed.add(key)
    with_digits = {key for key in missed if re.search(r"\d", parsed[key][0]["raw_text"])}
    assert with_digits == set(SOURCE_ONLY_WITH_DIGITS)
    assert len(missed) == EXPECTED_SOURCE_ONLY


@pytest.mark.parametrize("key", REFUSALS)
def test_real_refusals_give_none(parsed: dict[str, Any], key: str) -> None:
    row, ours = parsed[key]
    assert row["raw_text"] and ours is None


def test_real_refusal_then_guess(parsed: dict[str, Any]) -> None:
    for key, expected in REFUSAL_THEN_GUESS.items():
        assert parsed[key][1] == pytest.approx(expected), key
