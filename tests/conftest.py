from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import Client

from rumserver.applications import CreatedApplication, clear_ingest_caches
from rumserver.ingest.views import rate_limits
from tests import factories


def _broker_url() -> str:
    return os.environ.get("CELERY_BROKER_URL", "")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    db_url = os.environ.get("DATABASE_URL", "")
    on_postgres = db_url.startswith(("postgres://", "postgresql://", "pgsql://"))
    on_broker = _broker_url().startswith(("redis://", "amqp://", "pyamqp://"))
    skip_pg = pytest.mark.skip(
        reason="needs PostgreSQL: set DATABASE_URL=postgres://… (.ci/run does)"
    )
    skip_broker = pytest.mark.skip(
        reason="needs a real broker: set CELERY_BROKER_URL=redis://… (.ci/run does)"
    )
    for item in items:
        if "postgres" in item.keywords and not on_postgres:
            item.add_marker(skip_pg)
        if "broker" in item.keywords and not on_broker:
            item.add_marker(skip_broker)


@pytest.fixture(autouse=True)
def _fresh_ingest_state() -> Iterator[None]:
    clear_ingest_caches()
    rate_limits.clear()
    yield
    clear_ingest_caches()
    rate_limits.clear()


@pytest.fixture
def chat_app(db: Any) -> CreatedApplication:
    return factories.make_app()


class BeaconClient:
    """Posts beacons the way the SDK does: text/plain, the page's Origin, a real UA."""

    def __init__(self, client: Client, app: CreatedApplication) -> None:
        self.client = client
        self.app = app

    def post(
        self,
        body: bytes | dict[str, Any],
        *,
        key: str | None = None,
        content_type: str = "text/plain;charset=UTF-8",
        origin: str | None = factories.CHAT_ORIGIN,
        user_agent: str = factories.CHROME_UA,
        **headers: str,
    ) -> Any:
        data = factories.encode(body) if isinstance(body, dict) else body
        key = self.app.application.public_key if key is None else key
        # CONTENT_TYPE is set even for an empty body (the test client drops it then).
        extra = {"HTTP_USER_AGENT": user_agent, "CONTENT_TYPE": content_type, **headers}
        if origin is not None:
            extra["HTTP_ORIGIN"] = origin
        return self.client.generic(
            "POST", f"/rum/v1/beacon?key={key}", data, content_type=content_type, **extra
        )


@pytest.fixture
def beacon(client: Client, chat_app: CreatedApplication) -> BeaconClient:
    return BeaconClient(client, chat_app)
