"""GPS coordinates written in a photo's EXIF: when a query photo carries them, its answer is in the file.

A benchmark photo with GPS tags leaks its truth to any model that reads metadata (or to a pipeline that
forwards the file as is), so `georag locate` flags such photos (``evidence["exif_gps"]``) and `georag
eval` counts them and can leave them out (``--exclude-exif-gps``). Read with Pillow from the file's EXIF
GPS IFD (tag 0x8825): latitude and longitude as degrees, minutes, seconds with their N/S and E/W
references. A GPS block without a usable position (missing parts, out of range, or exactly 0, 0, which
cameras write when they have no fix) is not a leak.
"""

from __future__ import annotations

import io
import logging
import math
import os
from pathlib import Path
from typing import Any

from georag.types import Prediction

log = logging.getLogger(__name__)

GPS_IFD = 0x8825
_LAT_REF, _LAT, _LON_REF, _LON = 1, 2, 3, 4


def _degrees(value: Any, ref: Any, negative: str) -> float | None:
    """Degrees from EXIF's (deg, min, sec) rationals (or one number), negative for the S / W reference."""
    try:
        parts = [float(v) for v in value] if isinstance(value, tuple | list) else [float(value)]
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    if not parts or len(parts) > 3 or not all(math.isfinite(p) for p in parts):
        return None
    deg = sum(p / 60.0**i for i, p in enumerate(parts))
    text = ref.decode("ascii", "replace") if isinstance(ref, bytes) else str(ref or "")
    return -deg if text.strip().upper().startswith(negative) else deg


def gps_from_exif(gps: dict[int, Any]) -> tuple[float, float] | None:
    """(lat, lon) in degrees of an EXIF GPS IFD, or None when it holds no usable position."""
    if _LAT not in gps or _LON not in gps:
        return None
    lat = _degrees(gps[_LAT], gps.get(_LAT_REF), "S")
    lon = _degrees(gps[_LON], gps.get(_LON_REF), "W")
    if lat is None or lon is None or abs(lat) > 90.0 or abs(lon) > 180.0 or (lat == 0.0 and lon == 0.0):
        return None
    return lat, lon


def exif_gps(source: str | os.PathLike[str] | bytes) -> tuple[float, float] | None:
    """The GPS position in the EXIF of a photo (a path or the file's bytes), or None: no EXIF, no GPS, an
    unusable position, or a file Pillow cannot read (the encoder reports that one)."""
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:  # pragma: no cover - Pillow is a dependency of the encoder
        return None
    try:
        opened = Image.open(io.BytesIO(source) if isinstance(source, bytes) else Path(source))
        with opened as img:
            gps = img.getexif().get_ifd(GPS_IFD)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
        log.debug("no EXIF read from %s: %s", "bytes" if isinstance(source, bytes) else source, exc)
        return None
    return gps_from_exif(dict(gps)) if gps else None


def flag_exif_gps(pred: Prediction, source: str | os.PathLike[str] | bytes) -> Prediction:
    """``pred`` with ``evidence["exif_gps"] = {"lat", "lon"}`` when its photo's EXIF carries a position."""
    found = exif_gps(source)
    if found is not None:
        pred.evidence["exif_gps"] = {"lat": found[0], "lon": found[1]}
    return pred
