"""Rollup rows built before prices existed: every turn they count was unpriced
(``Turn.cost_nano_usd`` is empty on those turns too), so the exact and rollup
answers agree on ``cost_unpriced_turns`` without rebuilding anything."""

from django.db import migrations
from django.db.models import F


def count_unpriced(apps, schema_editor):
    Rollup = apps.get_model("correlator", "Rollup")
    Rollup.objects.update(unpriced_turns=F("turns"))


class Migration(migrations.Migration):
    dependencies = [
        ("correlator", "0011_turn_cost"),
    ]

    operations = [
        migrations.RunPython(count_unpriced, migrations.RunPython.noop, elidable=True),
    ]
