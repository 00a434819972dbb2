"""The traces' unique key led by the trace id, and their index on the trace id alone
dropped: the unique index serves those lookups now (``correlator.models.Trace``).

Both indexes were keyed by a random id, written at almost every stitch of a trace and
read at random; at 12 million traces the second one was memory the stitch's reads
missed (bench/README.md, bench/scale).

Builds one unique index over the traces in the migration's transaction, holding the
table's lock: about the time of one index of the traces (a few seconds a million
traces). The stitch waits on the lock meanwhile; ingest does not write traces. Going
back rebuilds the two old indexes.
"""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("correlator", "0016_conversation_send_span"),
        ("rumserver", "0015_metric_point_day_partitions"),
    ]

    operations = [
        migrations.RemoveConstraint(model_name="trace", name="uniq_trace_per_app"),
        migrations.AddConstraint(
            model_name="trace",
            constraint=models.UniqueConstraint(
                fields=("trace_id", "app"), name="uniq_trace_per_app"
            ),
        ),
        migrations.RemoveIndex(model_name="trace", name="trace_id"),
    ]
