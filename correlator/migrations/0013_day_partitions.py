"""Day partitions of browser events and spans on PostgreSQL (DESIGN.md §10.7).

Converts an existing deployment's tables in place, with downtime: each table is
renamed, a partitioned table like it created (a day partition for every day its
rows cover, at most ``rumserver.partitions.CONVERT_DAYS_BACK`` back, to the days
made ahead, and a default partition), every row copied in one ``INSERT … SELECT``,
the old table dropped, then keys (the partition key added to each), indexes and
foreign keys built again under their names. It runs in the migration's transaction,
all or nothing, holding the tables' locks: stop web and workers first (README,
Partitions); expect about the time of copying the tables and building their indexes
(bench/scale). Going back turns them into plain tables again the same way.

The model state is unchanged (Django sees ``id`` as the primary key), so SQLite and
``makemigrations`` see nothing; on SQLite this does nothing.
"""

from django.db import migrations

from rumserver.partitions import convert

TABLES = ["rumserver_browserevent", "rumserver_span"]


def forwards(apps, schema_editor) -> None:
    convert(schema_editor, TABLES, partitioned=True)


def backwards(apps, schema_editor) -> None:
    convert(schema_editor, TABLES, partitioned=False)


class Migration(migrations.Migration):
    dependencies = [
        ("correlator", "0012_rollups_count_old_turns_unpriced"),
        ("rumserver", "0011_model_price"),
    ]

    operations = [migrations.RunPython(forwards, backwards, elidable=False)]
