"""An LLMClient for any OpenAI-compatible chat-completions server (vLLM, SGLang, LMDeploy, llama.cpp, Ollama).

Chosen by a URL: ``openai://HOST:PORT/v1?model=NAME`` (plain HTTP) or ``openais://HOST:PORT/v1?model=NAME``
(HTTPS). The API key comes from the ``api_key`` argument or the ``OPENAI_API_KEY`` environment variable and is
sent as ``Authorization: Bearer``; it never appears in the client's name, repr, logs or error messages (the
transport also masks it in anything the server says back).

This module is the wire format: one request per attempt is ``POST {base}/chat/completions`` with a system
message and a user message whose content is the image (a ``data:`` URL) followed by the user text; ``n``,
``temperature``, ``top_p``, ``max_tokens`` and ``seed`` (when not None) are forwarded. Some servers ignore
``n > 1`` (llama.cpp, Ollama) and answer one choice: when fewer choices come back than were asked, the client
asks again for the missing ones until it has ``n`` answers, each top-up with ``seed + answers collected so
far`` (when a seed is set), so a server that honours the seed answers anew and a `generate` stays
reproducible. A 200 whose body is not chat-completions JSON raises `LLMError`.

Slots (``concurrency``), retries, Retry-After, the per-attempt deadline (``timeout_s`` bounds the whole
exchange), the body cap, error messages and echo cutting (an answer holding the user prompt keeps only
what follows it) are `georag.llm.transport.Transport`'s.
"""

from __future__ import annotations

import base64
import functools
import json
import logging
import os
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlencode, urlsplit

from georag.config import Sampling
from georag.errors import ConfigError
from georag.llm.client import redact
from georag.llm.transport import (
    HttpStatusError,
    HttpTarget,
    Limits,
    Transport,
    TransportClient,
    error_message,
    truncate,
)
from georag.types import Completion, Prompt

if TYPE_CHECKING:
    from typing_extensions import Unpack

log = logging.getLogger(__name__)

API_KEY_ENV = "OPENAI_API_KEY"
"""Environment variable read for the API key when none is passed."""

_SCHEMES = {"openai": "http", "openais": "https"}


class _BadBody(ValueError):
    """A 200 body that is not a chat completion."""


class OpenAIClient(TransportClient):
    """A thread-safe `LLMClient` of one model behind an OpenAI-compatible ``/chat/completions`` endpoint
    (``name``: ``openai(s)://HOST:PORT/PATH?model=NAME``; connections are per request, none stay open)."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        **limits: Unpack[Limits],
    ) -> None:
        """Builds a client of ``model`` at ``base_url`` (``http(s)://HOST:PORT/v1``).

        ``api_key`` defaults to ``$OPENAI_API_KEY``; an empty key means none. ``limits``: ``timeout_s``,
        ``policy``, ``concurrency`` (see `georag.llm.transport.Limits`). Prefer `from_url`. ConfigError
        for a bad URL, key or limit.
        """
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"base URL must be http(s)://HOST[:PORT]/PATH, got {redact(base_url)!r}")
        if parts.username is not None or parts.password is not None or parts.query or parts.fragment:
            raise ConfigError(f"base URL takes no credentials, query or fragment: {redact(base_url)!r}")
        if not model:
            raise ConfigError("a model name is required")
        try:
            port = parts.port
        except ValueError as exc:
            raise ConfigError(f"bad port in {redact(base_url)!r}") from exc
        https = parts.scheme == "https"
        self._target = HttpTarget(parts.hostname, port if port is not None else (443 if https else 80), https)
        self._path = parts.path.rstrip("/") + "/chat/completions"
        self._models_path = parts.path.rstrip("/") + "/models"
        self._model = model
        self._topup_logged = False
        key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
        key = key.strip() if key else None
        if key and not all(33 <= ord(c) < 127 for c in key):
            # Never quote it: a key with a stray \r or a non-ASCII character is still a secret.
            raise ConfigError(
                f"the API key (argument or {API_KEY_ENV}) holds spaces, control or non-ASCII characters; "
                "check how it was set (a key file with Windows line endings?)"
            )
        self._api_key = key or None
        self._headers = {"Authorization": f"Bearer {key}"} if key else {}
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        scheme = "openais" if https else "openai"
        name = f"{scheme}://{host}:{self._target.port}{parts.path.rstrip('/')}?{urlencode({'model': model})}"
        self._transport = Transport(redact(name), secrets=[key], **limits)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        api_key: str | None = None,
        **limits: Unpack[Limits],
    ) -> OpenAIClient:
        """A client for ``openai://HOST:PORT/v1?model=NAME`` (HTTP) or ``openais://...`` (HTTPS).

        The key goes in ``api_key`` or ``$OPENAI_API_KEY``, never in the URL.
        """
        parts = urlsplit(url)
        shown = redact(url)
        scheme = _SCHEMES.get(parts.scheme.lower())
        if scheme is None:
            raise ConfigError(f"an OpenAI-compatible URL starts with openai:// or openais://, got {shown!r}")
        if parts.username is not None or parts.password is not None:
            raise ConfigError(f"put the API key in api_key or ${API_KEY_ENV}, not in the URL: {shown!r}")
        query = parse_qs(parts.query, keep_blank_values=True)
        unknown = sorted(set(query) - {"model"})
        if unknown:
            raise ConfigError(f"unknown query parameter(s) {unknown} in {shown!r}; only model= is read")
        models = query.get("model", [])
        if len(models) != 1 or not models[0]:
            raise ConfigError(f"the URL needs exactly one ?model=NAME: {shown!r}")
        base = f"{scheme}://{parts.netloc}{parts.path}"
        return cls(base, models[0], api_key=api_key, **limits)

    @property
    def model(self) -> str:
        """The model name sent with every request."""
        return self._model

    def __repr__(self) -> str:
        key = "'***'" if self._api_key is not None else "None"
        t = self._transport
        limits = f"timeout_s={t.timeout_s}, concurrency={t.concurrency}"
        return f"OpenAIClient({t.name!r}, {limits}, api_key={key})"

    def generate(self, prompt: Prompt, sampling: Sampling) -> Completion:
        """Sends the prompt (retrying transient failures, topping up missing choices); returns n answers."""
        start = time.perf_counter()
        messages = _messages(prompt)
        texts: list[str] = []
        attempts = 0
        while len(texts) < sampling.n:
            want = sampling.n - len(texts)
            seed = None if sampling.seed is None else sampling.seed + len(texts)
            body = self._body(messages, sampling, want, seed)
            got, tries = self._transport.call(functools.partial(self._attempt, body))
            attempts += tries
            if len(got) < want and not self._topup_logged:
                # Once per client: a server that ignores n does so for every request.
                self._topup_logged = True
                log.info(
                    "%s: asked for %d choices, got %d; asking again for the rest (server ignores n?)",
                    self.name,
                    want,
                    len(got),
                )
            texts.extend(got[:want])
        return self._transport.completion(texts, prompt.user, time.perf_counter() - start, attempts)

    def check(self) -> None:
        """Checks, before a run, that the server answers and serves the model: ``GET {base}/models`` must
        list it; where the listing is refused (an HTTP error other than 401/403) or unreadable, a one-token
        text request must succeed instead. Slots, retries and the attempt deadline are the transport's.
        LLMError (naming the client, never a credential) for an unreachable server, a refused key, an
        unknown model or a refused request."""
        try:
            text, _ = self._transport.call(
                functools.partial(self._transport.get, self._target, self._models_path, self._headers),
                f"{self.name} (model listing)",
            )
        except HttpStatusError as exc:
            if exc.status in (401, 403):
                raise  # a refused key: every request would fail alike
            log.info("%s: the model listing was refused (%s); sending a one-token request", self.name, exc)
            self._probe()
            return
        served = _model_ids(text)
        if served is None:
            log.info("%s: the model listing is not readable; sending a one-token request", self.name)
            self._probe()
            return
        if self._model not in served:
            shown = ", ".join(repr(m) for m in sorted(served)[:10]) or "none"
            more = f" (and {len(served) - 10} more)" if len(served) > 10 else ""
            raise self._transport.error(
                f"the server does not serve model {self._model!r}; it serves {shown}{more}"
            )

    def _probe(self) -> None:
        """A one-token text request (no image), its answer only checked to be a chat completion."""
        body = json.dumps(
            {
                "model": self._model,
                "messages": [{"role": "user", "content": "Say OK."}],
                "n": 1,
                "max_tokens": 1,
                "temperature": 0.0,
            }
        ).encode()
        self._transport.call(functools.partial(self._attempt, body), f"{self.name} (one-token check)")

    def _body(self, messages: list[dict[str, Any]], sampling: Sampling, n: int, seed: int | None) -> bytes:
        fields: dict[str, Any] = {
            "model": self._model,
            "messages": messages,
            "n": n,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "max_tokens": sampling.max_tokens,
            "seed": seed,
        }
        return json.dumps({k: v for k, v in fields.items() if v is not None}).encode()

    def _attempt(self, body: bytes) -> list[str]:
        text = self._transport.post(self._target, self._path, body, self._headers)
        try:
            return _choice_texts(text)
        except _BadBody as exc:
            raise self._transport.error(f"HTTP 200 but not a chat completion: {exc}") from exc


def _model_ids(data: str) -> set[str] | None:
    """The model ids of a ``/models`` listing (``{"data": [{"id": ...}]}``), or None when it is not one."""
    try:
        doc = json.loads(data)
    except ValueError:
        return None
    items = doc.get("data") if isinstance(doc, dict) else None
    if not isinstance(items, list):
        return None
    return {item["id"] for item in items if isinstance(item, dict) and isinstance(item.get("id"), str)}


def _messages(prompt: Prompt) -> list[dict[str, Any]]:
    image = base64.b64encode(prompt.image).decode("ascii")
    return [
        {"role": "system", "content": prompt.system},
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": f"data:{prompt.image_mime};base64,{image}"}},
                {"type": "text", "text": prompt.user},
            ],
        },
    ]


def _choice_texts(data: str) -> list[str]:
    """The answer texts of a chat-completions body, in choice order; raises _BadBody otherwise."""
    try:
        doc = json.loads(data)
    except ValueError:
        raise _BadBody(f"invalid JSON: {truncate(data, 100)!r}") from None
    if not isinstance(doc, dict):
        raise _BadBody(f"expected a JSON object, got {type(doc).__name__}")
    choices = doc.get("choices")
    if not isinstance(choices, list) or not choices:
        if "error" in doc:
            raise _BadBody(f"error: {truncate(error_message(data))}")
        raise _BadBody("no choices")
    if all(isinstance(c, dict) and isinstance(c.get("index"), int) for c in choices):
        choices = sorted(choices, key=lambda c: c["index"])
    texts = []
    for i, choice in enumerate(choices):
        message = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(message, dict):
            raise _BadBody(f"choice {i} has no message")
        texts.append(_content_text(message.get("content"), i))
    return texts


def _content_text(content: Any, i: int) -> str:
    """A message content as text: a string, a list of parts (text parts joined), or null (empty)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        pieces = []
        for part in content:
            if isinstance(part, str):
                pieces.append(part)
            elif isinstance(part, dict) and part.get("type", "text") == "text":
                text = part.get("text")
                if not isinstance(text, str):
                    raise _BadBody(f"choice {i}: a text part without text")
                pieces.append(text)
            # Non-text parts (e.g. a reasoning or image part) are not the answer.
        return "".join(pieces)
    raise _BadBody(f"choice {i}: content is a {type(content).__name__}")
