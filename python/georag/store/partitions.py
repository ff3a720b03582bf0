"""A store's submap partitions, read on first use and checked against the manifest (rows, SHA-256).

`GeoStore.submaps` reads them through this, and so does the Triton `georag` model, which needs the
partitions of the vpr-guided route without the store's embeddings or metadata (the `retrieval` model holds
those).
"""

from __future__ import annotations

from pathlib import Path

from georag.errors import StoreError
from georag.store.manifest import Manifest
from georag.store.submaps import Submaps, load_submaps


class StorePartitions:
    """The submap partitions of the store at ``path`` whose manifest is ``manifest``."""

    def __init__(self, path: Path, manifest: Manifest) -> None:
        self.path, self.manifest = path, manifest
        self._loaded: dict[str, Submaps] = {}

    @classmethod
    def open(cls, path: str | Path) -> StorePartitions:
        """The partitions of the store at ``path`` (its manifest only is read now)."""
        root = Path(path)
        return cls(root, Manifest.load(root))

    @property
    def ntotal(self) -> int:
        """Rows of the store."""
        return self.manifest.num_rows

    def names(self) -> list[str]:
        """The partitions the store has, sorted."""
        return sorted(self.manifest.submaps)

    def get(self, name: str) -> Submaps:
        """The partition ``name``, checked (StoreError when missing, stale or changed)."""
        if name not in self._loaded:
            info = self.manifest.submaps.get(name)
            if info is None:
                raise StoreError(
                    f"{self.path} has no submaps {name!r}; it has {self.names() or 'none'} "
                    f"(make some with `georag index submaps {self.path} --by country`)"
                )
            if info.rows != self.ntotal:
                raise StoreError(
                    f"submaps {name!r} cover {info.rows} rows but the store has {self.ntotal}: "
                    f"recompute them with `georag index submaps {self.path} --by {info.scheme}`"
                )
            self.manifest.check_file(self.path, info.file, "full")
            sub = load_submaps(self.path / info.file, expected_rows=self.ntotal)
            if (sub.scheme, len(sub)) != (info.scheme, info.count):
                raise StoreError(
                    f"{self.path / info.file} holds {len(sub)} {sub.scheme} submaps, the manifest says "
                    f"{info.count} {info.scheme}: the store is damaged; run `georag index verify {self.path}`"
                )
            self._loaded[name] = sub
        return self._loaded[name]

    # The vpr-guided route's view of a store (`georag.strategies.vpr_guided.SubmapSource`).

    def submap_names(self) -> list[str]:
        """As `names`."""
        return self.names()

    def submaps(self, name: str) -> Submaps:
        """As `get`."""
        return self.get(name)
