"""Drives an ASGI app in-process, as a server would, and keeps every message it sends
with the wall clock when it arrived."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Answer:
    messages: list[tuple[int, dict[str, Any]]] = field(default_factory=list)

    @property
    def start(self) -> dict[str, Any]:
        (start,) = [m for _, m in self.messages if m["type"] == "http.response.start"]
        return start

    @property
    def status(self) -> int:
        return int(self.start["status"])

    def header(self, name: str) -> str | None:
        values = [
            v.decode("latin-1") for n, v in self.start["headers"] if n.decode().lower() == name
        ]
        assert len(values) <= 1, f"{name} sent {len(values)} times"
        return values[0] if values else None

    def has_header(self, prefix: str) -> bool:
        return any(n.decode().lower().startswith(prefix) for n, _ in self.start["headers"])

    @property
    def bodies(self) -> list[tuple[int, bytes]]:
        """Each body message: when it arrived, its bytes."""
        return [
            (t, m.get("body", b"")) for t, m in self.messages if m["type"] == "http.response.body"
        ]

    @property
    def body(self) -> bytes:
        return b"".join(chunk for _, chunk in self.bodies)


def request(
    app: Any,
    path: str = "/api/chat",
    *,
    method: str = "POST",
    headers: dict[str, str] | None = None,
    root_path: str = "",
) -> Answer:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": root_path + path,
        "raw_path": (root_path + path).encode(),
        "root_path": root_path,
        "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    answer = Answer()

    async def run() -> None:
        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": b"{}", "more_body": False}
            await asyncio.Event().wait()  # the client stays until the answer ends
            raise AssertionError("unreachable")

        async def send(message: dict[str, Any]) -> None:
            answer.messages.append((time.time_ns(), message))

        await app(scope, receive, send)

    asyncio.run(run())
    return answer
