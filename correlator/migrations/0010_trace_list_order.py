# The trace list's full order in one index (correlator.models.Trace), built beside
# the sweep's writes on PostgreSQL (rumserver.migration_operations); the new index
# first, so that the list never goes without one.

from django.db import migrations, models

from rumserver.migration_operations import AddIndexConcurrently, RemoveIndexConcurrently


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("correlator", "0009_trace_clock_skew_uncertainty"),
    ]

    operations = [
        AddIndexConcurrently(
            model_name="trace",
            index=models.Index(fields=["app", "start_ms", "id"], name="trace_app_start_id"),
        ),
        RemoveIndexConcurrently(model_name="trace", name="trace_app_start"),
    ]
