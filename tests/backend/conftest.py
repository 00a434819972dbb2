"""Fixtures of the backend helpers' tests, shared with tests/tracecontext/ and
tests/integration/ (llmrum itself under gunicorn)."""

from tests.integration.conftest import start_web  # noqa: F401 (a fixture)
from tests.tracecontext.conftest import memory_spans  # noqa: F401 (a fixture)
