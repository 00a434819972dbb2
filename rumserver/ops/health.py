"""/healthz for load balancers: is this node able to take data?

Ingest commits rows first and only then sends the correlator a hint (DESIGN.md §2),
so a node whose broker is down still takes every beacon and span: the broker's state
is reported, never fatal. Only a database that does not answer makes the node
unhealthy (503), since then ingest can store nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from celery import current_app
from django.db import connection

# Seconds the broker check may take; the answer must reach the balancer well within
# its own timeout even when the broker's host does not answer at all.
BROKER_TIMEOUT = 1.0


@dataclass
class HealthReport:
    checks: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.checks.get("database") == "ok"

    def as_json(self) -> dict[str, object]:
        failing = [name for name, v in self.checks.items() if v != "ok"]
        return {
            "status": "ok" if self.ok else "unavailable",
            "database": "ok" if self.ok else "down",
            "broker": "ok" if self.checks.get("broker") == "ok" else "down",
            "checks": self.checks,
            **({"failing": failing} if failing else {}),
        }


def _database() -> str:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:
        return f"error: {type(exc).__name__}: {str(exc)[:200]}"
    return "ok"


def _broker(timeout: float = BROKER_TIMEOUT) -> str:
    try:
        # The project's Celery app (rumserver.celery), current once rumserver is loaded.
        with current_app.connection_for_write() as conn:
            # kombu takes the timeout in seconds as a float; celery-types says int.
            conn.ensure_connection(max_retries=1, timeout=timeout)  # type: ignore[arg-type]
    except Exception as exc:
        return f"error: {type(exc).__name__}: {str(exc)[:200]}"
    return "ok"


def health_check() -> HealthReport:
    return HealthReport(checks={"database": _database(), "broker": _broker()})
