"""The manager's own settings, typed; built in ``globalhub.settings`` from the environment."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta


@dataclass(frozen=True)
class ManagerSettings:
    spec_topic: str
    status_topic_prefix: str
    consumer_group: str
    consumer_batch_size: int
    topic_refresh_ms: int
    db_retry_max: timedelta
