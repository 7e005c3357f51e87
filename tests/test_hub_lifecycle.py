"""The hub lifecycle state machine on real PostgreSQL, with time under the test's control.

Every transition, the late-heartbeat and probe-versus-heartbeat races, the startup grace, one broadcast per manager
start, and resync requests from creation to completion.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine
from django.db import close_old_connections, connection, transaction
from django.utils import timezone

from globalhub.manager import lifecycle
from globalhub.manager.ingest.pipeline import ingest_batch
from globalhub.manager.lifecycle import Timing
from globalhub.manager.models import (
    ConsumedPosition,
    Hub,
    HubInfo,
    LocalCompliance,
    LocalPolicy,
    ManagedCluster,
    ResyncRequest,
)
from globalhub.manager.resync_requests import create_request, dispatch_pending
from globalhub.protocol.codec import encode
from globalhub.protocol.events import EXT_VERSION, RESYNC_TYPES, EventType
from globalhub.protocol.kafka import ConfirmedProducer, KafkaSettings
from tests.helpers import record_of, wait_for

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
TIMING = Timing(timeout=timedelta(minutes=5), startup_grace=timedelta(minutes=5))
PREFIX = "gh-status."


def make_hub(name: str | None = None, heartbeat: datetime | None = T0, state: str = "active") -> str:
    """A hub whose topic holds nothing unread (see :func:`everything_read`)."""
    hub = name or f"hub-{uuid.uuid4().hex[:8]}"
    Hub.objects.create(name=hub, state=state, last_heartbeat=heartbeat)
    Hub.objects.filter(name=hub).update(created_at=T0 - timedelta(days=1))
    return hub


def give_data(hub: str) -> None:
    ManagedCluster.objects.create(
        hub_id=hub, cluster_id=uuid.uuid4(), cluster_name="c1", payload={}, created_at=T0, updated_at=T0
    )
    HubInfo.objects.create(hub_id=hub, cluster_id=uuid.uuid4(), payload={}, created_at=T0, updated_at=T0)
    LocalPolicy.objects.create(hub_id=hub, policy_id=uuid.uuid4(), payload={}, created_at=T0, updated_at=T0)
    LocalCompliance.objects.create(
        hub_id=hub, policy_id=uuid.uuid4(), cluster_name="c1", compliance="compliant", updated_at=T0
    )


def heartbeat_record(hub: str, sent: datetime, offset: int, version: str = "1.0") -> Any:
    message = encode(
        event_type=EventType.HEARTBEAT, source=hub, data=b"[]", extensions={EXT_VERSION: version}, time=sent
    )
    return record_of(message, PREFIX + hub, offset)


def state(hub: str) -> str:
    return str(Hub.objects.get(name=hub).state)


def requests_for(hub: str, reason: str | None = None) -> list[ResyncRequest]:
    found = ResyncRequest.objects.filter(targets__hub_id=hub)
    return list(found.filter(reason=reason) if reason else found)


def everything_read(topics: Sequence[str]) -> dict[str, dict[int, int]]:
    """Topic ends as the broker would report them when the ingest has read every topic to its end."""
    positions = ConsumedPosition.objects.filter(topic__in=topics).values_list("topic", "partition", "next_offset")
    ends: dict[str, dict[int, int]] = {topic: {} for topic in topics}
    for topic, partition, offset in positions:
        ends[topic][partition] = offset
    return ends


@pytest.fixture(autouse=True)
def _topics_read_to_the_end(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lifecycle, "broker_topic_ends", everything_read)


def read_until(hub: str, offset: int, partition: int = 0) -> None:
    ConsumedPosition.objects.update_or_create(topic=PREFIX + hub, partition=partition, defaults={"next_offset": offset})


# --- transitions ----------------------------------------------------------------------------------------------------

pytestmark = pytest.mark.django_db


def test_a_hub_silent_longer_than_the_timeout_becomes_inactive_and_its_data_is_cleaned() -> None:
    hub = make_hub(heartbeat=T0)
    give_data(hub)
    result = lifecycle.probe(now=T0 + timedelta(minutes=5, seconds=1), timing=TIMING)

    assert result.inactivated == [hub]
    assert state(hub) == "inactive"
    assert ManagedCluster.objects.get(hub_id=hub).deleted_at is not None
    assert HubInfo.objects.get(hub_id=hub).deleted_at is not None
    assert LocalPolicy.objects.get(hub_id=hub).deleted_at is not None
    assert not LocalCompliance.objects.filter(hub_id=hub).exists()  # hard-deleted, as upstream


def test_a_hub_heard_within_the_timeout_stays_active_and_keeps_its_data() -> None:
    hub = make_hub(heartbeat=T0)
    give_data(hub)
    assert lifecycle.probe(now=T0 + timedelta(minutes=4, seconds=59), timing=TIMING).inactivated == []
    assert state(hub) == "active"
    assert ManagedCluster.objects.get(hub_id=hub).deleted_at is None


def test_a_hub_that_never_sent_a_heartbeat_is_judged_from_when_it_appeared() -> None:
    hub = make_hub(heartbeat=None)
    assert lifecycle.probe(now=T0 - timedelta(hours=23), timing=TIMING).inactivated == [hub]


def test_a_fresh_heartbeat_brings_an_inactive_hub_back_at_once_with_one_targeted_resync() -> None:
    hub = make_hub(heartbeat=T0, state="inactive")
    with time_machine.travel(T0 + timedelta(minutes=30), tick=False):
        ingest_batch([heartbeat_record(hub, T0 + timedelta(minutes=30), 0)], topic_prefix=PREFIX)
        ingest_batch([heartbeat_record(hub, T0 + timedelta(minutes=31), 1, "2.0")], topic_prefix=PREFIX)

    assert state(hub) == "active"
    (request,) = requests_for(hub)
    assert request.reason == "reactivation"
    assert request.subject == hub
    assert request.types == [t.value for t in RESYNC_TYPES]
    assert [t.hub_id for t in request.targets.all()] == [hub]


def test_a_heartbeat_stored_before_the_timeout_does_not_bring_a_hub_back() -> None:
    hub = make_hub(heartbeat=T0, state="inactive")
    now = T0 + timedelta(hours=1)
    stored = replace(heartbeat_record(hub, now - timedelta(minutes=6), 0), timestamp=now - timedelta(minutes=6))
    with time_machine.travel(now, tick=False):
        ingest_batch([replace(stored, log_append=True)], topic_prefix=PREFIX)
    assert state(hub) == "inactive"
    assert requests_for(hub) == []
    assert lifecycle.probe(now=now, timing=TIMING).reactivated == []


# --- liveness is judged on what was read, by the manager's clocks ---------------------------------------------------


def test_a_quiet_hub_whose_topic_is_not_ingested_to_its_end_is_not_judged() -> None:
    hub = make_hub(heartbeat=T0)
    give_data(hub)
    read_until(hub, 40)
    now = T0 + timedelta(minutes=20)  # the consumer lags (or is stopped): 12 messages wait, maybe heartbeats

    result = lifecycle.probe(now=now, timing=TIMING, ends=lambda topics: {PREFIX + hub: {0: 52}})
    assert result.inactivated == [] and result.not_judged == {hub: "12 messages of its topic are not ingested yet"}
    assert state(hub) == "active" and ManagedCluster.objects.get(hub_id=hub).deleted_at is None

    read_until(hub, 52)  # read to the end, and no heartbeat among them: silent
    assert lifecycle.probe(now=now, timing=TIMING, ends=lambda topics: {PREFIX + hub: {0: 52}}).inactivated == [hub]


def test_a_partition_nobody_ingested_holds_the_judgement() -> None:
    hub = make_hub(heartbeat=T0)
    read_until(hub, 10)
    ends = {PREFIX + hub: {0: 10, 1: 3}}  # partition 1 was never assigned to a consumer
    result = lifecycle.probe(now=T0 + timedelta(minutes=20), timing=TIMING, ends=lambda topics: ends)
    assert result.not_judged == {hub: "3 messages of its topic are not ingested yet"}
    assert state(hub) == "active"


def test_no_hub_is_judged_while_kafka_cannot_say_where_its_topics_end() -> None:
    hubs = [make_hub(heartbeat=T0), make_hub(heartbeat=None)]
    result = lifecycle.probe(now=T0 + timedelta(hours=2), timing=TIMING, ends=lambda topics: {})
    assert result.inactivated == []
    assert sorted(result.not_judged) == sorted(hubs)
    assert all("unknown" in why for why in result.not_judged.values())
    assert [state(hub) for hub in hubs] == ["active", "active"]


def test_the_probe_asks_kafka_for_the_quiet_hubs_topics_only_and_still_asks_when_none_is_quiet() -> None:
    quiet, heard = make_hub(heartbeat=T0), make_hub(heartbeat=T0 + timedelta(minutes=9))
    asked: list[list[str]] = []

    def ends(topics: Sequence[str]) -> dict[str, dict[int, int]]:
        asked.append(list(topics))
        return everything_read(topics)

    assert lifecycle.probe(now=T0 + timedelta(minutes=10), timing=TIMING, ends=ends).inactivated == [quiet]
    assert asked == [[PREFIX + quiet]] and state(heard) == "active"
    # Nobody quiet: Kafka is still asked (an outage must be seen), for no topic.
    assert lifecycle.probe(now=T0 + timedelta(minutes=10), timing=TIMING, ends=ends).inactivated == []
    assert asked[1:] == [[]]


def test_the_topic_ends_refresh_asks_every_hub_topic_whatever_its_state_and_stores_them() -> None:
    hubs = [make_hub(heartbeat=T0), make_hub(heartbeat=T0 - timedelta(days=1), state="inactive")]
    for hub in hubs:
        read_until(hub, 4)
    asked: list[list[str]] = []

    def ends(topics: Sequence[str]) -> dict[str, dict[int, int]]:
        asked.append(list(topics))
        return {topic: {0: 10} for topic in topics}

    assert lifecycle.refresh_topic_ends(now=T0, timing=TIMING, ends=ends) == 2
    assert asked == [sorted(PREFIX + hub for hub in hubs)]
    stored = ConsumedPosition.objects.filter(topic__in=asked[0])
    assert sorted(stored.values_list("end_offset", "end_read_at")) == [(10, T0), (10, T0)]
    assert [state(hub) for hub in hubs] == ["active", "inactive"]  # it judges nobody


def test_the_topic_ends_refresh_leaves_the_stored_ends_when_kafka_cannot_be_asked() -> None:
    from globalhub.protocol.kafka import KafkaUnavailable

    hub = make_hub(heartbeat=T0)
    read_until(hub, 4)
    lifecycle.refresh_topic_ends(now=T0, timing=TIMING, ends=lambda topics: {t: {0: 9} for t in topics})

    def down(topics: Sequence[str]) -> dict[str, dict[int, int]]:
        raise KafkaUnavailable("down")

    with pytest.raises(KafkaUnavailable):
        lifecycle.refresh_topic_ends(now=T0 + timedelta(minutes=1), timing=TIMING, ends=down)
    assert ConsumedPosition.objects.filter(topic=PREFIX + hub).values_list("end_offset", "end_read_at").get() == (
        9,
        T0,
    )


def test_the_refresh_task_reports_a_kafka_outage_instead_of_failing(monkeypatch: pytest.MonkeyPatch) -> None:
    from globalhub.manager import tasks
    from globalhub.protocol.kafka import KafkaUnavailable

    hub = make_hub(heartbeat=T0)
    read_until(hub, 4)
    monkeypatch.setattr(lifecycle, "broker_topic_ends", lambda topics: {t: {0: 6} for t in topics})
    monkeypatch.setattr(lifecycle.Timing, "from_settings", classmethod(lambda cls: TIMING))
    assert tasks.refresh_topic_ends() == {"updated": 1, "kafka_unreachable": False}

    def down(topics: Sequence[str]) -> dict[str, dict[int, int]]:
        raise KafkaUnavailable("down")

    monkeypatch.setattr(lifecycle, "broker_topic_ends", down)
    assert tasks.refresh_topic_ends() == {"updated": 0, "kafka_unreachable": True}


def test_a_hub_whose_clock_runs_six_minutes_slow_stays_alive_and_its_skew_is_shown_and_counted() -> None:
    hub = make_hub(heartbeat=T0)
    give_data(hub)
    now = T0 + timedelta(minutes=4)
    for offset in range(3):  # every heartbeat says it was sent 6 minutes before the broker stored it
        at = now + timedelta(seconds=30 * offset)
        record = replace(heartbeat_record(hub, at - timedelta(minutes=6), offset, f"1.{offset}"), timestamp=at)
        with time_machine.travel(at, tick=False):
            ingest_batch([replace(record, log_append=True)], topic_prefix=PREFIX)

    assert lifecycle.probe(now=now + timedelta(minutes=2), timing=TIMING).inactivated == []
    stored = Hub.objects.get(name=hub)
    assert stored.state == "active" and ManagedCluster.objects.get(hub_id=hub).deleted_at is None
    assert stored.last_heartbeat == now + timedelta(minutes=1)
    assert stored.last_heartbeat_sent_at == now + timedelta(minutes=1) - timedelta(minutes=6)
    assert stored.clock_skew_seconds == pytest.approx(-360.0) and stored.skewed_heartbeats == 3


def test_a_hub_with_a_slow_clock_is_brought_back_by_its_next_heartbeat() -> None:
    hub = make_hub(heartbeat=T0, state="inactive")
    now = T0 + timedelta(hours=1)
    record = replace(heartbeat_record(hub, now - timedelta(minutes=6), 0), timestamp=now, log_append=True)
    with time_machine.travel(now, tick=False):
        ingest_batch([record], topic_prefix=PREFIX)
    assert state(hub) == "active"
    assert len(requests_for(hub, "reactivation")) == 1


def test_the_probe_brings_back_an_inactive_hub_whose_heartbeat_is_fresh() -> None:
    hub = make_hub(heartbeat=T0, state="inactive")
    result = lifecycle.probe(now=T0 + timedelta(minutes=1), timing=TIMING)
    assert result.reactivated == [hub]
    assert state(hub) == "active"
    assert len(requests_for(hub, "reactivation")) == 1


def test_a_heartbeat_never_changes_an_active_hubs_state_nor_creates_a_request() -> None:
    hub = make_hub(heartbeat=T0)
    with time_machine.travel(T0 + timedelta(minutes=1), tick=False):
        ingest_batch([heartbeat_record(hub, T0 + timedelta(minutes=1), 0)], topic_prefix=PREFIX)
    assert state(hub) == "active"
    assert requests_for(hub) == []


# --- after a Kafka outage -------------------------------------------------------------------------------------------


def test_after_kafka_was_unreachable_quiet_hubs_get_a_grace_before_anyone_is_judged() -> None:
    hub = make_hub(heartbeat=T0)
    give_data(hub)
    # Kafka is down: the hub's heartbeats cannot be stored, and the probe cannot learn where its topic ends.
    down = T0 + timedelta(minutes=6)
    result = lifecycle.probe(now=down, timing=TIMING, ends=lambda topics: {})
    assert result.inactivated == [] and "unknown" in result.not_judged[hub]

    # Kafka answers again, and nothing of the hub is unread yet: its next heartbeat has not been stored.
    back = down + timedelta(minutes=2)
    result = lifecycle.probe(now=back, timing=TIMING)
    assert result.inactivated == [] and "grace" in result.not_judged[hub]
    result = lifecycle.probe(now=back + TIMING.startup_grace - timedelta(seconds=1), timing=TIMING)
    assert result.inactivated == [] and "grace" in result.not_judged[hub]
    assert state(hub) == "active" and ManagedCluster.objects.get(hub_id=hub).deleted_at is None

    # The grace is over and the hub is still silent: it is judged as any other.
    result = lifecycle.probe(now=back + TIMING.startup_grace, timing=TIMING)
    assert result.inactivated == [hub] and result.outage_grace_until is None


def test_an_outage_the_probe_saw_while_no_hub_was_quiet_still_gives_the_grace() -> None:
    from globalhub.protocol.kafka import KafkaUnavailable

    hub = make_hub(heartbeat=T0)
    asked: list[list[str]] = []

    def unreachable(topics: Sequence[str]) -> dict[str, dict[int, int]]:
        asked.append(list(topics))
        raise KafkaUnavailable("no broker answers")

    # Two minutes into the outage nobody is quiet yet, but Kafka is asked anyway, and its silence recorded.
    result = lifecycle.probe(now=T0 + timedelta(minutes=2), timing=TIMING, ends=unreachable)
    assert asked == [[]] and result.kafka_unreachable and result.not_judged == {}
    result = lifecycle.probe(now=T0 + timedelta(minutes=6), timing=TIMING)  # back; the hub's heartbeat not yet
    assert result.inactivated == [] and hub in result.not_judged
    assert result.outage_grace_until == T0 + timedelta(minutes=6) + TIMING.startup_grace
    assert lifecycle.probe(now=T0 + timedelta(minutes=11), timing=TIMING).inactivated == [hub]


def test_the_grace_after_an_outage_is_shared_by_every_worker_and_holds_no_live_hub_back() -> None:
    quiet, heard = make_hub(heartbeat=T0), make_hub(heartbeat=T0, state="inactive")
    lifecycle.probe(now=T0 + timedelta(minutes=6), timing=TIMING, ends=lambda topics: {})
    # Another worker's probe (the state is in the database): still in the grace, and a fresh heartbeat read
    # meanwhile brings its inactive hub back at once.
    Hub.objects.filter(name=heard).update(last_heartbeat=T0 + timedelta(minutes=7))
    result = lifecycle.probe(now=T0 + timedelta(minutes=8), timing=TIMING)
    assert result.reactivated == [heard] and quiet in result.not_judged and result.inactivated == []


# --- startup ----------------------------------------------------------------------------------------------------------


def test_nobody_is_judged_during_the_startup_grace_after_a_long_manager_outage() -> None:
    hub = make_hub(heartbeat=T0)
    started = T0 + timedelta(hours=3)  # the manager was down for hours: every heartbeat looks old
    assert lifecycle.manager_started(now=started) is not None

    result = lifecycle.probe(now=started + timedelta(minutes=4), timing=TIMING)
    assert result.in_startup_grace and result.inactivated == []
    assert state(hub) == "active"
    assert lifecycle.probe(now=started + timedelta(minutes=5), timing=TIMING).inactivated == [hub]


def test_a_manager_start_is_one_broadcast_resync_however_many_processes_start() -> None:
    make_hub()
    first = lifecycle.manager_started(now=T0, dedupe=timedelta(minutes=2))
    again = lifecycle.manager_started(now=T0 + timedelta(seconds=30), dedupe=timedelta(minutes=2))
    later = lifecycle.manager_started(now=T0 + timedelta(minutes=10), dedupe=timedelta(minutes=2))

    assert first is not None and first.subject == "broadcast" and first.reason == "startup"
    assert again is None
    assert later is not None
    assert ResyncRequest.objects.filter(reason="startup").count() == 2


# --- races (real concurrent transactions) ----------------------------------------------------------------------------


def run_concurrently(action: Callable[[], Any], count: int) -> list[Any]:
    barrier = threading.Barrier(count)
    results: list[Any] = []
    lock = threading.Lock()

    def worker() -> None:
        close_old_connections()
        barrier.wait()
        try:
            outcome = action()
        finally:
            connection.close()
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=worker) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


@pytest.mark.django_db(transaction=True)
def test_racing_reactivations_change_the_state_once_and_write_one_request() -> None:
    hub = make_hub(heartbeat=T0, state="inactive")
    now = T0 + timedelta(minutes=1)
    results = run_concurrently(lambda: lifecycle.reactivate(hub, now, TIMING, by="race"), 8)

    assert sum(r is not None for r in results) == 1
    assert state(hub) == "active"
    assert len(requests_for(hub)) == 1


@pytest.mark.django_db(transaction=True)
def test_racing_manager_starts_write_one_broadcast() -> None:
    make_hub()
    results = run_concurrently(lambda: lifecycle.manager_started(now=T0, dedupe=timedelta(minutes=2)), 6)
    assert sum(r is not None for r in results) == 1
    assert ResyncRequest.objects.filter(reason="startup").count() == 1


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("heartbeat_first", [True, False], ids=["heartbeat-commits-first", "probe-commits-first"])
def test_a_heartbeat_racing_the_probe_leaves_the_hub_active_and_resynced_if_it_was_cleaned(
    heartbeat_first: bool,
) -> None:
    hub = make_hub(heartbeat=T0)
    give_data(hub)
    now = T0 + timedelta(minutes=6)  # silent for 6 minutes: the probe judges it, while its heartbeat arrives

    def heartbeat() -> None:
        with time_machine.travel(now, tick=False):
            ingest_batch([heartbeat_record(hub, now, 0)], topic_prefix=PREFIX)

    def probe() -> None:
        lifecycle.probe(now=now, timing=TIMING)

    for step in [heartbeat, probe] if heartbeat_first else [probe, heartbeat]:
        step()

    assert state(hub) == "active"
    cleaned = ManagedCluster.objects.get(hub_id=hub).deleted_at is not None
    assert len(requests_for(hub, "reactivation")) == (1 if cleaned else 0)
    assert cleaned == (not heartbeat_first)


@pytest.mark.django_db(transaction=True)
def test_a_deactivation_waits_for_the_partition_an_ingest_batch_holds_so_the_two_never_deadlock() -> None:
    hub = make_hub(heartbeat=T0)
    give_data(hub)
    read_until(hub, 5)
    now = T0 + timedelta(minutes=6)
    holding, release = threading.Event(), threading.Event()
    outcome: list[bool] = []

    def batch() -> None:  # what a consumer batch does: partition lock, the hub's rows, then its heartbeat
        close_old_connections()
        try:
            with transaction.atomic():
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s), %s)", [PREFIX + hub, 0])
                ManagedCluster.objects.filter(hub_id=hub).update(updated_at=now)
                holding.set()
                release.wait(60)
                Hub.objects.filter(name=hub).update(last_heartbeat=now)
        finally:
            connection.close()

    def deactivation() -> None:
        close_old_connections()
        try:
            outcome.append(lifecycle.deactivate(hub, now, TIMING, [0]))
        finally:
            connection.close()

    threads = [threading.Thread(target=batch), threading.Thread(target=deactivation)]
    threads[0].start()
    assert holding.wait(60)
    threads[1].start()
    wait_for(advisory_lock_awaited, timeout=60, what="the deactivation to wait for the partition's lock")
    release.set()
    for thread in threads:
        thread.join(timeout=120)
    assert outcome == [False]  # it waited, then saw the heartbeat the batch committed
    assert state(hub) == "active" and ManagedCluster.objects.get(hub_id=hub).deleted_at is None


def advisory_lock_awaited() -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
        return bool(cursor.fetchone()[0])


@pytest.mark.django_db(transaction=True)
def test_heartbeats_and_probes_in_parallel_never_leave_a_live_hub_inactive_or_unresynced() -> None:
    hubs = [make_hub(heartbeat=T0) for _ in range(6)]
    now = T0 + timedelta(minutes=6)

    def heartbeats() -> None:
        with time_machine.travel(now, tick=False):
            for offset, hub in enumerate(hubs):
                ingest_batch([heartbeat_record(hub, now, offset)], topic_prefix=PREFIX)

    def probes() -> None:
        for _ in range(3):
            lifecycle.probe(now=now, timing=TIMING)

    barrier = threading.Barrier(2)

    def run(action: Callable[[], None]) -> None:
        close_old_connections()
        barrier.wait()
        try:
            action()
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(action,)) for action in (heartbeats, probes)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    for hub in hubs:
        assert state(hub) == "active", hub
        went_inactive = Hub.objects.get(name=hub).state_changed_at is not None
        assert len(requests_for(hub, "reactivation")) == (1 if went_inactive else 0), hub


# --- resync requests ------------------------------------------------------------------------------------------------


def test_a_broadcast_request_targets_the_hubs_active_when_it_was_made() -> None:
    active = [make_hub(), make_hub()]
    make_hub(state="inactive")
    request = create_request(None, ["managedcluster"], ResyncRequest.Reason.OPERATOR, "test")
    assert request.subject == "broadcast"
    assert sorted(t.hub_id for t in request.targets.all()) == sorted(active)
    assert request.types == [EventType.MANAGED_CLUSTER.value]


def test_a_request_for_an_unknown_hub_or_type_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown hub"):
        create_request("nope", None, ResyncRequest.Reason.OPERATOR, "test")
    with pytest.raises(ValueError, match="cannot be resynced"):
        create_request(make_hub(), ["managedhub.heartbeat"], ResyncRequest.Reason.OPERATOR, "test")


def test_pending_requests_are_sent_in_order_and_a_failed_send_stays_pending(
    kafka_settings: KafkaSettings, run_id: str
) -> None:
    hub = make_hub()
    first = create_request(hub, None, ResyncRequest.Reason.OPERATOR, "t")
    second = create_request(hub, ["managedcluster"], ResyncRequest.Reason.OPERATOR, "t")
    dead = ConfirmedProducer(KafkaSettings(bootstrap_servers="127.0.0.1:9"), **{"message.timeout.ms": 1000})
    topic = f"t{run_id}-spec-{uuid.uuid4().hex[:6]}"

    assert dispatch_pending(dead, topic) == 0
    failed = ResyncRequest.objects.get(pk=first.pk)
    assert (failed.sent_at, failed.send_attempts) == (None, 1)
    assert failed.last_send_error

    live = ConfirmedProducer(kafka_settings)
    from globalhub.protocol.kafka import SPEC_TOPIC_CONFIG, ensure_topics

    ensure_topics(kafka_settings, [topic], SPEC_TOPIC_CONFIG)
    assert dispatch_pending(live, topic) == 2
    live.close()
    sent = ResyncRequest.objects.get(pk=first.pk)
    assert sent.sent_at is not None and sent.last_send_error == ""
    assert ResyncRequest.objects.get(pk=second.pk).sent_at is not None
    assert dispatch_pending(live, topic) == 0


def test_the_default_schedules_are_installed_by_migrate() -> None:
    from django_celery_beat.models import PeriodicTask

    names = dict(PeriodicTask.objects.values_list("name", "task"))
    assert names["probe hubs"] == "manager.probe_hubs"
    assert names["send resync requests"] == "manager.send_resync_requests"
    for resync_type in RESYNC_TYPES:
        assert names[f"periodic resync: {resync_type.short}"] == "manager.periodic_resync"
    probe = PeriodicTask.objects.get(name="probe hubs")
    assert probe.interval is not None and probe.interval.every == 120
    refresh = PeriodicTask.objects.get(name="refresh topic ends")
    assert refresh.task == "manager.refresh_topic_ends"
    assert refresh.interval is not None and refresh.interval.every == 60 and refresh.enabled


def test_a_periodic_resync_asks_every_hub_for_its_type() -> None:
    from globalhub.manager.tasks import periodic_resync

    hubs = [make_hub(), make_hub()]
    (request_id,) = periodic_resync(["policy.localspec"])
    request = ResyncRequest.objects.get(pk=request_id)
    assert (request.reason, request.subject, request.types) == (
        "periodic",
        "broadcast",
        [EventType.LOCAL_POLICY_SPEC.value],
    )
    assert sorted(t.hub_id for t in request.targets.all()) == sorted(hubs)


def test_probing_a_thousand_quiet_hubs_changes_nothing() -> None:
    now = timezone.now()
    Hub.objects.bulk_create([Hub(name=f"quiet-{i:04d}", last_heartbeat=now) for i in range(1000)])
    result = lifecycle.probe(now=now + timedelta(minutes=1), timing=TIMING)
    assert result.inactivated == [] and result.reactivated == []
