# The sessions index's full order in one index (rumserver.models.BrowserSession),
# built beside the beacon ingest's writes on PostgreSQL (rumserver.migration_operations);
# the new index first, so that retention never goes without one.

from django.db import migrations, models

from rumserver.migration_operations import AddIndexConcurrently, RemoveIndexConcurrently


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("rumserver", "0008_trace_search_indexes"),
    ]

    operations = [
        AddIndexConcurrently(
            model_name="browsersession",
            index=models.Index(fields=["app", "last_seen_at", "id"], name="session_app_seen_id"),
        ),
        RemoveIndexConcurrently(model_name="browsersession", name="session_app_seen"),
    ]
