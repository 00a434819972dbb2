# The vitals and errors pages' index (rumserver.models.BrowserEvent), built beside
# the beacon ingest's writes on PostgreSQL (rumserver.migration_operations).

from django.db import migrations, models

from rumserver.migration_operations import AddIndexConcurrently


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("rumserver", "0006_span_role_default"),
    ]

    operations = [
        AddIndexConcurrently(
            model_name="browserevent",
            index=models.Index(
                condition=models.Q(("type__in", ["vital", "error"])),
                fields=["app", "type", "received_at"],
                name="event_vital_error_received",
            ),
        ),
    ]
