"""The per-request parameters of the `georag` model: an optional JSON object, checked strictly."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from georag.config import STRATEGY_NAMES, Config, PromptVariant, parse_variants
from georag.errors import ConfigError, GeoRagError
from georag.serving.errors import BadRequest

MAX_PARAMETERS_BYTES = 4096
"""Longest parameters JSON accepted (default 4 KiB); a few short fields need far less."""
MAX_SAMPLES = 16
"""Most answers one request may ask the LLM for per prompt variant (default 16)."""
MAX_VARIANTS = 4
"""Most prompt variants per request (default 4: G3's 0 / 5 / 10 / 15 references)."""
STRATEGIES = STRATEGY_NAMES
"""Routes a request may ask for: "rag" (default), "knn", "knn-medoid", "vpr-guided" (where served)."""

KEYS = ("id", "strategy", "samples", "variants", "seed", "temperature", "test_marker")
"""The keys a request's parameters may hold (test_marker only where the config allows test markers)."""
PUBLIC_KEYS = tuple(key for key in KEYS if key != "test_marker")
"""The keys a server that does not allow test markers names to its clients (test_marker hidden)."""
_MARKER = re.compile(r"\[\[[a-z]{1,16}\]\]")
_ID = re.compile(r"[\w.@:+-]{1,128}")


def check_served(config: Config) -> None:
    """ConfigError unless ``config`` can be served (`georag serve`, the Triton `georag` model): no more
    answers per request or prompt variants than a request may ask for, and no exclusions (a served request
    carries no truth to exclude by)."""
    for what, n in (
        ("strategy.rag.sampling.n (--samples)", config.strategy.rag.sampling.n),
        ("strategy.vpr.sampling.n (--prior-samples)", config.strategy.vpr.sampling.n),
    ):
        if n > MAX_SAMPLES:
            raise ConfigError(f"{what} is {n}: a served request asks for {MAX_SAMPLES} answers at most")
    if len(config.strategy.rag.variants) > MAX_VARIANTS:
        raise ConfigError(f"a served pipeline takes at most {MAX_VARIANTS} prompt variants")
    if config.exclusion.active:
        raise ConfigError(
            f"exclusions ({config.exclusion}) need each photo's truth, which a served request does not "
            "carry; leave [exclusion] out of a served config"
        )


@dataclass(frozen=True)
class RequestParams:
    """What one request asks for; every field None means: the model's configured default."""

    id: str = "request"
    """A label echoed in the result (a file name or client id, 128 safe characters at most); default
    "request"."""
    strategy: str = "rag"
    """"rag", "knn", "knn-medoid" or "vpr-guided"; default rag."""
    samples: int | None = None
    """Answers per prompt variant; default None (the model's configured count)."""
    variants: tuple[PromptVariant, ...] | None = None
    """Prompt variants; default None (the model's configured ones)."""
    seed: int | None = None
    """Sampling seed passed to the LLM; default None."""
    temperature: float | None = None
    """Sampling temperature in [0, 2]; default None (the configured one)."""
    test_marker: str | None = None
    """A ``[[word]]`` appended to the LLM prompt, accepted only by repositories generated for tests
    (it drives the stand-in LLM: ``[[stall]]``, ``[[garbage]]``, ``[[slow]]``); default None."""


def known_keys(allow_test_markers: bool) -> tuple[str, ...]:
    """The keys named to clients (in the message refusing an unknown one): `KEYS`, less test_marker unless
    test markers are allowed."""
    return KEYS if allow_test_markers else PUBLIC_KEYS


def parse_params(raw: bytes | str | None, *, allow_test_markers: bool = False) -> RequestParams:
    """The parameters of one request from its JSON text (None or empty: all defaults); BadRequest if bad."""
    if raw is None:
        return RequestParams()
    if len(raw) > MAX_PARAMETERS_BYTES:
        raise BadRequest(f"parameters are {len(raw)} bytes; at most {MAX_PARAMETERS_BYTES} are accepted")
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    if not text.strip():
        return RequestParams()
    try:
        given = json.loads(text)
    except ValueError:
        raise BadRequest("parameters must be a JSON object") from None
    except RecursionError:  # thousands of nested brackets: no parameter nests at all
        raise BadRequest("parameters must be a flat JSON object (nested too deeply)") from None
    if not isinstance(given, dict):
        raise BadRequest("parameters must be a JSON object")
    unknown = sorted(set(given) - set(KEYS))
    if unknown:
        known = ", ".join(known_keys(allow_test_markers))
        raise BadRequest(f"unknown parameter(s) {', '.join(map(repr, unknown))}; known: {known}")
    return RequestParams(
        id=_id(given.get("id")),
        strategy=_strategy(given.get("strategy")),
        samples=_int(given, "samples", 1, MAX_SAMPLES),
        variants=_variants(given.get("variants")),
        seed=_int(given, "seed", 0, 2**31 - 1),
        temperature=_temperature(given.get("temperature")),
        test_marker=_marker(given.get("test_marker"), allow_test_markers),
    )


def _id(value: Any) -> str:
    if value is None:
        return "request"
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise BadRequest("id must be 1 to 128 letters, digits or . _ @ : + -")
    return value


def _strategy(value: Any) -> str:
    if value is None:
        return "rag"
    if value not in STRATEGIES:
        raise BadRequest(f"strategy must be one of {', '.join(STRATEGIES)}")
    return str(value)


def _int(given: dict[str, Any], key: str, low: int, high: int) -> int | None:
    value = given.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise BadRequest(f"{key} must be an integer in [{low}, {high}]")
    return value


def _variants(value: Any) -> tuple[PromptVariant, ...] | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 200:
        raise BadRequest("variants must be a string such as 'rag:16:16' or 'zero,rag:5:5'")
    try:
        found = parse_variants(value)
    except GeoRagError as exc:
        raise BadRequest(str(exc)) from None
    if len(found) > MAX_VARIANTS:
        raise BadRequest(f"at most {MAX_VARIANTS} prompt variants per request")
    return found


def _temperature(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise BadRequest("temperature must be a number in [0, 2]")
    if not 0.0 <= value <= 2.0:
        raise BadRequest("temperature must be a number in [0, 2]")
    return float(value)


def _marker(value: Any, allowed: bool) -> str | None:
    if value is None:
        return None
    if not allowed:
        raise BadRequest("test_marker is accepted only by model repositories generated for tests")
    if not isinstance(value, str) or not _MARKER.fullmatch(value):
        raise BadRequest("test_marker must look like [[word]]")
    return value
