# The trace search's indexes (DESIGN.md §10.5), built beside ingest's writes on
# PostgreSQL (rumserver.migration_operations): sessions by user id, scores by name,
# and, on PostgreSQL only, span attributes for `attr=key:value` (a GIN index SQLite
# cannot build, so it is kept out of the model state).

from django.db import migrations, models

from rumserver.migration_operations import AddIndexConcurrently

SPAN_ATTRIBUTES = "span_attributes"


def add_span_attributes_index(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(
            f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {SPAN_ATTRIBUTES} "
            "ON rumserver_span USING gin (attributes jsonb_path_ops)"
        )


def drop_span_attributes_index(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {SPAN_ATTRIBUTES}")


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("rumserver", "0007_event_vital_error_index"),
    ]

    operations = [
        AddIndexConcurrently(
            model_name="browsersession",
            index=models.Index(
                condition=models.Q(("user_id", ""), _negated=True),
                fields=["app", "user_id"],
                name="session_app_user",
            ),
        ),
        AddIndexConcurrently(
            model_name="score",
            index=models.Index(fields=["app", "name", "trace_id"], name="score_app_name"),
        ),
        migrations.RunPython(add_span_attributes_index, drop_span_attributes_index),
    ]
