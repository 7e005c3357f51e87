"""Dead letters: the per-hub index of the overview and hub list, built without blocking the consumer's inserts, and
the reason class of the dead letters stored before classes existed (0016 gave them all "other")."""

from typing import Any

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models

CHUNK = 5000


def classify_stored(apps: Any, schema_editor: Any) -> None:
    from globalhub.manager.ingest.deadletters import classify_reason

    dead_letters = apps.get_model("manager", "DeadLetter")
    last = 0
    while True:
        rows = list(
            dead_letters.objects.filter(pk__gt=last, reason_class="other")
            .order_by("pk")
            .values_list("pk", "reason", "hub_name", "event_type")[:CHUNK]
        )
        if not rows:
            return
        for pk, reason, hub, event_type in rows:
            kind = classify_reason(reason, known_event=bool(hub and event_type))
            if kind != "other":
                dead_letters.objects.filter(pk=pk).update(reason_class=kind)
        last = rows[-1][0]


class Migration(migrations.Migration):
    atomic = False  # CREATE INDEX CONCURRENTLY cannot run in a transaction

    dependencies = [
        ("manager", "0017_per_type_resync_intervals"),
    ]

    operations = [
        AddIndexConcurrently(
            model_name="deadletter",
            index=models.Index(fields=["hub_name", "received_at"], name="dead_letter_hub_received"),
        ),
        migrations.RunPython(classify_stored, migrations.RunPython.noop),
    ]
