from django.apps import AppConfig
from django.core import checks


class ManagerConfig(AppConfig):
    name = "globalhub.manager"
    label = "manager"
    verbose_name = "Global hub manager"

    def ready(self) -> None:
        """Registers the start-up check of the schedules against the environment (no database access here: the
        check is tagged ``database``, so it runs only for ``migrate`` and ``check --database``)."""
        from globalhub.manager.schedules import check_schedule_settings

        checks.register(check_schedule_settings, checks.Tags.database)
