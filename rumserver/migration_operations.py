"""Index operations for the big tables: concurrent on PostgreSQL, plain elsewhere.

``CREATE INDEX`` holds a lock that blocks every write to the table until the index is
built: minutes on a table of a year of events or traces, while ingest (or the sweep)
waits. ``CONCURRENTLY`` builds it beside the writes; it cannot run in a transaction, so
a migration using these sets ``atomic = False``. SQLite, the embedded default, has no
such thing and small tables: a plain ``CREATE INDEX``.
"""

from __future__ import annotations

from typing import Any

from django.contrib.postgres import operations as postgres
from django.db import migrations


class _ConcurrentOnPostgres:
    """The PostgreSQL operation on PostgreSQL, ``plain`` elsewhere."""

    plain: Any

    def database_forwards(self, app_label: str, schema_editor: Any, *states: Any) -> None:
        self._run("database_forwards", app_label, schema_editor, *states)

    def database_backwards(self, app_label: str, schema_editor: Any, *states: Any) -> None:
        self._run("database_backwards", app_label, schema_editor, *states)

    def _run(self, name: str, app_label: str, schema_editor: Any, *states: Any) -> None:
        if schema_editor.connection.vendor == "postgresql":
            getattr(super(), name)(app_label, schema_editor, *states)
        else:
            getattr(self.plain, name)(self, app_label, schema_editor, *states)


class AddIndexConcurrently(_ConcurrentOnPostgres, postgres.AddIndexConcurrently):
    plain = migrations.AddIndex


class RemoveIndexConcurrently(_ConcurrentOnPostgres, postgres.RemoveIndexConcurrently):
    plain = migrations.RemoveIndex
