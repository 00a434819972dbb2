"""The helper under a real WSGI server (gunicorn), with raw HTTP: repeated and
mixed-case headers arrive as a browser or proxy would send them, which Django's
test client cannot do."""

from __future__ import annotations

import http.client
import json
from urllib.parse import urlsplit

from tests.tracecontext.conftest import PARENT_ID, TRACE_ID, CallbackServer

VALID = f"00-{TRACE_ID}-{PARENT_ID}-01"


def raw_post(
    base: str, path: str, headers: list[tuple[str, str]], body: bytes = b""
) -> http.client.HTTPResponse:
    parts = urlsplit(base)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    connection.putrequest("POST", path)
    for name, value in [
        *headers,
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(body))),
    ]:
        connection.putheader(name, value)
    connection.endheaders(body)
    response = connection.getresponse()
    response.read()
    connection.close()
    return response


def callback_headers(
    gateway: str, server: CallbackServer, headers: list[tuple[str, str]]
) -> dict[str, str]:
    body = json.dumps([{"url": f"{server.url}/0", "arguments": []}]).encode()
    response = raw_post(gateway, "/_w3c/tracecontext", headers, body)
    assert response.status == 200
    (callback,) = server.take()
    return callback.headers


def test_two_traceparent_headers_restart_the_trace(
    gateway: str, callback_server: CallbackServer
) -> None:
    got = callback_headers(
        gateway,
        callback_server,
        [
            ("traceparent", f"00-{TRACE_ID[:-1]}1-{PARENT_ID}-01"),
            ("traceparent", VALID),
            ("tracestate", "foo=1"),
        ],
    )
    assert got["traceparent"].split("-")[1] not in (TRACE_ID, f"{TRACE_ID[:-1]}1")
    assert "tracestate" not in got


def test_repeated_tracestate_headers_are_merged_in_order(
    gateway: str, callback_server: CallbackServer
) -> None:
    got = callback_headers(
        gateway,
        callback_server,
        [("TraceParent", VALID), ("tracestate", "foo=1,bar=2"), ("TRACESTATE", "baz=3")],
    )
    assert got["traceparent"].split("-")[1] == TRACE_ID
    assert got["tracestate"] == "foo=1,bar=2,baz=3"


def test_the_chat_endpoint_reports_its_trace_and_timing(gateway: str) -> None:
    response = raw_post(
        gateway, "/api/chat", [("traceparent", VALID), ("Origin", "https://evil.example.com")]
    )
    assert response.status == 200
    assert f"trace;desc={VALID}" in response.headers["Server-Timing"]
    assert response.headers["Access-Control-Allow-Origin"] is None
