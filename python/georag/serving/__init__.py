"""Serving georag in Triton Inference Server: model repository generation and the Python-backend models'
helpers (the pipeline, batching, errors, BLS calls)."""

from __future__ import annotations

from georag.serving.errors import BadRequest, ServingError, StepFailed, StepTimeout, public_message
from georag.serving.params import RequestParams, parse_params
from georag.serving.pipeline import NeighbourArrays, Pipeline, PipelineConfig, Steps
from georag.serving.repository import (
    RepositoryConfig,
    RepositoryError,
    write_example_repository,
    write_repository,
)

__all__ = [
    "BadRequest",
    "NeighbourArrays",
    "Pipeline",
    "PipelineConfig",
    "RepositoryConfig",
    "RepositoryError",
    "RequestParams",
    "ServingError",
    "StepFailed",
    "StepTimeout",
    "Steps",
    "parse_params",
    "public_message",
    "write_example_repository",
    "write_repository",
]
