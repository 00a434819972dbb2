"""Take the README's screenshots from the demo, as a new user would see it.

Runs the README's run command (``manage.py serve``) on a fresh embedded store in a
temporary directory, fills it with ``demo_traffic``, chats on /demo/ in headless
Chromium (send, stop, regenerate), then logs in and photographs the overview, the
trace list a chart point drills down to, the waterfall of the chat's regenerated turn, a
session, the errors page and the model-server page into ``docs/screenshots/``.

    .venv/bin/python scripts/readme_screenshots.py [--turns 3000] [--port 8765]
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
PASSWORD = "screenshots-123"
SHOTS = ("demo", "overview", "drilldown", "waterfall", "session", "errors", "model-servers")


def manage(env: dict[str, str], *args: str) -> None:
    subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, check=True)


def wait_healthy(url: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"{url} did not become healthy")


def ask(page, prompt: str, *, stop: bool) -> None:
    """Send a message (again, when the simulated services fail it); ``stop``: press
    Stop as soon as the first words arrive."""
    for _ in range(5):
        turns = int(page.get_attribute("body", "data-turns") or 0)
        page.fill("#prompt", prompt)
        page.click("#send")
        if stop:
            last = page.locator("li.msg.assistant").nth(turns)
            last.filter(has_text=re.compile(r"\w")).wait_for()
            if page.is_enabled("#stop"):
                page.click("#stop")
        page.wait_for_selector(f"body[data-turns='{turns + 1}'][data-busy='0']")
        state = page.locator("li.msg.assistant").last.get_attribute("data-state")
        if state == ("stopped" if stop else "completed"):
            return


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=3000)
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    data_dir = tempfile.mkdtemp(prefix="llmrum-screens-")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("LLMRUM_", "DATABASE_URL", "CELERY_BROKER_URL"))}  # fmt: skip
    env.update(LLMRUM_DATA_DIR=data_dir, DJANGO_SUPERUSER_PASSWORD=PASSWORD)
    manage(env, "migrate", "--verbosity", "0")
    manage(
        env, "createsuperuser", "--noinput", "--username", "admin", "--email", "admin@example.com"
    )
    base = f"http://127.0.0.1:{args.port}"
    serve = subprocess.Popen(
        [sys.executable, "manage.py", "serve", "--port", str(args.port)],
        cwd=ROOT, env=env, start_new_session=True,
    )  # fmt: skip
    try:
        wait_healthy(base)
        manage(env, "demo_traffic", "--turns", str(args.turns), "--days", "7", "--seed", "7",
               "--no-progress")  # fmt: skip
        OUT.mkdir(parents=True, exist_ok=True)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.set_default_timeout(30_000)
            page.goto(f"{base}/demo/")
            ask(page, "Why is my chat slow to answer?", stop=False)
            ask(page, "Tell me more, at length", stop=True)
            for _ in range(5):  # the simulated services fail one answer in fifteen
                turns = int(page.get_attribute("body", "data-turns") or 0)
                page.click("#regenerate")
                page.wait_for_selector(f"body[data-turns='{turns + 1}'][data-busy='0']")
                if page.locator("li.msg.assistant").last.get_attribute("data-state") == "completed":
                    break
            page.screenshot(path=str(OUT / "demo.png"))
            trace_url = page.locator("li.msg.assistant a.trace-link").last.get_attribute("href")

            page.goto(f"{base}/accounts/login/")
            page.fill("input[name=username]", "admin")
            page.fill("input[name=password]", PASSWORD)
            page.click("button[type=submit], input[type=submit]")
            time.sleep(12)  # beat's sweep stitches the chat (every 5 s) and rebuilds rollups
            page.goto(f"{base}/reports/?app=demo&range=7d")
            page.screenshot(path=str(OUT / "overview.png"))
            # Drill-down: a point of the client TTFT chart opens the trace list of its hour.
            page.locator("a.drill").first.click()
            page.wait_for_load_state()
            page.screenshot(path=str(OUT / "drilldown.png"))
            page.goto(f"{base}{trace_url}")
            page.screenshot(path=str(OUT / "waterfall.png"))
            page.goto(f"{base}/reports/sessions/?app=demo")
            page.locator("table a[href*='/reports/sessions/']").first.click()
            page.wait_for_load_state()
            page.screenshot(path=str(OUT / "session.png"))
            for name, path in (("errors", "errors/"), ("model-servers", "model-servers/")):
                page.goto(f"{base}/reports/{path}?app=demo&range=24h")
                page.screenshot(path=str(OUT / f"{name}.png"))
            browser.close()
        for name in SHOTS:
            print(OUT / f"{name}.png")
    finally:
        os.killpg(serve.pid, signal.SIGTERM)
        serve.wait(timeout=30)


if __name__ == "__main__":
    main()
