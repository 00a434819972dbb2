"""Reading request bodies safely: content type, wire size, gzip with a cap.

The beacon endpoint is public, so nothing here trusts a header: the wire size is
checked before reading and again while reading, and a gzip body is inflated only
up to the limit (a bomb of a few KiB that inflates to gigabytes is refused after
``max_body + 1`` bytes of output, never inflated whole).

Bodies sent with ``Transfer-Encoding: chunked`` and no ``Content-Length`` (the
OpenTelemetry JS exporters always send them so) are read like sized ones. Django's
WSGI request only reads ``Content-Length`` bytes and sees such a body as empty, so
``wire_stream`` reads the server's own input instead: up to EOF where the server
de-chunks and ends the input at the body's end (gunicorn, mod_wsgi, Werkzeug, any
server that sets ``wsgi.input_terminated``), or through our own de-chunker where the
server hands over the raw connection (wsgiref, Django's development server). Under
ASGI the server de-chunks and Django hands the view the whole body
(``rumserver.asgi`` caps how much of it is read).
"""

from __future__ import annotations

import zlib
from typing import Protocol

from django.core.handlers.wsgi import LimitedStream, WSGIRequest
from django.http import HttpRequest

from rumserver.ingest.errors import IngestError

READ_SIZE = 64 * 1024


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class RawInput(Readable, Protocol):
    """A WSGI server's input stream (PEP 3333 ``wsgi.input``)."""

    def readline(self, size: int = -1, /) -> bytes: ...


def media_type(request: HttpRequest) -> str:
    return request.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()


def is_chunked(request: HttpRequest) -> bool:
    encodings = request.headers.get("Transfer-Encoding", "").lower()
    return "chunked" in (e.strip() for e in encodings.split(","))


def wire_stream(request: HttpRequest) -> Readable:
    """Where the request's body bytes come from, as the client sent them (before
    Content-Encoding is undone)."""
    if not isinstance(request, WSGIRequest) or not is_chunked(request):
        return request  # sized (Django limits the read to Content-Length), or ASGI
    if request.headers.get("Content-Length"):
        # Both headers: HTTP/1.1 says chunked wins, and a server that honours the
        # length would leave the chunk framing in the body. Refuse the ambiguity.
        raise IngestError(400, "send either Content-Length or Transfer-Encoding: chunked")
    stream: RawInput = request.environ["wsgi.input"]
    if request.environ.get("wsgi.input_terminated"):
        return stream
    if isinstance(stream, LimitedStream):
        # Django's development server wraps the connection in a stream limited to
        # Content-Length (zero here); the connection's own reader is underneath.
        # (A private attribute, so not in django-stubs.)
        stream = stream._read.__self__  # type: ignore[attr-defined]
    return ChunkedReader(stream)


class ChunkedReader:
    """De-chunks an HTTP/1.1 ``Transfer-Encoding: chunked`` body read from the raw
    connection, to EOF of the body (the last chunk and any trailers consumed).
    Framing that does not parse is a 400; it never reads past the terminating chunk."""

    MAX_LINE = 4096

    def __init__(self, raw: RawInput) -> None:
        self._raw = raw
        self._left = 0  # bytes of the current chunk still unread
        self._done = False

    def _line(self) -> bytes:
        line = self._raw.readline(self.MAX_LINE + 1)
        if not line.endswith(b"\n") or len(line) > self.MAX_LINE:
            raise IngestError(400, "malformed chunked body")
        return line.rstrip(b"\r\n")

    def _next_chunk(self) -> None:
        size_text = self._line().split(b";", 1)[0].strip()
        try:
            if not size_text or len(size_text) > 16:
                raise ValueError
            self._left = int(size_text, 16)
        except ValueError:
            raise IngestError(400, "malformed chunked body: bad chunk size") from None
        if self._left == 0:
            while self._line():  # trailers, up to the empty line
                pass
            self._done = True

    def read(self, size: int = -1, /) -> bytes:
        out = bytearray()
        while not self._done and (size < 0 or len(out) < size):
            if self._left == 0:
                self._next_chunk()
                continue
            want = self._left if size < 0 else min(self._left, size - len(out))
            data = self._raw.read(want)
            if not data:
                raise IngestError(400, "chunked body is truncated")
            out += data
            self._left -= len(data)
            if self._left == 0 and self._raw.read(2) != b"\r\n":
                raise IngestError(400, "malformed chunked body: chunk not followed by CRLF")
        return bytes(out)


def read_capped(stream: Readable, limit: int) -> bytes:
    """Up to ``limit`` bytes; a server's reader may answer short before EOF."""
    parts: list[bytes] = []
    got = 0
    while got < limit:
        data = stream.read(min(READ_SIZE, limit - got))
        if not data:
            break
        parts.append(data)
        got += len(data)
    return b"".join(parts)


def read_body(
    request: HttpRequest, *, max_wire: int, max_body: int, allow_empty: bool = False
) -> bytes:
    """The request body, inflated when gzip'd, or an IngestError (400/413/415)."""
    declared = request.headers.get("Content-Length")
    if declared:
        try:
            declared_len = int(declared)
        except ValueError:
            raise IngestError(400, "Content-Length is not a number") from None
        if declared_len > max_wire:
            raise IngestError(413, f"body is larger than {max_wire} bytes on the wire")
    wire = read_capped(wire_stream(request), max_wire + 1)
    if len(wire) > max_wire:
        raise IngestError(413, f"body is larger than {max_wire} bytes on the wire")
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    if encoding in ("", "identity"):
        body = wire
    elif encoding in ("gzip", "x-gzip"):
        body = gunzip_capped(wire, max_body=max_body)
    else:
        raise IngestError(415, f"unsupported Content-Encoding {encoding!r}; use gzip")
    if len(body) > max_body:
        raise IngestError(413, f"body is larger than {max_body} bytes")
    if not body and not allow_empty:
        raise IngestError(400, "empty body")
    return body


def gunzip_capped(data: bytes, *, max_body: int) -> bytes:
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, max_body + 1)
    except zlib.error:
        raise IngestError(400, "body is not valid gzip") from None
    if len(out) > max_body or inflater.unconsumed_tail:
        raise IngestError(413, f"body inflates to more than {max_body} bytes")
    if not inflater.eof:
        raise IngestError(400, "gzip body is truncated")
    return out
