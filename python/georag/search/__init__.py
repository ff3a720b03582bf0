"""Contrastive search: k nearest AND k farthest neighbours, exact (C++ core) or approximate (faiss)."""

from __future__ import annotations

from georag.search.cuda import CudaFlatIndex
from georag.search.faiss_index import FaissIndex
from georag.search.flat import FlatIndex
from georag.search.neighbors import Neighbors
from georag.search.validate import as_row_ranges

__all__ = ["CudaFlatIndex", "FaissIndex", "FlatIndex", "Neighbors", "as_row_ranges"]
