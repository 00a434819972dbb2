"""/healthz for load balancers."""

from __future__ import annotations

import pytest


@pytest.mark.django_db
def test_healthz_is_200_when_database_and_broker_answer(client):
    r = client.get("/healthz")
    assert r.status_code == 200
    assert r.json() == {
        "status": "ok",
        "database": "ok",
        "broker": "ok",
        "checks": {"database": "ok", "broker": "ok"},
    }
