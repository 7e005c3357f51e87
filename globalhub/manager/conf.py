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
    consumer_session_timeout: timedelta  # a consumer silent this long (kill -9, lost host) loses its partitions
    consumer_instance_id: str | None  # static group membership; None: a new member id at every start
    topic_refresh_ms: int
    db_retry_max: timedelta
    hub_timeout: timedelta  # silent longer than this: inactive
    probe_interval: timedelta  # how often the probe runs (the default schedule installed by migrate)
    startup_grace: timedelta  # after a manager start, nobody is judged inactive before this has passed
    periodic_resync_interval: timedelta  # the manager-side periodic resync schedules installed by migrate
    resync_overdue: timedelta  # a resync request not complete this long after it was requested is overdue
    event_retention: timedelta = timedelta(days=90)  # stored events older than this are deleted (prune events)
