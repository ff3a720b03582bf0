"""Contrastive search: k nearest AND k farthest neighbors, exact (C++ core) or approximate (faiss).

Every index satisfies `georag.search.protocol.Index`; `georag.store.GeoStore.index` picks one by name.
"""

from __future__ import annotations

from georag.search.cuda import CudaFlatIndex
from georag.search.faiss_index import FaissIndex
from georag.search.flat import FlatIndex
from georag.search.protocol import Index
from georag.search.validate import as_row_ranges

__all__ = ["CudaFlatIndex", "FaissIndex", "FlatIndex", "Index", "as_row_ranges"]
