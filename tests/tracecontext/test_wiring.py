"""How llmrum's own server mounts the helper: the conformance endpoint only when
LLMRUM_TRACECONTEXT_TEST_ENDPOINT is on, and never the middleware on the beacon path."""

from __future__ import annotations

import ast
import importlib
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from django.conf import settings
from django.test import override_settings
from django.urls import Resolver404, clear_url_caches, resolve

import llmrum_asgi
import llmrum_backend
import llmrum_django
from llmrum_django.conformance import tracecontext
from rumserver import urls


@pytest.fixture
def reload_urls() -> Iterator[None]:
    yield
    importlib.reload(urls)
    clear_url_caches()


@pytest.mark.parametrize("enabled", [False, True])
def test_the_conformance_endpoint_follows_its_setting(reload_urls: None, enabled: bool) -> None:
    with override_settings(LLMRUM_TRACECONTEXT_TEST_ENDPOINT=enabled):
        importlib.reload(urls)
        clear_url_caches()
        if enabled:
            assert resolve("/_w3c/tracecontext").func is tracecontext
        else:
            with pytest.raises(Resolver404):
                resolve("/_w3c/tracecontext")


def test_the_beacon_path_does_not_pay_for_the_middleware() -> None:
    assert not [m for m in settings.MIDDLEWARE if m.startswith("llmrum_django")]


@pytest.mark.parametrize(
    ("package", "allowed"),
    [
        (llmrum_django, {"django", "asgiref", "opentelemetry", "llmrum_backend", "llmrum_django"}),
        # Any ASGI app, no Django: opentelemetry-api and the shared code only.
        (llmrum_asgi, {"opentelemetry", "llmrum_backend", "llmrum_asgi"}),
        (llmrum_backend, {"opentelemetry", "llmrum_backend"}),
    ],
)
def test_the_helpers_import_nothing_of_llmrum(package: ModuleType, allowed: set[str]) -> None:
    """A gateway installs llmrum-backend without llmrum's apps: opentelemetry-api (and
    Django for llmrum_django) only, never the SDK."""
    for module in Path(package.__file__ or "").parent.glob("*.py"):
        tree = ast.parse(module.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                assert top in allowed or _stdlib(top), f"{module.name} imports {name}"
                assert not name.startswith("opentelemetry.sdk"), f"{module.name} imports {name}"


def _stdlib(name: str) -> bool:
    return name in sys.stdlib_module_names or name == "__future__"
