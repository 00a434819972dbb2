"""Ingest and operations stand on their own: they import nothing of the correlator,
the demo or the project's wiring. The correlator registers its /metrics collector
with rumserver.ops.prometheus, and the demo takes its token from ``manage.py serve``
through rumserver.signals."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STANDALONE = ("rumserver.ingest", "rumserver.ops", "rumserver.roles", "rumserver.sql")

# Loads Django with rumserver alone installed, then every module of STANDALONE, and
# prints what got imported of the correlator and the demo.
PROBE = f"""
import importlib, pkgutil, sys

import django
from django.conf import settings

import rumserver.settings as base

overrides = {{name: getattr(base, name) for name in dir(base) if name.isupper()}}
overrides["INSTALLED_APPS"] = ["django.contrib.auth", "django.contrib.contenttypes", "rumserver"]
settings.configure(**overrides)
django.setup()
for name in {STANDALONE!r}:
    module = importlib.import_module(name)
    for found in pkgutil.walk_packages(getattr(module, "__path__", []), name + "."):
        importlib.import_module(found.name)
print(sorted(m for m in sys.modules if m.split(".")[0] in ("correlator", "demo")))
"""


def test_ingest_and_ops_load_nothing_of_the_correlator_or_the_demo(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env["LLMRUM_DATA_DIR"] = str(tmp_path)
    done = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


# The probe above never runs imports inside functions; these are read from the source.
# The project's wiring (rumserver.celery, urls, settings) loads with the rumserver
# package or with Django: code that imports it by name has the dependency backwards.
FORBIDDEN = ("correlator", "demo", "rumserver.celery", "rumserver.urls", "rumserver.settings")


def _forbidden(name: str) -> bool:
    return any(name == f or name.startswith(f + ".") for f in FORBIDDEN)


def test_ingest_and_ops_name_none_of_them_even_inside_a_function():
    for package in ("ingest", "ops"):
        for path in sorted((ROOT / "rumserver" / package).rglob("*.py")):
            wrong = sorted(name for name in _imports(path) if _forbidden(name))
            assert not wrong, f"{path.relative_to(ROOT)} imports {wrong}"
