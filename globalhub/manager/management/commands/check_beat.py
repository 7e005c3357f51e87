"""``python manage.py check_beat``: exit 0 if the manager's beat has sent a scheduled task lately, else 1.

For container healthchecks of the beat process. django-celery-beat's DatabaseScheduler writes each schedule's
``last_run_at`` back to the database at least every 3 minutes; the 5-second "send resync requests" schedule makes
that a reliable sign of life."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db.models import Max
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from globalhub.envconf import ConfigError, parse_duration


class Command(BaseCommand):
    help = "Exit 0 if celery beat sent an enabled scheduled task within --max-age (default 10m), else exit 1."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--max-age", default="10m", help="how old the last sending may be (e.g. 10m, 600s)")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            max_age = parse_duration(options["max_age"])
        except ConfigError as error:
            raise CommandError(str(error)) from None
        last = PeriodicTask.objects.filter(enabled=True).aggregate(last=Max("last_run_at"))["last"]
        if last is None:
            raise CommandError("beat has not sent any scheduled task yet")
        age = timezone.now() - last
        if age > max_age:
            limit = options["max_age"]
            raise CommandError(f"beat sent its last scheduled task {_seconds(age)} ago (more than {limit})")
        self.stdout.write(f"beat alive: last scheduled task sent {_seconds(age)} ago")


def _seconds(span: timedelta) -> str:
    return f"{span.total_seconds():.0f} s"
