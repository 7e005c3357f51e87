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
    shared_status_topic: str = ""  # a shared status topic read besides the per-hub ones ("": none)
    event_retention: timedelta = timedelta(days=90)  # stored events older than this are deleted (prune events)


def shared_status_topic(topic: str, prefix: str) -> str:
    """The shared status topic setting, checked: it must not look like a hub's own topic (``<prefix><hub>``),
    or its records would be read as that hub's."""
    if topic and topic.startswith(prefix):
        raise ValueError(
            f"GH_SHARED_STATUS_TOPIC={topic!r} starts with GH_STATUS_TOPIC_PREFIX={prefix!r}: it would be read as "
            f"the topic of a hub named {topic[len(prefix) :]!r}; choose a name outside the prefix (upstream's is "
            "'gh-status')"
        )
    return topic
