"""Image catalogs: find a dataset's image by its relative name in a folder or in uncompressed tar shards."""

from __future__ import annotations

import logging
import os
import stat
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Protocol

from georag.errors import DatasetError, ImageLoadError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".webp")
"""Extensions (any case) that mark a tar member as an image and are ignored when matching names."""

_COMPRESSED_TAR = (".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".tar.zst", ".tar.lz4")
_COMPRESSED_MAGIC = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00", b"\x28\xb5\x2f\xfd", b"\x04\x22\x4d\x18")
_DESCRIBE_SCAN_LIMIT = 100_000
_WHAT_TO_PASS = "pass one folder of images, or one or more uncompressed .tar shards (or a folder of them)"


@dataclass(frozen=True)
class ImageRef:
    """Where one image lives: a file of its own, or ``size`` bytes at ``offset`` inside a tar shard."""

    path: Path
    offset: int | None = None
    size: int | None = None
    member: str | None = None  # the tar member's name, for messages

    def load(self) -> bytes | Path:
        """The file's path (the encoder opens it), or the member's bytes read from its shard now.

        Each call opens the shard itself, so loads from many threads never share a file position.
        """
        if self.offset is None or self.size is None:
            return self.path
        try:
            with self.path.open("rb") as shard:
                shard.seek(self.offset)
                data = shard.read(self.size)
        except OSError as exc:
            raise ImageLoadError(f"cannot read {self.member} from {self.path}: {exc}") from exc
        if len(data) != self.size:
            raise ImageLoadError(
                f"{self.path} ends inside member {self.member} ({len(data)} of {self.size} bytes): "
                "the shard was truncated or changed after it was indexed"
            )
        return data


class ImageCatalog(Protocol):
    """Finds images by the relative name a dataset reader gives them (``image_name``)."""

    def locate(self, image_name: str) -> ImageRef | None:
        """The image called ``image_name``, or None when the catalog does not have it."""
        ...

    def describe(self) -> str:
        """A short human description, for messages ("folder /x (300 files)", "3 tar shards")."""
        ...


class FolderCatalog:
    """Images as files under one folder; ``image_name`` is their path relative to it.

    Nothing is listed up front (a folder may hold millions of files): each lookup is one ``stat``.
    Names that are absolute or climb out with ``..`` are never found. Symbolic links inside the folder
    are followed, since whoever made the folder put them there (e.g. to spread images over disks).
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetError(f"not a folder: {self.root}; {_WHAT_TO_PASS}")

    def locate(self, image_name: str) -> ImageRef | None:
        relative = _safe_relative(image_name)
        if relative is None:
            return None
        path = self.root.joinpath(*relative.parts)
        try:
            info = path.stat()
        except (OSError, ValueError):  # ValueError: an embedded NUL byte
            return None
        return ImageRef(path) if stat.S_ISREG(info.st_mode) else None

    def describe(self) -> str:
        files = folders = 0
        with os.scandir(self.root) as entries:
            for seen, entry in enumerate(entries):
                if seen >= _DESCRIBE_SCAN_LIMIT:
                    return f"folder {self.root} ({_DESCRIBE_SCAN_LIMIT}+ entries)"
                if entry.is_dir():
                    folders += 1
                elif entry.is_file():
                    files += 1
        subfolders = f", {folders} subfolders" if folders else ""
        return f"folder {self.root} ({files} files{subfolders})"

    def __repr__(self) -> str:
        return f"FolderCatalog({str(self.root)!r})"


class TarCatalog:
    """Images inside uncompressed tar shards (WebDataset style), found from one scan of the tar headers.

    A member matches an ``image_name`` when both are equal once an image extension (``IMAGE_EXTENSIONS``,
    any case) is dropped; failing that, when their file names without extension are equal and that
    file name occurs only once across all shards. Members that are not images (.json, .txt, .cls) are
    ignored. Only headers are read when indexing; a lookup reads nothing, a load reads one member.
    """

    def __init__(self, shards: Sequence[str | os.PathLike[str]]) -> None:
        self.shards = [Path(s) for s in shards]
        if not self.shards:
            raise DatasetError(f"no tar shards given; {_WHAT_TO_PASS}")
        # key -> (shard index, data offset, size, member name)
        self._by_key: dict[str, tuple[int, int, int, str]] = {}
        # file name without extension -> the member's key, or None when several members share it
        self._by_stem: dict[str, str | None] = {}
        repeated = 0
        for index, shard in enumerate(self.shards):
            repeated += self._scan(index, shard)
        if repeated:
            log.warning(
                "%d image keys occur more than once in %s; the first is used", repeated, self.describe()
            )
        log.info("indexed %s", self.describe())

    def _scan(self, index: int, shard: Path) -> int:
        """Add the image members of one shard; returns how many repeated an already indexed key."""
        _check_uncompressed_tar(shard)
        repeated = 0
        try:
            with tarfile.open(shard, mode="r:") as archive:
                for member in archive:
                    # Sparse members are not stored as one contiguous byte range.
                    if not member.isreg() or member.sparse is not None:
                        continue
                    key = _image_key(member.name)
                    if key is None:
                        continue
                    if key in self._by_key:
                        repeated += 1
                        continue
                    self._by_key[key] = (index, member.offset_data, member.size, member.name)
                    stem = PurePosixPath(key).name
                    self._by_stem[stem] = None if stem in self._by_stem else key
        except (tarfile.TarError, OSError) as exc:
            raise DatasetError(f"cannot read tar shard {shard}: {exc}; {_WHAT_TO_PASS}") from exc
        return repeated

    def locate(self, image_name: str) -> ImageRef | None:
        key = _image_key(image_name, require_image=False)
        if key is None:
            return None
        found = self._by_key.get(key)
        if found is None:
            by_stem = self._by_stem.get(PurePosixPath(key).name)
            found = self._by_key.get(by_stem) if by_stem is not None else None
        if found is None:
            return None
        index, offset, size, name = found
        return ImageRef(self.shards[index], offset, size, name)

    def __len__(self) -> int:
        return len(self._by_key)

    def describe(self) -> str:
        shards = f"{len(self.shards)} tar shard{'s' if len(self.shards) != 1 else ''}"
        return f"{shards} ({len(self._by_key)} images, first {self.shards[0]})"

    def __repr__(self) -> str:
        return f"TarCatalog({len(self.shards)} shards, {len(self._by_key)} images)"


def open_catalog(paths: Sequence[str | os.PathLike[str]]) -> ImageCatalog:
    """A FolderCatalog for one folder of images, a TarCatalog for .tar shards or a folder holding only them.

    Raises DatasetError for anything else (a missing path, a file that is not a tar, a compressed tar).
    """
    # A lone string is a Sequence too: take it as one path, not as its characters.
    given = [Path(paths)] if isinstance(paths, (str, os.PathLike)) else [Path(p) for p in paths]
    if not given:
        raise DatasetError(f"no image location given; {_WHAT_TO_PASS}")
    for path in given:
        if not path.exists():
            raise DatasetError(f"image location not found: {path}; {_WHAT_TO_PASS}")
    if len(given) == 1 and given[0].is_dir():
        shards = _shard_folder(given[0])
        return TarCatalog(shards) if shards else FolderCatalog(given[0])
    if any(not p.is_file() for p in given):
        raise DatasetError(f"got folders mixed with files or several folders {given}; {_WHAT_TO_PASS}")
    for path in given:
        _check_uncompressed_tar(path)
        if not tarfile.is_tarfile(path):
            raise DatasetError(f"not a tar file: {path}; {_WHAT_TO_PASS}")
    return TarCatalog(given)


def _shard_folder(folder: Path) -> list[Path]:
    """The tar archives in ``folder`` sorted by name, or [] when anything else is there (an image folder).

    Stops at the first entry that is not a tar archive, so an image folder costs one directory read.
    """
    shards: list[Path] = []
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.name.startswith("."):
                continue  # .DS_Store and friends say nothing about what the folder is
            lowered = entry.name.lower()
            if not entry.is_file() or not lowered.endswith((".tar", *_COMPRESSED_TAR)):
                return []
            shards.append(Path(entry.path))
    return sorted(shards, key=lambda p: p.name)


def _check_uncompressed_tar(path: Path) -> None:
    """Refuse a compressed tar: loading needs random access to each member's bytes."""
    compressed = path.name.lower().endswith(_COMPRESSED_TAR)
    if not compressed:
        try:
            with path.open("rb") as fh:
                compressed = fh.read(6).startswith(_COMPRESSED_MAGIC)
        except OSError as exc:
            raise DatasetError(f"cannot read {path}: {exc}") from exc
    if compressed:
        raise DatasetError(
            f"{path} is a compressed tar; images are read by seeking into the archive, so decompress it "
            "first (e.g. `gunzip` / `unzstd`, keeping the .tar) and pass the .tar"
        )


def _safe_relative(image_name: str) -> PurePosixPath | None:
    """``image_name`` as a relative path that stays inside its folder, or None."""
    if not image_name or "\x00" in image_name:
        return None
    path = PurePosixPath(image_name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or not path.parts or Path(image_name).is_absolute():
        return None
    if path.parts[0].endswith(":"):  # a Windows drive ("C:"), meaningless and unsafe here
        return None
    return path


def _image_key(name: str, *, require_image: bool = True) -> str | None:
    """The matching key of a member or image name: its normalised path without an image extension.

    For a tar member (``require_image``) None unless it has an image extension.
    """
    normalised = PurePosixPath(name.replace("\\", "/"))
    parts = [p for p in normalised.parts if p not in ("/", ".")]
    if not parts:
        return None
    joined = "/".join(parts)
    lowered = joined.lower()
    for ext in IMAGE_EXTENSIONS:
        if lowered.endswith(ext) and len(joined) > len(ext):
            return joined[: -len(ext)]
    return None if require_image else joined
