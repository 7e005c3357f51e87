"""The beat schedules: per-type resync intervals, the environment compared with what is installed, arguments checked
when an operator saves a schedule, and intervals shown as durations."""

from __future__ import annotations

import importlib
import json
import logging
import subprocess
import sys
import uuid
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from celery import signals
from django.apps import apps as django_apps
from django.core import checks
from django.test import Client
from django_celery_beat.models import IntervalSchedule, PeriodicTask
from pytest_django.fixtures import Settings

from globalhub.envconf import ConfigError
from globalhub.manager import schedules
from globalhub.manager.conf import ManagerSettings, periodic_resync_intervals, periodic_resync_setting
from globalhub.manager.models import Hub
from globalhub.protocol.events import RESYNC_TYPES
from tests.helpers import REPO

HOURS = timedelta(hours=1)


def every(seconds: int) -> IntervalSchedule:
    schedule, _ = IntervalSchedule.objects.get_or_create(every=seconds, period="seconds")
    return schedule


def conf(settings: Settings, **changes: Any) -> ManagerSettings:
    """The manager's settings with these changes, in effect for the test."""
    changed: ManagerSettings = replace(settings.GLOBALHUB, **changes)
    settings.GLOBALHUB = changed
    return changed


@pytest.fixture
def installed(settings: Settings) -> None:
    """The schedules as migrate installs them with the defaults: probe every 2 min, resyncs every 12 h."""
    PeriodicTask.objects.update_or_create(
        name="probe hubs", defaults={"task": "manager.probe_hubs", "interval": every(120)}
    )
    PeriodicTask.objects.update_or_create(
        name="refresh topic ends", defaults={"task": "manager.refresh_topic_ends", "interval": every(60)}
    )
    for resync_type in RESYNC_TYPES:
        PeriodicTask.objects.update_or_create(
            name=f"periodic resync: {resync_type.short}",
            defaults={
                "task": "manager.periodic_resync",
                "interval": every(43200),
                "kwargs": json.dumps({"types": [resync_type.short]}),
            },
        )
    conf(settings, probe_interval=2 * timedelta(minutes=1), periodic_resync_interval=12 * HOURS)


def interval_seconds(name: str) -> int:
    task = PeriodicTask.objects.select_related("interval").get(name=name)
    assert task.interval is not None
    return int(schedules.interval_of(task.interval).total_seconds())


# --- per-type intervals --------------------------------------------------------------------------------------------


def test_each_type_has_its_own_variable() -> None:
    assert periodic_resync_setting("managedcluster") == "GH_PERIODIC_RESYNC_INTERVAL_MANAGEDCLUSTER"
    assert periodic_resync_setting("policy.localspec") == "GH_PERIODIC_RESYNC_INTERVAL_POLICY_LOCALSPEC"
    assert periodic_resync_setting("managedhub.info") == "GH_PERIODIC_RESYNC_INTERVAL_MANAGEDHUB_INFO"


def test_a_types_interval_falls_back_to_the_general_one() -> None:
    shorts = [t.short for t in RESYNC_TYPES]
    environ = {"GH_PERIODIC_RESYNC_INTERVAL_MANAGEDCLUSTER": "1h", "GH_PERIODIC_RESYNC_INTERVAL_POLICY_LOCALSPEC": ""}

    own = periodic_resync_intervals(shorts, environ)

    assert own == {"managedcluster": HOURS}
    from django.conf import settings

    manager = replace(settings.GLOBALHUB, periodic_resync_interval=12 * HOURS, periodic_resync_intervals=own)
    assert manager.resync_interval("managedcluster") == HOURS
    assert manager.resync_interval("policy.localspec") == 12 * HOURS


def test_a_bad_per_type_interval_fails_loudly_naming_its_variable() -> None:
    with pytest.raises(ConfigError, match="GH_PERIODIC_RESYNC_INTERVAL_MANAGEDCLUSTER"):
        periodic_resync_intervals(["managedcluster"], {"GH_PERIODIC_RESYNC_INTERVAL_MANAGEDCLUSTER": "soon"})


@pytest.mark.django_db
def test_the_migration_gives_a_type_its_own_interval_and_leaves_an_operators_change(
    settings: Settings, installed: None
) -> None:
    PeriodicTask.objects.filter(name="periodic resync: policy.localspec").update(interval=every(6 * 3600))
    conf(
        settings,
        periodic_resync_intervals={"managedcluster": HOURS, "policy.localspec": 2 * HOURS},
    )
    migration = importlib.import_module("globalhub.manager.migrations.0017_per_type_resync_intervals")

    migration.apply(django_apps, None)

    assert interval_seconds("periodic resync: managedcluster") == 3600  # its own variable
    assert interval_seconds("periodic resync: policy.localspec") == 6 * 3600  # an operator's change stays
    assert interval_seconds("periodic resync: managedhub.info") == 43200  # no variable of its own
    assert interval_seconds("periodic resync: policy.localcompliance") == 43200


# --- the environment vs the installed schedules --------------------------------------------------------------------


@pytest.mark.django_db
def test_settings_that_match_the_schedules_are_not_warned_about(
    settings: Settings, installed: None, caplog: pytest.LogCaptureFixture
) -> None:
    assert schedules.warn_about_differences() == []
    assert "schedule" not in caplog.text


@pytest.mark.django_db
def test_a_setting_that_differs_from_its_schedule_is_warned_about_with_both_values_and_the_way_to_apply_it(
    settings: Settings, installed: None, caplog: pytest.LogCaptureFixture
) -> None:
    conf(
        settings,
        probe_interval=timedelta(seconds=30),
        periodic_resync_intervals={"managedcluster": timedelta(minutes=90)},
    )
    probe = PeriodicTask.objects.get(name="probe hubs")

    found = schedules.warn_about_differences()

    assert [d.expected.schedule for d in found] == ["periodic resync: managedcluster", "probe hubs"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(
        "schedule 'probe hubs' runs every 2 min, but GH_PROBE_INTERVAL is 30 s" in w
        and f"/admin/django_celery_beat/periodictask/{probe.pk}/change/" in w
        for w in warnings
    )
    assert any(
        "'periodic resync: managedcluster' runs every 12 h, "
        "but GH_PERIODIC_RESYNC_INTERVAL_MANAGEDCLUSTER is 1 h 30 min" in w
        for w in warnings
    )


@pytest.mark.django_db
def test_worker_and_beat_start_warn_about_a_differing_setting(
    settings: Settings, installed: None, caplog: pytest.LogCaptureFixture
) -> None:
    conf(settings, periodic_resync_interval=6 * HOURS)

    signals.beat_init.send(sender=None)
    signals.worker_ready.send(sender=None)

    lines = [r.getMessage() for r in caplog.records if "periodic resync: managedhub.info" in r.getMessage()]
    assert len(lines) == 2
    assert "runs every 12 h, but GH_PERIODIC_RESYNC_INTERVAL is 6 h" in lines[0]


@pytest.mark.django_db
def test_a_schedule_an_operator_moved_to_a_crontab_or_deleted_is_not_warned_about(
    settings: Settings, installed: None
) -> None:
    from django_celery_beat.models import CrontabSchedule

    crontab = CrontabSchedule.objects.create(minute="0", hour="*/4")
    PeriodicTask.objects.filter(name="probe hubs").update(interval=None, crontab=crontab)
    PeriodicTask.objects.filter(name="periodic resync: managedcluster").delete()
    conf(settings, probe_interval=timedelta(seconds=30), periodic_resync_interval=HOURS)

    found = schedules.differences(PeriodicTask)

    assert [d.expected.schedule for d in found] == [
        "periodic resync: managedhub.info",
        "periodic resync: policy.localcompliance",
        "periodic resync: policy.localspec",
    ]


@pytest.mark.django_db
def test_check_database_reports_the_differences(settings: Settings, installed: None) -> None:
    conf(settings, probe_interval=timedelta(seconds=30))

    messages = checks.run_checks(tags=[checks.Tags.database], databases=["default"])

    (ours,) = [m for m in messages if m.id == "globalhub.W001"]
    assert ours.level == checks.WARNING and "GH_PROBE_INTERVAL is 30 s" in ours.msg
    assert schedules.check_schedule_settings(databases=None) == []  # `check` without --database: not run


# --- arguments checked in the admin --------------------------------------------------------------------------------


def add_schedule(client: Client, task: str, *, args: str = "[]", kwargs: str = "{}") -> Any:
    return client.post(
        "/admin/django_celery_beat/periodictask/add/",
        {
            "name": "a schedule",
            "regtask": "",
            "task": task,
            "enabled": "on",
            "description": "",
            "interval": every(3600).pk,
            "args": args,
            "kwargs": kwargs,
            "headers": "{}",
            "priority": "",
            "queue": "",
            "exchange": "",
            "routing_key": "",
            "expire_seconds": "",
        },
    )


def form_errors(response: Any) -> dict[str, list[str]]:
    assert response.status_code == 200, "the schedule was saved"
    return dict(response.context["adminform"].form.errors)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("args", "kwargs", "field", "message"),
    [
        ("[]", '{"types": ["managedcluster"], "hubs": ["nope"]}', "kwargs", "unknown hub 'nope'"),
        ("[]", '{"types": ["managedclusters"]}', "kwargs", "unknown type 'managedclusters'"),
        ("[]", '{"types": ["managedhub.heartbeat"]}', "kwargs", "managedhub.heartbeat cannot be resynced"),
        ("[]", '{"types": "managedcluster"}', "kwargs", "types must be a list"),
        ("[]", '{"types": ["managedcluster"], "hubs": []}', "kwargs", "non-empty list of hub names"),
        ("[]", '{"type": ["managedcluster"]}', "kwargs", "does not take these arguments"),
        ("[]", '{"types": ["managedcluster"', "kwargs", "Unable to parse JSON"),
        ("[]", '["managedcluster"]', "kwargs", "kwargs must be a JSON object"),
        ('[["managedcluster"], ["nope"]]', "{}", "args", "unknown hub 'nope'"),
        ('[["managedcluster"]', "{}", "args", "Unable to parse JSON"),
        ('{"types": []}', "{}", "args", "args must be a JSON array"),
    ],
)
def test_a_periodic_resync_with_bad_arguments_is_refused_with_a_form_error(
    admin_client: Client, args: str, kwargs: str, field: str, message: str
) -> None:
    Hub.objects.create(name="hub1")

    errors = form_errors(add_schedule(admin_client, "manager.periodic_resync", args=args, kwargs=kwargs))

    assert message in " ".join(errors.get(field, [])), errors
    assert not PeriodicTask.objects.filter(name="a schedule").exists()


@pytest.mark.django_db
def test_a_periodic_resync_of_known_hubs_is_saved(admin_client: Client) -> None:
    Hub.objects.create(name="hub1")

    response = add_schedule(
        admin_client, "manager.periodic_resync", kwargs='{"types": ["managedcluster"], "hubs": ["hub1"]}'
    )

    assert response.status_code == 302, response.context and response.context["adminform"].form.errors
    saved = PeriodicTask.objects.get(name="a schedule")
    assert json.loads(saved.kwargs) == {"types": ["managedcluster"], "hubs": ["hub1"]}


@pytest.mark.django_db
def test_a_manager_task_that_does_not_exist_is_refused(admin_client: Client) -> None:
    errors = form_errors(add_schedule(admin_client, "manager.probe_hub", kwargs="{}"))

    assert "'manager.probe_hub' is not a task of the manager" in " ".join(errors["kwargs"])


def test_the_arguments_are_checked_in_a_process_that_never_imported_the_tasks() -> None:
    """A web process has not imported the tasks unless some page made it: the check must not depend on that."""
    code = (
        "import django, os; os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'globalhub.settings'); django.setup()\n"
        "import sys; from globalhub.manager.schedules import check_arguments\n"
        "assert 'globalhub.manager.tasks' not in sys.modules\n"
        "try:\n"
        "    check_arguments('manager.probe_hubs', '[]', '{\"hub\": \"x\"}')\n"
        "except ValueError as error:\n"
        "    print('refused:', error)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "refused: manager.probe_hubs does not take these arguments" in result.stdout


@pytest.mark.django_db
def test_another_manager_task_given_arguments_it_does_not_take_is_refused(admin_client: Client) -> None:
    errors = form_errors(add_schedule(admin_client, "manager.probe_hubs", kwargs='{"hub": "hub1"}'))

    assert "manager.probe_hubs does not take these arguments" in " ".join(errors["kwargs"])


# --- durations -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("interval", "text"),
    [
        (timedelta(hours=12), "12 h"),
        (timedelta(minutes=90), "1 h 30 min"),
        (timedelta(seconds=5), "5 s"),
        (timedelta(days=1, seconds=1), "1 d 1 s"),
        (timedelta(milliseconds=250), "250 ms"),
    ],
)
def test_intervals_read_as_durations(interval: timedelta, text: str) -> None:
    assert schedules.duration_text(interval) == text


@pytest.mark.django_db
def test_the_schedules_list_and_form_show_intervals_as_durations(admin_client: Client, installed: None) -> None:
    listing = admin_client.get("/admin/django_celery_beat/periodictask/").content.decode()
    assert '<td class="field-every">every 2 min</td>' in listing
    assert '<td class="field-every">every 12 h</td>' in listing

    probe = PeriodicTask.objects.get(name="probe hubs")
    form = admin_client.get(f"/admin/django_celery_beat/periodictask/{probe.pk}/change/").content.decode()
    assert ">every 2 min</option>" in form

    intervals = admin_client.get("/admin/django_celery_beat/intervalschedule/").content.decode()
    assert "every 12 h" in intervals


@pytest.mark.django_db
def test_run_selected_tasks_says_where_the_outcome_shows(admin_client: Client) -> None:
    from globalhub.celery import app

    queue = f"test-run-selected-{uuid.uuid4().hex[:8]}"  # no worker reads it: the run is only sent
    task = PeriodicTask.objects.create(name="a schedule", task="manager.probe_hubs", interval=every(60), queue=queue)
    try:
        response = admin_client.post(
            "/admin/django_celery_beat/periodictask/",
            {"action": "run_tasks", "_selected_action": [task.pk]},
            follow=True,
        )
    finally:
        with app.connection_for_write() as connection:
            connection.default_channel.queue_delete(queue)  # type: ignore[attr-defined]

    page = response.content.decode()
    assert "successfully run" not in page  # sending says nothing of the run's outcome
    link = '<a href="/admin/manager/taskrun/">Task runs</a>'
    assert f"1 task sent to a worker: whether they succeed shows in {link}" in page


@pytest.mark.django_db
def test_a_topic_ends_interval_that_differs_from_its_schedule_is_warned_about(
    settings: Settings, installed: None
) -> None:
    conf(settings, topic_ends_interval=timedelta(minutes=5))
    (found,) = schedules.warn_about_differences()
    assert found.expected.schedule == "refresh topic ends"
    assert "runs every 1 min, but GH_TOPIC_ENDS_INTERVAL is 5 min" in found.message()


@pytest.mark.django_db
def test_the_topic_ends_schedule_is_installed_once_and_an_operators_change_stays(settings: Settings) -> None:
    migration = importlib.import_module("globalhub.manager.migrations.0019_refresh_topic_ends_schedule")
    PeriodicTask.objects.filter(name="refresh topic ends").delete()
    conf(settings, topic_ends_interval=timedelta(seconds=90))
    migration.install(django_apps, None)
    task = PeriodicTask.objects.get(name="refresh topic ends")
    assert (task.task, task.interval.every if task.interval else None, task.expire_seconds) == (
        "manager.refresh_topic_ends",
        90,
        81,
    )
    task.interval = every(600)
    task.save()
    migration.install(django_apps, None)
    assert PeriodicTask.objects.get(name="refresh topic ends").interval == every(600)
