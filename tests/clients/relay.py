"""A byte-for-byte TCP relay in front of the live llmrum server that keeps what it
carried, so a test can show what a third-party client really put on the wire
(Transfer-Encoding: chunked, a CORS preflight) while the server gets exactly those bytes."""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

# A request line and its head; bodies are ours (small JSON or protobuf spans), so a
# request line inside one is not a worry.
_REQUEST_HEAD = re.compile(rb"(GET|POST|OPTIONS) (/\S*) HTTP/1\.1\r\n(.*?)\r\n\r\n", re.DOTALL)
_STATUS = re.compile(rb"HTTP/1\.1 (\d{3}) ")


@dataclass
class RequestHead:
    method: str
    path: str
    headers: dict[str, str]  # names lower-cased


@dataclass
class Relay:
    url: str = ""
    upstream_port: int = 0
    _sent: list[bytearray] = field(default_factory=list)  # per connection, client to server
    _answered: list[bytearray] = field(default_factory=list)  # server to client
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def requests(self) -> list[RequestHead]:
        with self._lock:
            streams = [bytes(s) for s in self._sent]
        heads = []
        for stream in streams:
            for match in _REQUEST_HEAD.finditer(stream):
                headers = {}
                for line in match.group(3).decode("latin-1").split("\r\n"):
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                heads.append(RequestHead(match.group(1).decode(), match.group(2).decode(), headers))
        return heads

    def statuses(self) -> list[int]:
        with self._lock:
            streams = [bytes(s) for s in self._answered]
        return [int(m.group(1)) for s in streams for m in _STATUS.finditer(s)]

    def answers(self) -> bytes:
        with self._lock:
            return b"".join(bytes(s) for s in self._answered)


def _pipe(
    source: socket.socket, sink: socket.socket, kept: bytearray, lock: threading.Lock
) -> None:
    try:
        while data := source.recv(65536):
            with lock:
                kept += data
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for s in (sink, source):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


@contextmanager
def relay_to(base_url: str) -> Iterator[Relay]:
    """Listen on a free 127.0.0.1 port and relay every connection to base_url."""
    relay = Relay(upstream_port=int(base_url.rsplit(":", 1)[1]))
    listener = socket.create_server(("127.0.0.1", 0))
    relay.url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    sockets: list[socket.socket] = [listener]

    def accept() -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed at the end of the test
            upstream = socket.create_connection(("127.0.0.1", relay.upstream_port))
            sent, answered = bytearray(), bytearray()
            with relay._lock:
                relay._sent.append(sent)
                relay._answered.append(answered)
                sockets.extend((client, upstream))
            for args in ((client, upstream, sent), (upstream, client, answered)):
                threading.Thread(target=_pipe, args=(*args, relay._lock), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield relay
    finally:
        for s in sockets:
            s.close()
