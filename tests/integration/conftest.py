"""Real processes for integration tests: gunicorn and a Celery worker, started
against the pytest-django test database, each on its own free port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import connection

from tests import factories

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_database_url() -> str:
    """The URL of the database pytest-django made for this run (test_<name>)."""
    s = connection.settings_dict
    if connection.vendor != "postgresql":
        pytest.skip("subprocess tests share the test database: needs PostgreSQL")
    user = s.get("USER") or "postgres"
    password = f":{s['PASSWORD']}" if s.get("PASSWORD") else ""
    return f"postgres://{user}{password}@{s.get('HOST') or '127.0.0.1'}:{s.get('PORT') or 5432}/{s['NAME']}"


def subprocess_env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env.update(
        DJANGO_SETTINGS_MODULE="rumserver.settings",
        DATABASE_URL=test_database_url(),
        ALLOWED_HOSTS="127.0.0.1,localhost",
        LLMRUM_APP_CACHE_SECONDS="0",
        LLMRUM_HINT_INTERVAL_SECONDS="0",
        PYTHONUNBUFFERED="1",
    )
    env.update(overrides)
    return env


def http(
    method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


# What the SDK's beacon carries: text/plain (no preflight), the page's Origin, a browser.
BEACON_HEADERS = {
    "Content-Type": "text/plain;charset=UTF-8",
    "Origin": factories.CHAT_ORIGIN,
    "User-Agent": factories.CHROME_UA,
}


def post_beacon(
    base: str, public_key: str, body: dict[str, Any], headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """POST a beacon to a running server as the SDK does; ``headers`` add to or replace
    the SDK's."""
    return http(
        "POST",
        f"{base}/rum/v1/beacon?key={public_key}",
        factories.encode(body),
        {**BEACON_HEADERS, **(headers or {})},
    )


class Process:
    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        self._file = log.open("wb")
        self.proc = subprocess.Popen(
            args, env=env, cwd=ROOT, stdout=self._file, stderr=subprocess.STDOUT
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, predicate: Callable[[str], bool], timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.output()
            if predicate(text):
                return text
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        raise AssertionError(f"timed out; process log:\n{self.output()[-4000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._file.close()


@pytest.fixture
def start_web(transactional_db: Any, tmp_path: Path) -> Iterator[Callable[..., str]]:
    """Start gunicorn on the test database; returns the base URL."""
    started: list[Process] = []

    def start(**env: str) -> str:
        port = free_port()
        args = [sys.executable, "-m", "gunicorn", "rumserver.wsgi", "--bind",
                f"127.0.0.1:{port}", "--workers", "1"]  # fmt: skip
        proc = Process(args, subprocess_env(**env), tmp_path / f"web-{port}.log")
        started.append(proc)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                http("GET", base + "/healthz")
                return base
            except OSError:
                assert proc.proc.poll() is None, proc.output()
                time.sleep(0.2)
        raise AssertionError(proc.output())

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture
def start_worker(transactional_db: Any, tmp_path: Path) -> Iterator[Callable[..., Process]]:
    started: list[Process] = []

    def start(**env: str) -> Process:
        args = [sys.executable, "-m", "celery", "-A", "rumserver", "worker", "--pool", "solo",
                "--loglevel", "INFO", "--without-heartbeat", "--without-gossip",
                "--without-mingle"]  # fmt: skip
        proc = Process(args, subprocess_env(**env), tmp_path / f"worker-{len(started)}.log")
        started.append(proc)
        proc.wait_for(lambda text: " ready." in text)
        return proc

    yield start
    for proc in started:
        proc.stop()
