"""Metric rollups at six levels, each row with its prior and application (issue 14):
five minutes, three and six hours and days join the minutes and hours (``seconds`` no
longer fits a small integer); a row keeps the pair from its series' point before the
period to its first point in it, so a counter's rate is a sum when read; and its
series' application, for an index that serves a chart's rows of all its series from
one range a level. On PostgreSQL the rows already made get their application and
priors and the new levels are made from the minutes and hours, here, in SQL over the
rollups alone (no point is read): a deployment's charts read the new levels as soon
as it is migrated."""

import django.db.models.deletion
from django.db import migrations, models

_INCREASE = "CASE WHEN {later} < {earlier} THEN {later} ELSE {later} - {earlier} END"


def build_levels(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return  # SQLite keeps no rollups (rumserver.metric_rollups.kept)
    table = apps.get_model("rumserver", "MetricRollup")._meta.db_table
    series = apps.get_model("rumserver", "MetricSeries")._meta.db_table
    with schema_editor.connection.cursor() as cursor:
        # A chart reads the covering index alone where the visibility map says so: let
        # autovacuum visit after a hundredth of the rows changed, not a fifth (past
        # periods are never written again, so a visit skips them).
        cursor.execute(
            f"ALTER TABLE {table} SET (autovacuum_vacuum_scale_factor = 0.01,"
            " autovacuum_vacuum_insert_scale_factor = 0.01)"
        )
        cursor.execute(
            f"UPDATE {table} AS r SET app_id = s.app_id FROM {series} s WHERE s.id = r.series_id"
        )
        # As rumserver.metric_rollups makes them when this was written: a row's prior
        # is the last point of the row before it at the same level.
        cursor.execute(
            f"""
            UPDATE {table} AS r
            SET prior_ns = p.last_ns,
                prior_increase = {_INCREASE.format(later="r.first_value", earlier="p.last_value")}
            FROM (
                SELECT series_id, seconds, start_ns,
                       lag(last_ns) OVER w AS last_ns, lag(last_value) OVER w AS last_value
                FROM {table}
                WINDOW w AS (PARTITION BY series_id, seconds ORDER BY start_ns)
            ) AS p
            WHERE r.series_id = p.series_id AND r.seconds = p.seconds
              AND r.start_ns = p.start_ns AND p.last_ns IS NOT NULL
            """
        )
        for child, parent in ((60, 300), (3600, 10800), (3600, 21600), (3600, 86400)):
            width = parent * 1_000_000_000
            cursor.execute(
                f"""
                INSERT INTO {table} (series_id, app_id, seconds, start_ns, samples, total, increase,
                    increase_seconds, first_ns, first_value, last_ns, last_value, prior_ns,
                    prior_increase)
                SELECT series_id, app_id, {parent}, parent, sum(samples), sum(total),
                       sum(increase) + coalesce(sum(prior_increase) FILTER (WHERE NOT first), 0),
                       sum(increase_seconds) + coalesce(sum((first_ns - prior_ns)::float8 / 1e9)
                                                        FILTER (WHERE NOT first), 0),
                       min(first_ns), (array_agg(first_value ORDER BY start_ns))[1],
                       max(last_ns), (array_agg(last_value ORDER BY start_ns DESC))[1],
                       min(prior_ns) FILTER (WHERE first),
                       coalesce(sum(prior_increase) FILTER (WHERE first), 0)
                FROM (
                    SELECT c.*, c.start_ns - c.start_ns % {width} AS parent,
                           row_number() OVER (PARTITION BY series_id,
                                                           c.start_ns - c.start_ns % {width}
                                              ORDER BY start_ns) = 1 AS first
                    FROM {table} c WHERE c.seconds = {child}
                ) AS children
                GROUP BY series_id, app_id, parent
                ON CONFLICT (series_id, seconds, start_ns) DO NOTHING
                """
            )


class Migration(migrations.Migration):
    dependencies = [
        ("rumserver", "0013_dirty_event_rollup"),
    ]

    operations = [
        migrations.AlterField(
            model_name="metricrollup",
            name="seconds",
            field=models.PositiveIntegerField(help_text="60, 300, 3600, 10800, 21600 or 86400."),
        ),
        migrations.AddField(
            model_name="metricrollup",
            name="prior_ns",
            field=models.BigIntegerField(
                blank=True,
                help_text="The series' last point before the period, if any.",
                null=True,
            ),
        ),
        migrations.AddField(
            model_name="metricrollup",
            name="prior_increase",
            field=models.FloatField(
                db_default=0.0,
                default=0.0,
                help_text="From that point to the first of the period (0 without one).",
            ),
        ),
        migrations.AddField(
            model_name="metricrollup",
            name="app",
            field=models.ForeignKey(
                db_constraint=False,
                db_index=False,
                null=True,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="+",
                to="rumserver.application",
            ),
        ),
        migrations.RunPython(build_levels, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="metricrollup",
            name="app",
            field=models.ForeignKey(
                db_constraint=False,
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="+",
                to="rumserver.application",
            ),
        ),
        migrations.AddIndex(
            model_name="metricrollup",
            index=models.Index(
                fields=["app", "seconds", "start_ns", "series"],
                include=[
                    "samples",
                    "total",
                    "increase",
                    "increase_seconds",
                    "first_ns",
                    "prior_ns",
                    "prior_increase",
                ],
                name="metric_rollup_app_level",
            ),
        ),
    ]
