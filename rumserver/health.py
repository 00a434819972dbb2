"""Is the database and the broker reachable? For load balancers (/healthz)."""

from __future__ import annotations

from dataclasses import dataclass, field

from django.db import connection


@dataclass
class HealthReport:
    checks: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(v == "ok" for v in self.checks.values())

    def as_json(self) -> dict[str, object]:
        failing = [name for name, v in self.checks.items() if v != "ok"]
        return {
            "status": "ok" if self.ok else "unavailable",
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


def _broker(timeout: float = 2.0) -> str:
    from rumserver.celery import app

    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=timeout)
    except Exception as exc:
        return f"error: {type(exc).__name__}: {str(exc)[:200]}"
    return "ok"


def health_check() -> HealthReport:
    return HealthReport(checks={"database": _database(), "broker": _broker()})
