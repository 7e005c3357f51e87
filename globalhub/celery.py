"""The manager's Celery app: ``celery -A globalhub worker`` / ``celery -A globalhub beat``.

Its signals record every task's run as a ``TaskRun`` (``globalhub.manager.taskruns``), compare the environment's
intervals with the installed schedules when a worker or beat starts (``globalhub.manager.schedules``), and keep the
5-second outbox task out of the INFO log while it has nothing to send (:class:`IdleRunFilter`). The handlers import
the Django side when they run: this module is imported before Django is set up.
"""

from __future__ import annotations

import logging
import os
import time
import traceback
from dataclasses import dataclass
from typing import Any

from celery import Celery, Task, signals
from celery.app.trace import LOG_RECEIVED, LOG_SUCCESS

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "globalhub.settings")

app = Celery("globalhub")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["globalhub.manager"])

log = logging.getLogger(__name__)

QUIET_OPTION = "quiet_when_idle"
"""A task option (``@app.task(quiet_when_idle=True)``): a run returning nothing true is neither recorded nor logged
at INFO (it is logged at DEBUG)."""


def is_quiet(task_name: str) -> bool:
    """Whether this task of the manager's app is marked ``quiet_when_idle``."""
    task = app.tasks.get(task_name)
    return bool(getattr(task, QUIET_OPTION, False))


# --- task runs -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Running:
    start: Any  # taskruns.RunStart
    monotonic: float
    quiet: bool


_running: dict[str, _Running] = {}
"""Runs under way in this process, by task id: their start, for the runtime and for a quiet task's late record."""


def _ours(task: Any) -> bool:
    """Only the manager's tasks are recorded (another app's tasks may run in the same process, e.g. in tests)."""
    return getattr(task, "app", None) is app


@signals.task_prerun.connect
def _on_prerun(
    sender: Task[Any, Any] | None = None, task_id: str = "", task: Task[Any, Any] | None = None, **extra: Any
) -> None:
    if task is None or not _ours(task):
        return
    from django.utils import timezone

    from globalhub.manager import taskruns

    request = task.request
    start = taskruns.RunStart(
        task_id=task_id,
        task_name=task.name,
        started_at=timezone.now(),
        periodic_task_name=str(getattr(request, "periodic_task_name", None) or ""),
        arguments=taskruns.describe_arguments(extra.get("args"), extra.get("kwargs")),
        worker=str(request.hostname or ""),
    )
    quiet = bool(getattr(task, QUIET_OPTION, False))
    _running[task_id] = _Running(start, time.monotonic(), quiet)
    if not quiet:
        taskruns.record_start(start)


@signals.task_postrun.connect
def _on_postrun(
    sender: Task[Any, Any] | None = None, task_id: str = "", retval: Any = None, state: str = "", **extra: Any
) -> None:
    running = _running.pop(task_id, None)
    if running is None or state != "SUCCESS":  # a failure or a retry was recorded by its own signal
        return
    from django.utils import timezone

    from globalhub.manager import taskruns
    from globalhub.manager.models import TaskRun

    if running.quiet and taskruns.is_idle(retval):
        return
    taskruns.record_end(
        running.start,
        TaskRun.Status.SUCCEEDED,
        timezone.now(),
        runtime_seconds=time.monotonic() - running.monotonic,
        result=repr(retval),
    )


@signals.task_failure.connect
def _on_failure(
    sender: Task[Any, Any] | None = None, task_id: str = "", exception: BaseException | None = None, **extra: Any
) -> None:
    """Also sent by the worker's main process for a run its pool lost (hard time limit, killed child)."""
    if sender is None or not _ours(sender):
        return
    from globalhub.manager.models import TaskRun

    einfo = extra.get("einfo")
    error = str(getattr(einfo, "traceback", "") or "") or _exception_text(exception)
    _record_end(sender, task_id, TaskRun.Status.FAILED, error, extra)


@signals.task_retry.connect
def _on_retry(sender: Task[Any, Any] | None = None, request: Any = None, reason: Any = None, **extra: Any) -> None:
    if sender is None or not _ours(sender) or request is None:
        return
    from globalhub.manager.models import TaskRun

    cause = getattr(reason, "exc", None)
    error = str(reason) + ("\n\n" + _exception_text(cause) if isinstance(cause, BaseException) else "")
    _record_end(sender, request.id, TaskRun.Status.RETRYING, error, {"args": request.args, "kwargs": request.kwargs})


def _record_end(task: Task[Any, Any], task_id: str, status: Any, error: str, extra: dict[str, Any]) -> None:
    from django.utils import timezone

    from globalhub.manager import taskruns

    now = timezone.now()
    running = _running.get(task_id)
    if running is not None:
        start, runtime = running.start, time.monotonic() - running.monotonic
    else:  # not started in this process: the main process reporting a lost run
        start = taskruns.RunStart(
            task_id=task_id,
            task_name=task.name,
            started_at=now,
            arguments=taskruns.describe_arguments(extra.get("args"), extra.get("kwargs")),
        )
        runtime = None
    taskruns.record_end(start, status, now, runtime_seconds=runtime, error=error)


def _exception_text(exception: BaseException | None) -> str:
    if exception is None:
        return ""
    return "".join(traceback.format_exception(exception)).rstrip()


# --- start-up check ------------------------------------------------------------------------------------------------


@signals.worker_ready.connect
@signals.beat_init.connect
def _compare_schedules_with_settings(**extra: Any) -> None:
    """At a worker's or beat's start: warn about environment intervals that differ from the installed schedules."""
    from globalhub.manager import schedules

    try:
        schedules.warn_about_differences()
    except Exception as error:  # a check, never a reason not to start
        log.warning("the schedules could not be compared with the settings: %s", error)


# --- log noise -----------------------------------------------------------------------------------------------------


class IdleRunFilter(logging.Filter):
    """Demotes to DEBUG Celery's INFO lines about a quiet task's runs that did nothing.

    Celery logs "Task ... received" and "Task ... succeeded in ...: <result>" for every run, and beat "Sending due
    task ..." for every send: for the 5-second outbox, three lines every 5 seconds. A quiet task's *received* and
    *sending* lines, and its *succeeded* line whose result is idle (``0``, ``None``, ...), become DEBUG records: kept
    when the logger is set to DEBUG, dropped otherwise. Other tasks' lines, and a quiet task's failures, stay.
    """

    IDLE_RESULTS = frozenset({"0", "None", "[]", "{}", "()", "False", "''"})

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO or not self._idle(record):
            return True
        record.levelno, record.levelname = logging.DEBUG, logging.getLevelName(logging.DEBUG)
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)

    def _idle(self, record: logging.LogRecord) -> bool:
        context = record.args
        if record.msg == LOG_RECEIVED and isinstance(context, dict):
            return is_quiet(str(context.get("name")))
        if record.msg == LOG_SUCCESS and isinstance(context, dict):
            return is_quiet(str(context.get("name"))) and str(context.get("return_value")) in self.IDLE_RESULTS
        if record.name == "celery.beat" and str(record.msg).startswith("Scheduler: Sending due task"):
            return isinstance(context, tuple) and len(context) == 2 and is_quiet(str(context[1]))
        return False


FILTERED_LOGGERS = ("celery.app.trace", "celery.worker.strategy", "celery.beat")
"""The loggers of Celery's per-run INFO lines (each record is logged on its own logger, so the filter sits there)."""


def install_idle_run_filter() -> None:
    """Put :class:`IdleRunFilter` on Celery's per-run loggers (once)."""
    for name in FILTERED_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, IdleRunFilter) for f in logger.filters):
            logger.addFilter(IdleRunFilter())


@signals.after_setup_logger.connect
def _on_logging_set_up(**extra: Any) -> None:
    install_idle_run_filter()
