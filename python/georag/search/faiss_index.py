"""Approximate (or exact) contrastive search with faiss: nearest AND farthest rows in one call.

faiss is an optional dependency, imported lazily: ``import georag`` works without it, and building
a :class:`FaissIndex` without it raises :class:`~georag.errors.MissingDependencyError`.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import os
import re
from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt

from georag.errors import InputError, MissingDependencyError, StoreError, extra_hint
from georag.search.protocol import IndexBase, Queries, Ranges
from georag.search.rows import RowSource
from georag.types import Neighbors

_FAISS_MISSING = f"faiss is not installed: {extra_hint('faiss', 'faiss-cpu')}; faiss-gpu-cu12 for CUDA"
_CHUNK_ROWS = 1 << 14  # rows checked, normalized and added per step (the build never copies all)
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _faiss() -> ModuleType:
    """Imports faiss on first use; MissingDependencyError when it is not installed."""
    try:
        import faiss
    except ImportError as exc:
        raise MissingDependencyError(_FAISS_MISSING) from exc
    return faiss


class FaissIndex(IndexBase):
    """Nearest and farthest search by cosine similarity over a faiss ``index_factory`` index.

    The index uses the inner-product metric on L2-normalized rows: the (N, d) float32 database is
    normalized chunk by chunk as it is added, queries inside each search, so inner product is
    cosine similarity. The farthest rows of q are the nearest rows of -q, so a search is ONE faiss
    call on the stacked batch [q; -q] with k = max(k_near, k_far); far scores are negated back.
    Results follow :class:`FlatIndex`: near by descending score, far by ascending score, ties by
    lower id, missing results padded with id -1 and score NaN. ``"Flat"`` (or an IVF probing
    every list) is exact; HNSW / IVF are approximate, their far set as good as a search for -q.

    ``train_size``: rows sampled (seeded by ``seed``, which also seeds faiss's k-means) to train
    an index that needs it (IVF, PQ, ...); default ``max(50 x nlist, 20000)`` capped at N.
    ``nprobe`` / ``efSearch`` go through ``faiss.ParameterSpace`` (ValueError where the factory
    has no such parameter). Searches use faiss's OpenMP threads.

    ``use_gpu=True`` moves the index to GPU 0 before training and needs faiss-gpu (otherwise
    MissingDependencyError). That path has NOT been run on a GPU; faiss may refuse
    ``row_ranges`` on GPU indexes.

    ``search`` follows `georag.search.protocol.Index` and takes no tuning keyword; its ``row_ranges``,
    merged, become one faiss ``IDSelectorRange`` (one range) or an ``IDSelectorBitmap`` (several).
    """

    def __init__(
        self,
        vectors: npt.NDArray[np.float32] | RowSource,
        factory: str = "Flat",
        *,
        train_size: int | None = None,
        nprobe: int | None = None,
        efSearch: int | None = None,
        use_gpu: bool = False,
        seed: int = 1234,
        normalize: bool = True,
    ) -> None:
        """Builds the index, trains it when needed, and adds the normalized rows of ``vectors``.

        ``vectors`` is an (N, d) float32 array or a :class:`~georag.search.rows.RowSource` (a store's
        shards): it is read in chunks of 16384 rows plus the training sample, never copied whole.
        ``normalize=False`` adds rows that are already normalized as they are (a store's rows, so that its
        faiss indexes score exactly what its exact index scores); they are still checked finite and nonzero.
        """
        faiss = _faiss()
        _check_matrix(vectors, "vectors")
        n, d = vectors.shape
        inv_norms = np.empty(n, dtype=np.float32)
        for start in range(0, n, _CHUNK_ROWS):
            rows = slice(start, start + _CHUNK_ROWS)
            inv_norms[rows] = _inverse_norms(vectors[rows], "database", start)
        if not normalize:
            inv_norms[:] = 1.0
        try:
            index = faiss.index_factory(d, factory, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as exc:
            raise ValueError(f"faiss cannot build {factory!r}: {_last_line(exc)}") from exc
        ivf = faiss.try_extract_index_ivf(index)
        if ivf is not None:
            ivf.cp.seed = seed
        for name, value in (("nprobe", nprobe), ("efSearch", efSearch)):
            if value is not None:
                try:
                    faiss.ParameterSpace().set_index_parameter(index, name, int(value))
                except RuntimeError as exc:
                    raise ValueError(f"{name} does not apply to factory {factory!r}") from exc
        self._gpu_resources: Any = None
        if use_gpu:
            index, self._gpu_resources = _to_gpu(faiss, index, factory)
        if not index.is_trained:
            nlist = 0 if ivf is None else int(ivf.nlist)
            size = min(n, max(50 * nlist, 20_000) if train_size is None else int(train_size))
            rng = np.random.default_rng(seed)
            sample = np.sort(rng.choice(n, size=max(size, 0), replace=False))
            try:
                index.train(vectors[sample] * inv_norms[sample, None])
            except RuntimeError as exc:
                raise ValueError(
                    f"faiss could not train {factory!r} on {size} rows: {_last_line(exc)}"
                ) from exc
        for start in range(0, n, _CHUNK_ROWS):
            rows = slice(start, start + _CHUNK_ROWS)
            index.add(vectors[rows] * inv_norms[rows, None])
        self._index: Any = index
        self._dim = int(d)
        self.factory: str | None = factory

    @property
    def ntotal(self) -> int:
        """Number of database rows."""
        return int(self._index.ntotal)

    @property
    def dim(self) -> int:
        """Embedding dimension d."""
        return self._dim

    @property
    def index(self) -> Any:
        """The underlying faiss index (inner-product metric over the normalized rows)."""
        return self._index

    def __repr__(self) -> str:
        return f"FaissIndex(factory={self.factory!r}, ntotal={self.ntotal}, dim={self.dim})"

    def _search(
        self, queries: Queries, k_near: int, k_far: int, ranges: Ranges, tuning: dict[str, int]
    ) -> Neighbors:
        _check_matrix(queries, "queries")
        if queries.shape[1] != self._dim:
            raise ValueError(
                f"queries have dimension {queries.shape[1]} but the index has dimension {self._dim}"
            )
        merged = _merged_ranges(ranges, self.ntotal)
        b, k = queries.shape[0], max(k_near, k_far)
        q = queries * _inverse_norms(queries, "query", 0)[:, None]
        if b == 0 or k == 0 or self.ntotal == 0:
            ids = np.full((2 * b, k), -1, dtype=np.int64)
            scores = np.full((2 * b, k), np.nan, dtype=np.float32)
        else:
            scores, ids = self._faiss_search(np.concatenate([q, -q]), k, merged)
        near_ids, near_scores = _ordered(ids[:b, :k_near], scores[:b, :k_near], descending=True)
        far_ids, far_scores = _ordered(ids[b:, :k_far], -scores[b:, :k_far], descending=False)
        return Neighbors(near_ids, near_scores, far_ids, far_scores)

    def _faiss_search(
        self, x: npt.NDArray[np.float32], k: int, ranges: list[tuple[int, int]] | None
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        if ranges is None:
            return self._index.search(x, k)  # type: ignore[no-any-return]
        faiss = _faiss()
        keep: list[Any] = []  # faiss parameter objects hold raw pointers: keep targets alive
        params = _search_params(faiss, self._index, ranges, keep)
        try:
            return self._index.search(x, k, params=params)  # type: ignore[no-any-return]
        except RuntimeError as exc:
            raise ValueError(
                f"this faiss index ({type(self._index).__name__}) does not support row_ranges:"
                f" {_last_line(exc)}"
            ) from exc

    def save(self, path: str | os.PathLike[str]) -> str:
        """Writes the index to ``path`` atomically; returns its SHA-256, to pass to :meth:`load`."""
        faiss = _faiss()
        index = self._index
        if self._gpu_resources is not None:
            index = faiss.index_gpu_to_cpu(index)
        path = os.fspath(path)
        tmp = f"{path}.tmp-{os.getpid()}"
        digest = hashlib.sha256()
        try:
            with open(tmp, "wb") as out:

                def write(chunk: bytes) -> int:
                    digest.update(chunk)
                    return out.write(chunk)

                faiss.write_index(index, faiss.PyCallbackIOWriter(write))
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        return digest.hexdigest()

    @classmethod
    def load(cls, path: str | os.PathLike[str], expected_sha256: str) -> FaissIndex:
        """Loads an index written by :meth:`save` if its SHA-256 is ``expected_sha256``.

        Deserializing an untrusted faiss file is unsafe, so the file is read into memory once and
        only those bytes, after their checksum matched, are parsed (transient memory: the file
        size plus the index). Raises InputError for a malformed checksum, StoreError for a mismatching
        one and for an index whose metric is not inner product.
        """
        faiss = _faiss()
        expected = str(expected_sha256).strip().lower()
        if not _SHA256.fullmatch(expected):
            raise InputError(f"expected_sha256 must be 64 hex digits, got {expected_sha256!r}")
        with open(path, "rb") as f:
            data = f.read()
        actual = hashlib.sha256(data).hexdigest()
        if not hmac.compare_digest(actual, expected):
            raise StoreError(
                f"refusing to load faiss index {os.fspath(path)!r}: its SHA-256 is {actual},"
                f" expected {expected}; the file was modified or is not the one meant, and"
                " deserializing an untrusted faiss file is unsafe"
            )
        index = faiss.read_index(faiss.PyCallbackIOReader(io.BytesIO(data).read))
        del data
        if index.metric_type != faiss.METRIC_INNER_PRODUCT:
            raise StoreError(f"{os.fspath(path)!r} is not an inner-product faiss index")
        obj = cls.__new__(cls)
        obj._index = index
        obj._dim = int(index.d)
        obj._gpu_resources = None
        obj.factory = None
        return obj


def _to_gpu(faiss: ModuleType, index: Any, factory: str) -> tuple[Any, Any]:
    """Moves an untrained CPU index to GPU 0, returned with its resources. Not run on a GPU."""
    if not hasattr(faiss, "StandardGpuResources"):
        raise MissingDependencyError(
            "use_gpu=True but this faiss has no GPU support: pip install faiss-gpu-cu12 in place of faiss-cpu"
        )
    if faiss.get_num_gpus() < 1:
        raise MissingDependencyError("use_gpu=True but faiss sees no CUDA device")
    resources = faiss.StandardGpuResources()
    try:
        return faiss.index_cpu_to_gpu(resources, 0, index), resources
    except RuntimeError as exc:
        raise ValueError(f"faiss has no GPU version of factory {factory!r}") from exc


def _last_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[-1] if lines else type(exc).__name__


def _check_matrix(x: Any, what: str) -> None:
    if isinstance(x, RowSource) and not isinstance(x, np.ndarray) and x.dtype == np.float32 and x.ndim == 2:
        return
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{what} must be a float32 numpy array, got {type(x).__name__}")
    if x.dtype != np.float32:
        raise TypeError(f"{what} must be float32, got {x.dtype}; convert with .astype(numpy.float32)")
    if x.ndim != 2:
        raise ValueError(
            f"{what} must be 2-D (rows, dim), got shape {x.shape}; for one vector pass v[None, :]"
        )


def _inverse_norms(x: npt.NDArray[np.float32], what: str, first: int) -> npt.NDArray[np.float32]:
    """1 / L2 norm of each row (in float64); ValueError naming the first NaN/Inf/zero row."""
    x64 = x.astype(np.float64)
    norms = np.sqrt(np.einsum("ij,ij->i", x64, x64))
    bad = ~(np.isfinite(norms) & (norms > 0))
    if bad.any():
        i = int(np.argmax(bad))
        if what == "query":
            problem = "has zero norm" if np.isfinite(x[i]).all() else "has a NaN/Inf value"
            raise ValueError(f"query {i} {problem}; a query embedding must be finite and non-zero")
        raise ValueError(
            f"database row {first + i} has zero norm or a NaN/Inf value; remove or fix it before"
            " building the index"
        )
    return (1.0 / norms).astype(np.float32)


def _merged_ranges(ranges: npt.NDArray[np.int64] | None, n: int) -> list[tuple[int, int]] | None:
    """Checks [start, end) ranges against n rows and merges them; None means the whole index."""
    if ranges is None:
        return None
    pairs = [(int(s), int(e)) for s, e in ranges.tolist()]
    for i, (start, end) in enumerate(pairs):
        if not 0 <= start <= end <= n:
            raise ValueError(f"row range {i} [{start}, {end}) is not within [0, {n})")
    merged: list[tuple[int, int]] = []
    for start, end in sorted(p for p in pairs if p[1] > p[0]):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    if not merged:
        raise ValueError("row_ranges selects no rows; pass None to search the whole index")
    return None if merged == [(0, n)] else merged


def _search_params(faiss: ModuleType, index: Any, ranges: list[tuple[int, int]], keep: list[Any]) -> Any:
    """SearchParameters of the index's type (with its nprobe / efSearch) and an ID selector."""
    if len(ranges) == 1:
        sel = faiss.IDSelectorRange(*ranges[0])
    else:
        mask = np.zeros(int(index.ntotal), dtype=bool)
        for start, end in ranges:
            mask[start:end] = True
        bitmap = np.packbits(mask, bitorder="little")
        keep.append(bitmap)
        sel = faiss.IDSelectorBitmap(mask.size, faiss.swig_ptr(bitmap))
    keep.append(sel)
    return _params_for(faiss, faiss.downcast_index(index), sel, keep)


def _params_for(faiss: ModuleType, index: Any, sel: Any, keep: list[Any]) -> Any:
    if isinstance(index, faiss.IndexPreTransform):
        inner = _params_for(faiss, faiss.downcast_index(index.index), sel, keep)
        params = faiss.SearchParametersPreTransform(index_params=inner)
    elif isinstance(index, faiss.IndexIVF):
        params = faiss.SearchParametersIVF(sel=sel, nprobe=index.nprobe, max_codes=index.max_codes)
    elif isinstance(index, faiss.IndexHNSW):
        params = faiss.SearchParametersHNSW(sel=sel, efSearch=index.hnsw.efSearch)
    else:
        params = faiss.SearchParameters(sel=sel)
    keep.append(params)
    return params


def _ordered(
    ids: npt.NDArray[np.int64], scores: npt.NDArray[np.float32], *, descending: bool
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """Pads missing results (id -1) with NaN and orders each row by score, ties by lower id."""
    missing = ids < 0
    scores = np.where(missing, np.float32(np.nan), scores).astype(np.float32)
    primary = np.where(missing, np.inf, -scores if descending else scores)
    secondary = np.where(missing, np.iinfo(np.int64).max, ids)
    order = np.lexsort((secondary, primary), axis=-1)
    return (
        np.ascontiguousarray(np.take_along_axis(ids, order, axis=-1), dtype=np.int64),
        np.ascontiguousarray(np.take_along_axis(scores, order, axis=-1)),
    )
