"""Installs the ``refresh topic ends`` schedule (``manager.refresh_topic_ends``, every ``GH_TOPIC_ENDS_INTERVAL``,
1 min by default), once: operators change it in the admin, and an existing schedule of that name is left as it is.

It reads the end of every hub's status topic for the consumer lag, which the probe did at each pass before (for
10,000 hubs that cost the probe about 0.3 s of database work alone; ``bench/manager_probe.py``)."""

from django.conf import settings
from django.db import migrations

NAME = "refresh topic ends"


def install(apps, schema_editor):  # type: ignore[no-untyped-def]
    interval_model = apps.get_model("django_celery_beat", "IntervalSchedule")
    task_model = apps.get_model("django_celery_beat", "PeriodicTask")
    seconds = max(1, int(settings.GLOBALHUB.topic_ends_interval.total_seconds()))
    every, _ = interval_model.objects.get_or_create(every=seconds, period="seconds")
    task_model.objects.get_or_create(
        name=NAME,
        defaults={
            "task": "manager.refresh_topic_ends",
            "interval": every,
            "expire_seconds": max(1, int(seconds * 0.9)),
            "enabled": True,
        },
    )


def uninstall(apps, schema_editor):  # type: ignore[no-untyped-def]
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name=NAME).delete()


class Migration(migrations.Migration):
    dependencies = [("manager", "0018_dead_letter_hub_index")]

    operations = [migrations.RunPython(install, uninstall)]
