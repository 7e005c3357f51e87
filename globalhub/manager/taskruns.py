"""The outcome of every Celery task the manager runs, as :class:`TaskRun` rows (Celery's signals call these).

* :func:`record_start` writes the row when a run starts (status ``started``); :func:`record_end` sets its outcome:
  ``succeeded`` with the result, ``failed`` or ``retrying`` with the error. A row is one task id: a retried task's
  next attempt starts the same row again, so the row shows the latest attempt.
* Each write is its own short transaction, and a write that fails is logged, never raised: recording an outcome
  must not fail the task it records, nor a worker whose database is away.
* A task marked ``quiet_when_idle`` (the 5-second outbox, ``manager.send_resync_requests``) is recorded only when
  its run did something (a truthy result) or went wrong: its idle runs would be 17,000 rows a day.
* :func:`prune` deletes rows older than ``GH_TASK_RUN_RETENTION`` (7 days; run by the hourly ``prune events``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import connection, transaction

from globalhub.manager.models import TaskRun

log = logging.getLogger(__name__)

ARGUMENTS_MAX = 2_000
RESULT_MAX = 2_000
ERROR_MAX = 10_000
PRUNE_CHUNK = 10_000


@dataclass(frozen=True)
class RunStart:
    """What is known of a run when it starts, kept by the worker until it ends."""

    task_id: str
    task_name: str
    started_at: datetime
    periodic_task_name: str = ""
    arguments: str = ""
    worker: str = ""


def shorten(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, saying how much was left out."""
    if len(text) <= limit:
        return text
    note = f"… ({len(text) - limit} more characters)"
    return text[: max(0, limit - len(note))] + note


def describe_arguments(args: Any, kwargs: Any) -> str:
    """A run's arguments as one shortened line (they come from the broker: any JSON)."""
    parts = [repr(a) for a in (args or ())]
    parts += [f"{k}={v!r}" for k, v in dict(kwargs or {}).items()]
    return shorten(", ".join(parts), ARGUMENTS_MAX)


def record_start(start: RunStart) -> None:
    """The run has started: its row says ``started`` (a retried task's row starts again)."""
    with _recording(start):
        TaskRun.objects.update_or_create(
            task_id=start.task_id,
            defaults={
                **_identity(start),
                "status": TaskRun.Status.STARTED,
                "finished_at": None,
                "runtime_seconds": None,
                "result": "",
                "error": "",
            },
        )


def record_end(
    start: RunStart,
    status: TaskRun.Status,
    finished_at: datetime,
    *,
    runtime_seconds: float | None = None,
    result: str = "",
    error: str = "",
) -> None:
    """The run has ended (``succeeded``, ``failed``) or will be tried again (``retrying``): its outcome.

    The row is created if its start was not recorded (a quiet task, or a start whose write failed). Without
    ``runtime_seconds`` (the worker's main process reporting a run its pool lost), the runtime is counted from the
    recorded start.
    """
    outcome = {
        "status": status,
        "finished_at": finished_at,
        "result": shorten(result, RESULT_MAX),
        "error": shorten(error, ERROR_MAX),
    }
    with _recording(start):
        row = TaskRun.objects.select_for_update().filter(task_id=start.task_id).first()
        if row is None:
            TaskRun.objects.create(
                task_id=start.task_id, **_identity(start), runtime_seconds=runtime_seconds, **outcome
            )
            return
        if runtime_seconds is None:
            runtime_seconds = max(0.0, (finished_at - row.started_at).total_seconds())
        TaskRun.objects.filter(pk=row.pk).update(runtime_seconds=runtime_seconds, **outcome)


def is_idle(result: Any) -> bool:
    """A quiet task's run that returned nothing true (``0``, ``None``, ``[]``) did nothing worth keeping."""
    return not result


def _identity(start: RunStart) -> dict[str, Any]:
    return {
        "task_name": shorten(start.task_name, 255),
        "periodic_task_name": shorten(start.periodic_task_name, 200),
        "arguments": start.arguments,
        "worker": shorten(start.worker, 255),
        "started_at": start.started_at,
    }


@contextmanager
def _recording(start: RunStart) -> Iterator[None]:
    """One write in a transaction of its own; a failure is logged, not raised (the task must not depend on it)."""
    try:
        with transaction.atomic():
            yield
    except Exception:  # the database away, a value it refuses, ...
        log.exception("task %s[%s]: its run could not be recorded", start.task_name, start.task_id)


def prune(now: datetime, retention: timedelta, chunk: int = PRUNE_CHUNK) -> int:
    """Delete runs that started before ``now - retention``, a chunk per transaction; returns how many."""
    cutoff = now - retention
    table = TaskRun._meta.db_table
    total = 0
    while True:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                f"DELETE FROM {table} WHERE id IN (SELECT id FROM {table} WHERE started_at < %s LIMIT %s)",
                [cutoff, chunk],
            )
            count = int(cursor.rowcount)
        total += count
        if count < chunk:
            break
    if total:
        log.info("pruned %d task runs older than %s", total, cutoff.isoformat())
    return total
