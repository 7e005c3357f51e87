"""The agent's Celery app: ``celery -A agent_tasks worker`` / ``celery -A agent_tasks beat``.

The broker is the hub's own Redis (``REDIS_URL``); tasks go to a queue named after the hub, so agents of several
hubs may share one Redis server. Beat sends ``agent.tick`` every second: it hands a waiting resync to
``agent.drain`` (a task of its own, so a long resync never holds up the ticks) and runs the due delta syncs,
heartbeat and periodic resyncs. Ticks expire after 1.5 s, so ticks a busy worker could not take in time are dropped
instead of piling up; a lease (agent_tasks/lease.py) keeps two drains from overlapping, and the drain starts at
most one type per second.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery
from celery.signals import after_setup_logger, worker_init

from agent_tasks.beat import SteadyInterval
from agent_tasks.config import AgentConfig

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
