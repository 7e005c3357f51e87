"""Hub lifecycle: the one place where a hub becomes inactive or active again.

* A hub silent for longer than the timeout (5 min) becomes **inactive**: its clusters, hub info and policies are
  soft-deleted and its compliance hard-deleted, in the transaction that changes its state (as upstream).
* **Silent is judged on what was read, by the manager's clocks.** A heartbeat's time is when it reached the manager's
  side: the broker's log-append time, or the time the consumer read it (never the hub's clock, which is only shown,
  with its skew). A hub with no heartbeat read for the timeout is silent only when the ingest has reached the end
  of its topic as the broker reports it *now* (the stored positions against the high watermarks): a hub whose
  heartbeats wait unread in Kafka (a lagging or stopped consumer, a partition nobody is assigned) is not judged,
  nor is any hub while Kafka cannot be asked.
* An inactive hub whose heartbeat is fresh again becomes **active** and gets a targeted resync of the four types.
  This happens as soon as the status consumer reads that heartbeat (same transaction), and the probe repeats
  the check as a safety net; a heartbeat stored before the timeout does not count.
* Every change is a conditional ``UPDATE … WHERE state = <old> AND <heartbeat condition>``, and only the caller
  that changed exactly one row acts on it. The consumer, the probe and any number of workers can race: a state
  changes once and its resync request is written once, in the same transaction.
* After a manager start nobody is judged for ``startup_grace`` (default: the timeout), so hubs get a fair chance
  to report after a long manager outage.
* A deactivation takes the advisory locks of the hub's partitions first, as the consumer's batches do, so the two
  never wait for each other's rows in opposite orders (no deadlock).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Q, Value
from django.db.models.functions import Greatest
from django.utils import timezone

from globalhub.manager.models import (
    CompleteFrame,
    ConsumedPosition,
    Hub,
    HubInfo,
    LocalCompliance,
    LocalPolicy,
    ManagedCluster,
    ResyncRequest,
)
from globalhub.manager.resync_requests import create_request
from globalhub.protocol.kafka import KafkaSettings, topic_ends

log = logging.getLogger(__name__)

# A hub's clock that is off by more than this is counted (``Hub.skewed_heartbeats``); it is never judged by it.
MAX_CLOCK_SKEW = timedelta(seconds=30)


@dataclass(frozen=True)
class Timing:
    timeout: timedelta
    startup_grace: timedelta
    topic_prefix: str = "gh-status."

    @classmethod
    def from_settings(cls) -> Timing:
        conf = settings.GLOBALHUB
        return cls(conf.hub_timeout, conf.startup_grace, conf.status_topic_prefix)


@dataclass(frozen=True)
class HeartbeatSeen:
    """A heartbeat as read: when it reached the manager's side, whether that is the broker's time (else the
    consumer's), and the hub's own time for it."""

    at: datetime
    by_broker: bool
    sent_at: datetime | None


@dataclass
class ProbeResult:
    inactivated: list[str] = field(default_factory=list)
    reactivated: list[str] = field(default_factory=list)
    not_judged: dict[str, str] = field(default_factory=dict)  # quiet hubs whose topic was not read to the end
    in_startup_grace: bool = False


TopicEnds = Callable[[Sequence[str]], Mapping[str, Mapping[int, int]]]
"""Reads the broker's high watermark of each partition of the given topics (see ``protocol.kafka.topic_ends``)."""


def broker_topic_ends(topics: Sequence[str]) -> Mapping[str, Mapping[int, int]]:
    return topic_ends(KafkaSettings.from_env(), topics)


def quiet_hubs(now: datetime, timing: Timing) -> list[str]:
    """Active hubs with no heartbeat read for longer than the timeout (since they appeared, if never)."""
    cutoff = now - timing.timeout
    quiet = Hub.objects.filter(state=Hub.State.ACTIVE).filter(
        Q(last_heartbeat__lt=cutoff) | Q(last_heartbeat__isnull=True, created_at__lt=cutoff)
    )
    return list(quiet.order_by("name").values_list("name", flat=True))


def unread(topic: str, ends: Mapping[str, Mapping[int, int]]) -> str:
    """Why the consumer may not have read ``topic`` to its end ("" when it has: nothing is waiting)."""
    if topic not in ends:
        return "the ends of its topic are unknown (Kafka unreachable?)"
    stored = dict(ConsumedPosition.objects.filter(topic=topic).values_list("partition", "next_offset"))
    waiting = sum(max(0, end - stored.get(partition, 0)) for partition, end in ends[topic].items())
    return f"{waiting} messages of its topic are not ingested yet" if waiting else ""


def _lock_partitions(topic: str, partitions: Iterable[int]) -> None:
    """The advisory locks of the topic's partitions, in the consumer's order (its batches take them first too)."""
    stored = ConsumedPosition.objects.filter(topic=topic).values_list("partition", flat=True)
    with connection.cursor() as cursor:
        for partition in sorted({*partitions, *stored}):
            cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s), %s)", [topic, partition])


def deactivate(hub: str, now: datetime, timing: Timing, partitions: Iterable[int] = ()) -> bool:
    """Make ``hub`` inactive if it is active and no heartbeat was read for the timeout; clean its data in the same
    transaction. True if it did. The caller has checked that its topic was read to the end (see :func:`probe`)."""
    cutoff = now - timing.timeout
    with transaction.atomic():
        _lock_partitions(timing.topic_prefix + hub, partitions)
        silent = Q(last_heartbeat__lt=cutoff) | Q(last_heartbeat__isnull=True, created_at__lt=cutoff)
        changed = Hub.objects.filter(silent, name=hub, state=Hub.State.ACTIVE).update(
            state=Hub.State.INACTIVE, state_changed_at=now
        )
        if changed != 1:
            return False
        clusters = ManagedCluster.objects.filter(hub_id=hub, deleted_at__isnull=True).update(
            deleted_at=now, updated_at=now
        )
        info = HubInfo.objects.filter(hub_id=hub, deleted_at__isnull=True).update(deleted_at=now, updated_at=now)
        policies = LocalPolicy.objects.filter(hub_id=hub, deleted_at__isnull=True).update(
            deleted_at=now, updated_at=now
        )
        compliance, _ = LocalCompliance.objects.filter(hub_id=hub).delete()
        CompleteFrame.objects.filter(hub_id=hub).delete()
    log.warning(
        "hub=%s inactive (no heartbeat read since before %s): soft-deleted %d clusters, %d hub info, %d policies; "
        "deleted %d compliance rows",
        hub,
        cutoff.isoformat(timespec="seconds"),
        clusters,
        info,
        policies,
        compliance,
    )
    return True


def reactivate(hub: str, now: datetime, timing: Timing, by: str) -> ResyncRequest | None:
    """Make an inactive ``hub`` with a fresh heartbeat active again, with its targeted resync; None if not."""
    cutoff = now - timing.timeout
    with transaction.atomic():
        changed = Hub.objects.filter(name=hub, state=Hub.State.INACTIVE, last_heartbeat__gte=cutoff).update(
            state=Hub.State.ACTIVE, state_changed_at=now
        )
        if changed != 1:
            return None
        request = create_request(hub, None, ResyncRequest.Reason.REACTIVATION, by, now)
    log.warning("hub=%s active again: resync request #%s", hub, request.pk)
    return request


def heartbeat_seen(hub: str, seen: HeartbeatSeen, now: datetime, timing: Timing) -> ResyncRequest | None:
    """A heartbeat of ``hub`` was read (by the status consumer, in its batch's transaction).

    Its ``seen.at`` (when it reached the manager's side) alone counts for liveness, and ``last_heartbeat`` never
    moves backwards. The hub's own time for it is shown; its skew is measured only against the broker's clock
    (a consumer's read time includes the lag).
    """
    changes: dict[str, object] = {"last_heartbeat": Greatest(F("last_heartbeat"), Value(seen.at))}
    if seen.sent_at is not None:
        changes["last_heartbeat_sent_at"] = seen.sent_at
    if seen.sent_at is not None and seen.by_broker:
        skew = seen.sent_at - seen.at
        changes["clock_skew_seconds"] = round(skew.total_seconds(), 3)
        if abs(skew) > MAX_CLOCK_SKEW:
            changes["skewed_heartbeats"] = F("skewed_heartbeats") + 1
            log.warning("hub=%s clock is %.0f s off the broker's (not judged by it)", hub, skew.total_seconds())
    Hub.objects.filter(name=hub).update(**changes)
    if seen.at < now - timing.timeout:
        return None  # stored before the timeout: it says nothing about the hub being alive now
    return reactivate(hub, now, timing, by="heartbeat")


def last_manager_start() -> datetime | None:
    return (
        ResyncRequest.objects.filter(reason=ResyncRequest.Reason.STARTUP)
        .order_by("-requested_at")
        .values_list("requested_at", flat=True)
        .first()
    )


def probe(now: datetime | None = None, timing: Timing | None = None, ends: TopicEnds | None = None) -> ProbeResult:
    """Judge every hub: silent ones become inactive (unless in the startup grace), fresh inactive ones active.

    A quiet hub is silent only once its topic was read to the end: its heartbeats may be waiting in Kafka (a
    lagging or stopped consumer, an outage, a partition nobody is assigned), and then it is not judged.
    """
    moment = now or timezone.now()
    rules = timing or Timing.from_settings()
    cutoff = moment - rules.timeout
    result = ProbeResult()
    started = last_manager_start()
    result.in_startup_grace = started is not None and moment - started < rules.startup_grace
    quiet = [] if result.in_startup_grace else quiet_hubs(moment, rules)
    if quiet:
        # Read after the quiet hubs were chosen: the ends cover everything stored up to now.
        known = (ends or broker_topic_ends)([rules.topic_prefix + hub for hub in quiet])
        for hub in quiet:
            topic = rules.topic_prefix + hub
            why = unread(topic, known)
            if why:
                result.not_judged[hub] = why
                log.warning("hub=%s quiet for longer than the timeout, not judged: %s", hub, why)
            elif deactivate(hub, moment, rules, known[topic]):
                result.inactivated.append(hub)
    back = Hub.objects.filter(state=Hub.State.INACTIVE, last_heartbeat__gte=cutoff).values_list("name", flat=True)
    for hub in list(back):
        if reactivate(hub, moment, rules, by="probe"):
            result.reactivated.append(hub)
    return result


def manager_started(now: datetime | None = None, dedupe: timedelta | None = None) -> ResyncRequest | None:
    """One broadcast resync per manager start, however many processes start: the first within ``dedupe`` wins."""
    moment = now or timezone.now()
    window = dedupe or settings.GLOBALHUB.probe_interval
    with transaction.atomic():
        # Serialise concurrent starters; the lock ends with the transaction.
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(hashtext('globalhub-manager-start'))")
        recent = ResyncRequest.objects.filter(
            reason=ResyncRequest.Reason.STARTUP, requested_at__gte=moment - window
        ).exists()
        if recent:
            return None
        return create_request(None, None, ResyncRequest.Reason.STARTUP, "manager start", moment)
