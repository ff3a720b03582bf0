"""georag: image geolocalization with retrieval-augmented multimodal LLMs."""

from __future__ import annotations

from georag._version import __version__
from georag.errors import GeoRagError, MissingDependencyError
from georag.llm.parse import parse_coordinates
from georag.locate.geolocator import Geolocator, LocateConfig
from georag.locate.prediction import Prediction
from georag.search import CudaFlatIndex, FaissIndex, FlatIndex, Neighbors
from georag.store import GeoStore

__all__ = [
    "CudaFlatIndex",
    "FaissIndex",
    "FlatIndex",
    "GeoRagError",
    "GeoStore",
    "Geolocator",
    "LocateConfig",
    "MissingDependencyError",
    "Neighbors",
    "Prediction",
    "__version__",
    "parse_coordinates",
]
