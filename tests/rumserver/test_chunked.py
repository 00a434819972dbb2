"""Chunked request bodies (Transfer-Encoding: chunked, no Content-Length) are read
like sized ones: the de-chunker, and Django's own development server, which hands
the view the raw connection."""

from __future__ import annotations

import http.client
import io
import json
from collections.abc import Iterable
from urllib.parse import urlsplit

import pytest
from django.core.handlers.wsgi import WSGIRequest
from django.test import RequestFactory

from rumserver.ingest.errors import IngestError
from rumserver.ingest.parsers import ChunkedReader, read_body
from rumserver.models import BrowserEvent, Span
from tests import factories
from tests.otlp import builders


def framed(*chunks: bytes, trailer: bytes = b"") -> bytes:
    out = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(c), c) for c in chunks if c)
    return out + b"0\r\n" + trailer + b"\r\n"


def test_the_dechunker_joins_chunks_and_stops_after_the_trailers():
    raw = io.BytesIO(framed(b"hello ", b"chunked ", b"world", trailer=b"X-Sum: 1\r\n") + b"NEXT")
    reader = ChunkedReader(raw)
    assert reader.read(3) == b"hel"
    assert reader.read() == b"lo chunked world"
    assert reader.read() == b""
    assert raw.read() == b"NEXT"  # the next request on the connection is left alone


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        (b"zz\r\nabc\r\n0\r\n\r\n", "bad chunk size"),
        (b"5\r\nabc", "truncated"),
        (b"3\r\nabcXY0\r\n\r\n", "not followed by CRLF"),
        (b"3" * 5000, "malformed chunked body"),
        (b"", "malformed chunked body"),
    ],
)
def test_broken_framing_is_a_400(wire, message):
    with pytest.raises(IngestError) as info:
        ChunkedReader(io.BytesIO(wire)).read()
    assert info.value.status == 400 and message in info.value.message


def chunked_request(body: bytes, *, terminated: bool) -> WSGIRequest:
    """A WSGI request as a server hands it over: de-chunked input ending at the body
    (``wsgi.input_terminated``), or the raw connection with the chunk framing."""
    request = RequestFactory().generic("POST", "/v1/traces", b"", content_type="text/plain")
    environ = request.environ
    environ.pop("CONTENT_LENGTH", None)
    environ["HTTP_TRANSFER_ENCODING"] = "chunked"
    if terminated:
        environ["wsgi.input_terminated"] = True
        environ["wsgi.input"] = io.BytesIO(body)
    else:
        environ["wsgi.input"] = io.BytesIO(framed(body[:7], body[7:]))
    return WSGIRequest(environ)


@pytest.mark.parametrize("terminated", [True, False])
def test_read_body_reads_a_chunked_body(terminated):
    body = b'{"resourceSpans": []}' * 10
    request = chunked_request(body, terminated=terminated)
    assert read_body(request, max_wire=1000, max_body=1000) == body


@pytest.mark.parametrize("terminated", [True, False])
def test_a_chunked_body_over_the_wire_limit_is_413_without_reading_it_all(terminated):
    request = chunked_request(b"x" * 5000, terminated=terminated)
    with pytest.raises(IngestError) as info:
        read_body(request, max_wire=1000, max_body=1000)
    assert info.value.status == 413
    stream = request.environ["wsgi.input"]
    assert stream.tell() < 2000  # stopped one read past the limit, not at the end


def test_both_content_length_and_chunked_is_a_400():
    request = chunked_request(b"abc", terminated=True)
    request.environ["CONTENT_LENGTH"] = "3"
    with pytest.raises(IngestError) as info:
        read_body(request, max_wire=1000, max_body=1000)
    assert info.value.status == 400 and "Content-Length" in info.value.message


def post_chunked(
    url: str, chunks: Iterable[bytes], headers: dict[str, str]
) -> tuple[int, dict, bytes]:
    """POST with Transfer-Encoding: chunked and no Content-Length, as the
    OpenTelemetry JS exporters do."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=15)
    try:
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        conn.request("POST", path, body=iter(chunks), headers=headers, encode_chunked=True)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def split(data: bytes, size: int = 1000) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


@pytest.mark.django_db(transaction=True)
def test_the_development_server_reads_chunked_beacons_and_spans(live_server):
    app = factories.make_app()
    batch = factories.batch([factories.turn_event(), factories.action_event()])
    status, _, body = post_chunked(
        f"{live_server.url}/rum/v1/beacon?key={app.application.public_key}",
        split(factories.encode(batch), 100),
        {"Content-Type": "text/plain", "Origin": factories.CHAT_ORIGIN},
    )
    assert (status, json.loads(body)["accepted"]) == (202, 2)
    assert BrowserEvent.objects.count() == 2

    request = builders.request([builders.span(), builders.span()])
    status, _, body = post_chunked(
        f"{live_server.url}/v1/traces",
        split(request.SerializeToString(), 50),
        {"Content-Type": "application/x-protobuf", "Authorization": f"Bearer {app.ingest_token}"},
    )
    assert (status, body) == (200, b"")
    assert Span.objects.count() == 2
