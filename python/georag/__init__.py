"""georag: image geolocalization with retrieval-augmented multimodal LLMs."""

from __future__ import annotations

from georag._version import __version__
from georag.errors import GeoRagError, MissingDependencyError
from georag.search import CudaFlatIndex, FaissIndex, FlatIndex, Neighbors
from georag.store import GeoStore

__all__ = [
    "CudaFlatIndex",
    "FaissIndex",
    "FlatIndex",
    "GeoRagError",
    "GeoStore",
    "MissingDependencyError",
    "Neighbors",
    "__version__",
]
