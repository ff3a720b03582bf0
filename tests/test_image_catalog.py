"""Tests for georag.store.image_catalog: finding images by name in a folder or in tar shards."""

from __future__ import annotations

import gzip
import io
import tarfile
import threading
from pathlib import Path

import pytest
from PIL import Image

from georag.encoder.images import load_image
from georag.errors import DatasetError, ImageLoadError
from georag.store.image_catalog import FolderCatalog, ImageRef, TarCatalog, open_catalog

SHARED_IMAGES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "im2gps3k" / "images"


def _shared_images(n: int) -> list[Path]:
    if not SHARED_IMAGES.is_dir():
        pytest.skip(f"needs the shared IM2GPS3k images at {SHARED_IMAGES}")
    return sorted(SHARED_IMAGES.glob("*.jpg"))[:n]


def _png(color: tuple[int, int, int], size: tuple[int, int] = (8, 6)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, format="PNG")
    return out.getvalue()


def _tar(path: Path, members: dict[str, bytes], *, fmt: int = tarfile.PAX_FORMAT) -> Path:
    with tarfile.open(path, "w", format=fmt) as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


# --- folders --------------------------------------------------------------------------------------------


def test_folder_of_real_images_loads_as_paths_pillow_opens() -> None:
    images = _shared_images(5)
    catalog = open_catalog([SHARED_IMAGES])
    assert isinstance(catalog, FolderCatalog)
    assert catalog.describe() == f"folder {SHARED_IMAGES} ({len(list(SHARED_IMAGES.iterdir()))} files)"
    for path in images:
        ref = catalog.locate(path.name)
        assert ref is not None
        loaded = ref.load()
        assert isinstance(loaded, Path) and loaded == SHARED_IMAGES / path.name
        assert loaded.read_bytes() == path.read_bytes()
        with Image.open(loaded) as image:
            assert image.format == "JPEG"
        assert load_image(loaded).mode == "RGB"  # what georag's encoder does with it
    assert catalog.locate("no_such_image.jpg") is None


def test_folder_nested_names_and_non_files(tmp_path: Path) -> None:
    (tmp_path / "e0" / "9a").mkdir(parents=True)
    (tmp_path / "e0" / "9a" / "123.jpg").write_bytes(b"x")
    (tmp_path / "dir.jpg").mkdir()
    catalog = FolderCatalog(tmp_path)
    ref = catalog.locate("e0/9a/123.jpg")
    assert ref == ImageRef(tmp_path / "e0" / "9a" / "123.jpg")
    assert catalog.locate("./e0/9a/123.jpg") == ref
    assert catalog.locate("e0/9a") is None  # a folder is not an image
    assert catalog.locate("dir.jpg") is None
    assert catalog.locate("") is None
    assert catalog.describe() == f"folder {tmp_path} (0 files, 2 subfolders)"


def test_folder_refuses_names_that_escape(tmp_path: Path) -> None:
    root = tmp_path / "images"
    (root / "sub").mkdir(parents=True)
    (root / "inside.jpg").write_bytes(b"in")
    (tmp_path / "secret.jpg").write_bytes(b"out")
    catalog = FolderCatalog(root)
    assert catalog.locate("inside.jpg") is not None
    for name in (
        "../secret.jpg",
        "sub/../../secret.jpg",
        "sub/../inside.jpg",  # stays inside, but any ".." is refused rather than reasoned about
        str(tmp_path / "secret.jpg"),
        "/etc/passwd",
        "..\\secret.jpg",
        "inside.jpg\x00.png",
        "C:/secret.jpg",
    ):
        assert catalog.locate(name) is None, name


# --- tar shards -----------------------------------------------------------------------------------------


def test_tar_shards_match_by_key_and_bytes_equal_originals(tmp_path: Path) -> None:
    red, green, blue, grey = _png((255, 0, 0)), _png((0, 255, 0)), _png((0, 0, 255)), _png((9, 9, 9))
    _tar(
        tmp_path / "shard-000.tar",
        {
            "./e0/9a/111.jpg": red,
            "e0/9a/111.json": b'{"lat": 1}',
            "222.PNG": green,
            "notes.txt": b"hello",
        },
    )
    _tar(
        tmp_path / "shard-001.tar",
        {"a/333.webp": blue, "b/333.jpeg": grey, "x/444.jpg": grey, "444.cls": b"3"},
        fmt=tarfile.GNU_FORMAT,
    )
    catalog = open_catalog([tmp_path / "shard-000.tar", tmp_path / "shard-001.tar"])
    assert isinstance(catalog, TarCatalog) and len(catalog) == 5
    assert catalog.describe().startswith("2 tar shards (5 images")

    def load(name: str) -> bytes | Path | None:
        ref = catalog.locate(name)
        return None if ref is None else ref.load()

    assert load("e0/9a/111.jpg") == red  # full key, "./" dropped
    assert load("e0/9a/111.png") == red  # the image extension is not part of the key
    assert load("111.jpg") == red  # unique basename fallback
    assert load("222.png") == green and load("222") == green
    assert load("a/333.jpg") == blue and load("b/333.jpg") == grey
    assert load("333.jpg") is None  # basename shared by two members: ambiguous
    assert load("444.jpg") == grey
    assert load("e0/9a/111.json") is None and load("notes.txt") is None and load("notes") is None
    assert load("missing.jpg") is None
    ref = catalog.locate("a/333.jpg")
    assert ref is not None and ref.path == tmp_path / "shard-001.tar" and ref.member == "a/333.webp"
    assert Image.open(io.BytesIO(blue)).getpixel((0, 0)) == (0, 0, 255)
    decoded = load_image(ref.load())
    assert decoded.getpixel((0, 0)) == (0, 0, 255)


def test_tar_of_real_images_round_trips_bytes(tmp_path: Path) -> None:
    images = _shared_images(6)
    shards = tmp_path / "shards"
    shards.mkdir()
    # Written in reverse name order so that the folder's sorted order differs from creation order.
    for index, chunk in reversed(list(enumerate([images[:3], images[3:]]))):
        _tar(shards / f"part-{index:03d}.tar", {f"{index}/{p.name}": p.read_bytes() for p in chunk})
    catalog = open_catalog([shards])
    assert isinstance(catalog, TarCatalog)
    assert [p.name for p in catalog.shards] == ["part-000.tar", "part-001.tar"]
    for path in images:
        ref = catalog.locate(path.name)
        assert ref is not None
        data = ref.load()
        assert isinstance(data, bytes) and data == path.read_bytes()
        with Image.open(io.BytesIO(data)) as image:
            assert image.format == "JPEG"


def test_tar_loads_are_thread_safe(tmp_path: Path) -> None:
    payloads = {f"{i:04d}.png": _png((i % 256, i // 256, 7)) for i in range(200)}
    catalog = TarCatalog([_tar(tmp_path / "s.tar", payloads)])
    errors: list[str] = []

    def worker(offset: int) -> None:
        for i in range(offset, offset + 200):
            name = f"{i % 200:04d}.png"
            ref = catalog.locate(name)
            if ref is None or ref.load() != payloads[name]:
                errors.append(name)

    threads = [threading.Thread(target=worker, args=(k * 37,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_truncated_shard_fails_on_load(tmp_path: Path) -> None:
    shard = _tar(tmp_path / "s.tar", {"a.jpg": b"A" * 5000})
    catalog = TarCatalog([shard])
    ref = catalog.locate("a.jpg")
    assert ref is not None
    shard.write_bytes(shard.read_bytes()[:2000])
    with pytest.raises(ImageLoadError, match="truncated"):
        ref.load()


def test_compressed_tars_are_refused(tmp_path: Path) -> None:
    plain = _tar(tmp_path / "s.tar", {"a.jpg": b"A"})
    gz = tmp_path / "s.tar.gz"
    gz.write_bytes(gzip.compress(plain.read_bytes()))
    with pytest.raises(DatasetError, match="decompress"):
        open_catalog([gz])
    disguised = tmp_path / "disguised.tar"  # gzip bytes behind a .tar name
    disguised.write_bytes(gz.read_bytes())
    with pytest.raises(DatasetError, match="decompress"):
        open_catalog([disguised])
    folder = tmp_path / "gz_shards"
    folder.mkdir()
    (folder / "s.tgz").write_bytes(gz.read_bytes())
    with pytest.raises(DatasetError, match="decompress"):
        open_catalog([folder])


def test_other_inputs_raise_dataset_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not found"):
        open_catalog([tmp_path / "absent"])
    text = tmp_path / "list.txt"
    text.write_text("not a tar\n")
    with pytest.raises(DatasetError, match="not a tar file"):
        open_catalog([text])
    with pytest.raises(DatasetError, match="no image location"):
        open_catalog([])
    shard = _tar(tmp_path / "s.tar", {"a.jpg": b"A"})
    with pytest.raises(DatasetError, match="folder"):
        open_catalog([tmp_path, shard])


def test_folder_with_other_files_is_an_image_folder(tmp_path: Path) -> None:
    _tar(tmp_path / "s.tar", {"a.jpg": b"A"})
    (tmp_path / "b.jpg").write_bytes(b"B")
    catalog = open_catalog([tmp_path])
    assert isinstance(catalog, FolderCatalog)
    assert catalog.locate("b.jpg") == ImageRef(tmp_path / "b.jpg")
    # A single string is one path, not a sequence of one-letter paths.
    assert isinstance(open_catalog(str(tmp_path)), FolderCatalog)
