"""``python manage.py retention``: delete data past each application's retention."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand
from django.utils import timezone

from correlator.retention import retention_run


class Command(BaseCommand):
    help = "Delete raw and stitched data older than each application's retention days."

    def handle(self, *args: Any, **options: Any) -> None:
        result = retention_run(now=timezone.now())
        self.stdout.write(
            ", ".join(f"{n} {what}" for what, n in result.deleted.items()) or "nothing"
        )
        if result.dropped:  # whole day partitions (PostgreSQL)
            self.stdout.write(f"dropped {len(result.dropped)}: {', '.join(result.dropped)}")
