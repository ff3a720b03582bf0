#!/usr/bin/env python
"""Coordinate parsing on 2,556 real LLM answers: georag's parse_coordinates against each source's own parser.

Reads ``../shared/data/llm_answers/answers.jsonl`` (``--answers`` for another file) and prints markdown:

* per source file and in total: answers, answers with raw text, parsed by georag, parsed by the source
  (its ``ref_lat, ref_lon`` neither null nor 0, 0: G3-style code writes 0, 0 for "could not parse"),
  both parsed and agreeing within 1e-4 degrees, disagreements, georag-only and source-only parses, and
  refusals for which georag returns None;
* every disagreement and every source-only (and georag-only) parse with its id, a 200-character excerpt,
  both values and a one-word verdict from ``VERDICTS`` below (or the documented default), and for
  disagreements the distance of both values from the ground truth (haversine, R = 6371 km).

``--json FILE`` also writes all of it as JSON. Exit status 1 when a listed row has no verdict.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from georag.llm.parse import parse_coordinates

ANSWERS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "llm_answers" / "answers.jsonl"
AGREE_DEG = 1e-4
EARTH_KM = 6371.0

# Verdicts on rows where georag and the source differ, keyed "repo:file/id" (see row_key), decided by
# reading each answer. Categories:
#   notext   the answer text states no coordinates: the source's value is the Gemini agent's structured
#            latitude/longitude output, not parsed from this text (many texts even say "the coordinates
#            provided are for ..." without writing them), so a text parser rightly finds nothing. The
#            default for a row of a structured-output source whose text has no digit at all, see
#            verdict(); the rows below have digits, read one by one: none of them is a coordinate.
# Categories for disagreements (none occur in this file; kept so that a new one gets a considered word):
#   source   the source's parser is wrong (e.g. it took the first of two pairs while the model's final
#            answer is the second, or it dropped a hemisphere letter).
#   georag   georag is wrong.
_G2, _G3, _G8, _G9 = (
    f"GeoTagrBacked:im2gps_result{s}" for s in ("2_aacf6e5", "3_cc92b43", "_8917997", "_c9fd268")
)
VERDICTS: dict[str, str] = {
    f"{_G2}/UnitedKingdom_00019_964966881_426cf82f57_1071_98545448@N00.jpg": "notext",  # "2024 season"
    f"{_G2}/502172768_3a7a22811b_213_69641014@N00.jpg": "notext",  # "100%"
    f"{_G2}/363322243_42e6b4babe_100_26234358@N00.jpg": "notext",  # platform sign "11-16"
    f"{_G2}/Washington_00077_933052351_c52eb39df8_1294_54699140@N00.jpg": "notext",  # "P-51"
    f"{_G2}/LosAngeles_00023_349121428_aaa440bcc6_132_97332629@N00.jpg": "notext",  # the 170 freeway
    f"{_G2}/264192767_4809b75a21_117_35468147630@N01.jpg": "notext",  # street address and ZIP code
    f"{_G2}/Wisconsin_00036_1174326080_46cb7b0c2b_1168_10976003@N07.jpg": "notext",  # date "Aug 20, 2003"
    f"{_G2}/Aruba_00001_99110142_a573655582_34_50517642@N00.jpg": "notext",  # licence plate "V-4082"
    f"{_G3}/363322243_42e6b4babe_100_26234358@N00.jpg": "notext",  # "1200x", "11-16"
    f"{_G3}/Moscow_00007_275816584_98e230bb1e_88_87484925@N00.jpg": "notext",  # "1 W. Chimney Rock Road"
    f"{_G3}/Washington_00077_933052351_c52eb39df8_1294_54699140@N00.jpg": "notext",  # "P-51"
    f"{_G3}/California_00122_361328855_6ace238cbf_134_41894169878@N01.jpg": "notext",  # "a number 2"
    f"{_G3}/Vermont_00002_113886360_6cb9ab47bd_41_87434398@N00.jpg": "notext",  # "District School #1"
    f"{_G3}/429881745_35a951f032_187_37718182@N00.jpg": "notext",  # "Pg. de Sant Gervasi, 47"
    f"{_G8}/530405817_0673660c96_1209_7885919@N07.jpg": "notext",  # "Avenida 9 de Julio"
    f"{_G8}/421350511_ee899b609d_129_85417391@N00.jpg": "notext",  # centuries, "120 acres (49 ha)"
    f"{_G8}/Washington_00077_933052351_c52eb39df8_1294_54699140@N00.jpg": "notext",  # "P-51D"
    f"{_G8}/Poland_00039_939060542_595e7aa0f0_1297_15632944@N00.jpg": "notext",  # train number "TD45"
    f"{_G8}/Illinois_00010_372417850_1818b0405b_166_41315423@N00.jpg": "notext",  # "314 W Rand Rd"
    f"{_G9}/363322243_42e6b4babe_100_26234358@N00.jpg": "notext",  # "1200x"
    f"{_G9}/Vermont_00002_113886360_6cb9ab47bd_41_87434398@N00.jpg": "notext",  # "District School #5"
}

# Wording of an answer that declines (counted only where georag returns None).
_REFUSAL = re.compile(r"\b(?:sorry|unable|can[\u2019']?t|cannot)\b", re.IGNORECASE)


def row_key(row: dict[str, Any]) -> str:
    """``repo:file/id``, unique in the file: ids repeat across a source's files (one per prompt or run)."""
    repo = row["source"].split(":")[0].split("@")[0].split("/")[-1]
    stem = row["source"].rsplit("/", 1)[-1].rsplit(".", 1)[0]
    return f"{repo}:{stem}/{row['id']}"


def source_name(row: dict[str, Any]) -> str:
    return row_key(row).split("/")[0]


def ref_value(row: dict[str, Any]) -> tuple[float, float] | None:
    """The source parser's value, None where it found nothing (null, or G3's 0, 0)."""
    lat, lon = row["ref_lat"], row["ref_lon"]
    if lat is None or lon is None or (lat == 0.0 and lon == 0.0):
        return None
    return (float(lat), float(lon))


def haversine_km(a: tuple[float, float], b: tuple[float, float]) -> float:
    p1, p2 = math.radians(a[0]), math.radians(b[0])
    dp, dl = p2 - p1, math.radians(b[1] - a[1])
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_KM * math.asin(min(1.0, math.sqrt(h)))


def verdict(row: dict[str, Any]) -> str:
    """The verdict of a listed row: VERDICTS, else ``notext`` for a digit-free text, else UNJUDGED."""
    if row_key(row) in VERDICTS:
        return VERDICTS[row_key(row)]
    structured = row["ref_note"].startswith("structured")
    if structured and not re.search(r"\d", row["raw_text"] or ""):
        return "notext"
    return "UNJUDGED"


def analyse(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts per source and the listed rows."""
    counts: dict[str, Counter[str]] = {}
    listed: dict[str, list[dict[str, Any]]] = {"disagreements": [], "source_only": [], "georag_only": []}
    for row in rows:
        c = counts.setdefault(source_name(row), Counter())
        text = row["raw_text"]
        ours, ref = parse_coordinates(text), ref_value(row)
        c["answers"] += 1
        c["with text"] += text is not None
        c["georag"] += ours is not None
        c["source"] += ref is not None
        entry = {"key": row_key(row), "excerpt": " ".join((text or "").split())[:200], "georag": ours}
        entry |= {"ref": ref, "verdict": "", "km_georag": None, "km_ref": None}
        if ours and ref:
            if abs(ours[0] - ref[0]) <= AGREE_DEG and abs(ours[1] - ref[1]) <= AGREE_DEG:
                c["agree"] += 1
                continue
            c["disagree"] += 1
            truth = (row["gt_lat"], row["gt_lon"])
            entry |= {"km_georag": haversine_km(ours, truth), "km_ref": haversine_km(ref, truth)}
            listed["disagreements"].append(entry)
        elif ref:
            c["source only"] += 1
            listed["source_only"].append(entry)
        elif ours:
            c["georag only"] += 1
            listed["georag_only"].append(entry)
        elif text is not None and _REFUSAL.search(text):
            c["refusals -> None"] += 1
            continue
        else:
            continue
        entry["verdict"] = verdict(row)
    total: Counter[str] = Counter()
    for c in counts.values():
        total.update(c)
    return {"sources": {k: dict(v) for k, v in counts.items()}, "total": dict(total), **listed}


COLUMNS = (
    "answers",
    "with text",
    "georag",
    "source",
    "agree",
    "disagree",
    "georag only",
    "source only",
    "refusals -> None",
)
HEADINGS = (
    "answers",
    "with raw text",
    "parsed by georag",
    "parsed by source",
    "both, agree",
    "disagree",
    "georag only",
    "source only",
    "refusals -> None",
)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _pair(p: tuple[float, float] | None) -> str:
    return "-" if p is None else f"{p[0]:.6g}, {p[1]:.6g}"


def markdown(result: dict[str, Any]) -> str:
    lines = ["| source | " + " | ".join(HEADINGS) + " |", "|---" * (len(HEADINGS) + 1) + "|"]
    rows = [*sorted(result["sources"].items()), ("**total**", result["total"])]
    for name, c in rows:
        lines.append(f"| {name} | " + " | ".join(str(c.get(k, 0)) for k in COLUMNS) + " |")
    titles = {
        "disagreements": "Disagreements",
        "source_only": "Source-only parses",
        "georag_only": "georag-only",
    }
    for part, title in titles.items():
        entries = result[part]
        lines += ["", f"## {title} ({len(entries)})", ""]
        if not entries:
            lines.append("none")
            continue
        extra = part == "disagreements"
        head = "| id | excerpt | georag | source | verdict |" + (" km georag | km source |" if extra else "")
        lines += [head, "|---" * (7 if extra else 5) + "|"]
        for e in entries:
            line = f"| {e['key']} | {_cell(e['excerpt'])} | {_pair(e['georag'])} | {_pair(e['ref'])} | "
            line += f"{e['verdict']} |"
            if extra:
                line += f" {e['km_georag']:.0f} | {e['km_ref']:.0f} |"
            lines.append(line)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--answers", type=Path, default=ANSWERS, help="answers.jsonl (default: %(default)s)")
    ap.add_argument("--json", type=Path, help="also write the counts and listed rows here")
    args = ap.parse_args(argv)
    if not args.answers.is_file():
        print(f"no answers file at {args.answers}", file=sys.stderr)
        return 2
    with open(args.answers, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    result = analyse(rows)
    print(markdown(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    listed = result["disagreements"] + result["source_only"] + result["georag_only"]
    return 1 if any(e["verdict"] == "UNJUDGED" for e in listed) else 0


if __name__ == "__main__":
    sys.exit(main())
