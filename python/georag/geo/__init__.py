"""Geography: coordinates, distances on the sphere, country codes."""

from __future__ import annotations
