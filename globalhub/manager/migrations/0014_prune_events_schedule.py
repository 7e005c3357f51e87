"""Installs the ``prune events`` schedule (hourly; the event streams' retention, ``GH_EVENT_RETENTION``), once:
operators change it in the admin, and an existing schedule of that name is left as it is."""

from django.db import migrations

NAME = "prune events"


def install(apps, schema_editor):  # type: ignore[no-untyped-def]
    interval_model = apps.get_model("django_celery_beat", "IntervalSchedule")
    task_model = apps.get_model("django_celery_beat", "PeriodicTask")
    hourly, _ = interval_model.objects.get_or_create(every=3600, period="seconds")
    task_model.objects.get_or_create(
        name=NAME,
        defaults={"task": "manager.prune_events", "interval": hourly, "expire_seconds": 3000, "enabled": True},
    )


def uninstall(apps, schema_editor):  # type: ignore[no-untyped-def]
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name=NAME).delete()


class Migration(migrations.Migration):
    dependencies = [("manager", "0013_event_streams")]

    operations = [migrations.RunPython(install, uninstall)]
