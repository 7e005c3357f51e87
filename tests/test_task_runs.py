"""Every task the manager runs leaves its outcome: succeeded with its result, failed with its error, retrying.

A real worker runs tasks defined here (it imports this module with ``--include``) on a queue of this test only; the
5-second outbox's idle runs are neither recorded nor logged at INFO; old runs are pruned; a run whose record cannot
be written still runs.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from celery import Task
from celery.app.trace import LOG_RECEIVED, LOG_SUCCESS
from django.test import Client
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask
from pytest_django.fixtures import Settings

from globalhub.celery import IdleRunFilter, app, install_idle_run_filter
from globalhub.manager import taskruns
from globalhub.manager.models import ResyncRequest, TaskRun
from globalhub.manager.resync_requests import SEND_TASK
from globalhub.protocol.events import EventType
from globalhub.protocol.kafka import SPEC_TOPIC_CONFIG, KafkaSettings, ensure_topics
from tests.helpers import Process, celery_argv, wait_for


@app.task(name="tests.task_runs.succeeds")
def succeeds(number: int) -> dict[str, int]:
    return {"doubled": number * 2}


@app.task(name="tests.task_runs.raises")
def raises(message: str) -> None:
    raise RuntimeError(message)


@app.task(name="tests.task_runs.retries", bind=True, max_retries=3)
def retries(self: Task[Any, Any], message: str) -> None:
    # Long enough that the test sees the run waiting; the queue is deleted afterwards.
    raise self.retry(exc=ConnectionError(message), countdown=3600)


# --- a real worker -------------------------------------------------------------------------------------------------


@pytest.fixture
def queue() -> Iterator[str]:
    """A queue only this test's worker reads (other tests' and other runs' workers share the broker)."""
    name = f"test-task-runs-{uuid.uuid4().hex[:8]}"
    yield name
    with app.connection_for_write() as connection:
        connection.default_channel.queue_delete(name)  # type: ignore[attr-defined]  # the retried run's message, put back by the stopped worker


def start_worker(env: dict[str, str], log_dir: Path, queue: str) -> Process:
    argv = celery_argv(
        "-A",
        "globalhub",
        "worker",
        "-l",
        "info",
        "--concurrency",
        "1",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        "-Q",
        queue,
        "-n",
        f"{queue}@%h",
        "--include",
        "tests.test_task_runs",
    )
    return Process("manager-worker", argv, env, log_dir)


def run_of(task_id: str, status: str) -> TaskRun | None:
    return TaskRun.objects.filter(task_id=task_id, status=status).first()


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_a_real_worker_records_success_failure_and_retry_and_keeps_idle_outbox_runs_quiet(
    queue: str,
    process_env: dict[str, str],
    kafka_settings: KafkaSettings,
    tmp_path: Path,
    processes: list[Process],
    admin_client: Client,
) -> None:
    two_minutes, _ = IntervalSchedule.objects.get_or_create(every=120, period="seconds")
    PeriodicTask.objects.update_or_create(
        name="probe hubs", defaults={"task": "manager.probe_hubs", "interval": two_minutes, "enabled": False}
    )
    env = {**process_env, "GH_PROBE_INTERVAL": "45s"}
    worker = start_worker(env, tmp_path, queue)
    processes.append(worker)

    # At its start, the worker warns about the environment's probe interval that the schedule does not follow.
    wait_for(
        lambda: "schedule 'probe hubs' runs every 2 min, but GH_PROBE_INTERVAL is 45 s" in worker.log_text(),
        timeout=60,
        what="the start-up warning in the worker's log",
    )

    idle = app.send_task(SEND_TASK, queue=queue)  # nothing to send: neither recorded nor logged at INFO
    ok = succeeds.apply_async(args=(21,), queue=queue, headers={"periodic_task_name": "doubling"})
    failed = raises.apply_async(args=("the hub exploded",), queue=queue)
    retrying = retries.apply_async(args=("the broker is away",), queue=queue)

    done = wait_for(lambda: run_of(ok.id, "succeeded"), timeout=60, what="the successful run")
    assert done.task_name == "tests.task_runs.succeeds"
    assert done.result == "{'doubled': 42}"
    assert done.arguments == "21"
    assert done.periodic_task_name == "doubling"
    assert done.worker.startswith(queue + "@")
    assert done.finished_at is not None and done.runtime_seconds is not None and done.error == ""

    error = wait_for(lambda: run_of(failed.id, "failed"), timeout=60, what="the failed run").error
    assert "RuntimeError: the hub exploded" in error
    assert "Traceback" in error and "in raises" in error

    waiting = wait_for(lambda: run_of(retrying.id, "retrying"), timeout=60, what="the retrying run")
    assert "Retry in 3600s" in waiting.error and "ConnectionError: the broker is away" in waiting.error

    # The idle outbox run ran before the others (one pool process, one queue): it left no row and no INFO line.
    assert not TaskRun.objects.filter(task_id=idle.id).exists()
    log = worker.log_text()
    assert f"tests.task_runs.succeeds[{ok.id}] received" in log
    assert f"tests.task_runs.succeeds[{ok.id}] succeeded in" in log
    assert idle.id not in log

    # The outbox's run that sent something is recorded, and logged.
    topic = process_env["GH_SPEC_TOPIC"]
    ensure_topics(kafka_settings, [topic], SPEC_TOPIC_CONFIG)
    ResyncRequest.objects.create(
        subject="broadcast",
        types=[EventType.MANAGED_CLUSTER.value],
        reason=ResyncRequest.Reason.OPERATOR,
        requested_by="test",
        requested_at=timezone.now(),
        completed_at=timezone.now(),
    )
    busy = app.send_task(SEND_TASK, queue=queue)
    assert wait_for(lambda: run_of(busy.id, "succeeded"), timeout=60, what="the outbox's busy run").result == "1"
    assert f"{SEND_TASK}[{busy.id}] succeeded in" in worker.log_text()

    # The admin shows them: a failed run with its error, a filter by status.
    page = admin_client.get("/admin/manager/taskrun/?status=failed").content.decode()
    assert "tests.task_runs.raises" in page and "RuntimeError: the hub exploded" in page
    assert "doubled" not in page  # the successful run is filtered out
    detail = admin_client.get(f"/admin/manager/taskrun/{run_of(failed.id, 'failed').pk}/change/")  # type: ignore[union-attr]
    assert "Traceback" in detail.content.decode()
    assert b'name="_save"' not in detail.content


# --- in-process ----------------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_task_run_in_process_is_recorded_by_the_same_signals() -> None:
    result = raises.apply(args=("boom",))

    assert result.failed()
    run = TaskRun.objects.get(task_id=result.id)
    assert (run.status, run.task_name, run.arguments) == ("failed", "tests.task_runs.raises", "'boom'")
    assert "RuntimeError: boom" in run.error


def test_a_run_whose_record_cannot_be_written_still_succeeds(caplog: pytest.LogCaptureFixture) -> None:
    # No database access in this test: every write of the record fails.
    result = succeeds.apply(args=(2,))

    assert result.successful() and result.result == {"doubled": 4}
    assert "tests.task_runs.succeeds" in caplog.text and "could not be recorded" in caplog.text


@pytest.mark.django_db
def test_long_arguments_results_and_errors_are_shortened() -> None:
    result = raises.apply(args=("x" * 50_000,))

    run = TaskRun.objects.get(task_id=result.id)
    assert len(run.arguments) == taskruns.ARGUMENTS_MAX and run.arguments.endswith("more characters)")
    assert len(run.error) == taskruns.ERROR_MAX


# --- retention -----------------------------------------------------------------------------------------------------


def old_and_new_runs(now: Any) -> tuple[TaskRun, TaskRun]:
    old = TaskRun.objects.create(
        task_id=uuid.uuid4().hex, task_name="manager.probe_hubs", status="succeeded", started_at=now - timedelta(days=8)
    )
    new = TaskRun.objects.create(
        task_id=uuid.uuid4().hex, task_name="manager.probe_hubs", status="failed", started_at=now - timedelta(days=6)
    )
    return old, new


@pytest.mark.django_db
def test_runs_older_than_the_retention_are_pruned_a_chunk_at_a_time() -> None:
    now = timezone.now()
    old, new = old_and_new_runs(now)
    older = TaskRun.objects.create(
        task_id=uuid.uuid4().hex, task_name="manager.probe_hubs", status="failed", started_at=now - timedelta(days=30)
    )

    assert taskruns.prune(now, timedelta(days=7), chunk=1) == 2

    assert list(TaskRun.objects.filter(pk__in=[old.pk, new.pk, older.pk])) == [new]


@pytest.mark.django_db
def test_the_hourly_prune_job_prunes_task_runs_by_GH_TASK_RUN_RETENTION(settings: Settings) -> None:
    from globalhub.manager.tasks import prune_events

    settings.GLOBALHUB = replace(settings.GLOBALHUB, task_run_retention=timedelta(days=7))
    old, new = old_and_new_runs(timezone.now())

    deleted = prune_events()

    assert deleted["manager_taskrun"] == 1
    assert not TaskRun.objects.filter(pk=old.pk).exists() and TaskRun.objects.filter(pk=new.pk).exists()


# --- the log -------------------------------------------------------------------------------------------------------


@pytest.fixture
def celery_loggers() -> Iterator[None]:
    install_idle_run_filter()
    levels = {name: logging.getLogger(name).level for name in ("celery.app.trace", "celery.worker.strategy")}
    yield
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def log_run(task: str, result: str) -> None:
    """Celery's own lines for one run (the formats and loggers its worker uses)."""
    context = {"id": "abc", "name": task, "args": "()", "kwargs": "{}", "eta": None}
    logging.getLogger("celery.worker.strategy").info(LOG_RECEIVED, context)
    success = {"id": "abc", "name": task, "return_value": result, "runtime": 0.01, "args": "()", "kwargs": "{}"}
    logging.getLogger("celery.app.trace").info(LOG_SUCCESS, success)
    logging.getLogger("celery.beat").info("Scheduler: Sending due task %s (%s)", "a schedule", task)


def test_an_idle_outbox_run_leaves_no_info_line(caplog: pytest.LogCaptureFixture, celery_loggers: None) -> None:
    caplog.set_level(logging.INFO)

    log_run(SEND_TASK, "0")

    assert [r for r in caplog.records if SEND_TASK in r.getMessage()] == []


def test_a_busy_outbox_run_and_other_tasks_keep_their_lines(
    caplog: pytest.LogCaptureFixture, celery_loggers: None
) -> None:
    caplog.set_level(logging.INFO)

    log_run(SEND_TASK, "2")
    log_run("manager.probe_hubs", "0")

    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert f"Task {SEND_TASK}[abc] succeeded in 0.01s: 2" in messages
    assert f"Task {SEND_TASK}[abc] received" not in messages  # its receipt says nothing yet
    assert "Task manager.probe_hubs[abc] received" in messages
    assert "Task manager.probe_hubs[abc] succeeded in 0.01s: 0" in messages
    assert "Scheduler: Sending due task a schedule (manager.probe_hubs)" in messages


def test_idle_outbox_lines_are_kept_at_debug_when_the_logger_is_set_to_debug(
    caplog: pytest.LogCaptureFixture, celery_loggers: None
) -> None:
    caplog.set_level(logging.DEBUG, logger="celery.app.trace")

    log_run(SEND_TASK, "0")

    (line,) = [r for r in caplog.records if r.name == "celery.app.trace" and SEND_TASK in r.getMessage()]
    assert line.levelno == logging.DEBUG


def test_the_filter_sits_on_celerys_per_run_loggers(celery_loggers: None) -> None:
    for name in ("celery.app.trace", "celery.worker.strategy", "celery.beat"):
        assert sum(isinstance(f, IdleRunFilter) for f in logging.getLogger(name).filters) == 1
