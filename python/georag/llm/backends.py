"""Choosing an LLM backend by a URL: triton://HOST:PORT/MODEL, openai://HOST:PORT/v1?model=NAME, or none."""

from __future__ import annotations

from georag.config import LLMConfig
from georag.errors import ConfigError, LLMError
from georag.llm.client import LLMClient, redact
from georag.llm.retry import RetryPolicy

SCHEMES = ("triton://", "openai://", "openais://")

_DEFAULTS = LLMConfig()


def open_llm(
    url: str,
    *,
    timeout_s: float = _DEFAULTS.timeout_s,
    retries: int = _DEFAULTS.retries,
    concurrency: int = _DEFAULTS.concurrency,
) -> LLMClient | None:
    """The client for ``url``, or None for ``"none"`` (the retrieval-only baselines).

    - ``triton://HOST:PORT/MODEL?family=qwen2-vl`` — Triton Inference Server with the vLLM backend
      (gRPC streaming; the model's chat template is applied here, the prompt is never echoed back).
    - ``openai://HOST:PORT/v1?model=NAME`` (``openais://`` for https) — any OpenAI-compatible server
      (vLLM, SGLang, LMDeploy, llama.cpp, Ollama); the key comes from OPENAI_API_KEY.
    ``timeout_s`` bounds each attempt, ``retries`` the extra attempts on transient errors, and
    ``concurrency`` the requests open at once (defaults: `georag.config.LLMConfig`'s). ConfigError for an
    unknown scheme or a bad limit; LLMError for a malformed URL of a known scheme.
    """
    text = url.strip()
    if text.lower() == "none":
        return None
    policy = RetryPolicy(retries=retries)
    if text.startswith("triton://"):
        from georag.llm.triton_client import TritonClient

        return TritonClient.from_url(text, timeout_s=timeout_s, policy=policy, concurrency=concurrency)
    if text.startswith(("openai://", "openais://")):
        from georag.llm.openai_client import OpenAIClient

        return OpenAIClient.from_url(text, timeout_s=timeout_s, policy=policy, concurrency=concurrency)
    raise ConfigError(
        f"--llm {redact(text)!r}: use none, triton://HOST:PORT/MODEL or openai://HOST:PORT/v1?model=NAME"
    )


def open_llm_from(config: LLMConfig) -> LLMClient | None:
    """The client ``config`` describes (its url, timeout_s, retries and concurrency), or None for url none."""
    return open_llm(
        config.url, timeout_s=config.timeout_s, retries=config.retries, concurrency=config.concurrency
    )


class LLMCheckError(LLMError):
    """The LLM a run names cannot be used: the server does not answer, or does not serve the model (a
    usage error of the run's ``--llm``: ``georag locate`` exits 2)."""


def check_llm(client: LLMClient) -> None:
    """Runs ``client.check()`` (the server answers and serves the model), where the client has one;
    `LLMCheckError` naming the client (never a credential) and what to do otherwise."""
    check = getattr(client, "check", None)
    if check is None:
        return
    try:
        check()
    except LLMError as exc:
        raise LLMCheckError(
            f"the LLM cannot be used: {exc}. Check --llm {client.name!r} (is the server up, and is the model "
            "name right?)"
        ) from exc
