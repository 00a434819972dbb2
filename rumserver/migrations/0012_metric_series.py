"""Metric points become thin rows of a series (DESIGN.md §10.6, issue 14): a point was a
row with its service, name, attributes and resource and three indexes; now the
series is a row of its own, made once, and a point is its series, time and value
under one key. Adds the minute and hour rollups for long ranges and the marks of the
periods they need made again. Existing points are moved to the new tables."""

import hashlib

import django.db.models.deletion
import msgspec
from django.db import migrations, models

_canonical = msgspec.json.Encoder(order="sorted").encode


def _key(row: dict) -> str:
    # As rumserver.ingest.otlp.metrics.series_key computed it when this was written.
    identity = [row["service"], row["instance"], row["name"], row["kind"], row["unit"],
                row["monotonic"], row["temporality"], row["attributes"]]  # fmt: skip
    return hashlib.blake2b(_canonical(identity), digest_size=16).hexdigest()


def move_points(apps, schema_editor):
    old = apps.get_model("rumserver", "MetricPointV1")
    series_model = apps.get_model("rumserver", "MetricSeries")
    identity = ("app_id", "series", "kind", "unit", "monotonic", "temporality")
    new_table = apps.get_model("rumserver", "MetricPoint")._meta.db_table
    with schema_editor.connection.cursor() as cursor:
        for ident in old.objects.values(*identity).distinct().order_by(*identity):
            first = (
                old.objects.filter(**ident)
                .order_by("time_ns")
                .values("received_at", "service", "instance", "name", "attributes", "resource")
                .first()
            )
            row = {**ident, **first}
            series, _ = series_model.objects.get_or_create(
                app_id=ident["app_id"],
                key=_key(row),
                defaults={
                    "service": row["service"], "instance": row["instance"], "name": row["name"],
                    "unit": row["unit"], "kind": row["kind"], "monotonic": row["monotonic"],
                    "temporality": row["temporality"], "attributes": row["attributes"],
                    "resource": row["resource"], "created_at": row["received_at"],
                },
            )  # fmt: skip
            # Histogram fields only on histograms (kind 3); the value was a float already.
            cursor.execute(
                f"INSERT INTO {new_table} (series_id, time_ns, start_ns, value, int_value,"
                " count, sum, min, max, bounds, bucket_counts, flags)"
                " SELECT %s, time_ns, start_ns, value, NULL, count, sum, min, max,"
                " CASE WHEN kind = 3 THEN bounds END, CASE WHEN kind = 3 THEN bucket_counts END,"
                f" flags FROM {old._meta.db_table} WHERE app_id = %s AND series = %s"
                " AND kind = %s AND unit = %s AND monotonic = %s AND temporality = %s",
                [series.pk, *(ident[name] for name in identity)],
            )
        # The moved points' minutes and hours still need their rollups.
        dirty = apps.get_model("rumserver", "MetricDirty")._meta.db_table
        for seconds in (60, 3600):
            width = seconds * 1_000_000_000
            cursor.execute(
                f"INSERT INTO {dirty} (app_id, seconds, start_ns)"
                f" SELECT DISTINCT app_id, {seconds}, (time_ns / {width}) * {width}"
                f" FROM {old._meta.db_table}"
            )


class Migration(migrations.Migration):
    dependencies = [
        ("rumserver", "0011_model_price"),
    ]

    operations = [
        migrations.RenameModel("MetricPoint", "MetricPointV1"),
        migrations.CreateModel(
            name="MetricSeries",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                (
                    "app",
                    models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        to="rumserver.application",
                    ),
                ),
                ("key", models.CharField(help_text="Hash of the series identity.", max_length=32)),
                ("service", models.CharField(help_text="Resource service.name.", max_length=128)),
                (
                    "instance",
                    models.CharField(
                        blank=True,
                        default="",
                        help_text="Resource service.instance.id.",
                        max_length=256,
                    ),
                ),
                ("name", models.CharField(max_length=256)),
                ("unit", models.CharField(blank=True, default="", max_length=64)),
                (
                    "kind",
                    models.PositiveSmallIntegerField(
                        choices=[(1, "Gauge"), (2, "Sum"), (3, "Histogram")]
                    ),
                ),
                ("monotonic", models.BooleanField(default=False)),
                (
                    "temporality",
                    models.PositiveSmallIntegerField(
                        default=0, help_text="OTLP AggregationTemporality: 1 delta, 2 cumulative."
                    ),
                ),
                ("attributes", models.JSONField(default=dict)),
                (
                    "resource",
                    models.JSONField(default=dict, help_text="As sent with the first point."),
                ),
                ("created_at", models.DateTimeField()),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(fields=("app", "key"), name="uniq_metric_series")
                ],
                "indexes": [
                    models.Index(fields=["app", "name"], name="metric_series_app_name"),
                ],
            },
        ),
        migrations.CreateModel(
            name="MetricPoint",
            fields=[
                (
                    "pk",
                    models.CompositePrimaryKey(
                        "time_ns",
                        "series",
                        blank=True,
                        editable=False,
                        primary_key=True,
                        serialize=False,
                    ),
                ),
                (
                    "series",
                    models.ForeignKey(
                        db_constraint=False,
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="points",
                        to="rumserver.metricseries",
                    ),
                ),
                ("time_ns", models.BigIntegerField()),
                (
                    "start_ns",
                    models.BigIntegerField(default=0, help_text="Start of a sum or histogram."),
                ),
                (
                    "value",
                    models.FloatField(blank=True, help_text="Gauge or sum value.", null=True),
                ),
                (
                    "int_value",
                    models.BigIntegerField(
                        blank=True, help_text="The value when sent as an integer.", null=True
                    ),
                ),
                (
                    "count",
                    models.BigIntegerField(blank=True, help_text="Histogram count.", null=True),
                ),
                ("sum", models.FloatField(blank=True, null=True)),
                ("min", models.FloatField(blank=True, null=True)),
                ("max", models.FloatField(blank=True, null=True)),
                (
                    "bounds",
                    models.JSONField(blank=True, help_text="Histogram explicit bounds.", null=True),
                ),
                (
                    "bucket_counts",
                    models.JSONField(
                        blank=True, help_text="Histogram, per bucket, not cumulative.", null=True
                    ),
                ),
                (
                    "flags",
                    models.PositiveIntegerField(
                        default=0, help_text="1 = no recorded value (stale)."
                    ),
                ),
            ],
        ),
        migrations.CreateModel(
            name="MetricRollup",
            fields=[
                (
                    "pk",
                    models.CompositePrimaryKey(
                        "series",
                        "seconds",
                        "start_ns",
                        blank=True,
                        editable=False,
                        primary_key=True,
                        serialize=False,
                    ),
                ),
                (
                    "series",
                    models.ForeignKey(
                        db_constraint=False,
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="rollups",
                        to="rumserver.metricseries",
                    ),
                ),
                ("seconds", models.PositiveSmallIntegerField(help_text="60 or 3600.")),
                ("start_ns", models.BigIntegerField()),
                ("samples", models.IntegerField()),
                ("total", models.FloatField()),
                ("increase", models.FloatField()),
                ("increase_seconds", models.FloatField()),
                ("first_ns", models.BigIntegerField()),
                ("first_value", models.FloatField()),
                ("last_ns", models.BigIntegerField()),
                ("last_value", models.FloatField()),
            ],
        ),
        migrations.CreateModel(
            name="MetricDirty",
            fields=[
                (
                    "pk",
                    models.CompositePrimaryKey(
                        "app",
                        "seconds",
                        "start_ns",
                        blank=True,
                        editable=False,
                        primary_key=True,
                        serialize=False,
                    ),
                ),
                (
                    "app",
                    models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        to="rumserver.application",
                    ),
                ),
                ("seconds", models.PositiveSmallIntegerField()),
                ("start_ns", models.BigIntegerField()),
            ],
        ),
        migrations.RunPython(move_points, migrations.RunPython.noop),
        migrations.DeleteModel("MetricPointV1"),
    ]
