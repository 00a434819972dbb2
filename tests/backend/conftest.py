"""Fixtures of the backend helpers' tests, shared with tests/tracecontext/."""

from tests.tracecontext.conftest import memory_spans  # noqa: F401 (a fixture)
