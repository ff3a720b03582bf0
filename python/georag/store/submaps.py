"""Submaps: a store's rows split by country or k-means cluster into contiguous row ranges, kept as .npz."""

from __future__ import annotations

import logging
import os
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from georag.errors import InputError, MissingDependencyError, StoreError, extra_hint
from georag.geo.coords import check_latlon, from_unit_vectors, haversine_km, to_unit_vectors

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
_REQUIRED_KEYS = frozenset({"format_version", "scheme", "names", "labels", "offsets", "starts", "ends"})
_OPTIONAL_KEYS = frozenset({"centroids"})
_ASSIGN_CHUNK = 1 << 20
# Reverse geocoding always yields a code today; should a place ever lack one, ISO's user-assigned "ZZ"
# ("unknown") keeps those rows in a named submap instead of an empty name.
_UNKNOWN_COUNTRY = "ZZ"


@dataclass(frozen=True, eq=False)
class Submaps:
    """One partition of a store's rows into named submaps, each a set of contiguous row ranges.

    Submap ``j`` (``names[j]``) owns the rows whose ``labels`` entry is ``j``; its ranges are
    ``starts[offsets[j]:offsets[j + 1]]`` / ``ends[...]``, half-open, ascending and disjoint, and the
    ranges of all submaps together tile ``[0, N)`` exactly. The constructor checks all of that and makes
    the arrays read-only, so a Submaps in hand is always consistent.
    """

    scheme: str
    names: tuple[str, ...]
    labels: npt.NDArray[np.int32]
    offsets: npt.NDArray[np.int64]
    starts: npt.NDArray[np.int64]
    ends: npt.NDArray[np.int64]
    centroids: npt.NDArray[np.float64] | None = None
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _validate(self)
        for attr in ("labels", "offsets", "starts", "ends", "centroids"):
            arr = getattr(self, attr)
            if arr is not None:
                # Read-only views: frozen all the way down, without touching the caller's arrays.
                view = arr.view()
                view.flags.writeable = False
                object.__setattr__(self, attr, view)
        object.__setattr__(self, "_index", {name: j for j, name in enumerate(self.names)})

    def __len__(self) -> int:
        return len(self.names)

    def __repr__(self) -> str:
        return (
            f"Submaps(scheme={self.scheme!r}, submaps={len(self)}, rows={self.num_rows}, "
            f"ranges={self.starts.size})"
        )

    @property
    def num_rows(self) -> int:
        """N, the number of store rows this partition covers."""
        return int(self.labels.size)

    def _position(self, name: str) -> int:
        try:
            return self._index[name]
        except (KeyError, TypeError):
            shown = ", ".join(self.names[:10]) + (", ..." if len(self.names) > 10 else "")
            raise StoreError(
                f"no submap named {name!r} in this {self.scheme} partition of {len(self)} submaps "
                f"(valid names: {shown or 'none'})"
            ) from None

    def ranges(self, name: str) -> npt.NDArray[np.int64]:
        """Submap ``name`` as (m, 2) ``[start, end)`` pairs, ready for ``FlatIndex.search(row_ranges=)``."""
        j = self._position(name)
        lo, hi = int(self.offsets[j]), int(self.offsets[j + 1])
        return np.stack([self.starts[lo:hi], self.ends[lo:hi]], axis=1)

    def size(self, name: str) -> int:
        """The number of rows in submap ``name``."""
        j = self._position(name)
        lo, hi = int(self.offsets[j]), int(self.offsets[j + 1])
        return int((self.ends[lo:hi] - self.starts[lo:hi]).sum())

    def sizes(self) -> dict[str, int]:
        """Rows per submap, in ``names`` order."""
        counts = np.bincount(self.labels, minlength=len(self))
        return {name: int(c) for name, c in zip(self.names, counts, strict=True)}

    def nearest_clusters(self, lat: float, lon: float, n: int = 1) -> list[str]:
        """The names of the ``n`` k-means clusters whose centres are nearest to (lat, lon) on the globe."""
        if self.centroids is None:
            raise StoreError(f"nearest_clusters needs cluster centres; this {self.scheme} partition has none")
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or not 1 <= n <= len(self):
            raise InputError(f"n must be an int in [1, {len(self)}], got {n!r}")
        la, lo = check_latlon(lat, lon, "query point")
        if la.size != 1:
            raise InputError(f"nearest_clusters takes one point, got {la.size}")
        dist = haversine_km(la[0], lo[0], self.centroids[:, 0], self.centroids[:, 1])
        order = np.argsort(dist, kind="stable")[: int(n)]
        return [self.names[int(j)] for j in order]


def _check_array(name: str, arr: object, kind: str, ndim: int) -> npt.NDArray[Any]:
    if not isinstance(arr, np.ndarray):
        raise StoreError(f"{name} must be a numpy array, got {type(arr).__name__}")
    if arr.dtype.kind != kind or arr.ndim != ndim:
        raise StoreError(
            f"{name} has dtype {arr.dtype} and shape {arr.shape}, expected a {ndim}-D {kind} array"
        )
    return arr


def _validate(s: Submaps) -> None:
    """Raises StoreError unless ``s`` is an exact, consistent partition (see Submaps)."""
    if not isinstance(s.scheme, str) or not s.scheme:
        raise StoreError(f"scheme must be a non-empty string, got {s.scheme!r}")
    if not isinstance(s.names, tuple) or not all(isinstance(x, str) and x for x in s.names):
        raise StoreError("names must be a tuple of non-empty strings")
    k = len(s.names)
    if len(set(s.names)) != k:
        raise StoreError("names are not unique")
    checks = (("labels", np.int32), ("offsets", np.int64), ("starts", np.int64), ("ends", np.int64))
    for attr, dtype in checks:
        arr = _check_array(attr, getattr(s, attr), "i", 1)
        if arr.dtype != dtype:
            raise StoreError(f"{attr} has dtype {arr.dtype}, expected {np.dtype(dtype)}")
    n = s.labels.size
    offsets, starts, ends = s.offsets, s.starts, s.ends
    if offsets.size != k + 1:
        raise StoreError(f"offsets has {offsets.size} entries for {k} submaps, expected {k + 1}")
    if offsets[0] != 0 or (np.diff(offsets) < 0).any() or offsets[-1] != starts.size:
        raise StoreError(
            f"offsets are not a non-decreasing run from 0 to the number of ranges ({starts.size})"
        )
    if ends.size != starts.size:
        raise StoreError(f"starts and ends differ in length: {starts.size} vs {ends.size}")
    if starts.size and (starts.min() < 0 or ends.max() > n or (ends <= starts).any()):
        raise StoreError(f"a row range is empty, reversed, or outside [0, {n})")
    lengths = ends - starts
    if int(lengths.sum()) != n:
        raise StoreError(f"the row ranges hold {int(lengths.sum())} rows in all, expected {n}")
    order = np.argsort(starts, kind="stable")
    # Sorted by start, ranges that are inside [0, n), never overlap, and add up to n rows tile [0, n).
    if (starts[order][1:] < ends[order][:-1]).any():
        raise StoreError("row ranges overlap")
    owner = np.repeat(np.arange(k, dtype=np.int32), np.diff(offsets))
    if (np.diff(starts) <= 0)[np.diff(owner) == 0].any():
        raise StoreError("the row ranges of a submap are not in ascending order")
    expected = np.repeat(owner[order], lengths[order])
    mismatch = np.flatnonzero(expected != s.labels)
    if mismatch.size:
        i = int(mismatch[0])
        raise StoreError(
            f"labels disagree with the row ranges: row {i} is labelled {int(s.labels[i])} "
            f"but lies in a range of submap {int(expected[i])} ({mismatch.size} rows disagree)"
        )
    if s.centroids is not None:
        c = _check_array("centroids", s.centroids, "f", 2)
        if c.dtype != np.float64 or c.shape != (k, 2):
            raise StoreError(f"centroids have dtype {c.dtype} and shape {c.shape}, expected float64 ({k}, 2)")
        check_latlon(c[:, 0], c[:, 1], "centroids")


def submaps_from_labels(
    scheme: str,
    names: Sequence[str],
    labels: npt.NDArray[np.integer],
    centroids: npt.ArrayLike | None = None,
) -> Submaps:
    """The Submaps whose submap ``j`` is ``names[j]`` with the rows where ``labels == j``.

    Each submap's ranges are the maximal runs of its label, in row order; a store sorted by label
    (see reorder_permutation) therefore has exactly one range per submap. Names without rows are
    allowed and get no ranges. Vectorised: a few passes over ``labels``, fine for tens of millions of rows.
    """
    lab = np.asarray(labels)
    if lab.ndim != 1 or (lab.size and lab.dtype.kind not in "iu"):
        raise InputError(f"labels must be a 1-D integer array, got dtype {lab.dtype} and shape {lab.shape}")
    names_t = tuple(str(x) for x in names)
    k = len(names_t)
    if k > np.iinfo(np.int32).max:
        raise InputError(f"too many submaps: {k}")
    if lab.size and (lab.min() < 0 or lab.max() >= k):
        raise InputError(f"labels must lie in [0, {k}) for {k} names, got [{lab.min()}, {lab.max()}]")
    lab32 = lab.astype(np.int32)
    n = lab32.size
    boundaries = np.flatnonzero(np.diff(lab32)) + 1
    run_starts = np.concatenate([np.zeros(min(n, 1), dtype=np.int64), boundaries.astype(np.int64)])
    run_ends = np.concatenate([boundaries.astype(np.int64), np.full(min(n, 1), n, dtype=np.int64)])
    run_labels = lab32[run_starts]
    # Stable, so each submap's runs keep their row order.
    order = np.argsort(run_labels, kind="stable")
    offsets = np.zeros(k + 1, dtype=np.int64)
    np.cumsum(np.bincount(run_labels, minlength=k), out=offsets[1:])
    cents = None if centroids is None else np.array(centroids, dtype=np.float64)
    return Submaps(
        scheme=scheme,
        names=names_t,
        labels=lab32,
        offsets=offsets,
        starts=np.ascontiguousarray(run_starts[order]),
        ends=np.ascontiguousarray(run_ends[order]),
        centroids=cents,
    )


def country_submaps(lat: npt.ArrayLike, lon: npt.ArrayLike) -> Submaps:
    """One submap per country (ISO alpha-2, offline reverse geocoding), names sorted."""
    from georag.geo.countries import countries_at

    la, lo = check_latlon(lat, lon)
    codes = countries_at(la, lo)
    codes[codes == ""] = _UNKNOWN_COUNTRY
    names, labels = np.unique(codes, return_inverse=True)
    log.info("country submaps: %d rows in %d countries", la.size, names.size)
    return submaps_from_labels("country", names.tolist(), labels.ravel())


def _faiss() -> Any:
    try:
        import faiss
    except ImportError as exc:
        raise MissingDependencyError(
            f"k-means submaps need faiss: {extra_hint('faiss', 'faiss-cpu')}"
        ) from exc
    return faiss


def _has_distinct(xyz: npt.NDArray[np.float32], k: int) -> bool:
    # A prefix usually already holds k distinct points, which spares sorting all N rows.
    m = min(xyz.shape[0], 4 * k)
    while True:
        if np.unique(xyz[:m], axis=0).shape[0] >= k:
            return True
        if m == xyz.shape[0]:
            return False
        m = min(xyz.shape[0], 4 * m)


def kmeans_submaps(
    lat: npt.ArrayLike,
    lon: npt.ArrayLike,
    k: int = 100,
    *,
    seed: int = 1234,
    niter: int = 25,
    max_points_per_centroid: int = 256,
) -> Submaps:
    """Up to ``k`` submaps from spherical k-means of the row locations (faiss), with centres as lat/lon.

    Clustering runs on 3-D unit vectors, not raw degrees, so the date line and the poles are no
    seams: points at longitude 179.9 and -179.9 are neighbors. faiss trains on a seeded sample of at
    most ``k * max_points_per_centroid`` points; then every row joins the centre with the largest inner
    product. Clusters left without rows are dropped and the rest renumbered, so every submap is non-empty;
    names are ``c000``, ``c001``, ... zero-padded to the width of ``k - 1`` (at least three digits).
    """
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise InputError(f"k must be an int >= 1, got {k!r}")
    for label, value in (("niter", niter), ("max_points_per_centroid", max_points_per_centroid)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise InputError(f"{label} must be an int >= 1, got {value!r}")
    la, lo = check_latlon(lat, lon)
    xyz = np.ascontiguousarray(to_unit_vectors(la, lo), dtype=np.float32)
    if not _has_distinct(xyz, int(k)):
        raise InputError(f"k={k} is more than the number of distinct locations among {la.size} rows")
    faiss = _faiss()
    km = faiss.Kmeans(
        3,
        int(k),
        niter=int(niter),
        seed=int(seed),
        spherical=True,
        max_points_per_centroid=int(max_points_per_centroid),
        verbose=False,
    )
    km.train(xyz)
    centres = np.ascontiguousarray(km.centroids, dtype=np.float32)
    index = faiss.IndexFlatIP(3)
    index.add(centres)
    assign = np.empty(xyz.shape[0], dtype=np.int64)
    for start in range(0, xyz.shape[0], _ASSIGN_CHUNK):
        _, nearest = index.search(xyz[start : start + _ASSIGN_CHUNK], 1)
        assign[start : start + _ASSIGN_CHUNK] = nearest[:, 0]
    used = np.bincount(assign, minlength=int(k)) > 0
    if not used.all():
        log.info("k-means: dropping %d of %d clusters that got no rows", int((~used).sum()), k)
    renumber = np.cumsum(used) - 1
    width = max(3, len(str(int(k) - 1)))
    names = [f"c{j:0{width}d}" for j in range(int(used.sum()))]
    c_lat, c_lon = from_unit_vectors(centres[used].astype(np.float64))
    log.info("k-means submaps: %d rows in %d clusters", la.size, len(names))
    return submaps_from_labels("kmeans", names, renumber[assign], np.stack([c_lat, c_lon], axis=1))


def reorder_permutation(labels: npt.NDArray[np.integer]) -> npt.NDArray[np.int64]:
    """The row order that groups rows by label, keeping their relative order within a label.

    Writing a store's rows in this order (``new_row[i] = old_row[perm[i]]``) makes every submap one
    contiguous range.
    """
    lab = np.asarray(labels)
    if lab.ndim != 1 or (lab.size and lab.dtype.kind not in "iu"):
        raise InputError(f"labels must be a 1-D integer array, got dtype {lab.dtype} and shape {lab.shape}")
    return np.argsort(lab, kind="stable").astype(np.int64, copy=False)


def save_submaps(path: str | os.PathLike[str], submaps: Submaps) -> None:
    """Writes ``submaps`` to one .npz at ``path`` (no object arrays), atomically: temp file, then rename."""
    target = Path(path)
    width = max((len(x) for x in submaps.names), default=1)
    arrays: dict[str, npt.NDArray[Any]] = {
        "format_version": np.array(FORMAT_VERSION, dtype=np.int64),
        "scheme": np.array(submaps.scheme, dtype=f"<U{max(len(submaps.scheme), 1)}"),
        "names": np.array(submaps.names, dtype=f"<U{width}").reshape(len(submaps)),
        "labels": submaps.labels,
        "offsets": submaps.offsets,
        "starts": submaps.starts,
        "ends": submaps.ends,
    }
    if submaps.centroids is not None:
        arrays["centroids"] = submaps.centroids
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        # A file object, not a name, so numpy does not append ".npz" to the temp name.
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    log.info("saved %r to %s", submaps, target)


def _read_arrays(path: Path) -> dict[str, npt.NDArray[Any]]:
    try:
        # Our own handle, closed on every path: np.load leaks its file when the archive is unreadable.
        with path.open("rb") as fh:
            npz = np.load(fh, allow_pickle=False)
            if not isinstance(npz, np.lib.npyio.NpzFile):
                raise StoreError(f"corrupt submaps file {path}: not an .npz archive")
            with npz:
                keys = set(npz.files)
                missing = _REQUIRED_KEYS - keys
                unknown = keys - _REQUIRED_KEYS - _OPTIONAL_KEYS
                if missing or unknown:
                    raise StoreError(
                        f"corrupt submaps file {path}: missing arrays {sorted(missing)}, "
                        f"unknown arrays {sorted(unknown)}"
                    )
                return {key: npz[key] for key in keys}
    except FileNotFoundError as exc:
        raise StoreError(f"no submaps file at {path}") from exc
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        # ValueError also covers object arrays, which allow_pickle=False refuses to load.
        raise StoreError(f"corrupt submaps file {path}: {exc}") from exc


def load_submaps(path: str | os.PathLike[str], expected_rows: int | None = None) -> Submaps:
    """Reads a file written by save_submaps and checks it completely; StoreError says what is wrong.

    Checks every array's dtype and shape, the offsets, that the ranges lie in ``[0, N)``, are disjoint
    and hold exactly the rows labelled with their submap, and, when given, that N is ``expected_rows``.
    """
    src = Path(path)
    arrays = _read_arrays(src)
    try:
        version = arrays["format_version"]
        if version.shape != () or version.dtype.kind not in "iu" or int(version) != FORMAT_VERSION:
            raise StoreError(f"format_version is {version!r}, expected {FORMAT_VERSION}")
        for key in ("scheme", "names"):
            if arrays[key].dtype.kind != "U":
                raise StoreError(f"{key} has dtype {arrays[key].dtype}, expected unicode text")
        if arrays["scheme"].shape != ():
            raise StoreError(f"scheme has shape {arrays['scheme'].shape}, expected a 0-d array")
        if arrays["names"].ndim != 1:
            raise StoreError(f"names has shape {arrays['names'].shape}, expected 1-D")
        native = {
            key: arrays[key].astype(arrays[key].dtype.newbyteorder("="), copy=False)
            for key in ("labels", "offsets", "starts", "ends", "centroids")
            if key in arrays
        }
        submaps = Submaps(
            scheme=str(arrays["scheme"]),
            names=tuple(str(x) for x in arrays["names"]),
            labels=native["labels"],
            offsets=native["offsets"],
            starts=native["starts"],
            ends=native["ends"],
            centroids=native.get("centroids"),
        )
    except (StoreError, InputError) as exc:
        raise StoreError(f"corrupt submaps file {src}: {exc}") from exc
    if expected_rows is not None and submaps.num_rows != expected_rows:
        raise StoreError(
            f"submaps file {src} covers {submaps.num_rows} rows but the store has {expected_rows}; "
            "it belongs to another store or is corrupt"
        )
    log.debug("loaded %r from %s", submaps, src)
    return submaps
