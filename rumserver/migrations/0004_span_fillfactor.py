"""Leave a little room in each page of spans for their role updates.

The correlator rewrites a span's role once it has the whole trace (a gateway span
that arrived before its browser beacon is stored as 'service'). ``role`` is in no
index, so that update can be HOT (no index entries written) if the span's page has
room for the new row version; packed full, every such update wrote four index
entries. Applies to pages written from now on; PostgreSQL only.
"""

from django.db import migrations

FILLFACTOR = 85


def set_fillfactor(apps, schema_editor, value: int | None = FILLFACTOR) -> None:
    if schema_editor.connection.vendor != "postgresql":
        return
    table = schema_editor.quote_name("rumserver_span")
    if value is None:
        schema_editor.execute(f"ALTER TABLE {table} RESET (fillfactor)")
    else:
        schema_editor.execute(f"ALTER TABLE {table} SET (fillfactor = {int(value)})")


def reset_fillfactor(apps, schema_editor) -> None:
    set_fillfactor(apps, schema_editor, None)


class Migration(migrations.Migration):
    dependencies = [("rumserver", "0003_event_turn_span_index")]

    operations = [migrations.RunPython(set_fillfactor, reset_fillfactor, elidable=False)]
