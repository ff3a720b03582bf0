"""The multipart/form-data bodies `georag serve` accepts (``curl -F file=@photo.jpg``), read with
python-multipart, the streaming parser FastAPI itself uses.

A body holds one file part (the part named ``file`` or the only part with a filename: the image) and at
most a few short text fields (the request's parameters). The body is parsed once it is all read under its
cap (`georag.serving.http_app`); anything else (no or two file parts, a body without its closing
boundary, a part without a name, too many parts, too long a field) is refused with a clear 400
(`BadRequest`), an image over the cap with 413 (`TooLarge`).

python-multipart is imported when a form is parsed, as FastAPI does, so that importing georag needs none;
without it, MissingDependencyError says what to install.
"""

import re
from typing import Any

from georag.errors import MissingDependencyError, extra_hint
from georag.serving.errors import BadRequest

MAX_PARTS = 16
"""Most parts of a multipart body (the file and the parameter fields need 8 at most)."""
MAX_PART_HEADERS = 4096
"""Longest header block of one part, in bytes."""
MAX_FIELD = 1024
"""Longest value of one parameter field, in bytes."""
_BOUNDARY = re.compile(r"[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]")
"""A multipart boundary as RFC 2046 allows it (1 to 70 characters, not ending in a space)."""
_ENCODINGS = ("binary", "8bit", "7bit")
"""The Content-Transfer-Encodings a part may name (none of them encodes anything)."""


class TooLarge(BadRequest):
    """A body or image over the size cap (answered 413)."""


def multipart() -> tuple[Any, Any, type[Exception]]:
    """python-multipart's MultipartParser, parse_options_header and FormParserError (the base of the
    errors it raises); MissingDependencyError without it. Its module is ``python_multipart`` since 0.0.13,
    ``multipart`` before (FastAPI reads both)."""
    try:
        from python_multipart.exceptions import FormParserError
        from python_multipart.multipart import MultipartParser, parse_options_header
    except ImportError:
        try:
            from multipart.exceptions import FormParserError  # type: ignore[no-redef]
            from multipart.multipart import MultipartParser, parse_options_header  # type: ignore[no-redef]
        except ImportError as exc:
            hint = extra_hint("serve", "fastapi uvicorn python-multipart")
            raise MissingDependencyError(
                f"georag serve needs python-multipart for form uploads: {hint} ({exc})"
            ) from exc
    return MultipartParser, parse_options_header, FormParserError


def boundary_of(content_type: str | None) -> bytes | None:
    """The boundary of a multipart/form-data body (BadRequest where it has none or a bad one); None for
    any other body, which is the encoded image itself (curl --data-binary sends it as a form)."""
    if content_type is None:
        return None
    kind, options = multipart()[1](content_type)
    if kind != b"multipart/form-data":
        return None
    value = options.get(b"boundary", b"").decode("latin-1")
    if not _BOUNDARY.fullmatch(value):
        raise BadRequest("a multipart/form-data body needs a boundary of 1 to 70 plain characters")
    return value.encode("ascii")


class _Part:
    """One part as the parser reads it: its headers (lower-case names), then its content."""

    def __init__(self) -> None:
        self.headers: dict[str, str] = {}
        self.header_bytes = 0
        self.field = bytearray()
        self.value = bytearray()
        self.chunks: list[bytes] = []


def parse_form(body: bytes, boundary: bytes, cap: int) -> tuple[bytes, list[tuple[str, str]]]:
    """The image and the text fields (name, value) of a multipart/form-data ``body`` (RFC 7578): the image
    is the part named ``file`` or the only part with a filename, every other part a field (its value UTF-8,
    at most `MAX_FIELD` bytes). BadRequest for a malformed body, no or several file parts, or a bad field;
    `TooLarge` for an image over ``cap`` bytes. The fields' names are the caller's to check."""
    MultipartParser, parse_options_header, FormParserError = multipart()
    delimiter = b"--" + boundary
    if not body.startswith(delimiter):  # skip a preamble (python-multipart skips only line breaks)
        start = body.find(b"\r\n" + delimiter)
        if start < 0:
            raise BadRequest("malformed multipart body: its boundary is not in it")
        body = body[start:]
    parts: list[_Part] = []
    files: list[bytes] = []
    fields: list[tuple[str, str]] = []
    ended = False

    def part_begin() -> None:
        if len(parts) == MAX_PARTS:
            raise BadRequest(f"a multipart body may hold at most {MAX_PARTS} parts")
        parts.append(_Part())

    def header_bytes(part: _Part, size: int) -> None:
        part.header_bytes += size
        if part.header_bytes > MAX_PART_HEADERS:
            raise BadRequest(f"a multipart part's headers are longer than {MAX_PART_HEADERS} bytes")

    def header_field(data: bytes, start: int, end: int) -> None:
        header_bytes(parts[-1], end - start)
        parts[-1].field += data[start:end]

    def header_value(data: bytes, start: int, end: int) -> None:
        header_bytes(parts[-1], end - start)
        parts[-1].value += data[start:end]

    def header_end() -> None:
        part = parts[-1]
        key = part.field.decode("latin-1").lower()
        if key in part.headers:
            raise BadRequest(f"malformed multipart body: a part has two {key} headers")
        part.headers[key] = part.value.decode("latin-1").strip(" \t")
        part.field.clear()
        part.value.clear()

    def part_data(data: bytes, start: int, end: int) -> None:
        part = parts[-1]
        part.chunks.append(data[start:end])

    def part_end() -> None:
        name, is_file, content = _read(parts[-1], parse_options_header)
        if is_file:
            files.append(content)
        elif len(content) > MAX_FIELD:
            raise BadRequest(f"form field {name!r} is longer than {MAX_FIELD} bytes")
        else:
            try:
                fields.append((name, content.decode("utf-8")))
            except UnicodeDecodeError:
                raise BadRequest(f"form field {name!r} is not UTF-8 text") from None

    def end() -> None:
        nonlocal ended
        ended = True

    callbacks = {
        "on_part_begin": part_begin,
        "on_header_field": header_field,
        "on_header_value": header_value,
        "on_header_end": header_end,
        "on_part_data": part_data,
        "on_part_end": part_end,
        "on_end": end,
    }
    parser = MultipartParser(boundary, callbacks)
    try:
        parser.write(body)
        parser.finalize()
    except FormParserError as exc:
        raise BadRequest(f"malformed multipart body: {exc}") from None
    if not ended:
        raise BadRequest("malformed multipart body: it does not end with its closing boundary")
    if not files:
        raise BadRequest("the multipart body has no file part: send the image as in curl -F file=@photo.jpg")
    if len(files) > 1:
        raise BadRequest(f"the multipart body has {len(files)} file parts; send one image per request")
    if len(files[0]) > cap:
        raise TooLarge(too_large(len(files[0]), cap))
    if not files[0]:
        raise BadRequest("the file part is empty: send the encoded image (e.g. curl -F file=@photo.jpg)")
    return files[0], fields


def _read(part: _Part, parse_options_header: Any) -> tuple[str, bool, bytes]:
    """(name, whether it is the file part, content) of a parsed part. BadRequest unless it is a form-data
    part with a name, its content not transfer-encoded."""
    if part.headers.get("content-transfer-encoding", "binary").lower() not in _ENCODINGS:
        raise BadRequest("multipart parts must not be transfer-encoded: send the bytes as they are")
    kind, options = parse_options_header(part.headers.get("content-disposition", ""))
    name = options.get(b"name", b"").decode("utf-8", "replace")
    if kind != b"form-data" or not name:
        raise BadRequest('every multipart part needs "Content-Disposition: form-data; name=..."')
    return name, name == "file" or b"filename" in options, b"".join(part.chunks)


def too_large(size: int | None, cap: int) -> str:
    """The message refusing an image of ``size`` bytes (None: unknown) over ``cap`` bytes."""
    limit = f"this server accepts at most {cap / (1 << 20):.1f} MiB"
    return f"the image is {size / (1 << 20):.1f} MiB; {limit}" if size else f"the image is too large; {limit}"
