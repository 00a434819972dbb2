"""llmrum-backend as a user gets it (DESIGN.md §10.2): a wheel built from backend/ alone,
installed into a clean virtualenv with only what it declares (opentelemetry-api; Django
with the ``[django]`` extra), where both helpers import and answer a request. Needs the
package index, as the set-up commands do."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

from tests.tracecontext.conftest import ROOT

SMOKE = Path(__file__).with_name("package_smoke.py")


def run(*args: str | Path) -> str:
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{args}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_the_wheel_installs_and_works_in_a_clean_virtualenv(tmp_path: Path) -> None:
    # Built from a copy of backend/ alone: nothing else of the repository goes in, and
    # the checkout gets no build/ or egg-info of its own.
    source = tmp_path / "backend"
    shutil.copytree(
        ROOT / "backend",
        source,
        ignore=shutil.ignore_patterns("*.egg-info", "build", "__pycache__"),
    )
    run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", tmp_path / "dist", source)
    (wheel,) = (tmp_path / "dist").glob("llmrum_backend-*-py3-none-any.whl")
    with zipfile.ZipFile(wheel) as archive:
        tops = {name.split("/")[0] for name in archive.namelist()}
        info = next(t for t in tops if t.endswith(".dist-info"))
        metadata = Parser().parsestr(archive.read(f"{info}/METADATA").decode())
    assert tops - {info} == {"llmrum_backend", "llmrum_django", "llmrum_asgi"}
    assert metadata["Name"] == "llmrum-backend"
    assert sorted(metadata.get_all("Requires-Dist") or []) == [
        'Django>=4.2; extra == "django"',
        "opentelemetry-api<2,>=1.45",
    ]

    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv)
    python = venv / "bin" / "python"
    run(python, "-m", "pip", "install", "-q", "--disable-pip-version-check", wheel)
    assert run(python, "-I", SMOKE, "asgi").strip() == "llmrum_asgi ok"
    run(python, "-m", "pip", "install", "-q", "--disable-pip-version-check", f"{wheel}[django]")
    assert run(python, "-I", SMOKE, "django").strip() == "llmrum_django ok"
