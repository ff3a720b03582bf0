"""georag: image geolocalization with retrieval-augmented multimodal LLMs."""

from __future__ import annotations

from georag._version import __version__
from georag.config import Config, load_config
from georag.errors import ConfigError, GeoRagError, InputError, MissingDependencyError
from georag.llm.parse import parse_coordinates
from georag.locate.geolocator import Geolocator
from georag.search import CudaFlatIndex, FaissIndex, FlatIndex
from georag.store import GeoStore
from georag.types import Neighbors, Prediction, Retrieved

__all__ = [
    "Config",
    "ConfigError",
    "CudaFlatIndex",
    "FaissIndex",
    "FlatIndex",
    "GeoRagError",
    "GeoStore",
    "Geolocator",
    "InputError",
    "MissingDependencyError",
    "Neighbors",
    "Prediction",
    "Retrieved",
    "__version__",
    "load_config",
    "parse_coordinates",
]
