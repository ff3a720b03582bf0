"""Locate photos: the Geolocator pipeline (encode, search, prompt the LLM, parse, select), its outputs, and
the whole job as one call (`run`: photos in, a resumable predictions file out)."""

from __future__ import annotations

from georag.locate.job import LocateSummary, run

__all__ = ["LocateSummary", "run"]
