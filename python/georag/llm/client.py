"""The multimodal LLM client interface: a prompt with one image in, n answer texts out; chosen by a URL."""

from __future__ import annotations

import logging
import re
from typing import Protocol
from urllib.parse import urlsplit, urlunsplit

from georag.config import Sampling
from georag.types import Completion, Prompt

log = logging.getLogger(__name__)


class LLMClient(Protocol):
    """A thread-safe client of one model; `generate` raises `georag.errors.LLMError` for a failed request."""

    @property
    def name(self) -> str:
        """The endpoint and model, for logs and evidence (never with credentials)."""
        ...

    def generate(self, prompt: Prompt, sampling: Sampling) -> Completion:
        """Sends one request (retrying transient failures) and returns its answers."""
        ...

    def cancel(self) -> None:
        """Stops this client's retries and new requests (each then fails with LLMError "cancelled"); an
        attempt in flight ends within its timeout. For a run that is stopping; the client stays cancelled."""
        ...

    def close(self) -> None:
        """Releases connections (and cancels like `cancel`)."""
        ...


def redact(url: str) -> str:
    """``url`` without a password or an api_key / token query value, for logs."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    query = re.sub(r"(?i)((?:api_key|apikey|key|token|password)=)[^&]*", r"\1***", parts.query)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
