"""Errors a served request can end with, each carrying the Triton error code and a public message.

A message that reaches a client must not reveal the server's internals: `public_message` removes file
paths, network addresses, memory addresses and traceback lines from any text before it is sent, and caps
its length. The full detail goes to the server log only.
"""

from __future__ import annotations

import re

from georag.errors import GeoRagError

MAX_MESSAGE_CHARS = 300
"""Longest public message (default 300 characters); longer ones are cut with an ellipsis."""

_PATH = re.compile(r"(?:[A-Za-z]:)?(?:[/\\][\w.@+~-]+){2,}[/\\]?|~[/\\][\w./\\@+-]+")
_ADDRESS = re.compile(
    r"\b(?:\d{1,3}\.){3}\d{1,3}(?::\d+)?\b|\[[0-9a-fA-F]*:[0-9a-fA-F:]+\](?::\d+)?|\blocalhost:\d+\b|"
    r"\b[\w.-]+\.(?:internal|local|lan|corp)(?::\d+)?\b"
)
_MEMORY = re.compile(r"\b0x[0-9a-fA-F]{4,}\b")
_TRACEBACK = re.compile(r"Traceback \(most recent call last\):.*", re.DOTALL)
_FRAME = re.compile(r'File "[^"]*", line \d+[^\n]*')


def public_message(text: str) -> str:
    """``text`` fit for a client: no paths, addresses or traceback, one line, at most MAX_MESSAGE_CHARS."""
    text = _TRACEBACK.sub("", text)
    text = _FRAME.sub("", text)
    text = _PATH.sub("<path>", text)
    text = _ADDRESS.sub("<address>", text)
    text = _MEMORY.sub("<addr>", text)
    text = " ".join(text.split())
    if len(text) > MAX_MESSAGE_CHARS:
        text = text[: MAX_MESSAGE_CHARS - 3].rstrip() + "..."
    return text or "request failed"


class ServingError(GeoRagError):
    """A request the pipeline cannot answer; ``code`` is the Triton error code it is returned with.

    ``down``: the failure says that the model the step calls is not serving (it stalled past its limit,
    cannot be reached, or its process is gone); `georag.serving.health` counts these.
    """

    code = "INTERNAL"

    def __init__(self, message: str, *, down: bool = False) -> None:
        super().__init__(public_message(message))
        self.down = down


class BadRequest(ServingError):
    """The request itself is wrong: a corrupt image, too large a request, unknown parameters."""

    code = "INVALID_ARG"


class StepTimeout(ServingError):
    """A step (encoder, retrieval, LLM) or the whole request ran past its time limit."""

    code = "UNAVAILABLE"


class StepStalled(StepTimeout):
    """A step did not answer within its own time limit (a sign that its model is not serving)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, down=True)


class StepFailed(ServingError):
    """A model the pipeline calls answered with an error."""

    code = "INTERNAL"


class DependencyDown(ServingError):
    """A model the pipeline calls is down: its process is gone, it is unloaded or not ready, or it failed
    or stalled several times in a row (`georag.serving.health`); the request is refused at once."""

    code = "UNAVAILABLE"

    def __init__(self, message: str) -> None:
        super().__init__(message, down=True)
