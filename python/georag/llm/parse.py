"""The final coordinates a multimodal LLM states in its answer to "where was this photo taken", or None.

Rules (checked against 2,556 real answers of GPT-4o and Gemini, ``shared/data/llm_answers``):

* The answer is what follows the prompt when the text echoes it (the last occurrence, whitespace
  insensitive), so a coordinate of the prompt's reference list is never taken for the answer.
* Pairs are found in four forms (:mod:`georag.llm.parse_formats`); the strongest form present wins, and
  within it the LAST pair: a JSON object with latitude/longitude keys, else labelled
  ``latitude: x, longitude: y``, else hemisphere letters or degrees-minutes-seconds, else a bare
  ``(lat, lon)`` of two decimals. Models reason about several places and then state their answer, and
  a JSON object is the answer format the prompts ask for.
* Range check: |lat| <= 90 and |lon| <= 180, finite; a final pair out of range gives None (it is not
  swapped or replaced by an earlier pair: that would be a guess). So does a final JSON object whose
  values are no numbers (``{"latitude": null, "longitude": "unknown"}``).
* (0, 0) is not an answer: a final pair of exactly 0, 0 gives None when it comes from a JSON object
  (the schema's placeholder, as in ``{"latitude": 0, "longitude": 0}``) or when the text says it cannot
  tell (refusal words, "unknown"). A 0, 0 stated in prose with no such words is kept.
* With ``prompt`` given: an answer whose pairs in the winning form are two or more of the prompt's
  reference coordinates and nothing else repeats the candidate list, and gives None; one reference
  pair alone is a choice and is kept.
"""

from __future__ import annotations

import re

from georag.llm.parse_formats import JSON, Candidate, all_candidates, in_range, normalize

__all__ = ["parse_coordinates"]

# Words of an answer that declines to locate the photo; only consulted for a final (0, 0).
_REFUSAL_RE = re.compile(
    r"\b(?:unknown|unsure|not sure|cannot|can'?t|unable|impossible|not possible|no way|sorry|"
    r"undetermined|insufficient|not enough information)\b",
    re.IGNORECASE,
)
_SAME = 1e-6


def _after_prompt(text: str, prompt: str | None) -> str:
    """The part of ``text`` after the last echo of ``prompt`` (all of it when there is none)."""
    if not prompt or not prompt.strip():
        return text
    at = text.rfind(prompt)
    if at >= 0:
        return text[at + len(prompt) :]
    # Echoes often re-wrap lines or trim spaces: match the prompt word by word.
    pattern = re.compile(r"\s*".join(re.escape(w) for w in prompt.split()))
    echoes = list(pattern.finditer(text))
    return text[echoes[-1].end() :] if echoes else text


def _is_reference(c: Candidate, references: list[Candidate]) -> bool:
    return any(abs(c.lat - r.lat) <= _SAME and abs(c.lon - r.lon) <= _SAME for r in references)


def parse_coordinates(text: str | None, *, prompt: str | None = None) -> tuple[float, float] | None:
    """``(lat, lon)`` in degrees that the model states as its final answer in ``text``, or None.

    ``text`` is the model's answer (None where the API gave nothing); ``prompt`` the user text it was
    asked, when known: its echo is skipped and a mere repeat of its reference coordinates is not an
    answer. None for refusals, placeholders (0, 0), out-of-range values and texts with no pair. See the
    module docstring for the rules.
    """
    if not text or not text.strip():
        return None
    answer = normalize(_after_prompt(text, prompt))
    found = all_candidates(answer)
    if not found:
        return None
    # The strongest form wins (JSON is the format asked for; a labelled pair is deliberate, a bare one
    # may be a reference quoted in passing), and within it the last pair: the conclusion follows the
    # reasoning.
    tier = min(c.tier for c in found)
    best = [c for c in found if c.tier == tier]
    final = best[-1]
    if not in_range(final.lat, final.lon):
        return None
    if final.lat == 0.0 and final.lon == 0.0 and (tier == JSON or _REFUSAL_RE.search(answer)):
        return None
    if prompt:
        # Two or more of the prompt's references and nothing else: the list repeated, not an answer.
        references = all_candidates(normalize(prompt))
        distinct = {(round(c.lat, 6), round(c.lon, 6)) for c in best}
        if len(distinct) >= 2 and all(_is_reference(c, references) for c in best):
            return None
    return (final.lat, final.lon)
