"""Choosing an LLM backend by a URL: triton://HOST:PORT/MODEL, openai://HOST:PORT/v1?model=NAME, or none."""

from __future__ import annotations

from georag.errors import GeoRagError
from georag.llm.client import LLMClient, redact
from georag.llm.retry import RetryPolicy

SCHEMES = ("triton://", "openai://", "openais://")


def open_llm(
    url: str,
    *,
    timeout_s: float = 60.0,
    retries: int = 2,
    max_in_flight: int = 16,
) -> LLMClient | None:
    """The client for ``url``, or None for ``"none"`` (the retrieval-only baselines).

    - ``triton://HOST:PORT/MODEL?family=qwen2-vl`` — Triton Inference Server with the vLLM backend
      (gRPC streaming; the model's chat template is applied here, the prompt is never echoed back).
    - ``openai://HOST:PORT/v1?model=NAME`` (``openais://`` for https) — any OpenAI-compatible server
      (vLLM, SGLang, LMDeploy, llama.cpp, Ollama); the key comes from OPENAI_API_KEY.
    ``timeout_s`` bounds each attempt, ``retries`` the extra attempts on transient errors, and
    ``max_in_flight`` the requests open at once.
    """
    text = url.strip()
    policy = RetryPolicy(retries=retries)
    if text.lower() == "none":
        return None
    if text.startswith("triton://"):
        from georag.llm.triton_client import TritonClient

        return TritonClient.from_url(text, timeout_s=timeout_s, policy=policy, max_in_flight=max_in_flight)
    if text.startswith(("openai://", "openais://")):
        from georag.llm.openai_client import OpenAIClient

        return OpenAIClient.from_url(text, timeout_s=timeout_s, policy=policy, max_in_flight=max_in_flight)
    raise GeoRagError(
        f"--llm {redact(text)!r}: use none, triton://HOST:PORT/MODEL or openai://HOST:PORT/v1?model=NAME"
    )
