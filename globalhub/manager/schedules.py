"""The manager's beat schedules (django-celery-beat): their intervals from the environment, and their arguments checked.

* The environment sets intervals once: ``migrate`` installs ``probe hubs`` every ``GH_PROBE_INTERVAL``, ``refresh
  topic ends`` (the consumer lag) every ``GH_TOPIC_ENDS_INTERVAL`` (migration 0019), and each
  ``periodic resync: <type>`` every ``GH_PERIODIC_RESYNC_INTERVAL_<TYPE>`` (falling back to
  ``GH_PERIODIC_RESYNC_INTERVAL``); after that, the schedule in the database is what runs, and an operator edits it
  in the admin. :func:`differences` lists where the environment and the installed schedules disagree: a worker or
  beat warns about them when it starts, and so does ``manage.py check --database default``.
* :func:`apply_resync_intervals` (migration 0017) moves each periodic resync still at the general interval to its
  type's own.
* :func:`check_arguments` refuses a schedule's arguments that its task would fail on (the admin's form uses it):
  for ``manager.periodic_resync``, an unknown hub or a type that cannot be resynced.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from inspect import signature
from typing import Any

from django.conf import settings
from django.core import checks
from django.db import DatabaseError

from globalhub.manager.conf import ManagerSettings, periodic_resync_setting
from globalhub.protocol.events import RESYNC_TYPES, EventType

log = logging.getLogger(__name__)

PROBE = "probe hubs"
TOPIC_ENDS = "refresh topic ends"
PERIODIC_RESYNC_TASK = "manager.periodic_resync"
ADMIN_PATH = "/admin/django_celery_beat/periodictask/"


def resync_schedule(short: str) -> str:
    """The name migrate gives one type's periodic resync schedule."""
    return f"periodic resync: {short}"


@dataclass(frozen=True)
class Expected:
    """A schedule whose interval the environment sets: its name, the variable, and the variable's value."""

    schedule: str
    setting: str
    interval: timedelta


def expected_intervals(conf: ManagerSettings) -> list[Expected]:
    """The schedules migrate installs from the environment, with the interval each one would get now."""
    expected = [
        Expected(PROBE, "GH_PROBE_INTERVAL", conf.probe_interval),
        Expected(TOPIC_ENDS, "GH_TOPIC_ENDS_INTERVAL", conf.topic_ends_interval),
    ]
    for resync_type in RESYNC_TYPES:
        short = resync_type.short
        setting = periodic_resync_setting(short)
        if short not in conf.periodic_resync_intervals:
            setting = "GH_PERIODIC_RESYNC_INTERVAL"
        expected.append(Expected(resync_schedule(short), setting, conf.resync_interval(short)))
    return expected


def schedule_seconds(interval: timedelta) -> int:
    """An interval as the whole seconds migrate stores (at least 1)."""
    return max(1, int(interval.total_seconds()))


def interval_of(schedule: Any) -> timedelta:
    """An ``IntervalSchedule`` as a duration."""
    return timedelta(**{str(schedule.period): int(schedule.every)})


def duration_text(interval: timedelta) -> str:
    """A duration as an operator reads it: ``12 h``, ``1 h 30 min``, ``5 s``, ``1 d``."""
    seconds = int(interval.total_seconds())
    if seconds < 1:
        return f"{interval.total_seconds() * 1000:g} ms"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60), ("s", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count} {unit}")
    return " ".join(parts)


def every_text(schedule: Any) -> str:
    """An ``IntervalSchedule`` as ``every 12 h``."""
    return f"every {duration_text(interval_of(schedule))}"


# --- environment vs installed schedules ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Difference:
    expected: Expected
    installed: timedelta
    task_id: int

    def message(self) -> str:
        return (
            f"schedule {self.expected.schedule!r} runs every {duration_text(self.installed)}, but "
            f"{self.expected.setting} is {duration_text(self.expected.interval)}: the environment sets the interval "
            "only when migrate installs a schedule. To apply it, edit the schedule's interval in the admin "
            f"({ADMIN_PATH}{self.task_id}/change/); to keep the schedule, set {self.expected.setting} to match it"
        )


def differences(task_model: Any, conf: ManagerSettings | None = None) -> list[Difference]:
    """Installed interval schedules whose interval differs from what the environment sets now.

    A schedule that is missing, or runs on a crontab, solar or clocked schedule, was an operator's choice: not
    reported.
    """
    wanted = {e.schedule: e for e in expected_intervals(conf or settings.GLOBALHUB)}
    found = []
    for task in task_model.objects.filter(name__in=wanted, interval__isnull=False).select_related("interval"):
        expected = wanted[task.name]
        installed = interval_of(task.interval)
        if schedule_seconds(installed) != schedule_seconds(expected.interval):
            found.append(Difference(expected, installed, task.pk))
    return sorted(found, key=lambda d: d.expected.schedule)


def warn_about_differences() -> list[Difference]:
    """Log a warning per difference (a worker's or beat's start); returns them."""
    from django_celery_beat.models import PeriodicTask

    found = differences(PeriodicTask)
    for difference in found:
        log.warning("%s", difference.message())
    return found


def check_schedule_settings(
    app_configs: Any = None, databases: Sequence[str] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """System check (tag ``database``: ``manage.py check --database default``, and ``migrate``): the differences."""
    if not databases:
        return []
    from django_celery_beat.models import PeriodicTask

    try:
        found = differences(PeriodicTask)
    except DatabaseError:  # not migrated yet: nothing installed to compare
        return []
    return [checks.Warning(d.message(), id="globalhub.W001") for d in found]


# --- migration 0017 ------------------------------------------------------------------------------------------------


def apply_resync_intervals(interval_model: Any, task_model: Any, conf: ManagerSettings) -> list[str]:
    """Give each ``periodic resync: <type>`` still at the general interval its type's own (``_<TYPE>``) interval.

    A schedule an operator changed (another interval, another kind of schedule) is left alone, as is a type
    without its own variable. Returns the names of the schedules changed.
    """
    general = schedule_seconds(conf.periodic_resync_interval)
    changed = []
    for resync_type in RESYNC_TYPES:
        own = schedule_seconds(conf.resync_interval(resync_type.short))
        if own == general:
            continue
        name = resync_schedule(resync_type.short)
        task = task_model.objects.filter(name=name, interval__isnull=False).select_related("interval").first()
        if task is None or schedule_seconds(interval_of(task.interval)) != general:
            continue
        task.interval, _ = interval_model.objects.get_or_create(every=own, period="seconds")
        task.save(update_fields=["interval"])
        changed.append(name)
    return changed


# --- arguments -----------------------------------------------------------------------------------------------------


def parse_arguments(args: str, kwargs: str) -> tuple[list[Any], dict[str, Any]]:
    """A schedule's ``args`` (a JSON array) and ``kwargs`` (a JSON object); ``ValueError`` saying what is wrong."""
    try:
        parsed_args = json.loads(args or "[]")
    except ValueError as error:
        raise ValueError(f"args is not JSON: {error}") from None
    try:
        parsed_kwargs = json.loads(kwargs or "{}")
    except ValueError as error:
        raise ValueError(f"kwargs is not JSON: {error}") from None
    if not isinstance(parsed_args, list):
        raise ValueError("args must be a JSON array, e.g. []")
    if not isinstance(parsed_kwargs, dict):
        raise ValueError('kwargs must be a JSON object, e.g. {"types": ["managedcluster"]}')
    return parsed_args, parsed_kwargs


def check_arguments(task_name: str, args: str, kwargs: str) -> None:
    """``ValueError`` when the task would refuse these arguments: malformed JSON, names the task does not take, and
    for ``manager.periodic_resync`` an unknown hub or a type that cannot be resynced. A ``manager.*`` name the
    manager does not define is refused; other apps' tasks are not checked (beyond the JSON)."""
    from globalhub.celery import app

    parsed_args, parsed_kwargs = parse_arguments(args, kwargs)
    if not task_name.startswith("manager."):
        return
    # The web process never imports the tasks by itself (Celery's autodiscovery runs at a worker's start): without
    # this, whether a save is checked would depend on which page the process drew before.
    import globalhub.manager.tasks  # noqa: F401

    task = app.tasks.get(task_name)
    if task is None:
        raise ValueError(f"{task_name!r} is not a task of the manager")
    try:
        bound = signature(task.run).bind(*parsed_args, **parsed_kwargs)
    except TypeError as error:
        raise ValueError(f"{task_name} does not take these arguments: {error}") from None
    if task_name == PERIODIC_RESYNC_TASK:
        _check_periodic_resync(bound.arguments.get("types"), bound.arguments.get("hubs"))


def _check_periodic_resync(types: Any, hubs: Any) -> None:
    from globalhub.manager.models import Hub
    from globalhub.manager.resync_requests import full_types

    if not isinstance(types, list) or not all(isinstance(t, str) for t in types):
        raise ValueError('types must be a list of type names, e.g. ["managedcluster"]')
    choices = ", ".join(t.short for t in RESYNC_TYPES)
    for name in types:
        try:
            EventType.from_any(name)
        except ValueError:
            raise ValueError(f"types: unknown type {name!r}; choose from {choices}") from None
    try:
        full_types(types)
    except ValueError as error:  # a type that exists but cannot be resynced
        raise ValueError(f"types: {error}") from None
    if hubs is None:
        return
    if not isinstance(hubs, list) or not hubs or not all(isinstance(h, str) for h in hubs):
        raise ValueError('hubs must be a non-empty list of hub names, e.g. ["hub1"], or left out for every hub')
    known = set(Hub.objects.filter(name__in=hubs).values_list("name", flat=True))
    unknown = [h for h in hubs if h not in known]
    if unknown:
        raise ValueError(f"unknown hub{'s' if len(unknown) > 1 else ''} {', '.join(repr(h) for h in unknown)}")
