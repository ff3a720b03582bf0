"""Tests the decoded-pixel bounds of georag.encoder.images: JPEGs decoded reduced, images that would decode
too large refused from their header, decodes sharing a per-process budget, memory handed back after a
burst (measured in a subprocess of its own, with a smaller budget so that it runs quickly)."""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from georag.encoder.images import (
    DRAFT_SIDE,
    MAX_DECODE_PIXELS,
    PIXELS_ENV,
    DecodeWaitTimeout,
    PixelBudget,
    decoding,
    load_image,
)
from georag.errors import ImageLoadError
from georag.llm.image import MAX_SIDE, llm_photo


def big_png(width: int, height: int) -> bytes:
    """A valid all-black 1-bit PNG of any size, written streaming (never holds its pixels): a file of a
    few hundred KiB that would decode to ``width * height`` pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" * (1 + (width + 7) // 8)
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def big_jpeg(width: int, height: int) -> bytes:
    """A smooth JPEG of ``width x height`` (a gradient: small, and its reduced decode is checkable)."""
    x = np.linspace(0, 255, width, dtype=np.float32)
    y = np.linspace(0, 255, height, dtype=np.float32)
    shape = (height, width)
    planes = [np.broadcast_to(x[None], shape), np.broadcast_to(y[:, None], shape), np.full(shape, 128.0)]
    pixels = np.stack(planes, axis=-1).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=85)
    return out.getvalue()


def test_a_large_jpeg_is_decoded_reduced_and_a_small_one_whole() -> None:
    image = load_image(big_jpeg(6400, 4000))
    # 1/2 scale keeps both sides >= DRAFT_SIDE (3200 x 2000); 1/4 would not (1600 x 1000).
    assert image.mode == "RGB" and image.size == (3200, 2000)
    assert min(image.size) >= DRAFT_SIDE
    mean = np.asarray(image, dtype=np.float32).mean(axis=(0, 1))
    assert abs(mean[0] - 127.5) < 3 and abs(mean[2] - 128) < 3  # the same picture, smaller
    assert load_image(big_jpeg(3000, 2000)).size == (3000, 2000)  # under 2 x DRAFT_SIDE: whole


def test_an_image_decoding_past_the_budget_is_refused_from_its_header() -> None:
    width = height = 9000  # 81 MP: under Pillow's bomb limit, over MAX_DECODE_PIXELS
    assert width * height > MAX_DECODE_PIXELS
    data = big_png(width, height)
    assert len(data) < 1 << 20
    start = time.monotonic()
    with pytest.raises(ImageLoadError, match=r"the image is 9000x9000 \(81\.0 MP\) and decodes to more than"):
        load_image(data)
    assert time.monotonic() - start < 1.0  # nothing decoded
    with pytest.raises(ImageLoadError, match="send it downscaled"):
        llm_photo(data + b"\0" * (5 << 20))  # the LLM's copy is decoded by the same rule


def test_the_llm_copy_comes_from_the_same_decode() -> None:
    data = big_jpeg(6400, 4000) + b"\0" * (5 << 20)  # over the size sent as it is
    with decoding(data) as image:
        photo = llm_photo(data, image)
        assert image.size == (3200, 2000)  # the caller's image is left as it was
    assert photo.mime == "image/jpeg"
    assert Image.open(io.BytesIO(photo.data)).size == (MAX_SIDE, 960)
    assert llm_photo(data).data == photo.data


def test_decodes_wait_for_room_in_the_budget() -> None:
    budget = PixelBudget(100)
    order: list[str] = []
    with budget.hold(70):
        assert budget.used == 70
        with pytest.raises(DecodeWaitTimeout, match="other images hold"), budget.hold(40, wait_s=0.05):
            pass

        def later() -> None:
            with budget.hold(40, wait_s=5.0):
                order.append("second")

        thread = threading.Thread(target=later)
        thread.start()
        time.sleep(0.1)
        order.append("first ends")
    thread.join(5.0)
    assert order == ["first ends", "second"] and budget.used == 0
    with budget.hold(10**9, wait_s=0):  # more than the whole budget: takes all of it, alone
        assert budget.used == 100


_BURST = """
import io, json, sys
from concurrent.futures import ThreadPoolExecutor
from PIL import Image
from georag.encoder import images
from georag.encoder.preprocess import ProcessorSpec

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) // 1024

out = io.BytesIO()
Image.new("RGB", (4000, 2500), (10, 200, 30)).save(out, "PNG")
data = out.getvalue()
spec = ProcessorSpec.for_siglip(64)
base = status("VmRSS")

def one(_):
    with images.decoding(data) as image:
        return spec(image).shape

with ThreadPoolExecutor(8) as pool:
    shapes = set(pool.map(one, range(16)))
print(json.dumps({"budget": images.DECODE_BUDGET_PIXELS, "peak": status("VmHWM") - base,
                  "after": status("VmRSS") - base, "shapes": [list(s) for s in shapes]}))
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc (Linux)")
def test_a_burst_of_large_decodes_stays_in_the_budget_and_returns_its_memory() -> None:
    """16 decodes of a 10 MP PNG on 8 threads, with a 12 MP limit per image (24 MP budget): two decode at a
    time. Measured here: peak +180 MB, +7 MB after; without the budget +590 MB peak; without handing the
    memory back, +125 MB after."""
    env = {**os.environ, PIXELS_ENV: "12000000"}  # georag as this test process imports it
    run = subprocess.run(
        [sys.executable, "-c", _BURST], capture_output=True, text=True, env=env, timeout=120, check=False
    )
    assert run.returncode == 0, run.stderr
    found = json.loads(run.stdout.strip().splitlines()[-1])
    assert found["budget"] == 24_000_000 and found["shapes"] == [[3, 64, 64]]
    assert found["peak"] < 400, found  # 2 x (40 MB decoded + the RGB copies); 8 at once would pass 600
    assert found["after"] < 60, found
    refused = subprocess.run(
        [sys.executable, "-c", "from georag.encoder import images"],
        capture_output=True,
        text=True,
        env={**env, PIXELS_ENV: "lots"},
        timeout=60,
        check=False,
    )
    assert refused.returncode != 0 and f"{PIXELS_ENV} must be a whole number of pixels" in refused.stderr
