"""Third-party clients, installed from npm by the test set-up: `npm ci` from the
committed lockfile, run again only when the lockfile changed (like scripts/test.sh
does for frontend_sdk). Without node or npm these tests skip and say why."""

from __future__ import annotations

import fcntl
import filecmp
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.browser.conftest import browser, page_server  # noqa: F401 (fixtures)
from tests.integration.conftest import start_web  # noqa: F401 (fixture)

HERE = Path(__file__).resolve().parent
INSTALLED_LOCK = HERE / "node_modules" / ".llmrum-lock"


@pytest.fixture(scope="session")
def node_clients() -> Path:
    """tests/clients with its node_modules installed from package-lock.json."""
    missing = [tool for tool in ("node", "npm") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"needs {' and '.join(missing)} on PATH for the OpenTelemetry JS clients")
    lock = HERE / "package-lock.json"
    # Helpers and CI may run the suite side by side in one checkout: one installs.
    with open(Path(tempfile.gettempdir()) / "llmrum-clients-npm.lock", "w") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        if not (INSTALLED_LOCK.exists() and filecmp.cmp(lock, INSTALLED_LOCK, shallow=False)):
            done = subprocess.run(
                ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                cwd=HERE, capture_output=True, text=True, timeout=600,
            )  # fmt: skip
            assert done.returncode == 0, f"npm ci in {HERE} failed:\n{done.stderr[-4000:]}"
            shutil.copyfile(lock, INSTALLED_LOCK)
    return HERE


@pytest.fixture(scope="session")
def otel_browser_bundle(node_clients: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The browser build of the OpenTelemetry web SDK and OTLP/HTTP exporter, bundled
    with esbuild (the exporter's package.json maps its node transport to the browser's)."""
    out = tmp_path_factory.mktemp("otel-browser") / "otel.js"
    done = subprocess.run(
        [str(node_clients / "node_modules" / ".bin" / "esbuild"), "otel_browser_entry.js",
         "--bundle", "--format=iife", "--platform=browser", "--target=chrome100",
         "--log-level=warning", f"--outfile={out}"],
        cwd=node_clients, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return out.read_text()
