"""Each conversation's span of send times (``correlator.models.Conversation``), so
that its opening turns are read from the day partitions of turns it has rows in.

Filled from the stored turns in one ``INSERT … SELECT … GROUP BY`` (an aggregate over
every turn, read once; a million turns took a few seconds here), in the migration's
transaction: the stitch must not write turns meanwhile (stop the workers, as for
0015), or a conversation it starts would be missing here and its opening turns
unread until its next turn. Going back drops the table.

The turns' index on (app, conversation, send) becomes (conversation, app, send): the
opening turns are read by conversation and send time alone, where the (app, send)
index cannot serve (``correlator.selectors.conversation_openers``). Built on every day
partition in the migration's transaction, holding the table's lock: about the time of
one index of the turns (a few seconds a million turns).
"""

import django.db.models.deletion
from django.db import migrations, models


def fill_from_turns(apps, schema_editor) -> None:
    conversation = apps.get_model("correlator", "Conversation")._meta.db_table
    turn = apps.get_model("correlator", "Turn")._meta.db_table
    schema_editor.execute(
        f"INSERT INTO {conversation} (app_id, conversation_id, first_send_ms, last_send_ms) "
        f"SELECT app_id, conversation_id, MIN(t_send_ms), MAX(t_send_ms) FROM {turn} "
        f"GROUP BY app_id, conversation_id"
    )


class Migration(migrations.Migration):
    dependencies = [
        ("correlator", "0015_turn_day_partitions"),
        ("rumserver", "0015_metric_point_day_partitions"),
    ]

    operations = [
        migrations.CreateModel(
            name="Conversation",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("conversation_id", models.CharField(blank=True, default="", max_length=128)),
                (
                    "first_send_ms",
                    models.FloatField(help_text="Epoch ms: no stored turn was sent before."),
                ),
                (
                    "last_send_ms",
                    models.FloatField(help_text="Epoch ms: no stored turn was sent after."),
                ),
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
                    models.Index(fields=["app", "last_send_ms"], name="conversation_app_last")
                ],
                "constraints": [
                    models.UniqueConstraint(
                        fields=("app", "conversation_id"), name="conversation_app_id"
                    )
                ],
            },
        ),
        migrations.RunPython(fill_from_turns, migrations.RunPython.noop, elidable=False),
        # The turns' conversation index led by the conversation (models.Turn).
        migrations.RemoveIndex(model_name="turn", name="turn_app_conversation"),
        migrations.AddIndex(
            model_name="turn",
            index=models.Index(
                fields=["conversation_id", "app", "t_send_ms"], name="turn_conversation"
            ),
        ),
    ]
