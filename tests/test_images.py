"""Tests for georag.encoder.images: safe decoding of untrusted image inputs into RGB."""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile, features

from georag.encoder.images import load_image, to_rgb
from georag.errors import GeoRagError, ImageLoadError


def _noise(width: int = 96, height: int = 64, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def _solid(mode: str, color: object, size: tuple[int, int] = (32, 24)) -> Image.Image:
    return Image.new(mode, size, color)  # type: ignore[arg-type]


def _bilevel_png(path: Path, width: int, height: int) -> None:
    """Write a valid all-black 1-bit PNG of any size, streaming: never holds the pixels in memory."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed bits
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


def _pixel(image: Image.Image, xy: tuple[int, int]) -> np.ndarray:
    return np.asarray(image, dtype=np.int32)[xy[1], xy[0]]


def test_jpeg_path_gives_loaded_rgb(tmp_path: Path) -> None:
    path = tmp_path / "a.jpg"
    _noise().save(path, quality=95)
    image = load_image(path)
    assert image.mode == "RGB" and image.size == (96, 64)
    assert getattr(image, "fp", None) is None  # detached from the file
    same = load_image(str(path))
    assert np.array_equal(np.asarray(image), np.asarray(same))


def test_bytes_and_file_objects(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    _noise().save(path)
    expected = np.asarray(_noise())
    data = path.read_bytes()
    assert np.array_equal(np.asarray(load_image(data)), expected)
    assert np.array_equal(np.asarray(load_image(io.BytesIO(data))), expected)
    with path.open("rb") as fh:
        assert np.array_equal(np.asarray(load_image(fh)), expected)


@pytest.mark.parametrize("fmt", ["PNG", "BMP", "TIFF", "WEBP"])
def test_other_photo_formats(tmp_path: Path, fmt: str) -> None:
    if fmt == "WEBP" and not features.check("webp"):
        pytest.skip("Pillow built without WebP")
    buf = io.BytesIO()
    _noise().save(buf, format=fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    assert np.array_equal(np.asarray(load_image(buf.getvalue())), np.asarray(_noise()))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ImageLoadError, match="file not found"):
        load_image(tmp_path / "nope.jpg")


def test_text_file_named_jpg(tmp_path: Path) -> None:
    path = tmp_path / "fake.jpg"
    path.write_text("this is not a picture\n" * 10)
    with pytest.raises(ImageLoadError, match=r"not an image \(or not a supported photo format\)"):
        load_image(path)


def test_non_photo_format_is_refused(tmp_path: Path) -> None:
    buf = io.BytesIO()
    _noise().save(buf, format="PPM")  # a format Pillow reads, but not a photo format
    with pytest.raises(ImageLoadError, match="not an image"):
        load_image(buf.getvalue())


def test_truncated_jpeg(tmp_path: Path) -> None:
    buf = io.BytesIO()
    _noise(256, 256).save(buf, format="JPEG", quality=95)
    path = tmp_path / "cut.jpg"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(ImageLoadError, match="truncated or corrupt JPEG") as info:
        load_image(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, GeoRagError)


def test_not_a_source_type() -> None:
    with pytest.raises(ImageLoadError, match="not an image source"):
        load_image(123)  # type: ignore[arg-type]


def test_decompression_bomb_is_rejected_before_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "bomb.png"
    _bilevel_png(path, 20000, 20000)
    assert path.stat().st_size < 200_000  # tiny file, 400 megapixels
    limit = Image.MAX_IMAGE_PIXELS
    decoded: list[object] = []
    real_load = ImageFile.ImageFile.load

    def spy(self: ImageFile.ImageFile) -> object:
        decoded.append(self)
        return real_load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
    with pytest.raises(
        ImageLoadError, match=f"decompression bomb: 400000000 pixels exceeds the limit {limit}"
    ):
        load_image(path)
    assert decoded == []
    assert limit == Image.MAX_IMAGE_PIXELS  # never disabled or changed


def test_bomb_warning_range_is_a_rejection_not_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    _bilevel_png(path, 10000, 10000)  # over the limit, under twice the limit: Pillow only warns
    assert Image.MAX_IMAGE_PIXELS is not None
    assert Image.MAX_IMAGE_PIXELS < 10000 * 10000 < 2 * Image.MAX_IMAGE_PIXELS
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # what a user's default filters would show
        with pytest.raises(ImageLoadError, match="decompression bomb: 100000000 pixels"):
            load_image(path)
    assert caught == []


def test_cmyk_jpeg(tmp_path: Path) -> None:
    path = tmp_path / "cmyk.jpg"
    _solid("CMYK", (0, 255, 255, 0)).save(path, quality=95)  # no cyan, full magenta + yellow = red
    with Image.open(path) as raw:
        assert raw.mode == "CMYK"
    image = load_image(path)
    assert image.mode == "RGB"
    assert np.abs(_pixel(image, (5, 5)) - [255, 0, 0]).max() <= 3


def test_grayscale_jpeg(tmp_path: Path) -> None:
    path = tmp_path / "gray.jpg"
    _solid("L", 100).save(path, quality=95)
    image = load_image(path)
    assert image.mode == "RGB"
    assert np.abs(_pixel(image, (3, 3)) - 100).max() <= 2


def test_16bit_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    values = np.array([[0, 257, 32896], [65535, 1000, 40000]], dtype=np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    with Image.open(path) as raw:
        assert raw.mode.startswith("I")
    image = load_image(path)
    assert image.mode == "RGB"
    expected = np.rint(values / 257.0).astype(np.int32)
    assert np.array_equal(np.asarray(image, dtype=np.int32)[..., 0], expected)
    assert np.array_equal(np.asarray(image)[..., 0], np.asarray(image)[..., 2])


def test_int32_and_float_gray_modes() -> None:
    small = Image.fromarray(np.array([[0, 128, 255]], dtype=np.int32))
    assert small.mode == "I"
    assert np.asarray(to_rgb(small))[0, :, 0].tolist() == [0, 128, 255]
    wide = Image.fromarray(np.array([[0, 65535, 70000]], dtype=np.int32))
    assert np.asarray(to_rgb(wide))[0, :, 0].tolist() == [0, 255, 255]
    unit = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32))
    assert unit.mode == "F"
    assert np.asarray(to_rgb(unit))[0, :, 0].tolist() == [0, 128, 255]
    byte_range = Image.fromarray(np.array([[-5.0, 100.0, 300.0]], dtype=np.float32))
    assert np.asarray(to_rgb(byte_range))[0, :, 0].tolist() == [0, 100, 255]


def test_palette_png_with_transparency_composited_on_white(tmp_path: Path) -> None:
    image = Image.new("P", (8, 4), 0)
    image.putpalette([255, 0, 0, 0, 0, 255] + [0, 0, 0] * 254)
    image.paste(1, (4, 0, 8, 4))  # right half blue, left half index 0 = transparent red
    path = tmp_path / "pal.png"
    image.save(path, transparency=0)
    rgb = load_image(path)
    assert _pixel(rgb, (1, 1)).tolist() == [255, 255, 255]
    assert _pixel(rgb, (6, 1)).tolist() == [0, 0, 255]


def test_rgba_and_la_pngs_composited_on_white(tmp_path: Path) -> None:
    pixels = np.zeros((2, 3, 4), dtype=np.uint8)
    pixels[:, 0] = [255, 0, 0, 0]  # fully transparent red -> white
    pixels[:, 1] = [0, 0, 255, 255]  # opaque blue
    pixels[:, 2] = [0, 0, 0, 128]  # half-transparent black -> mid gray
    path = tmp_path / "rgba.png"
    Image.fromarray(pixels, "RGBA").save(path)
    rgb = np.asarray(load_image(path), dtype=np.int32)
    assert rgb[0, 0].tolist() == [255, 255, 255]
    assert rgb[0, 1].tolist() == [0, 0, 255]
    assert np.abs(rgb[0, 2] - 127).max() <= 1
    path_la = tmp_path / "la.png"
    Image.fromarray(np.array([[[10, 0], [10, 255]]], dtype=np.uint8), "LA").save(path_la)
    gray = np.asarray(load_image(path_la), dtype=np.int32)
    assert gray[0, 0].tolist() == [255, 255, 255] and gray[0, 1].tolist() == [10, 10, 10]


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    stored = Image.new("RGB", (40, 20), (0, 200, 0))
    stored.paste((255, 0, 0), (0, 0, 8, 8))  # red block at the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6  # display = stored rotated 90 degrees clockwise
    path = tmp_path / "rotated.jpg"
    stored.save(path, quality=95, exif=exif)
    image = load_image(path)
    assert image.size == (20, 40)  # transposed
    red, green = np.array([255, 0, 0]), np.array([0, 200, 0])
    assert np.abs(_pixel(image, (16, 3)) - red).max() <= 12  # top-left went to the top-right
    assert np.abs(_pixel(image, (3, 3)) - green).max() <= 12
    assert np.abs(_pixel(image, (3, 36)) - green).max() <= 12


def test_gif_first_frame(tmp_path: Path) -> None:
    frames = [_solid("RGB", (255, 0, 0)), _solid("RGB", (0, 0, 255))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)
    image = load_image(path)
    assert image.mode == "RGB" and image.size == (32, 24)
    assert _pixel(image, (4, 4)).tolist() == [255, 0, 0]


def test_mpo_first_picture(tmp_path: Path) -> None:
    path = tmp_path / "pair.mpo"
    first, second = _solid("RGB", (255, 0, 0)), _solid("RGB", (0, 0, 255))
    first.save(path, format="MPO", save_all=True, append_images=[second], quality=95)
    with Image.open(path) as raw:
        assert raw.format == "MPO" and getattr(raw, "n_frames", 1) == 2
    image = load_image(path)
    assert np.abs(_pixel(image, (4, 4)) - [255, 0, 0]).max() <= 3
