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
  to report after a long manager outage. The same grace follows a Kafka outage: the probe asks Kafka at every pass,
  records when it could not (``KafkaOutage``, shared by every worker) and, from the first pass Kafka answers again,
  judges nobody for ``startup_grace``: the hubs' heartbeats could not be stored during the outage.
* Status topics must carry the broker's timestamps: :func:`repair_status_topics` (run by the probe task) switches
  topics with producer timestamps (created by upstream's agents or operator, or before globalhub set it).
* A deactivation takes the advisory locks of the hub's partitions first, as the consumer's batches do, so the two
  never wait for each other's rows in opposite orders (no deadlock).
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from confluent_kafka.admin import AdminClient
from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from globalhub.manager.models import (
    CompleteFrame,
    ConsumedPosition,
    Hub,
    HubInfo,
    HubTransition,
    KafkaOutage,
    LocalCompliance,
    LocalPolicy,
    ManagedCluster,
    ResyncRequest,
)
from globalhub.manager.resync_requests import create_request
from globalhub.protocol.kafka import (
    ENFORCED_TOPIC_SETTINGS,
    STATUS_TOPIC_CONFIG,
    KafkaSettings,
    KafkaUnavailable,
    TopicConfigReport,
    align_topic_configs,
    topic_ends,
    topics_with_prefix,
)

log = logging.getLogger(__name__)

# A hub's clock that is off by more than this is counted (``Hub.skewed_heartbeats``); it is never judged by it.
MAX_CLOCK_SKEW = timedelta(seconds=30)


@dataclass(frozen=True)
class Timing:
    timeout: timedelta
    startup_grace: timedelta
    topic_prefix: str = "gh-status."
    shared_topic: str = ""  # the shared status topic read besides the per-hub ones ("": none)

    @classmethod
    def from_settings(cls) -> Timing:
        conf = settings.GLOBALHUB
        return cls(conf.hub_timeout, conf.startup_grace, conf.status_topic_prefix, conf.shared_status_topic)


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
    not_judged: dict[str, str] = field(default_factory=dict)  # quiet hubs not judged, and why
    in_startup_grace: bool = False
    kafka_unreachable: bool = False  # this pass could not read the topics' ends
    outage_grace_until: datetime | None = None  # after a Kafka outage, nobody is judged before this


TopicEnds = Callable[[Sequence[str]], Mapping[str, Mapping[int, int]]]
"""Reads the broker's high watermark of each partition of the given topics (see ``protocol.kafka.topic_ends``).

Called at every probe, with no topic when no hub is quiet; raises :class:`KafkaUnavailable` when Kafka cannot be
asked (an answer without any of the asked topics counts the same)."""


# One admin client per process and client configuration, made on first use (after a worker pool's fork).
_admin_clients: dict[tuple[int, str], AdminClient] = {}
_admin_lock = threading.Lock()


def _admin_client(kafka: KafkaSettings) -> AdminClient:
    config = kafka.client_config()
    key = (os.getpid(), repr(sorted(config.items())))
    with _admin_lock:
        if key not in _admin_clients:
            _admin_clients[key] = AdminClient(config)
        return _admin_clients[key]


def broker_topic_ends(topics: Sequence[str]) -> Mapping[str, Mapping[int, int]]:
    """The topics' ends from the broker, with this process's admin client: connected once, so a pass pays about
    1 ms for the metadata request rather than about 55 ms for a new connection (``bench/manager_probe.py``)."""
    kafka = KafkaSettings.from_env()
    return topic_ends(kafka, topics, admin=_admin_client(kafka))


def silent_since(cutoff: datetime) -> Q:
    """Hubs with no heartbeat read since ``cutoff`` (nor since they appeared, if never): the probe's rule, and what
    the admin shows as "overdue" before the probe has run."""
    return Q(last_heartbeat__lt=cutoff) | Q(last_heartbeat__isnull=True, created_at__lt=cutoff)


def quiet_hubs(now: datetime, timing: Timing) -> list[str]:
    """Active hubs with no heartbeat read for longer than the timeout (since they appeared, if never)."""
    cutoff = now - timing.timeout
    quiet = Hub.objects.filter(state=Hub.State.ACTIVE).filter(silent_since(cutoff))
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


def hub_topics(hubs: Iterable[str], prefix: str, shared: str) -> dict[str, str]:
    """The topic each hub's status arrives on: the shared status topic when it was last seen there and that topic
    is still read (``GH_SHARED_STATUS_TOPIC``), else its own."""
    names = list(hubs)
    on_shared = set()
    if shared:
        on_shared = set(Hub.objects.filter(name__in=names, status_topic=shared).values_list("name", flat=True))
    return {hub: shared if hub in on_shared else prefix + hub for hub in names}


def every_hub_topic(timing: Timing) -> list[str]:
    """The status topic of every known hub, whatever its state (see :func:`hub_topics`). One query."""
    rows = Hub.objects.values_list("name", "status_topic")
    shared = timing.shared_topic
    return sorted({shared if shared and topic == shared else timing.topic_prefix + hub for hub, topic in rows})


def store_topic_ends(ends: Mapping[str, Mapping[int, int]], read_at: datetime) -> int:
    """Note each partition's end as read into its stored position (``end_offset``, ``end_read_at``): the consumer
    lag of ``/metrics`` is ``end_offset - next_offset`` (see :func:`refresh_topic_ends`). Returns how many positions
    were updated.

    One statement. Only partitions the consumer has a position for: a position is the consumer's to create. A
    position a batch holds locked (its commit is moments away) is skipped rather than waited for, so the probe
    never waits on the consumer nor deadlocks with it; its end is noted at the next pass.
    """
    found = sorted(
        (topic, partition, end) for topic, partitions in ends.items() for partition, end in partitions.items()
    )
    if not found:
        return 0
    table = connection.ops.quote_name(ConsumedPosition._meta.db_table)
    values = ", ".join(["(%s, %s::integer, %s::bigint)"] * len(found))
    statement = (
        f"WITH ends (topic, partition, end_offset) AS (VALUES {values}), "
        f"free AS (SELECT stored.id, ends.end_offset FROM {table} AS stored JOIN ends "
        "ON stored.topic = ends.topic AND stored.partition = ends.partition FOR UPDATE OF stored SKIP LOCKED) "
        f"UPDATE {table} AS stored SET end_offset = free.end_offset, end_read_at = %s FROM free "
        "WHERE stored.id = free.id"
    )
    with connection.cursor() as cursor:
        cursor.execute(statement, [value for row in found for value in row] + [read_at])
        return int(cursor.rowcount)


def refresh_topic_ends(now: datetime | None = None, timing: Timing | None = None, ends: TopicEnds | None = None) -> int:
    """Read the end of every hub's status topic, whatever the hub's state, and store it with the positions: the
    consumer lag of ``/metrics`` and the admin. The ``refresh topic ends`` schedule runs it (every
    ``GH_TOPIC_ENDS_INTERVAL``), apart from the probe: for 10,000 hubs it asks Kafka for 10,000 topics and updates
    10,000 positions, which a probe pass has no need to wait for. Returns how many positions were updated.

    Raises :class:`KafkaUnavailable` when Kafka cannot be asked (the stored ends stay as they were, with the time
    they were read; the probe is the one that records outages and judges nobody during them).
    """
    moment = now or timezone.now()
    rules = timing or Timing.from_settings()
    topics = every_hub_topic(rules)
    if not topics:
        return 0
    known = (ends or broker_topic_ends)(topics)
    return store_topic_ends(known, moment)


def record_transition(hub: str, at: datetime, from_state: str, to_state: str, reason: str, by: str = "") -> None:
    """Note a change of ``hub``'s state in its history; the caller makes the change in the same transaction."""
    HubTransition.objects.create(
        hub_name=hub, at=at, from_state=from_state, to_state=to_state, reason=reason[:2000], by=by[:150]
    )


def deactivate(hub: str, now: datetime, timing: Timing, partitions: Iterable[int] = ()) -> bool:
    """Make ``hub`` inactive if it is active and no heartbeat was read for the timeout; clean its data in the same
    transaction. True if it did. The caller has checked that its topic was read to the end (see :func:`probe`)."""
    cutoff = now - timing.timeout
    with transaction.atomic():
        _lock_partitions(hub_topics([hub], timing.topic_prefix, timing.shared_topic)[hub], partitions)
        changed = Hub.objects.filter(silent_since(cutoff), name=hub, state=Hub.State.ACTIVE).update(
            state=Hub.State.INACTIVE, state_changed_at=now
        )
        if changed != 1:
            return False
        record_transition(
            hub,
            now,
            Hub.State.ACTIVE,
            Hub.State.INACTIVE,
            f"no heartbeat read for {_duration(timing.timeout)} (none since {cutoff.isoformat(timespec='seconds')})",
            "probe",
        )
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
        record_transition(
            hub, now, Hub.State.INACTIVE, Hub.State.ACTIVE, f"heartbeat read again: resync request #{request.pk}", by
        )
    log.warning("hub=%s active again: resync request #%s", hub, request.pk)
    return request


def delete_hub(hub: str, now: datetime, by: str) -> dict[str, int]:
    """Forget ``hub``: its row and every row it reported go (clusters, policies, compliance, versions, positions
    stay with their topic). Its history stays. If the hub speaks again it is first seen anew and resynced whole.
    Returns what was deleted, per model."""
    conf = settings.GLOBALHUB
    with transaction.atomic():
        topic = hub_topics([hub], conf.status_topic_prefix, conf.shared_status_topic)[hub]
        # As deactivate does: the consumer's batch of this topic finishes first (it takes the same locks before
        # touching the hub's rows), so no batch writes rows of a hub being deleted, and no deadlock between them.
        _lock_partitions(topic, ())
        state = Hub.objects.select_for_update().filter(name=hub).values_list("state", flat=True).first()
        if state is None:
            return {}
        _, deleted = Hub.objects.filter(name=hub).delete()
        if topic != conf.shared_status_topic:  # its own topic is no longer probed: no stale lag for a deleted hub
            ConsumedPosition.objects.filter(topic=topic).update(end_offset=None, end_read_at=None)
        record_transition(
            hub,
            now,
            state,
            HubTransition.State.DELETED,
            "deleted by an operator; resynced whole if it speaks again",
            by,
        )
    log.warning("hub=%s deleted by %s: %s", hub, by, deleted)
    return deleted


def _duration(span: timedelta) -> str:
    minutes, seconds = divmod(int(span.total_seconds()), 60)
    if not minutes:
        return f"{seconds} s"
    return f"{minutes} min {seconds} s" if seconds else f"{minutes} min"


def heartbeat_seen(hub: str, seen: HeartbeatSeen, now: datetime, timing: Timing) -> ResyncRequest | None:
    """A heartbeat of ``hub`` was read: :func:`heartbeats_seen` for one hub. Its reactivation request, if any."""
    return heartbeats_seen({hub: seen}, now, timing).get(hub)


def heartbeats_seen(seen: Mapping[str, HeartbeatSeen], now: datetime, timing: Timing) -> dict[str, ResyncRequest]:
    """The heartbeats of a batch were read (by the status consumer, in its batch's transaction): the latest of each
    hub. Returns the resync request of each hub they brought back.

    A heartbeat's ``at`` (when it reached the manager's side) alone counts for liveness, and ``last_heartbeat``
    never moves backwards. The hub's own time for it is shown; its skew is measured only against the broker's clock
    (a consumer's read time includes the lag). An inactive hub whose heartbeat is fresh (``at`` within the timeout)
    becomes active with its targeted resync, as :func:`reactivate` does.

    A fixed number of statements whatever the number of hubs: the hubs' rows are locked in name order (as one
    update per hub did), updated in one statement, and the inactive ones among the fresh are brought back in one
    conditional update; only a hub brought back costs more (its request and its transition).
    """
    if not seen:
        return {}
    hubs = sorted(seen)
    rows = []
    for hub in hubs:
        beat = seen[hub]
        skew: float | None = None
        skewed = 0
        if beat.sent_at is not None and beat.by_broker:
            offset = beat.sent_at - beat.at
            skew = round(offset.total_seconds(), 3)
            if abs(offset) > MAX_CLOCK_SKEW:
                skewed = 1
                log.warning("hub=%s clock is %.0f s off the broker's (not judged by it)", hub, offset.total_seconds())
        rows.append((hub, beat.at, beat.sent_at, skew is not None, skew, skewed))
    table = connection.ops.quote_name(Hub._meta.db_table)
    values = ", ".join(
        ["(%s, %s::timestamptz, %s::timestamptz, %s::boolean, %s::double precision, %s::integer)"] * len(rows)
    )
    cutoff = now - timing.timeout
    fresh = [hub for hub in hubs if seen[hub].at >= cutoff]  # one stored before the timeout says nothing of now
    # No savepoint of its own: in the batch's transaction an error rolls the whole batch back anyway.
    with transaction.atomic(savepoint=False), connection.cursor() as cursor:
        cursor.execute(f"SELECT name FROM {table} WHERE name = ANY(%s) ORDER BY name FOR UPDATE", [hubs])
        cursor.execute(
            f"UPDATE {table} AS hub SET last_heartbeat = GREATEST(hub.last_heartbeat, seen.at), "
            "last_heartbeat_sent_at = COALESCE(seen.sent_at, hub.last_heartbeat_sent_at), "
            "clock_skew_seconds = CASE WHEN seen.has_skew THEN seen.skew ELSE hub.clock_skew_seconds END, "
            "skewed_heartbeats = hub.skewed_heartbeats + seen.skewed "
            f"FROM (VALUES {values}) AS seen (name, at, sent_at, has_skew, skew, skewed) WHERE hub.name = seen.name",
            [value for row in rows for value in row],
        )
        if not fresh:
            return {}
        cursor.execute(
            f"UPDATE {table} SET state = %s, state_changed_at = %s "
            "WHERE name = ANY(%s) AND state = %s AND last_heartbeat >= %s RETURNING name",
            [Hub.State.ACTIVE, now, fresh, Hub.State.INACTIVE, cutoff],
        )
        back = sorted(str(row[0]) for row in cursor.fetchall())
        requests = {}
        for hub in back:
            request = create_request(hub, None, ResyncRequest.Reason.REACTIVATION, "heartbeat", now)
            record_transition(
                hub,
                now,
                Hub.State.INACTIVE,
                Hub.State.ACTIVE,
                f"heartbeat read again: resync request #{request.pk}",
                "heartbeat",
            )
            requests[hub] = request
    for hub, request in requests.items():
        log.warning("hub=%s active again: resync request #%s", hub, request.pk)
    return requests


def last_manager_start() -> datetime | None:
    return (
        ResyncRequest.objects.filter(reason=ResyncRequest.Reason.STARTUP)
        .order_by("-requested_at")
        .values_list("requested_at", flat=True)
        .first()
    )


def kafka_unreachable(now: datetime) -> None:
    """Record that the probe could not ask Kafka at ``now``."""
    KafkaOutage.objects.get_or_create(pk=1)
    KafkaOutage.objects.filter(Q(unreachable_at__isnull=True) | Q(unreachable_at__lt=now), pk=1).update(
        unreachable_at=now
    )


def kafka_answered(now: datetime, grace: timedelta) -> datetime | None:
    """Record that Kafka answered the probe at ``now``; until when nobody is judged after its last outage (None
    if that grace is over, or there never was one).

    The grace counts from the first pass that found Kafka answering again: it may have come back at any time since
    the pass that could not reach it, and the hubs need time to store a heartbeat after that.
    """
    KafkaOutage.objects.filter(
        Q(answered_again_at__isnull=True) | Q(answered_again_at__lt=F("unreachable_at")),
        pk=1,
        unreachable_at__lte=now,
    ).update(answered_again_at=now)
    outage = KafkaOutage.objects.filter(pk=1, answered_again_at__isnull=False).first()
    if outage is None or outage.answered_again_at is None or now >= outage.answered_again_at + grace:
        return None
    return outage.answered_again_at + grace


def probe(now: datetime | None = None, timing: Timing | None = None, ends: TopicEnds | None = None) -> ProbeResult:
    """Judge every hub: silent ones become inactive (unless in a grace), fresh inactive ones active.

    A quiet hub is silent only once its topic was read to the end: its heartbeats may be waiting in Kafka (a
    lagging or stopped consumer, a partition nobody is assigned), and then it is not judged. Kafka is asked at
    every pass, quiet hubs or not, so an outage is seen: while Kafka does not answer nobody is judged, and after it
    answers again nobody is for ``startup_grace`` (the hubs' heartbeats could not be stored meanwhile). Only the quiet
    hubs' topics are asked (none in a quiet pass: a metadata request); the ends read are stored with their positions.
    Every hub topic's end, for the consumer lag, is read by :func:`refresh_topic_ends`, its own task.
    """
    moment = now or timezone.now()
    rules = timing or Timing.from_settings()
    cutoff = moment - rules.timeout
    result = ProbeResult()
    started = last_manager_start()
    result.in_startup_grace = started is not None and moment - started < rules.startup_grace
    quiet = [] if result.in_startup_grace else quiet_hubs(moment, rules)
    # Read after the quiet hubs were chosen: the ends cover everything stored up to now.
    topic_of = hub_topics(quiet, rules.topic_prefix, rules.shared_topic)
    judged = sorted(set(topic_of.values()))
    known: Mapping[str, Mapping[int, int]] = {}
    try:
        known = (ends or broker_topic_ends)(judged)
        result.kafka_unreachable = bool(judged) and not any(topic in known for topic in judged)
    except KafkaUnavailable as error:
        result.kafka_unreachable = True
        log.warning("probe: Kafka cannot be asked, nobody is judged: %s", error)
    if result.kafka_unreachable:
        kafka_unreachable(moment)
    else:
        result.outage_grace_until = kafka_answered(moment, rules.startup_grace)
        store_topic_ends(known, moment)
    for hub in quiet:
        topic = topic_of[hub]
        if result.kafka_unreachable:
            why = "Kafka did not answer: the ends of its topic are unknown"
        elif result.outage_grace_until is not None:
            why = (
                "Kafka was unreachable; in the grace after it answered again, until "
                f"{result.outage_grace_until.isoformat(timespec='seconds')}"
            )
        else:
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


# Status topics found (or set) with the wanted timestamps by this process, with when (time.monotonic()).
_checked_topics: dict[str, float] = {}


def repair_status_topics(
    kafka: KafkaSettings | None = None, prefix: str | None = None, recheck: float = 3600.0
) -> TopicConfigReport:
    """Give every status topic the broker's timestamps (``message.timestamp.type=LogAppendTime``).

    Topics created by upstream's agents or operator, or before globalhub set it, carry the producer's time: there a
    heartbeat counts from when it was read, and one read from an old backlog would look fresh. Each topic is checked
    once per process and ``recheck`` seconds (a new hub's topic at the first pass after it appears); every change is
    logged, and a refusal (no ``AlterConfigs`` permission) is a warning saying what the operator must run. Raises
    :class:`KafkaUnavailable` when Kafka cannot list its topics.
    """
    kafka_settings = kafka or KafkaSettings.from_env()
    topic_prefix = settings.GLOBALHUB.status_topic_prefix if prefix is None else prefix
    hub_topic = re.compile(re.escape(topic_prefix) + r"[A-Za-z0-9._-]+")
    shared = settings.GLOBALHUB.shared_status_topic
    started = time.monotonic()
    found = topics_with_prefix(kafka_settings, topic_prefix)
    if shared:
        found += [topic for topic in topics_with_prefix(kafka_settings, shared) if topic == shared]
    due = [
        topic
        for topic in found
        if (hub_topic.fullmatch(topic) or topic == shared) and started - _checked_topics.get(topic, -recheck) >= recheck
    ]
    wanted = {key: value for key, value in STATUS_TOPIC_CONFIG.items() if key in ENFORCED_TOPIC_SETTINGS}
    report = align_topic_configs(kafka_settings, due, wanted)
    for topic in due:
        _checked_topics[topic] = started  # refused ones too: the warning comes again after ``recheck``, not each pass
    return report
