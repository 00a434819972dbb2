"""Reading request bodies safely: content type, wire size, gzip with a cap.

The beacon endpoint is public, so nothing here trusts a header: the wire size is
checked before reading and again while reading, and a gzip body is inflated only
up to the limit (a bomb of a few KiB that inflates to gigabytes is refused after
``max_body + 1`` bytes of output, never inflated whole).
"""

from __future__ import annotations

import zlib

from django.http import HttpRequest

from rumserver.errors import IngestError


def media_type(request: HttpRequest) -> str:
    return request.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()


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
    wire = request.read(max_wire + 1)
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
