from typing import Any

from django.apps import AppConfig
from django.db import connections
from django.db.models.signals import post_migrate


def _partitions_ahead(using: str = "default", **kwargs: Any) -> None:
    """After every migrate: the day partitions of the coming days (PostgreSQL), so a
    deployment does not depend on beat having run before its first event."""
    from rumserver.partitions import partitions_ensure

    partitions_ensure(connection=connections[using])


class CorrelatorConfig(AppConfig):
    name = "correlator"
    verbose_name = "llmrum correlator"

    def ready(self) -> None:
        from correlator.rum_metrics import RumCollector
        from correlator.telemetry import CorrelatorCollector
        from rumserver.ops.prometheus import collector_register

        collector_register(CorrelatorCollector)
        collector_register(RumCollector)
        post_migrate.connect(_partitions_ahead, sender=self)
