"""Gives each ``periodic resync: <type>`` schedule its type's own interval, ``GH_PERIODIC_RESYNC_INTERVAL_<TYPE>``
(e.g. ``GH_PERIODIC_RESYNC_INTERVAL_MANAGEDCLUSTER=1h``), when that variable is set and the schedule is still at the
general ``GH_PERIODIC_RESYNC_INTERVAL`` that 0004 installed. A schedule an operator changed is left as it is; later
changes of the variables are warned about at start (``globalhub.manager.schedules``), not applied.
"""

from django.conf import settings
from django.db import migrations

from globalhub.manager.schedules import apply_resync_intervals


def apply(apps, schema_editor):  # type: ignore[no-untyped-def]
    interval_model = apps.get_model("django_celery_beat", "IntervalSchedule")
    task_model = apps.get_model("django_celery_beat", "PeriodicTask")
    apply_resync_intervals(interval_model, task_model, settings.GLOBALHUB)


class Migration(migrations.Migration):
    dependencies = [
        ("manager", "0016_control_room"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(apply, migrations.RunPython.noop)]
