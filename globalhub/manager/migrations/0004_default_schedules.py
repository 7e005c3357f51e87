"""Installs the manager's default beat schedules (django-celery-beat), once: operators change them in the admin.

* ``probe hubs``: every ``GH_PROBE_INTERVAL`` (2 min);
* ``send resync requests``: every 5 s, the outbox's safety net (requests are also sent right after they commit);
* ``periodic resync: <type>``: one per resync type, every ``GH_PERIODIC_RESYNC_INTERVAL`` (12 h), to all hubs.
  They complement the agents' own 6-hour resyncs; an operator may narrow one to chosen hubs (``hubs`` kwarg).

Existing schedules with these names are left as they are, so an operator's edits survive.
"""

import json

from django.conf import settings
from django.db import migrations

RESYNC_TYPES = ("managedhub.info", "managedcluster", "policy.localspec", "policy.localcompliance")


def install(apps, schema_editor):  # type: ignore[no-untyped-def]
    interval_model = apps.get_model("django_celery_beat", "IntervalSchedule")
    task_model = apps.get_model("django_celery_beat", "PeriodicTask")
    conf = settings.GLOBALHUB

    def every(seconds: float):  # type: ignore[no-untyped-def]
        schedule, _ = interval_model.objects.get_or_create(every=max(1, int(seconds)), period="seconds")
        return schedule

    defaults = [
        (
            "probe hubs",
            "manager.probe_hubs",
            every(conf.probe_interval.total_seconds()),
            {},
            conf.probe_interval.total_seconds() * 0.9,
        ),
        ("send resync requests", "manager.send_resync_requests", every(5), {}, 4.5),
    ]
    for short in RESYNC_TYPES:
        defaults.append(
            (
                f"periodic resync: {short}",
                "manager.periodic_resync",
                every(conf.periodic_resync_interval.total_seconds()),
                {"types": [short]},
                3600,
            )
        )
    for name, task, interval, kwargs, expires in defaults:
        task_model.objects.get_or_create(
            name=name,
            defaults={
                "task": task,
                "interval": interval,
                "kwargs": json.dumps(kwargs),
                "expire_seconds": int(expires),
                "enabled": True,
            },
        )


def uninstall(apps, schema_editor):  # type: ignore[no-untyped-def]
    task_model = apps.get_model("django_celery_beat", "PeriodicTask")
    names = ["probe hubs", "send resync requests", *(f"periodic resync: {t}" for t in RESYNC_TYPES)]
    task_model.objects.filter(name__in=names).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("manager", "0003_hub_lifecycle"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(install, uninstall)]
