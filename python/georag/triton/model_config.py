"""RepositoryConfig: what `georag triton repo` builds, checked. The pipeline's settings are ONE `Config`.

Everything the served pipeline does (k_near / k_far, the strategy and its rag / vpr settings, sampling,
time limits, the deadline, the image size cap, test markers, the search index) comes from
``RepositoryConfig.config`` (`georag.config.Config`, the same object `georag locate` and `georag serve`
run with); the other fields are only about the Triton deployment: which files go where, the LLM vLLM
loads, batching, instances and queues.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from georag.config import Config
from georag.errors import GeoRagError
from georag.llm.chat_templates import chat_format
from georag.serving.params import check_served
from georag.serving.retrieval import MAX_K
from georag.triton.engine_args import QWEN_PIXEL, family_engine_args

ENCODER_MODELS = ("siglip_trt", "siglip_onnx", "siglip_python")
"""The encoder models a repository may hold (one at a time)."""
LLM_MODEL = "mllm"
"""Name of the vLLM-backend model."""
RETRIEVAL_MODEL = "retrieval"
PIPELINE_MODEL = "georag"
MAX_IMAGE_MB = 1024.0
"""Largest ``serve.max_image_mb`` a repository accepts (Triton's own request size limits lie beyond)."""
PIPELINE_SECTIONS = ("search", "strategy", "serve")
"""The sections of `Config` the `georag` model runs with (the others are not used by a served pipeline:
the LLM is the repository's own model, the encoder its encoder model, and it has no truth to exclude by)."""
HTTP_ONLY = (
    "serve.max_uploads",
    "serve.max_uploads_per_client",
    "serve.body_timeout_s",
    "serve.min_upload_bytes_per_s",
    "serve.header_timeout_s",
    "serve.max_connections_per_client",
)
"""`georag serve`'s limits on slow clients: its HTTP server's own (Triton reads the requests itself)."""
NOT_IN_CONFIG_PARAMETER = ("serve.max_requests", "serve.max_queue", "strategy.calibration", *HTTP_ONLY)
"""Keys of those sections written as settings of the georag model itself (its ``max_requests`` parameter
and its Triton queue) or as a file of its own (the calibration:
`georag.serving.triton_glue.CALIBRATION_FILE`), or not used by it (`HTTP_ONLY`), not into its
``georag_config`` parameter."""


class RepositoryError(GeoRagError):
    """A model repository cannot be generated from the given store, encoder and options."""


@dataclass(frozen=True)
class RepositoryConfig:
    """What `write_repository` builds; only ``encoder_onnx`` and a store are required.

    The store is ``store``, or else ``config.store``. ``config.serve.max_requests`` is what ONE georag
    instance runs at once (its ``max_requests`` parameter; ``pipeline_instances`` of them run), and
    ``config.serve.max_queue`` the length of its Triton queue; ``max_queue_size`` bounds the queues of the
    encoder and retrieval models.
    """

    encoder_onnx: Path
    """The folder (or .onnx file) of `georag encoder export --format onnx`: the model id, dimensions and
    preprocessing of the encoder; copied into siglip_onnx / siglip_python."""
    config: Config = field(default_factory=Config)
    """The pipeline's settings (search, strategy, serve limits); default `Config()`."""
    store: Path | None = None
    """The GeoStore folder the retrieval model opens (referenced by absolute path, never copied); default
    None: ``config.store``."""
    encoder_trt: Path | None = None
    """The folder (or engine file) of `georag encoder export --format tensorrt`; given, the repository uses
    siglip_trt (GPU). Default None."""
    python_encoder: bool = False
    """Run the ONNX file in the Python backend (siglip_python) instead of the onnxruntime backend; default
    False. For Triton builds without the onnxruntime backend, such as the one in nvidia-pytriton."""
    llm_model: str = "Qwen/Qwen2-VL-7B-Instruct"
    """Hugging Face id (or a path on the GPU server) of the LLM vLLM loads; default
    Qwen/Qwen2-VL-7B-Instruct."""
    family: str = "qwen2-vl"
    """Chat format of the LLM (see `georag.llm.chat_templates`); default qwen2-vl."""
    llm_standin: Path | None = None
    """A model folder copied in place of the vLLM model (the same interface; the tests' stand-in); default
    None."""
    encoder_max_batch: int = 32
    """Largest encoder batch on CPU (siglip_trt takes its engine profile's maximum); default 32."""
    encoder_queue_delay_us: int = 100
    """How long the CPU encoder's batcher waits for more requests, microseconds; default 100."""
    trt_queue_delay_us: int = 1000
    """The same for siglip_trt; default 1000 (on a GPU a fuller batch pays for the wait)."""
    encoder_instances: int = 1
    """Encoder model instances; default 1."""
    retrieval_max_batch: int = 64
    """Largest retrieval batch; default 64."""
    retrieval_queue_delay_us: int = 100
    """How long the retrieval batcher waits for more queries, microseconds; default 100."""
    pipeline_instances: int = 2
    """Instances of the georag model (processes; each runs its batch's requests concurrently); default 2."""
    pipeline_max_batch: int = 16
    """Most requests the batcher hands a georag instance in one call; default 16."""
    max_queue_size: int = 256
    """Longest queue of the encoder and retrieval models before requests are refused; default 256 (the
    georag model's is ``config.serve.max_queue``)."""
    max_model_len: int = 8192
    """vLLM context length (prompt with image tokens, plus the answer); default 8192."""
    gpu_memory_utilization: float = 0.85
    """Share of the GPU's memory vLLM may take; default 0.85."""
    max_pixels: int = 1280 * QWEN_PIXEL
    """The LLM's image budget in pixels, written as its family's own limit (`georag.triton.engine_args`:
    Qwen's max_pixels, InternVL's whole 448 px tiles): 1280 Qwen visual tokens by default."""
    server_tensorrt: str | None = None
    """TensorRT version of the Triton that will serve the repository (``echo $TRT_VERSION`` in its
    container); with ``encoder_trt`` it must be the engine's (`georag.triton.tensorrt_check`). Default
    None: refused with an engine, unless ``allow_tensorrt_mismatch``."""
    allow_tensorrt_mismatch: bool = False
    """Write the engine even when its TensorRT version does not match (or cannot be checked); a warning is
    logged. Default False: refused (a mismatched engine never loads, so the server never gets ready)."""

    def __post_init__(self) -> None:
        if not isinstance(self.config, Config):
            raise RepositoryError(f"config must be a georag.config.Config, got {type(self.config).__name__}")
        try:
            chat_format(self.family)
            family_engine_args(self.family, self.max_pixels)
        except GeoRagError as exc:  # an unknown family, naming the known ones
            raise RepositoryError(str(exc)) from None
        if self.store is not None and self.config.store and Path(self.config.store) != Path(self.store):
            raise RepositoryError(
                f"two stores given: {self.store} and config.store {self.config.store}; give one"
            )
        if self.store is None and not self.config.store:
            raise RepositoryError("no store given: pass --store (or set store in the config file)")
        if self.config.serve.max_image_mb > MAX_IMAGE_MB:
            raise RepositoryError(f"serve.max_image_mb must be at most {MAX_IMAGE_MB:g} MiB")
        cfg = self.config
        wanted = max(cfg.search.k_near, cfg.search.k_far, cfg.strategy.knn_k, cfg.strategy.vpr.rerank_k)
        if wanted > MAX_K:
            raise RepositoryError(
                f"the retrieval model answers at most {MAX_K} rows a side; search.k_near, search.k_far, "
                f"strategy.knn_k and strategy.vpr.rerank_k ask for up to {wanted}"
            )
        if self.config.serve.max_queue < 1:
            raise RepositoryError(
                "serve.max_queue must be >= 1 in a Triton repository (Triton reads 0 as no limit)"
            )
        check_served(self.config)  # what the georag model would refuse at load, refused now
        if not 0 < self.gpu_memory_utilization <= 1:
            raise RepositoryError("gpu_memory_utilization must be in (0, 1]")
        counts = {
            "encoder_max_batch": self.encoder_max_batch,
            "retrieval_max_batch": self.retrieval_max_batch,
            "pipeline_max_batch": self.pipeline_max_batch,
            "encoder_instances": self.encoder_instances,
            "pipeline_instances": self.pipeline_instances,
            "max_queue_size": self.max_queue_size,
            "max_model_len": self.max_model_len,
            "max_pixels": self.max_pixels,
        }
        for delay in ("encoder_queue_delay_us", "trt_queue_delay_us", "retrieval_queue_delay_us"):
            value = getattr(self, delay)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise RepositoryError(f"{delay} must be an integer >= 0, got {value!r}")
        for name, value in counts.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise RepositoryError(f"{name} must be an integer >= 1, got {value!r}")

    @property
    def store_path(self) -> Path:
        """The store folder (``store``, else ``config.store``)."""
        return Path(self.store if self.store is not None else self.config.store)


def pipeline_values(config: Config) -> dict[str, Any]:
    """The dotted values of ``config``'s pipeline sections (`PIPELINE_SECTIONS`), JSON-ready and in field
    order: what the `georag` model's ``georag_config`` parameter holds, read back with
    ``load_config(values=...)`` (see `georag.serving.triton_glue.pipeline_config`)."""
    out = config.values(PIPELINE_SECTIONS)
    return {key: value for key, value in out.items() if key not in NOT_IN_CONFIG_PARAMETER}
