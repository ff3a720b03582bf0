"""Reading a JSON file that may be damaged or hostile: bounded size, nesting and numbers, no duplicate keys.

Every failure is a StoreError naming the file, never a RecursionError or ValueError traceback.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from georag.errors import StoreError

MAX_BYTES = 16 << 20
"""Largest JSON file read (16 MiB): a manifest of 10M rows in 4096-row shards is about 2 MiB."""
MAX_DEPTH = 16
"""Deepest nesting of objects and arrays accepted; a store manifest nests 4 deep."""
MAX_DIGITS = 19
"""Longest integer accepted (digits, sign excluded): every count of a store fits in an int64."""

_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*+"|[\[\]{}]|"', re.DOTALL)
"""A whole string (skipped as one token, in linear time), a bracket, or a quote that opens no string."""


def read_json(path: Path, what: str, *, max_bytes: int = MAX_BYTES) -> Any:
    """The parsed content of ``path``; StoreError (naming ``path`` and ``what`` it should be) when it is
    unreadable or `parse_json` refuses it."""
    return parse_json(read_bounded(path, what, max_bytes=max_bytes), path, what)


def read_bounded(path: Path, what: str, *, max_bytes: int = MAX_BYTES) -> bytes:
    """The bytes of ``path``; StoreError when it is unreadable or larger than ``max_bytes``."""
    try:
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as exc:
        raise StoreError(f"cannot read {path}: {exc}") from exc
    if len(data) > max_bytes:
        raise StoreError(f"{path} is larger than {max_bytes >> 20} MiB: not a {what}; the store is damaged")
    return data


def parse_json(data: bytes, path: Path, what: str) -> Any:
    """``data`` (the content of ``path``) parsed; StoreError when it is not UTF-8 JSON, is nested deeper
    than `MAX_DEPTH`, holds an integer longer than `MAX_DIGITS` digits, NaN / Infinity, or an object with
    a repeated key."""
    try:
        text = data.decode("utf-8")
        if _depth(text) > MAX_DEPTH:
            raise ValueError(f"nested more than {MAX_DEPTH} deep")
        return json.loads(text, parse_int=_int, parse_constant=_constant, object_pairs_hook=_unique_keys)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        raise StoreError(f"{path} is not a readable {what} ({exc}); the store is damaged") from exc


def _depth(text: str) -> int:
    """The deepest bracket nesting outside strings, up to just past `MAX_DEPTH` (the parser is never handed
    deeper input)."""
    depth = deepest = 0
    for m in _TOKEN.finditer(text):
        token = m.group()
        if token == '"':
            break  # a string that never ends: the parser reports it
        if token[0] != '"':
            depth += 1 if token in "[{" else -1
            deepest = max(deepest, depth)
            if deepest > MAX_DEPTH:
                break  # deep enough to refuse: the rest is not scanned
    return deepest


def _int(token: str) -> int:
    if len(token.lstrip("-")) > MAX_DIGITS:
        raise ValueError(f"an integer of {len(token.lstrip('-'))} digits, more than {MAX_DIGITS}")
    return int(token)


def _constant(token: str) -> Any:
    raise ValueError(f"{token} is not a JSON number")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"the key {key!r} appears twice in one object")
        out[key] = value
    return out
