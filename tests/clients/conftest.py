"""Third-party clients, installed from npm by the test set-up: `npm ci` from each
committed lockfile (tests/clients: the 2.x OpenTelemetry JS SDK line, browser
included; tests/clients/sdk3: the 3.x line), run again only when the lockfile
changed, like scripts/test.sh does for frontend_sdk. Without node or npm these
tests skip and say why."""

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
PACKAGES = (HERE, HERE / "sdk3")


def npm_ci(package: Path) -> None:
    """npm ci unless node_modules was installed from this very lockfile."""
    lock, installed = package / "package-lock.json", package / "node_modules" / ".llmrum-lock"
    if installed.exists() and filecmp.cmp(lock, installed, shallow=False):
        return
    done = subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=package, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, f"npm ci in {package} failed:\n{done.stderr[-4000:]}"
    shutil.copyfile(lock, installed)


def npm_installed(packages: tuple[Path, ...], what: str) -> None:
    """npm ci in each package as needed, or skip the test when node or npm is missing."""
    missing = [tool for tool in ("node", "npm") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"needs {' and '.join(missing)} on PATH for {what}")
    # Several runs may share one checkout (helpers, CI): one installs at a time.
    with open(Path(tempfile.gettempdir()) / "llmrum-clients-npm.lock", "w") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        for package in packages:
            npm_ci(package)


@pytest.fixture(scope="session")
def node_clients() -> Path:
    """tests/clients, with the node_modules of both SDK lines installed."""
    npm_installed(PACKAGES, "the OpenTelemetry JS clients")
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
