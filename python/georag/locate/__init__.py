"""Locate photos: the Geolocator pipeline (encode, search, prompt the LLM, parse, select) and its outputs."""

from __future__ import annotations
