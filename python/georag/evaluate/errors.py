"""EvaluationError: predictions, truth or options that `georag eval` cannot score."""

from __future__ import annotations

from georag.errors import GeoRagError


class EvaluationError(GeoRagError, ValueError):
    """Predictions or truth cannot be read, joined or scored as asked; the message says what to change."""
