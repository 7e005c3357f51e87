"""The agent's Celery app: ``celery -A agent_tasks worker`` / ``celery -A agent_tasks beat``.

The broker is the hub's own Redis (``REDIS_URL``); tasks go to a queue named after the hub, so agents of several
hubs may share one Redis server.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery
from celery.signals import worker_ready

from agent_tasks.config import AgentConfig

log = logging.getLogger(__name__)

_config = AgentConfig.from_env()

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
    task_soft_time_limit=600,
    task_time_limit=900,
    worker_hijack_root_logger=True,
)


@worker_ready.connect
def _on_worker_ready(**kwargs: Any) -> None:
    """An agent start makes sure its status topic exists and sends its full state once."""
    from agent_tasks.runtime import get_runtime
    from agent_tasks.tasks import resync
    from agent_tasks.types import OBJECT_TYPES

    get_runtime().ensure_status_topic()
    for short_type in OBJECT_TYPES:
        resync.delay(short_type)
    log.info("hub=%s agent ready, startup resync queued for %s", _config.hub_name, ", ".join(OBJECT_TYPES))
