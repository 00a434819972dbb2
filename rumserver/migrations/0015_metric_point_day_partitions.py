"""Day partitions of model-server metric points on PostgreSQL, by their time
(DESIGN.md §10.7: retention drops whole days of raw rows; the points were the one raw
table that retention never emptied).

Converts an existing deployment's ``rumserver_metricpoint`` in place, with downtime,
the way correlator 0013 converted browser events and spans
(``rumserver.partitions.rebuild``): the table renamed, a partitioned one like it
created (a partition for every day its points cover, at most ``CONVERT_DAYS_BACK``
back, to the days made ahead, and a default partition), every row copied in one
``INSERT … SELECT``, the old table dropped, then the primary key built again as it
was, ``(time_ns, series_id)``. All or nothing in the migration's transaction,
holding the table's lock: stop web and workers (or just the metrics senders: they
retry) first (README, Partitions). Going back makes it a plain table again.

The model state is unchanged, so SQLite and ``makemigrations`` see nothing; on
SQLite this does nothing.
"""

from django.db import migrations

from rumserver.partitions import convert

TABLES = ["rumserver_metricpoint"]


def forwards(apps, schema_editor) -> None:
    convert(schema_editor, TABLES, partitioned=True)


def backwards(apps, schema_editor) -> None:
    convert(schema_editor, TABLES, partitioned=False)


class Migration(migrations.Migration):
    dependencies = [("rumserver", "0014_metric_rollup_levels")]

    operations = [migrations.RunPython(forwards, backwards, elidable=False)]
