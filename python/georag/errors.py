"""The exception hierarchy: every error georag raises on purpose derives from GeoRagError."""

from __future__ import annotations


class GeoRagError(Exception):
    """Base class of georag's own errors."""


class MissingDependencyError(GeoRagError, ImportError):
    """An optional package or a hardware feature needed by the requested path is not available."""
