"""Day partitions of stitched turns on PostgreSQL, by send time (DESIGN.md §10.7).

Converts an existing deployment's ``correlator_turn`` in place, with downtime, the
way 0013 converted browser events and spans (``rumserver.partitions.rebuild``): the
table renamed, a partitioned one like it created (a partition for every day its
turns cover, at most ``CONVERT_DAYS_BACK`` back, to the days made ahead, and a
default partition), every row copied in one ``INSERT … SELECT``, the old table
dropped, then the keys (``PRIMARY KEY (id, t_send_ms)``, the trace's one-to-one key
as ``UNIQUE (trace_id, t_send_ms)``) and indexes built again under their names. All
or nothing in the migration's transaction, holding the table's lock: stop web and
workers first (README, Partitions); a million turns over 30 days took 43 s on a busy
2-core machine (bench/README, bench/scale). Going back makes it a plain table again,
``UNIQUE (trace_id)`` as before.

The model state is unchanged (``correlator.models.TraceOfTurn`` deconstructs as the
OneToOneField it was), so SQLite and ``makemigrations`` see nothing; on SQLite this
does nothing.
"""

from django.db import migrations

from rumserver.partitions import convert

TABLES = ["correlator_turn"]


def forwards(apps, schema_editor) -> None:
    convert(schema_editor, TABLES, partitioned=True)


def backwards(apps, schema_editor) -> None:
    convert(schema_editor, TABLES, partitioned=False)


class Migration(migrations.Migration):
    dependencies = [("correlator", "0014_event_rollups")]

    operations = [migrations.RunPython(forwards, backwards, elidable=False)]
