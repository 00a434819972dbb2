"""The README's run command: `manage.py serve` on the embedded default (SQLite and
the filesystem broker, no server), web + worker + beat, stopped by Ctrl-C."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from rumserver.applications import sdk_snippet
from tests import factories
from tests.integration.conftest import ROOT, free_port, http


def test_serve_runs_web_worker_and_beat_on_the_embedded_default(tmp_path: Path):
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "CELERY_BROKER_URL", "DJANGO_SETTINGS_MODULE")
    }
    env.update(LLMRUM_DATA_DIR=str(tmp_path / "data"), PYTHONUNBUFFERED="1",
               LLMRUM_SWEEP_SECONDS="1")  # fmt: skip
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "serve", "--port", str(port)],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip

    def output() -> str:
        return (tmp_path / "serve.log").read_text(errors="replace")

    def wait_for(pattern: str, timeout: float = 60) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(pattern, output())
            if match:
                return match
            assert proc.poll() is None, output()
            time.sleep(0.3)
        raise AssertionError(output()[-4000:])

    try:
        wait_for(r"llmrum is running at http://127\.0\.0\.1:\d+/")
        text = output()
        keys = json.loads(re.search(r'\{"slug": "demo".*\}', text).group(0))
        assert keys["public_key"].startswith("pk_") and keys["ingest_token"].startswith("it_")
        assert re.search(r"created the admin user: admin / \S+", text)
        # The snippet to paste names chatUrls (empty by default: no turn would be timed).
        assert sdk_snippet(f"http://127.0.0.1:{port}", keys["public_key"]) in text
        assert "chatUrls: [" in text

        status, _, body = http("GET", f"http://127.0.0.1:{port}/healthz")
        assert status == 200, body
        # The snippet's script tag loads the committed bundle from here.
        status, headers, bundle = http(
            "GET", f"http://127.0.0.1:{port}/static/llmrum/llmrum.min.js"
        )
        committed = (ROOT / "frontend_sdk" / "static" / "llmrum" / "llmrum.min.js").read_bytes()
        assert status == 200 and bundle == committed
        assert "javascript" in headers["Content-Type"]
        origin = f"http://127.0.0.1:{port}"
        status, _, body = http(
            "POST",
            f"{origin}/rum/v1/beacon?key={keys['public_key']}",
            factories.encode(factories.batch()),
            {"Content-Type": "text/plain", "Origin": origin},
        )
        assert (status, json.loads(body)) == (202, {"accepted": 1, "rejected": []})
        # Beat schedules the sweep, the worker runs it and sees the new dirty trace.
        wait_for(r"correlator sweep: 1 traces stitched")
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
            log.close()
    assert proc.returncode == 0, output()[-3000:]
