"""An LLMClient for any OpenAI-compatible chat-completions server (vLLM, SGLang, LMDeploy, llama.cpp, Ollama).

Chosen by a URL: ``openai://HOST:PORT/v1?model=NAME`` (plain HTTP) or ``openais://HOST:PORT/v1?model=NAME``
(HTTPS). The API key comes from the ``api_key`` argument or the ``OPENAI_API_KEY`` environment variable and is
sent as ``Authorization: Bearer``; it never appears in the client's name, repr, logs or error messages (the
client also scrubs it from anything the server says back).

Behaviour:

* One request per attempt: ``POST {base}/chat/completions`` with a system message and a user message whose
  content is the image (a ``data:`` URL) followed by the user text; ``n``, ``temperature``, ``top_p``,
  ``max_tokens`` and ``seed`` (when not None) are forwarded.
* Some servers ignore ``n > 1`` (llama.cpp, Ollama) and answer one choice. When fewer choices come back than
  were asked, the client asks again for the missing ones until it has ``n`` answers. Each of those top-up
  requests uses ``seed + answers collected so far`` (when a seed is set), so a server that honours the seed
  does not return the same answer each time; a whole `generate` stays reproducible.
* Transient failures (connection refused or reset, a timeout, HTTP 429/500/502/503/504) are retried by
  `georag.llm.retry.with_retries`; a ``Retry-After`` header adds a wait of up to ``policy.max_backoff_s``.
  Other HTTP errors raise `LLMError` at once with the server's message (at most 300 characters); so does a
  200 whose body is not chat-completions JSON.
* ``timeout_s`` is the socket timeout, covering the connect and every read, so a stalled server fails the
  attempt instead of hanging the caller (a server that trickles bytes can take longer in total).
* At most ``max_in_flight`` requests are open at once across all threads; the client is thread-safe and
  opens one connection per request.
* An answer that starts with the user prompt (a server echoing its input) is cut and flagged ``echoed``.
"""

from __future__ import annotations

import base64
import contextlib
import email.utils
import http.client
import json
import logging
import os
import socket
import ssl
import threading
import time
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from georag._version import __version__
from georag.errors import LLMError
from georag.llm.client import Completion, Prompt, Sampling, redact
from georag.llm.retry import RetryPolicy, TransientError, with_retries

log = logging.getLogger(__name__)

API_KEY_ENV = "OPENAI_API_KEY"
"""Environment variable read for the API key when none is passed."""

_SCHEMES = {"openai": "http", "openais": "https"}
_TRANSIENT_STATUS = frozenset({429, 500, 502, 503, 504})
_MAX_BODY_BYTES = 32 << 20  # a chat completion is a few kB; anything this large is not one
_MESSAGE_CHARS = 300
_DEFAULT_POLICY = RetryPolicy()


class _Retryable(TransientError):
    """A retryable HTTP status, with the server's Retry-After in seconds when it sent one."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class _BadBody(ValueError):
    """A 200 body that is not a chat completion."""


class OpenAIClient:
    """A thread-safe `LLMClient` of one model behind an OpenAI-compatible ``/chat/completions`` endpoint."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        timeout_s: float = 60.0,
        policy: RetryPolicy = _DEFAULT_POLICY,
        max_in_flight: int = 16,
        api_key: str | None = None,
    ) -> None:
        """Builds a client of ``model`` at ``base_url`` (``http(s)://HOST:PORT/v1``).

        ``api_key`` defaults to ``$OPENAI_API_KEY``; an empty key means none. Prefer `from_url`.
        """
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise LLMError(f"base URL must be http(s)://HOST[:PORT]/PATH, got {redact(base_url)!r}")
        if parts.username is not None or parts.password is not None or parts.query or parts.fragment:
            raise LLMError(f"base URL takes no credentials, query or fragment: {redact(base_url)!r}")
        if not model:
            raise LLMError("a model name is required")
        if not timeout_s > 0:
            raise LLMError(f"timeout_s must be > 0, got {timeout_s}")
        if max_in_flight < 1:
            raise LLMError(f"max_in_flight must be >= 1, got {max_in_flight}")
        try:
            port = parts.port
        except ValueError as exc:
            raise LLMError(f"bad port in {redact(base_url)!r}") from exc
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = port if port is not None else (443 if self._https else 80)
        self._path = parts.path.rstrip("/") + "/chat/completions"
        self._model = model
        self._timeout_s = float(timeout_s)
        self._policy = policy
        self._max_in_flight = max_in_flight
        self._slots = threading.BoundedSemaphore(max_in_flight)
        self._closed = False
        self._topup_logged = False
        key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
        key = key.strip() if key else None
        if key and not all(33 <= ord(c) < 127 for c in key):
            # Never quote it: a key with a stray \r or a non-ASCII character is still a secret.
            raise LLMError(
                f"the API key (argument or {API_KEY_ENV}) holds spaces, control or non-ASCII characters; "
                "check how it was set (a key file with Windows line endings?)"
            )
        self._api_key = key or None
        self._cancelled = threading.Event()
        self._headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": f"georag/{__version__}",
        }
        if self._api_key is not None:
            self._headers["Authorization"] = f"Bearer {self._api_key}"
        host = f"[{self._host}]" if ":" in self._host else self._host
        scheme = "openais" if self._https else "openai"
        base_path = parts.path.rstrip("/")
        self._name = redact(f"{scheme}://{host}:{self._port}{base_path}?{urlencode({'model': model})}")
        # Only TLS needs shared state; an SSLContext is thread-safe once built.
        self._ssl = ssl.create_default_context() if self._https else None

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        timeout_s: float = 60.0,
        policy: RetryPolicy = _DEFAULT_POLICY,
        max_in_flight: int = 16,
        api_key: str | None = None,
    ) -> OpenAIClient:
        """A client for ``openai://HOST:PORT/v1?model=NAME`` (HTTP) or ``openais://...`` (HTTPS).

        The key goes in ``api_key`` or ``$OPENAI_API_KEY``, never in the URL.
        """
        parts = urlsplit(url)
        shown = redact(url)
        scheme = _SCHEMES.get(parts.scheme.lower())
        if scheme is None:
            raise LLMError(f"an OpenAI-compatible URL starts with openai:// or openais://, got {shown!r}")
        if parts.username is not None or parts.password is not None:
            raise LLMError(f"put the API key in api_key or ${API_KEY_ENV}, not in the URL: {shown!r}")
        query = parse_qs(parts.query, keep_blank_values=True)
        unknown = sorted(set(query) - {"model"})
        if unknown:
            raise LLMError(f"unknown query parameter(s) {unknown} in {shown!r}; only model= is read")
        models = query.get("model", [])
        if len(models) != 1 or not models[0]:
            raise LLMError(f"the URL needs exactly one ?model=NAME: {shown!r}")
        base = f"{scheme}://{parts.netloc}{parts.path}"
        return cls(
            base,
            models[0],
            timeout_s=timeout_s,
            policy=policy,
            max_in_flight=max_in_flight,
            api_key=api_key,
        )

    @property
    def name(self) -> str:
        """The endpoint and model as an ``openai(s)://`` URL, without credentials."""
        return self._name

    @property
    def model(self) -> str:
        """The model name sent with every request."""
        return self._model

    def __repr__(self) -> str:
        key = "'***'" if self._api_key is not None else "None"
        return (
            f"OpenAIClient({self._name!r}, timeout_s={self._timeout_s}, "
            f"max_in_flight={self._max_in_flight}, api_key={key})"
        )

    def __enter__(self) -> OpenAIClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def cancel(self) -> None:
        """Stops retries and new requests (they fail with LLMError "cancelled")."""
        self._cancelled.set()

    def close(self) -> None:
        """Marks the client closed and cancels; connections are per request, so none stay open."""
        self._closed = True
        self._cancelled.set()

    def generate(self, prompt: Prompt, sampling: Sampling) -> Completion:
        """Sends the prompt (retrying transient failures, topping up missing choices); returns n answers."""
        if sampling.n < 1:
            raise ValueError(f"sampling.n must be >= 1, got {sampling.n}")
        if self._closed:
            raise LLMError(f"{self._name}: the client is closed")
        start = time.perf_counter()
        messages = _messages(prompt)
        texts: list[str] = []
        attempts = 0
        while len(texts) < sampling.n:
            want = sampling.n - len(texts)
            seed = None if sampling.seed is None else sampling.seed + len(texts)
            body = self._body(messages, sampling, want, seed)
            got, tries = self._send(body)
            attempts += tries
            if len(got) < want and not self._topup_logged:
                # Once per client: a server that ignores n does so for every request.
                self._topup_logged = True
                log.info(
                    "%s: asked for %d choices, got %d; asking again for the rest (server ignores n?)",
                    self._name,
                    want,
                    len(got),
                )
            texts.extend(got[:want])
        echoed = False
        answers = []
        for text in texts:
            cut, was_echo = _cut_echo(text, prompt.user)
            echoed = echoed or was_echo
            answers.append(cut)
        if echoed:
            log.warning("%s: the server echoed the prompt; cut it from the answers", self._name)
        return Completion(
            texts=tuple(answers),
            seconds=time.perf_counter() - start,
            attempts=attempts,
            echoed=echoed,
        )

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

    def _send(self, body: bytes) -> tuple[list[str], int]:
        """One logical request under the retry policy; returns (answer texts, attempts)."""
        calls = 0

        def attempt() -> list[str]:
            nonlocal calls
            calls += 1
            try:
                return self._post(body)
            except _Retryable as exc:
                # Waiting here, outside the semaphore, adds the server's hint to with_retries' backoff;
                # capped so a hostile Retry-After cannot park a caller.
                if exc.retry_after_s and calls <= self._policy.retries:
                    time.sleep(min(exc.retry_after_s, self._policy.max_backoff_s))
                raise

        return with_retries(attempt, self._policy, self._name, self._cancelled)

    def _connect(self) -> http.client.HTTPConnection:
        if self._ssl is not None:
            return http.client.HTTPSConnection(
                self._host, self._port, timeout=self._timeout_s, context=self._ssl
            )
        return http.client.HTTPConnection(self._host, self._port, timeout=self._timeout_s)

    def _post(self, body: bytes) -> list[str]:
        """One HTTP attempt; raises TransientError for what is worth retrying, LLMError otherwise."""
        with self._slots:
            conn = self._connect()
            # The socket timeout bounds each read; this bounds the whole attempt (a server trickling bytes
            # would otherwise keep it alive): at the deadline the connection is closed under the reader.
            deadline = threading.Event()

            def expire() -> None:
                deadline.set()
                sock = conn.sock
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)  # wakes a blocked read, unlike close()

            watchdog = threading.Timer(self._timeout_s, expire)
            watchdog.daemon = True
            watchdog.start()
            try:
                log.debug("%s: POST %s (%d bytes)", self._name, self._path, len(body))
                conn.request("POST", self._path, body=body, headers=self._headers)
                resp = conn.getresponse()
                status = resp.status
                retry_after = resp.getheader("Retry-After")
                data = _read_body(resp)
            except ssl.SSLError as exc:
                # Certificate or protocol mismatch: the same next time.
                raise LLMError(f"{self._name}: TLS error: {exc}") from exc
            except (OSError, http.client.HTTPException) as exc:
                # Refused, reset, timed out, cut mid-response, or closed by the deadline below.
                if deadline.is_set():
                    raise TransientError(
                        f"timed out: no complete answer within {self._timeout_s:g} s"
                    ) from exc
                raise TransientError(f"{type(exc).__name__}: {exc}") from exc
            except (ValueError, UnicodeError) as exc:
                # http.client refuses a malformed header or URL; the message could quote the key.
                raise LLMError(
                    f"{self._name}: the request could not be sent ({type(exc).__name__})"
                ) from None
            finally:
                watchdog.cancel()
                conn.close()
        if data is None:
            raise LLMError(f"{self._name}: HTTP {status}: response larger than {_MAX_BODY_BYTES} bytes")
        # Masked before anything is cut to length, so no part of the key can survive the cut.
        text = self._scrub(data.decode("utf-8", errors="replace"))
        if status in _TRANSIENT_STATUS:
            raise _Retryable(f"HTTP {status}: {_error_message(text)}", _retry_after_s(retry_after))
        if not 200 <= status < 300:
            raise LLMError(f"{self._name}: HTTP {status}: {_error_message(text)}")
        try:
            return _choice_texts(text)
        except _BadBody as exc:
            raise LLMError(f"{self._name}: HTTP {status} but not a chat completion: {exc}") from exc

    def _scrub(self, text: str) -> str:
        """``text`` with the API key masked: servers quote a wrong key back in their error messages."""
        if self._api_key:
            text = text.replace(self._api_key, "***")
        return text


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


def _read_body(resp: http.client.HTTPResponse) -> bytes | None:
    """The whole body, or None when it is over the size cap; a body cut short raises IncompleteRead."""
    declared = resp.length  # None without a Content-Length; read() lowers it as it goes
    if declared is not None and declared > _MAX_BODY_BYTES:
        return None
    chunks = []
    total = 0
    # Reading in bounded chunks caps memory against a server that streams without end.
    while chunk := resp.read(1 << 16):
        chunks.append(chunk)
        total += len(chunk)
        if total > _MAX_BODY_BYTES:
            return None
    data = b"".join(chunks)
    if declared is not None and len(data) < declared:
        # read(amt) reports a short body as an early end, not an error; a retry may get it whole.
        raise http.client.IncompleteRead(data, declared - len(data))
    return data


def _truncate(text: str, limit: int = _MESSAGE_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."


def _error_message(raw: str) -> str:
    """The server's error text: ``{"error": {"message"}}`` (OpenAI), ``{"message"}``, ``{"detail"}``."""
    try:
        doc = json.loads(raw)
    except ValueError:
        return _truncate(raw) or "(empty body)"
    message: Any = doc
    if isinstance(doc, dict):
        err = doc.get("error")
        if isinstance(err, dict) and "message" in err:
            message = err["message"]
        elif isinstance(err, str):
            message = err
        elif "message" in doc:
            message = doc["message"]
        elif "detail" in doc:
            message = doc["detail"]
    if not isinstance(message, str):
        message = json.dumps(message)
    return _truncate(message) or "(empty message)"


def _choice_texts(data: str) -> list[str]:
    """The answer texts of a chat-completions body, in choice order; raises _BadBody otherwise."""
    try:
        doc = json.loads(data)
    except ValueError:
        raise _BadBody(f"invalid JSON: {_truncate(data, 100)!r}") from None
    if not isinstance(doc, dict):
        raise _BadBody(f"expected a JSON object, got {type(doc).__name__}")
    choices = doc.get("choices")
    if not isinstance(choices, list) or not choices:
        if "error" in doc:
            raise _BadBody(f"error: {_error_message(data)}")
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


def _cut_echo(text: str, user: str) -> tuple[str, bool]:
    """(answer, True) when ``text`` starts with the user prompt, which is cut; else (text, False)."""
    head = user.strip()
    body = text.lstrip()
    if head and body.startswith(head):
        return body[len(head) :].lstrip(), True
    return text, False


def _retry_after_s(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta seconds or an HTTP date); None if absent or unreadable."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        seconds = (when - datetime.now(timezone.utc)).total_seconds()
    return seconds if seconds > 0 else None
