"""The agent's Celery app: ``celery -A agent_tasks worker`` / ``celery -A agent_tasks beat``.

The broker is the hub's own Redis (``REDIS_URL``); tasks go to a queue named after the hub, so agents of several
hubs may share one Redis server. Beat sends ``agent.tick`` every second: it hands a waiting resync to
``agent.drain`` (a task of its own, so a long resync never holds up the ticks) and runs the due delta syncs,
heartbeat and periodic resyncs. Ticks expire after 1.5 s, so ticks a busy worker could not take in time are dropped
instead of piling up; a lease (agent_tasks/lease.py) keeps two drains from overlapping, and the drain starts at
most one type per second.

Liveness (``agent_tasks/liveness.py``): the worker's main process marks itself in Redis every two seconds (a
bootstep on the worker's timer, so the mark stops when its event loop does), and beat marks every tick it sent.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

import redis
from celery import Celery, bootsteps
from celery.signals import after_setup_logger, after_task_publish, worker_init

from agent_tasks.beat import SteadyInterval
from agent_tasks.config import AgentConfig
from agent_tasks.liveness import BEAT, WORKER, WORKER_MARK_EVERY, mark

if TYPE_CHECKING:
    from celery.worker import WorkController

log = logging.getLogger(__name__)

_config = AgentConfig.from_env()
TICK_SECONDS = 1.0


app = Celery("agent_tasks", include=["agent_tasks.tasks"])
app.conf.update(
    broker_url=_config.redis_url,
    broker_connection_retry_on_startup=True,
    task_default_queue=f"gh-agent.{_config.hub_name}",
    task_serializer="json",
    accept_content=["json"],
    result_backend=None,
    task_ignore_result=True,
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    worker_concurrency=2,  # a long resync (drain) never holds up the delta ticks (sync)
    task_soft_time_limit=600,
    task_time_limit=900,
    # Beat's schedule is fixed in code: nothing to persist, so several hubs' beats can share a working directory.
    beat_scheduler="agent_tasks.beat:SteadyScheduler",
    beat_schedule={
        "tick": {
            "task": "agent.tick",
            "schedule": SteadyInterval(TICK_SECONDS),
            "options": {"expires": TICK_SECONDS * 1.5},
        },
    },
)


@worker_init.connect
def _on_worker_init(**kwargs: Any) -> None:
    """An agent start: versions reset, cursors at the end of the change logs, every type queued for resync."""
    from agent_tasks.runtime import Runtime

    runtime = Runtime.create(_config)  # this process only; pool processes build their own after the fork
    runtime.agent.start()
    runtime.redis.close()


@after_setup_logger.connect
def _quiet_tick_logging(**kwargs: Any) -> None:
    """Two ticks a second would log four lines a second per hub; log our own work instead (and any failure)."""
    for name in ("celery.app.trace", "celery.worker.strategy", "celery.beat"):
        logging.getLogger(name).setLevel(logging.WARNING)


class _Marks:
    """This process's Redis client for liveness marks (a forked process makes its own), with a short timeout: a
    mark must never hold up beat or the worker's event loop for long."""

    def __init__(self) -> None:
        self._client: redis.Redis | None = None
        self._pid = 0

    def write(self, which: str) -> None:
        if self._client is None or self._pid != os.getpid():
            self._client = redis.Redis.from_url(_config.redis_url, socket_timeout=1, socket_connect_timeout=1)
            self._pid = os.getpid()
        try:
            mark(self._client, _config.hub_name, which)
        except redis.RedisError as error:  # the broker is this Redis: beat and the worker report its loss anyway
            log.warning("hub=%s liveness mark %s not written: %s", _config.hub_name, which, error)


_marks = _Marks()


@after_task_publish.connect
def _mark_beat(sender: str | None = None, **kwargs: Any) -> None:
    """Beat sent a tick (only beat sends ``agent.tick``): beat's liveness mark."""
    if sender == "agent.tick":
        _marks.write(BEAT)


class WorkerLiveness(bootsteps.StartStopStep):
    """Marks the worker alive every few seconds from its main process's timer."""

    requires = ("celery.worker.components:Timer",)

    def __init__(self, worker: WorkController, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self._timer_entry: Any = None

    def start(self, worker: WorkController) -> None:
        _marks.write(WORKER)
        timer: Any = worker.timer  # the Timer step (required above) made it; celery-types lacks call_repeatedly
        self._timer_entry = timer.call_repeatedly(WORKER_MARK_EVERY, _marks.write, (WORKER,), priority=10)

    def stop(self, worker: WorkController) -> None:
        if self._timer_entry is not None:
            self._timer_entry.cancel()


app.steps["worker"].add(WorkerLiveness)
