"""GeoStore: the geotagged embedding database (format, readers, build, search)."""

from __future__ import annotations
