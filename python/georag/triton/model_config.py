"""RepositoryConfig: what `georag triton repo` builds (encoder, store, LLM, limits, batching), checked."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from georag.config import parse_variants
from georag.errors import GeoRagError
from georag.llm.chat_templates import chat_format

ENCODER_MODELS = ("siglip_trt", "siglip_onnx", "siglip_python")
"""The encoder models a repository may hold (one at a time)."""
LLM_MODEL = "mllm"
"""Name of the vLLM-backend model."""
RETRIEVAL_MODEL = "retrieval"
PIPELINE_MODEL = "georag"
QWEN_PIXEL = 28 * 28
"""Pixels per Qwen2-VL visual token (14 px patches merged 2 x 2)."""


class RepositoryError(GeoRagError):
    """A model repository cannot be generated from the given store, encoder and options."""


@dataclass(frozen=True)
class RepositoryConfig:
    """What `write_repository` builds; every field but the first two has a default."""

    store: Path
    """The GeoStore folder the retrieval model opens (referenced by absolute path, never copied)."""
    encoder_onnx: Path
    """The folder (or .onnx file) of `georag encoder export --format onnx`: the model id, dimensions and
    preprocessing of the encoder; copied into siglip_onnx / siglip_python."""
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
    k_near: int = 16
    """Similar rows retrieved per photo; default 16."""
    k_far: int = 16
    """Dissimilar rows retrieved per photo; default 16."""
    variants: str | None = None
    """Prompt variants; default None: ``rag:K_NEAR:K_FAR``."""
    samples: int = 5
    """LLM answers per prompt variant (the medoid's candidates); default 5."""
    temperature: float = 0.7
    """Sampling temperature; default 0.7."""
    top_p: float = 0.95
    """Nucleus sampling; default 0.95."""
    max_tokens: int = 256
    """Answer length cap; default 256."""
    max_image_mb: float = 20.0
    """Largest image a request may carry, MiB; default 20."""
    encoder_timeout_s: float = 10.0
    """Time limit of the encoder call; default 10 s."""
    retrieval_timeout_s: float = 30.0
    """Time limit of the retrieval call; default 30 s."""
    llm_timeout_s: float = 60.0
    """Time limit of each LLM request; default 60 s."""
    deadline_s: float = 120.0
    """Time limit of a whole request (also the longest it may wait in the pipeline's queue); default 120 s."""
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
    pipeline_max_in_flight: int = 64
    """Requests one georag instance works on at once (the others wait within their deadline); default 64."""
    max_queue_size: int = 256
    """Longest queue of each batched model before requests are refused; default 256."""
    ann_index: str = ""
    """A faiss index of the store to search instead of the exact one; default "" (exact)."""
    max_model_len: int = 8192
    """vLLM context length (prompt with image tokens, plus the answer); default 8192."""
    gpu_memory_utilization: float = 0.85
    """Share of the GPU's memory vLLM may take; default 0.85."""
    max_pixels: int = 1280 * QWEN_PIXEL
    """Qwen2-VL image budget (mm_processor_kwargs.max_pixels): 1280 visual tokens by default."""
    allow_test_markers: bool = False
    """Let requests add a ``[[marker]]`` to the LLM prompt (drives the tests' stand-in); default False."""

    def __post_init__(self) -> None:
        chat_format(self.family)  # an unknown family fails here, naming the known ones
        if self.k_near < 1 or self.k_far < 0 or self.samples < 1:
            raise RepositoryError("k_near and samples must be >= 1, k_far >= 0")
        if not 0 < self.max_image_mb <= 1024 or not 0 < self.gpu_memory_utilization <= 1:
            raise RepositoryError("max_image_mb must be in (0, 1024] and gpu_memory_utilization in (0, 1]")
        for v in parse_variants(self.prompt_variants):
            if v.k_near > self.k_near or v.k_far > self.k_far:
                raise RepositoryError(f"variant {v} shows more references than k_near/k_far retrieve")
        timeouts = (self.encoder_timeout_s, self.retrieval_timeout_s, self.llm_timeout_s, self.deadline_s)
        if min(timeouts) <= 0:
            raise RepositoryError("every timeout must be positive")
        sizes = (self.encoder_max_batch, self.retrieval_max_batch, self.pipeline_max_batch)
        counts = (
            self.encoder_instances,
            self.pipeline_instances,
            self.pipeline_max_in_flight,
            self.max_queue_size,
        )
        if min(sizes) < 1 or min(counts) < 1:
            raise RepositoryError("batch sizes, instance counts and max_queue_size must be >= 1")

    @property
    def prompt_variants(self) -> str:
        """The variants string, defaulted to ``rag:K_NEAR:K_FAR``."""
        return self.variants or f"rag:{self.k_near}:{self.k_far}"
