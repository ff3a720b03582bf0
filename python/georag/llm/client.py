"""The multimodal LLM client interface: a prompt with one image in, n answer texts out; chosen by a URL."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit, urlunsplit

log = logging.getLogger(__name__)


@dataclass(frozen=True, repr=False)
class Prompt:
    """What the model is asked: a system message, a user text, and the photo."""

    system: str
    """System message (role and rules); rendered by each backend in its own way."""
    user: str
    """The user's text; the image is shown BEFORE it (backends place their own image token or part)."""
    image: bytes
    """The photo, encoded (JPEG or PNG bytes as read from disk, or re-encoded)."""
    image_mime: str = "image/jpeg"
    """MIME type of ``image``; default image/jpeg."""

    def __repr__(self) -> str:
        sizes = f"system={len(self.system)} chars, user={len(self.user)} chars, image={len(self.image)} bytes"
        return f"Prompt({sizes})"


@dataclass(frozen=True)
class Sampling:
    """Sampling parameters sent with a request."""

    n: int = 1
    """Answers per request; default 1."""
    temperature: float = 0.7
    """Default 0.7 (the G3 / Img2Loc setting for several samples)."""
    top_p: float = 0.95
    """Default 0.95."""
    max_tokens: int = 256
    """Answer length cap; default 256 (a JSON coordinate needs about 30)."""
    seed: int | None = None
    """Sampling seed where the server honours one; default None."""


@dataclass(frozen=True)
class Completion:
    """The answers to one request."""

    texts: tuple[str, ...]
    """The n answer texts, prompt excluded."""
    seconds: float
    """Wall time of the request, retries included."""
    attempts: int = 1
    """Requests sent (1 + retries)."""
    echoed: bool = False
    """True when the server echoed the prompt and the client cut it off (a misconfigured server)."""


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
