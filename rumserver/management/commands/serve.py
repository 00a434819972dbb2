"""``python manage.py serve``: the whole service in one terminal.

Migrates, makes sure a demo application and an admin user exist, then runs the
three roles as child processes (gunicorn web, celery worker, celery beat) and
prints the URL and the snippet to paste. Ctrl-C (or SIGTERM) stops all three;
if one dies, the others are stopped too and the exit code says so.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser

from rumserver.applications import application_create, sdk_snippet
from rumserver.env import env_bool
from rumserver.models import Application
from rumserver.signals import serve_starting

DEMO_SLUG = "demo"


class Command(BaseCommand):
    help = "Run web, worker and beat together (the embedded default needs no servers)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--web-workers", type=int, default=2)

    def handle(self, *args: Any, **options: Any) -> None:
        host, port = options["host"], options["port"]
        base_url = f"http://{host}:{port}"
        call_command("migrate", interactive=False, verbosity=0)
        call_command("collectstatic", interactive=False, verbosity=0)
        # /metrics sums the files of live web processes; a new start begins at zero.
        for stale in Path(settings.LLMRUM_PROMETHEUS_DIR).glob("*.db"):
            stale.unlink(missing_ok=True)
        demo = env_bool("LLMRUM_DEMO", True)  # the demo chat is on here unless turned off
        public_key = self._demo_application(base_url, demo=demo)
        self._admin_user()
        # The children read these: the demo page, and where its simulated services
        # export their spans (this server's loopback address, not a proxy in front).
        os.environ["LLMRUM_DEMO"] = "1" if demo else "0"
        loopback = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
        os.environ.setdefault("LLMRUM_DEMO_OTLP_ENDPOINT", f"http://{loopback}:{port}/v1/traces")

        python = sys.executable
        roles = {
            "web": [python, "-m", "gunicorn", "rumserver.wsgi", "--bind", f"{host}:{port}",
                    "--workers", str(options["web_workers"]), "--access-logfile", "-"],
            "worker": [python, "-m", "celery", "-A", "rumserver", "worker", "--loglevel", "INFO",
                       "--concurrency", "1"],
            "beat": [python, "-m", "celery", "-A", "rumserver", "beat", "--loglevel", "INFO"],
        }  # fmt: skip
        children = {name: subprocess.Popen(cmd) for name, cmd in roles.items()}
        stopping = False

        def stop(signum: int, frame: Any) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        if self._wait_healthy(base_url, children):
            self._banner(base_url, public_key, demo=demo)
        exit_code = 0
        while not stopping:
            for name, child in children.items():
                if child.poll() is not None:
                    self.stderr.write(f"llmrum: {name} exited with {child.returncode}; stopping")
                    exit_code, stopping = child.returncode or 1, True
                    break
            time.sleep(0.5)
        for child in children.values():
            if child.poll() is None:
                child.terminate()
        for child in children.values():
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.kill()
        sys.exit(exit_code)

    def _demo_application(self, base_url: str, *, demo: bool = True) -> str:
        app = Application.objects.filter(slug=DEMO_SLUG).first()
        created_token = None
        if app is None:
            origins = [base_url, base_url.replace("127.0.0.1", "localhost")]
            created = application_create(name="Demo chat", slug=DEMO_SLUG, origins=origins)
            app, created_token = created.application, created.ingest_token
            self.stdout.write(
                "llmrum: created the demo application (its ingest token is shown once):"
            )
            self._keys_line(app, created_token)
        serve_starting.send(
            sender=self.__class__,
            application=app,
            ingest_token=created_token,
            demo=demo,
            stdout=self.stdout,
        )
        return app.public_key

    def _keys_line(self, app: Application, token: str) -> None:
        self.stdout.write(
            json.dumps({"slug": DEMO_SLUG, "public_key": app.public_key, "ingest_token": token})
        )

    def _admin_user(self) -> None:
        users = get_user_model()
        if users.objects.filter(is_superuser=True).exists():
            return
        password = secrets.token_urlsafe(12)
        users.objects.create_superuser("admin", "", password)
        self.stdout.write(
            f"llmrum: created the admin user: admin / {password} (shown once; change it with "
            "`python manage.py changepassword admin`)"
        )

    def _wait_healthy(self, base_url: str, children: dict[str, subprocess.Popen[bytes]]) -> bool:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if children["web"].poll() is not None:
                return False
            try:
                with urllib.request.urlopen(f"{base_url}/healthz", timeout=2) as response:
                    if response.status == 200:
                        return True
            except OSError:
                pass
            time.sleep(0.5)
        return False

    def _banner(self, base_url: str, public_key: str, *, demo: bool = False) -> None:
        snippet = sdk_snippet(base_url, public_key)
        demo_line = (
            f"Demo chat: {base_url}/demo/ (then the reports: {base_url}/reports/); a week of "
            "generated traffic: .venv/bin/python manage.py demo_traffic --turns 10000\n"
        )
        self.stdout.write(
            f"\nllmrum is running at {base_url}/  (admin: {base_url}/admin/, "
            f"health: {base_url}/healthz)\n"
            f"{demo_line if demo else ''}"
            f"Beacons: POST {base_url}/rum/v1/beacon?key={public_key}\n"
            f"Paste this into your chat page:\n\n{snippet}\n\nCtrl-C stops web, worker and beat.\n"
        )
