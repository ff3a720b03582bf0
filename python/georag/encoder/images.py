"""Safe image decoding: untrusted bytes or paths -> a fully loaded RGB PIL image, or an ImageLoadError.

Rules, in order:
- only photo formats are probed (``PHOTO_FORMATS``); anything else is "not an image";
- Pillow's decompression-bomb limit ``Image.MAX_IMAGE_PIXELS`` is never changed or disabled, and an image
  over it is rejected from its header, before any pixel is decoded. Pillow raises above twice the limit and
  only *warns* above it; both are rejections here, and the warning is turned into the rejection rather
  than escaping as a warning;
- the pixels are decoded completely (``load()``), so a truncated file fails here, not later;
- the EXIF orientation is applied; animated files (GIF, MPO) give their first frame;
- every pixel mode ends as 8-bit RGB (see ``to_rgb``): transparency is composited on WHITE, the same
  choice as transformers' ``convert_to_rgb``, so that a checkpoint sees what it saw in training;
- decoded pixels are bounded (the same rule for `georag locate`, store builds and both serving fronts): a
  JPEG is decoded reduced (Pillow's ``draft``: 1/2, 1/4 or 1/8 scale) while both its sides stay at least
  `DRAFT_SIDE`, an image that still decodes to more than `MAX_DECODE_PIXELS` is refused from its header,
  and the decodes running at once in this process hold at most `DECODE_BUDGET_PIXELS` between them (a
  decode waits for room; `decoding` holds its share until the caller is done with the image). After a
  large decode the freed memory is handed back to the operating system (glibc's ``malloc_trim``).
"""

from __future__ import annotations

import ctypes
import io
import logging
import os
import re
import stat
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from typing import BinaryIO, TypeAlias

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from georag.errors import GeoRagError, ImageLoadError

logger = logging.getLogger(__name__)

ImageSource: TypeAlias = "str | os.PathLike[str] | bytes | BinaryIO"
"""What ``load_image`` accepts: a path, the encoded bytes, or a binary file object."""

PHOTO_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "TIFF", "BMP", "GIF")
"""Pillow format names probed when opening; every other Pillow plugin is never tried. MPO (multi-picture
JPEG, from phones and 3D cameras) has no opener of its own: the JPEG one returns it, so it is included,
and naming "MPO" here would make ``Image.open`` fail with a KeyError."""

_HIGH_DEPTH_GRAY = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I", "F"})
_BOMB_PIXELS = re.compile(r"\((\d+) pixels\)")

# warnings.catch_warnings mutates process-wide state and is not thread-safe: every use of it here goes
# through this lock. It only covers Image.open, which reads the header, so decoding stays parallel.
_OPEN_LOCK = threading.Lock()

PIXELS_ENV = "GEORAG_MAX_IMAGE_PIXELS"
"""Environment variable overriding `MAX_DECODE_PIXELS` (a whole number of pixels)."""
DRAFT_SIDE = 1536
"""A JPEG is decoded at 1/2, 1/4 or 1/8 scale as long as both its sides stay at least this many pixels
(default 1536: the long side the LLM gets, four times SigLIP's 384)."""
TRIM_PIXELS = 4_000_000
"""Decodes of at least this many pixels hand freed memory back to the OS when they end (default 4 MP)."""


def _env_pixels(default: int) -> int:
    raw = os.environ.get(PIXELS_ENV, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ImageLoadError(f"{PIXELS_ENV} must be a whole number of pixels >= 1, got {raw!r}")
    return value


MAX_DECODE_PIXELS = _env_pixels(40_000_000)
"""Most pixels one image may decode to, after a JPEG's reduced decode (default 40 MP, about 160 MB of
decoded RGB; `PIXELS_ENV` overrides it). Larger images are refused from their header, nothing decoded."""
DECODE_BUDGET_PIXELS = 2 * MAX_DECODE_PIXELS
"""Most pixels the decodes running at once in this process hold between them (default twice
`MAX_DECODE_PIXELS`); a decode that does not fit waits for the others to end."""


class DecodeWaitTimeout(GeoRagError):
    """A decode waited longer than it was allowed for room in the process's pixel budget (the server is
    busy decoding other images; not a fault of the image)."""


class PixelBudget:
    """The decoded pixels held at once across the threads of a process; `hold` waits for room."""

    def __init__(self, total: int) -> None:
        if total < 1:
            raise ValueError(f"a pixel budget must be >= 1, got {total}")
        self.total = total
        self._used = 0
        self._room = threading.Condition()

    @property
    def used(self) -> int:
        """Pixels held right now."""
        return self._used

    @contextmanager
    def hold(self, pixels: int, wait_s: float | None = None) -> Iterator[None]:
        """Holds ``pixels`` (at most the whole budget) for the block, waiting up to ``wait_s`` (None: as
        long as it takes) for room; DecodeWaitTimeout when none came in time."""
        wanted = min(max(pixels, 0), self.total)
        end = None if wait_s is None else time.monotonic() + max(wait_s, 0.0)
        with self._room:
            while self._used + wanted > self.total:
                left = None if end is None else end - time.monotonic()
                if left is not None and left <= 0:
                    raise DecodeWaitTimeout(
                        f"no room to decode {pixels / 1e6:.1f} MP: other images hold "
                        f"{self._used / 1e6:.1f} of {self.total / 1e6:.1f} MP"
                    )
                self._room.wait(left)
            self._used += wanted
        try:
            yield
        finally:
            with self._room:
                self._used -= wanted
                self._room.notify_all()


PROCESS_BUDGET = PixelBudget(DECODE_BUDGET_PIXELS)
"""The budget every decode of this process shares (`DECODE_BUDGET_PIXELS`)."""


def load_image(src: ImageSource) -> Image.Image:
    """Decode ``src`` into a fully loaded RGB image; every failure is an ``ImageLoadError``.

    The decode holds its share of `PROCESS_BUDGET` while it runs (not while the caller uses the image:
    `decoding` holds it until then)."""
    with decoding(src) as image:
        return image


@contextmanager
def decoding(
    src: ImageSource, *, budget: PixelBudget = PROCESS_BUDGET, wait_s: float | None = None
) -> Iterator[Image.Image]:
    """`load_image`'s RGB image, its pixels counted against ``budget`` until the block ends (then large
    decodes return their memory to the OS). ``wait_s``: how long to wait for room in the budget
    (DecodeWaitTimeout past it; None: as long as it takes). ImageLoadError for a bad or too large image."""
    fp, label = _as_openable(src)
    image = _open_checked(fp, label)
    pixels = 0
    try:
        pixels = _reduced_pixels(image, label)
        with budget.hold(pixels, wait_s):
            decoded = _decode(image, label)
            image.close()
            yield decoded
            del decoded
    finally:
        image.close()
        if pixels >= TRIM_PIXELS:
            return_memory()


def _reduced_pixels(image: Image.Image, label: str) -> int:
    """Sets a JPEG to decode reduced (see `DRAFT_SIDE`); the pixels it will decode to, ImageLoadError
    past `MAX_DECODE_PIXELS`."""
    if image.format in ("JPEG", "MPO") and min(image.size) >= 2 * DRAFT_SIDE:
        try:
            image.draft(None, (DRAFT_SIDE, DRAFT_SIDE))
        except Exception as exc:  # a decoder that cannot scale decodes at full size, checked below
            logger.debug("no reduced decode%s: %s", label, exc)
    width, height = image.size
    pixels = width * height
    if pixels > MAX_DECODE_PIXELS:
        raise ImageLoadError(
            f"the image is {width}x{height} ({pixels / 1e6:.1f} MP) and decodes to more than the "
            f"{MAX_DECODE_PIXELS / 1e6:g} MP allowed{label}; send it downscaled (or as a JPEG, which is "
            "decoded reduced)"
        )
    return pixels


def _decode(image: Image.Image, label: str) -> Image.Image:
    """The opened ``image`` fully decoded, oriented and converted to RGB (a new image)."""
    fmt = image.format or "image"
    try:
        image.load()  # for GIF/MPO this is the first frame: the file opens positioned on it
    except Image.DecompressionBombError as exc:
        raise ImageLoadError(_bomb_message(exc, label)) from exc
    except MemoryError as exc:
        raise ImageLoadError(f"out of memory decoding {fmt}{label}") from exc
    except Exception as exc:  # decoders raise OSError, SyntaxError, ValueError, EOFError, ...
        raise ImageLoadError(f"truncated or corrupt {fmt}{label}: {exc}") from exc
    oriented = _exif_transpose(image, label)
    try:
        rgb = to_rgb(oriented)
    except (OSError, ValueError) as exc:
        raise ImageLoadError(f"cannot convert {fmt} pixel mode {oriented.mode!r} to RGB{label}") from exc
    return rgb.copy() if rgb is image else rgb  # never hand out the image the caller closes


def return_memory() -> None:
    """Hands memory freed by large decodes back to the OS (glibc's ``malloc_trim``; nothing elsewhere):
    a freed decode buffer otherwise stays in the process's heap."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        trim: Callable[[int], int] = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow pixel mode to 8-bit RGB (a new image unless it already is plain RGB).

    - alpha (LA, RGBA, PA, premultiplied La/RGBa) and palette/tRNS transparency (P, L, RGB with a
      ``transparency`` entry) are converted to RGBA, then composited on an opaque white background;
    - CMYK, YCbCr, L, 1 and P use Pillow's own conversion (no ICC colour management, like transformers);
    - 16-bit grayscale (I;16 and friends) is scaled to 8 bits (value / 257), not clipped at 255 as
      Pillow's ``convert`` would do (that turns nearly every 16-bit photo white); 32-bit integer ``I``
      is read as 8-bit when its maximum is <= 255 and as 16-bit (clipped to 0..65535) otherwise;
      float ``F`` is read as 0..1 when all values are in [0, 1] and as 0..255 (clipped) otherwise.
    """
    if image.mode == "RGB" and "transparency" not in image.info:
        return image
    if image.mode in _HIGH_DEPTH_GRAY:
        return Image.fromarray(_gray_to_uint8(np.asarray(image), image.mode)).convert("RGB")
    if any(band in ("A", "a") for band in image.getbands()) or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def _gray_to_uint8(values: np.ndarray, mode: str) -> np.ndarray:
    """Map a 16-bit, 32-bit integer or float grayscale array onto 0..255 (rules in ``to_rgb``)."""
    if mode == "F":
        data = values.astype(np.float64)
        finite = np.nan_to_num(data, nan=0.0, posinf=255.0, neginf=0.0)
        if finite.size and finite.min() >= 0.0 and finite.max() <= 1.0:
            finite = finite * 255.0
        return np.clip(np.rint(finite), 0, 255).astype(np.uint8)
    data = values.astype(np.int64)
    if mode == "I" and (data.size == 0 or data.max() <= 255):
        return np.clip(data, 0, 255).astype(np.uint8)
    sixteen = np.clip(data, 0, 65535)
    return ((sixteen + 128) // 257).astype(np.uint8)


def _as_openable(src: ImageSource) -> tuple[str | BinaryIO, str]:
    """What to hand to ``Image.open`` and a label for messages (' (path)' or '')."""
    if isinstance(src, (bytes, bytearray, memoryview)):
        return io.BytesIO(bytes(src)), ""
    if isinstance(src, (str, os.PathLike)):
        path = os.fspath(src)
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        _check_regular(path)
        return path, f" ({path})"
    if hasattr(src, "read"):
        return src, ""
    kind = type(src).__name__
    raise ImageLoadError(f"not an image source: expected a path, bytes or a binary file, got {kind}")


def _check_regular(path: str) -> None:
    """ImageLoadError unless ``path`` is a regular file: opening a FIFO would wait for a writer forever,
    and a device or socket is no photo (a missing file is left to the open, which says so)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return
    if stat.S_ISDIR(mode):
        raise ImageLoadError(f"is a directory, not an image file ({path})")
    if not stat.S_ISREG(mode):
        kind = "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
        raise ImageLoadError(f"is {kind}, not a regular file ({path})")


def _open_checked(fp: str | BinaryIO, label: str) -> Image.Image:
    """``Image.open`` restricted to photo formats, with the bomb warning raised as a rejection."""
    try:
        with _OPEN_LOCK, warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(fp, formats=list(PHOTO_FORMATS))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageLoadError(_bomb_message(exc, label)) from exc
    except FileNotFoundError as exc:
        raise ImageLoadError(f"file not found{label}") from exc
    except IsADirectoryError as exc:
        raise ImageLoadError(f"is a directory, not an image file{label}") from exc
    except PermissionError as exc:
        raise ImageLoadError(f"permission denied{label}") from exc
    except UnidentifiedImageError as exc:
        raise ImageLoadError(f"not an image (or not a supported photo format){label}") from exc
    except Exception as exc:  # a plugin choking on a malformed header: any exception type is possible
        raise ImageLoadError(f"corrupt image header{label}: {type(exc).__name__}: {exc}") from exc
    limit = Image.MAX_IMAGE_PIXELS
    pixels = image.width * image.height
    if limit is not None and pixels > limit:  # belt and braces: the filter above already raised
        image.close()
        raise ImageLoadError(f"decompression bomb: {pixels} pixels exceeds the limit {limit}{label}")
    return image


def _bomb_message(exc: Exception, label: str) -> str:
    """The rejection message for a Pillow decompression-bomb error or warning."""
    found = _BOMB_PIXELS.search(str(exc))
    pixels = found.group(1) if found else "too many"
    return f"decompression bomb: {pixels} pixels exceeds the limit {Image.MAX_IMAGE_PIXELS}{label}"


def _exif_transpose(image: Image.Image, label: str) -> Image.Image:
    """Apply the EXIF orientation; a corrupt EXIF block leaves the image as stored (logged, not fatal)."""
    try:
        return ImageOps.exif_transpose(image)
    except Exception as exc:  # EXIF parsing of untrusted data can fail in many ways
        logger.debug("ignoring unreadable EXIF orientation%s: %s", label, exc)
        return image
