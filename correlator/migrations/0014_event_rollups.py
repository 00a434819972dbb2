"""The vitals and errors pages' rollups (correlator.analytics.event_rollups).

An existing deployment's reports are backfilled through the normal refresh: this
marks every minute holding a vital or an error dirty (one read of the reports' own
index), and the next sweeps rebuild them (``manage.py stitch`` runs one now). Until a
period is rebuilt the pages read its raw reports, so they answer right meanwhile."""

import django.db.models.deletion
from django.db import migrations, models
from django.db.models.functions import TruncMinute
from django.utils import timezone

CHUNK = 5_000


def mark_reported_minutes(apps, schema_editor) -> None:
    event = apps.get_model("rumserver", "BrowserEvent")
    dirty = apps.get_model("rumserver", "DirtyEventRollup")
    minutes = (
        event.objects.using(schema_editor.connection.alias)
        .filter(type__in=["vital", "error"])
        .annotate(minute=TruncMinute("received_at"))
        .values_list("app_id", "minute")
        .distinct()
        # Marked in time order: a sweep claims marks in id order, 500 at a time, and
        # rebuilds adjacent minutes from one range read.
        .order_by("app_id", "minute")
    )
    now = timezone.now()
    rows = [
        dirty(app_id=app_id, period="minute", start=minute, first_marked_at=now, last_marked_at=now)
        for app_id, minute in minutes
    ]
    for lo in range(0, len(rows), CHUNK):
        dirty.objects.bulk_create(rows[lo : lo + CHUNK], ignore_conflicts=True)


class Migration(migrations.Migration):
    dependencies = [
        ("correlator", "0013_day_partitions"),
        ("rumserver", "0013_dirty_event_rollup"),
    ]

    operations = [
        migrations.CreateModel(
            name="EventRollup",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                (
                    "period",
                    models.CharField(
                        choices=[("minute", "Minute"), ("hour", "Hour"), ("day", "Day")],
                        max_length=8,
                    ),
                ),
                ("start", models.DateTimeField()),
                (
                    "kind",
                    models.CharField(
                        choices=[("vital", "Vital"), ("error", "Error")], max_length=8
                    ),
                ),
                ("device", models.CharField(blank=True, default="", max_length=16)),
                ("name", models.TextField(blank=True, default="")),
                ("place", models.TextField(blank=True, default="")),
                ("count", models.PositiveIntegerField(default=0)),
                ("sketch", models.JSONField(default=dict)),
                ("computed_at", models.DateTimeField()),
                (
                    "app",
                    models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        to="rumserver.application",
                    ),
                ),
            ],
            options={
                "indexes": [
                    models.Index(
                        fields=["app", "kind", "period", "start"], name="event_rollup_window"
                    )
                ],
            },
        ),
        migrations.RunPython(mark_reported_minutes, migrations.RunPython.noop, elidable=True),
    ]
