"""The manager's own settings, typed; built in ``globalhub.settings`` from the environment."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta

from globalhub.envconf import env_duration


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
    # A batch also ends once its records' bytes reach this: a consumer's memory is bounded by bytes, not a count
    # (500 full 800 KiB frames would be 400 MB before parsing).
    consumer_batch_bytes: int = 16 * 1024 * 1024
    # Per resync type (short name), from GH_PERIODIC_RESYNC_INTERVAL_<TYPE>; a type not here uses the general one.
    periodic_resync_intervals: Mapping[str, timedelta] = field(default_factory=dict)
    task_run_retention: timedelta = timedelta(days=7)  # recorded task runs older than this are deleted (prune events)
    # Where a status consumer serves its own metrics (host:port; "": not served), see ``metrics_address``.
    consumer_metrics_addr: str = "127.0.0.1:9108"
    # How often every hub topic's end is read for the consumer lag (the schedule installed by migrate).
    topic_ends_interval: timedelta = timedelta(minutes=1)

    def resync_interval(self, short: str) -> timedelta:
        """The interval of the ``periodic resync: <short>`` schedule that migrate installs."""
        return self.periodic_resync_intervals.get(short, self.periodic_resync_interval)


def periodic_resync_setting(short: str) -> str:
    """The environment variable of one type's periodic resync interval: ``policy.localspec`` ->
    ``GH_PERIODIC_RESYNC_INTERVAL_POLICY_LOCALSPEC``."""
    return "GH_PERIODIC_RESYNC_INTERVAL_" + short.upper().replace(".", "_")


def periodic_resync_intervals(shorts: Iterable[str], environ: Mapping[str, str] | None = None) -> dict[str, timedelta]:
    """The per-type intervals set in the environment (types without their own variable are left out)."""
    env = os.environ if environ is None else environ
    names = {short: periodic_resync_setting(short) for short in shorts}
    return {short: env_duration(name, "", env) for short, name in names.items() if env.get(name)}


def metrics_address(text: str) -> tuple[str, int] | None:
    """``host:port`` (``[::1]:9108`` for IPv6; port 0: any free port) as (host, port); "" is None (not served).
    Raises ``ValueError`` for anything else."""
    if not text:
        return None
    host, colon, port = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not colon or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"{text!r} is not host:port (e.g. 127.0.0.1:9108), nor empty to serve no metrics")
    return host, int(port)


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
