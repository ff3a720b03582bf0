"""Tests for georag.encoder.batches: ordered, bounded, failure-tolerant parallel batching."""

from __future__ import annotations

import io
import itertools
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import georag.encoder.batches as batches_module
from georag.encoder.batches import Batch, ItemFailure, iter_batches
from georag.encoder.preprocess import ProcessorSpec

SPEC = ProcessorSpec(height=16, width=16, do_normalize=False)


def _png_bytes(level: int) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (20, 12), level).save(buf, format="PNG")
    return buf.getvalue()


def _levels(batch: Batch) -> list[int]:
    """The gray level each decoded row was made from (PNG is lossless, the resize keeps a flat image)."""
    return [round(float(row.mean()) * 255) for row in batch.pixels]


def test_order_is_preserved_across_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    n = 23
    real_load = batches_module.load_image

    def slow_first(src: bytes) -> Image.Image:
        time.sleep(0.002 * (n - _png_levels[src]))  # early items finish last
        return real_load(src)

    _png_levels = {_png_bytes(i * 10): i for i in range(n)}
    sources = list(_png_levels)
    monkeypatch.setattr(batches_module, "load_image", slow_first)
    out = list(iter_batches(sources, SPEC, 5, workers=4))
    assert [len(b.ids) for b in out] == [5, 5, 5, 5, 3]
    assert [i for b in out for i in b.ids] == [str(i) for i in range(n)]
    assert [lv for b in out for lv in _levels(b)] == [i * 10 for i in range(n)]
    for batch in out:
        assert batch.pixels.dtype == np.float32 and batch.pixels.flags.c_contiguous
        assert batch.pixels.shape[1:] == (3, 16, 16) and batch.failures == []


def test_mixed_good_and_bad_items_with_ids(tmp_path: Path) -> None:
    good = tmp_path / "good.png"
    good.write_bytes(_png_bytes(50))
    text = tmp_path / "text.jpg"
    text.write_text("hello")
    sources = [good, tmp_path / "missing.jpg", _png_bytes(100), text, b"\xff\xd8\xff garbage", good]
    names = ["a", "b", "c", "d", "e", "f"]
    out = list(iter_batches(sources, SPEC, 4, ids=names, workers=2))
    assert len(out) == 2
    assert out[0].ids == ["a", "c"] and _levels(out[0]) == [50, 100]
    assert [f.id for f in out[0].failures] == ["b", "d"]
    assert "file not found" in out[0].failures[0].reason
    assert "not an image" in out[0].failures[1].reason
    assert out[1].ids == ["f"] and [f.id for f in out[1].failures] == ["e"]


def test_default_ids(tmp_path: Path) -> None:
    path = tmp_path / "x.png"
    path.write_bytes(_png_bytes(1))
    out = list(iter_batches([str(path), path, _png_bytes(2), io.BytesIO(_png_bytes(3))], SPEC, 10))
    assert out[0].ids == [str(path), str(path), "2", "3"]


def test_all_bad_batch_is_still_yielded(tmp_path: Path) -> None:
    sources = [b"nope", tmp_path / "missing.png", b"\x89PNG\r\n\x1a\n"]
    (batch,) = iter_batches(sources, SPEC, 8, workers=1)
    assert batch.pixels.shape == (0, 3, 16, 16) and batch.pixels.dtype == np.float32
    assert batch.ids == []
    assert [f.id for f in batch.failures] == ["0", str(tmp_path / "missing.png"), "2"]
    assert all(isinstance(f, ItemFailure) and f.reason for f in batch.failures)


def test_empty_input() -> None:
    assert list(iter_batches([], SPEC, 4)) == []


def test_unexpected_errors_and_size_mismatch_are_item_failures(monkeypatch: pytest.MonkeyPatch) -> None:
    fixed = ProcessorSpec(height=12, width=20, do_resize=False)
    out = list(iter_batches([_png_bytes(1), _png_bytes(2)], fixed, 2))
    assert out[0].pixels.shape == (2, 3, 12, 20)
    wrong = ProcessorSpec(height=16, width=16, do_resize=False)
    (batch,) = iter_batches([_png_bytes(1)], wrong, 2)
    assert "do_resize is off" in batch.failures[0].reason

    def boom(src: object) -> Image.Image:
        raise RuntimeError("kaput")

    monkeypatch.setattr(batches_module, "load_image", boom)
    (batch,) = iter_batches([_png_bytes(1)], SPEC, 2)
    assert batch.failures == [ItemFailure("0", "RuntimeError: kaput")]


def test_read_ahead_is_bounded_and_lazy() -> None:
    pulled = 0
    data = _png_bytes(9)

    def endless() -> Iterator[bytes]:
        nonlocal pulled
        for _ in itertools.count():
            pulled += 1
            yield data

    stream = iter_batches(endless(), SPEC, 3, workers=2, prefetch_batches=2)
    first = next(stream)
    assert len(first.ids) == 3
    assert pulled <= 3 * 2
    for _ in range(4):
        next(stream)
    assert pulled <= 3 * 2 + 4 * 3
    stream.close()  # cancels what is queued, joins the threads


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": -3}, "batch_size"),
        ({"batch_size": 2, "workers": -1}, "workers"),
        ({"batch_size": 2, "prefetch_batches": 0}, "prefetch_batches"),
    ],
)
def test_argument_errors(kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        iter_batches([b""], SPEC, **kwargs)  # raised at the call, before iterating


def test_ids_length_mismatch() -> None:
    with pytest.raises(ValueError, match="fewer"):
        list(iter_batches([_png_bytes(1), _png_bytes(2)], SPEC, 4, ids=["a"]))
    with pytest.raises(ValueError, match="more"):
        list(iter_batches([_png_bytes(1)], SPEC, 4, ids=["a", "b"]))
