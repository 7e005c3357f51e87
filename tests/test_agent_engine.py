"""The agent's engine on real Redis and Kafka, with its clock under the test's control.

Startup, the one-type-per-tick drain, delta contents, intervals changed at run time, periodic resyncs, the heartbeat,
complete types, send modes, and what happens when Kafka refuses a send.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis

from agent_tasks.ctl import status
from agent_tasks.emitter import Emitter, SendMode
from agent_tasks.engine import Agent
from agent_tasks.intervals import Intervals
from agent_tasks.inventory import Change, Cursor, RedisInventory
from agent_tasks.lease import LEASE_SECONDS, Lease, lease_prefix
from agent_tasks.resync_queue import ResyncQueue, Retry
from agent_tasks.simulate import cluster_changes
from agent_tasks.state import StateStore
from agent_tasks.types import RESYNC_ORDER
from agent_tasks.versions import VersionStore
from globalhub.protocol.kafka import (
    STATUS_TOPIC_CONFIG,
    ConfirmedProducer,
    DeliveryFailed,
    KafkaSettings,
    ensure_topics,
)
from globalhub.protocol.objects import MANAGED_BY_ANNOTATION
from globalhub.protocol.version import Version
from tests.kafka_reader import Sent, TopicReader

CLUSTERS = "managedcluster"
COMPLIANCE = "policy.localcompliance"
T0 = 1_800_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Harness:
    agent: Agent
    emitter: Emitter
    inventory: RedisInventory
    clock: Clock
    reader: TopicReader
    redis: redis.Redis
    hub: str

    def sent(self, count: int | None = None, timeout: float = 15.0) -> list[Sent]:
        return self.reader.read(count, timeout=timeout)


def build_agent(
    client: redis.Redis, hub: str, topic: str, producer: ConfirmedProducer, clock: Clock, mode: SendMode
) -> tuple[Agent, Emitter, RedisInventory]:
    inventory = RedisInventory(client, hub)
    versions = VersionStore(client, hub)
    state = StateStore(client, hub)
    emitter = Emitter(hub, topic, inventory, versions, state, producer, send_mode=mode, clock=clock)
    agent = Agent(
        hub,
        client,
        inventory,
        versions,
        state,
        ResyncQueue(client, hub),
        Intervals(client, hub, {}),
        emitter,
        clock=clock,
    )
    return agent, emitter, inventory


@pytest.fixture(params=[SendMode.BATCH], ids=["batch"])
def harness(
    request: pytest.FixtureRequest, redis_url: str, kafka_settings: KafkaSettings, hub_name: str, status_prefix: str
) -> Iterator[Harness]:
    client = redis.Redis.from_url(redis_url)
    topic = status_prefix + hub_name
    ensure_topics(kafka_settings, [topic], STATUS_TOPIC_CONFIG)
    producer = ConfirmedProducer(kafka_settings)
    clock = Clock()
    agent, emitter, inventory = build_agent(client, hub_name, topic, producer, clock, request.param)
    reader = TopicReader(kafka_settings, topic)
    yield Harness(agent, emitter, inventory, clock, reader, client, hub_name)
    reader.close()
    producer.close()
    for key in client.scan_iter(f"gh:{hub_name}:*"):
        client.delete(key)
    client.close()


def populate(harness: Harness, clusters: int = 5) -> list[Change]:
    changes = cluster_changes(harness.hub, clusters, seed=11)
    harness.inventory.apply(CLUSTERS, changes)
    return changes


def quiet_start(harness: Harness) -> None:
    """Start, drain the startup queue and swallow the startup messages, so a test sees only what it causes."""
    harness.agent.start()
    while harness.agent.queue.length():
        harness.agent.drain()
        harness.clock.advance(1)
    harness.agent.sync()  # first heartbeat and first (empty) delta checks
    harness.sent()


def test_startup_resets_versions_and_queues_the_four_types_in_upstream_order(harness: Harness) -> None:
    versions = VersionStore(harness.redis, harness.hub)
    versions.set(CLUSTERS, Version(7, 42))
    harness.agent.queue.push(["policy.localspec"])

    queued = harness.agent.start()

    assert queued == list(RESYNC_ORDER)
    assert [w.type for w in harness.agent.queue.items()] == [
        "managedhub.info",
        "managedcluster",
        "policy.localspec",
        "policy.localcompliance",
    ]
    assert versions.all() == {}  # every type is back at 0.0
    assert versions.get(CLUSTERS) == Version(0, 0)


def test_each_drain_sends_one_type_and_the_first_messages_carry_generation_zero(harness: Harness) -> None:
    populate(harness, 3)
    harness.agent.start()

    report = harness.agent.drain()
    assert report is not None and report.type == "managedhub.info"
    assert report.objects == 0 and report.messages == 0  # the simulator wrote no hub info here: nothing to say
    assert harness.agent.drain() is None  # one type per second: the next may start a second after this one
    assert harness.agent.next_drain_in() == 1.0
    harness.clock.advance(1)
    report = harness.agent.drain()
    assert report is not None and report.type == CLUSTERS

    frames = harness.sent(2)
    assert [m.short_type for m in frames] == [CLUSTERS, CLUSTERS]
    assert {m.version for m in frames} == {"0.0"}
    assert [m.event.extensions["extframe"] for m in frames] == ["begin", "complete"]
    assert frames[1].event.extensions["extobjectcount"] == "3"
    assert VersionStore(harness.redis, harness.hub).get(CLUSTERS) == Version(1, 0)
    assert [w.type for w in harness.agent.queue.items()] == ["policy.localspec", "policy.localcompliance"]


def test_a_resync_sends_upstream_shaped_objects_and_their_listing(harness: Harness) -> None:
    changes = populate(harness, 4)
    harness.agent.start()
    harness.agent.queue.clear()
    harness.agent.request_resync([CLUSTERS])
    harness.agent.drain()

    begin, complete = harness.sent(2)
    objects = begin.json()["resync"]
    assert len(objects) == 4
    for obj in objects:
        assert obj["metadata"]["annotations"][MANAGED_BY_ANNOTATION] == harness.hub
        assert "managedFields" not in obj["metadata"]
    listed = complete.json()["resync_metadata"]
    assert sorted(entry["id"] for entry in listed) == sorted(c.object_id for c in changes)


def test_every_message_of_a_resync_carries_the_requests_it_answers_and_a_failed_one_keeps_them(
    harness: Harness,
) -> None:
    populate(harness, 3)
    harness.agent.start()
    harness.agent.queue.clear()
    harness.agent.queue.note_answers([CLUSTERS], "7")
    harness.agent.queue.note_answers([CLUSTERS], "8")
    harness.agent.request_resync([CLUSTERS])
    good = harness.emitter.producer
    harness.emitter.producer = ConfirmedProducer(
        KafkaSettings(bootstrap_servers="127.0.0.1:9"), **{"message.timeout.ms": 1500}
    )
    assert harness.agent.drain() is None  # Kafka refused it: it answered nobody

    harness.emitter.producer = good
    harness.clock.advance(1)
    assert harness.agent.next_drain_in() == 0  # the tick: the retry is due
    harness.agent.drain()
    frames = harness.sent(2)
    assert [frame.event.extensions.get("ghrequests") for frame in frames] == ["7,8", "7,8"]

    harness.agent.request_resync([CLUSTERS])  # the agent's own resync (periodic, a trimmed log) answers nobody
    harness.clock.advance(1)
    harness.agent.drain()
    assert [frame.event.extensions.get("ghrequests") for frame in harness.sent(2)] == [None, None]


def test_draining_an_empty_queue_sends_nothing(harness: Harness) -> None:
    assert harness.agent.drain() is None
    assert harness.reader.read(timeout=1.0) == []


def test_a_resync_that_kafka_did_not_confirm_is_retried_with_a_backoff_that_doubles(
    harness: Harness, redis_url: str, hub_name: str
) -> None:
    populate(harness, 2)
    good = harness.emitter.producer
    harness.emitter.producer = ConfirmedProducer(
        KafkaSettings(bootstrap_servers="127.0.0.1:9"), **{"message.timeout.ms": 1500}
    )
    harness.agent.queue.push([CLUSTERS])

    assert harness.agent.drain() is None
    assert harness.agent.queue.items() == []
    assert harness.agent.queue.retries() == [Retry(CLUSTERS, 1, T0 + 1)]
    state = StateStore(harness.redis, harness.hub).get(CLUSTERS)
    assert state.last_error.startswith("resync:")
    assert VersionStore(harness.redis, harness.hub).get(CLUSTERS) == Version(0, 0)  # nothing counted as sent

    harness.clock.advance(0.5)
    assert harness.agent.next_drain_in() is None  # not due yet
    harness.clock.advance(0.5)
    assert harness.agent.next_drain_in() == 0
    assert harness.agent.drain() is None  # the second failure in a row waits twice as long
    assert harness.agent.queue.retries() == [Retry(CLUSTERS, 2, T0 + 1 + 2)]
    report = status(harness.redis, harness.hub, now=harness.clock())
    assert report["retrying"] == [
        {"type": CLUSTERS, "failures_in_a_row": 2, "next_try_in_seconds": 2.0, "last_error": state_error(harness)}
    ]

    harness.emitter.producer = good
    harness.clock.advance(2)
    harness.agent.next_drain_in()
    assert harness.agent.drain() is not None
    assert harness.agent.queue.retries() == []
    assert harness.agent.queue.attempts() == {}
    assert StateStore(harness.redis, harness.hub).get(CLUSTERS).last_error == ""


def state_error(harness: Harness) -> str:
    return StateStore(harness.redis, harness.hub).get(CLUSTERS).last_error


def test_a_resync_waits_while_a_source_is_still_listing_the_type(harness: Harness) -> None:
    populate(harness, 2)
    harness.agent.queue.push([CLUSTERS, "policy.localspec"])
    harness.inventory.mark_filling([CLUSTERS])  # the inventory watcher's first list is not complete yet

    assert harness.agent.drain() is None
    assert [w.type for w in harness.agent.queue.items()] == ["policy.localspec", CLUSTERS]
    assert [m for m in harness.reader.read(timeout=1.0) if m.short_type == CLUSTERS] == []

    harness.inventory.done_filling([CLUSTERS])
    for _ in range(2):
        harness.clock.advance(1)
        harness.agent.drain()
    frames = [m for m in harness.sent(4) if m.short_type == CLUSTERS]
    assert frames[-1].event.extensions["extobjectcount"] == "2"


def test_a_delta_carries_each_changed_object_once_with_its_latest_state(harness: Harness) -> None:
    existing = populate(harness, 4)
    quiet_start(harness)
    a, b = cluster_changes(harness.hub, 2, seed=99, start=100)
    c, d = existing[0], existing[1]
    a_later = Change(a.object_id, {**(a.obj or {}), "spec": {"hubAcceptsClient": False}})
    c_changed = Change(c.object_id, {**(c.obj or {}), "spec": {"changed": True}})
    harness.inventory.apply(CLUSTERS, [a, a_later, b, Change(b.object_id, None), c_changed, Change(d.object_id, None)])

    harness.clock.advance(5)
    harness.agent.sync()

    (update, delete) = harness.sent(2)
    assert update.event.extensions["sendmode"] == "batch"
    updated = {o["status"]["clusterClaims"][0]["value"]: o for o in update.json()["update"]}
    assert set(updated) == {a.object_id, c.object_id}
    assert updated[a.object_id]["spec"] == {"hubAcceptsClient": False}
    assert updated[c.object_id]["spec"] == {"changed": True}
    assert sorted(e["id"] for e in delete.json()["delete"]) == sorted([b.object_id, d.object_id])
    # Six changes: Value + 6; the startup resync was Generation 0, so this send is Generation 1.
    assert update.version == delete.version == "1.6"
    assert VersionStore(harness.redis, harness.hub).get(CLUSTERS) == Version(2, 6)


def test_nothing_is_sent_when_nothing_changed(harness: Harness) -> None:
    populate(harness, 2)
    quiet_start(harness)
    for _ in range(3):
        harness.clock.advance(5)
        harness.agent.sync()
    heartbeats_only = [m for m in harness.reader.read(timeout=1.5) if m.short_type != "managedhub.heartbeat"]
    assert heartbeats_only == []


def test_a_delta_waits_for_its_interval(harness: Harness) -> None:
    populate(harness, 2)
    quiet_start(harness)
    harness.inventory.apply(CLUSTERS, cluster_changes(harness.hub, 1, seed=5, start=50))

    harness.clock.advance(2)
    harness.agent.sync()
    assert harness.reader.read(timeout=1.0) == []
    harness.clock.advance(3)
    harness.agent.sync()
    assert [m.short_type for m in harness.sent(1)] == [CLUSTERS]


def test_a_one_second_interval_sends_at_every_tick_even_when_ticks_come_a_little_early(harness: Harness) -> None:
    populate(harness, 2)
    quiet_start(harness)
    harness.agent.intervals.set("managedcluster=1s")
    harness.clock.advance(1)
    harness.agent.sync()  # the last quiet check: the interval counts from here
    for index in range(3):
        harness.inventory.apply(CLUSTERS, cluster_changes(harness.hub, 1, seed=6, start=60 + index))
        harness.clock.advance(0.9)  # beat's ticks are about, not exactly, a second apart
        harness.agent.sync()
        assert [m.short_type for m in harness.sent(1)] == [CLUSTERS], f"tick {index} sent nothing"
    harness.clock.advance(0.7)  # well before the interval: nothing, even with a change waiting
    harness.inventory.apply(CLUSTERS, cluster_changes(harness.hub, 1, seed=6, start=70))
    harness.agent.sync()
    assert [m for m in harness.reader.read(timeout=1.0) if m.short_type == CLUSTERS] == []


def test_an_interval_changed_at_run_time_applies_at_the_next_tick(harness: Harness) -> None:
    populate(harness, 2)
    quiet_start(harness)
    harness.agent.intervals.set("managedcluster=1s")
    harness.inventory.apply(CLUSTERS, cluster_changes(harness.hub, 1, seed=5, start=50))

    harness.clock.advance(1)
    harness.agent.sync()
    assert [m.short_type for m in harness.sent(1)] == [CLUSTERS]

    harness.agent.intervals.set("resync.managedcluster=30s")
    resynced = StateStore(harness.redis, harness.hub).get(CLUSTERS).last_resync  # the startup resync
    assert resynced is not None
    harness.clock.now = resynced + 29
    assert CLUSTERS not in harness.agent.sync().queued
    harness.clock.now = resynced + 30
    assert CLUSTERS in harness.agent.sync().queued
    assert [w.type for w in harness.agent.queue.items()] == [CLUSTERS]


def test_a_periodic_resync_is_queued_after_six_hours_by_default(harness: Harness) -> None:
    quiet_start(harness)
    states = StateStore(harness.redis, harness.hub).all()
    resynced = [states[name].last_resync or 0.0 for name in RESYNC_ORDER]  # the startup resyncs, a second apart
    harness.clock.now = min(resynced) + 6 * 3600 - 1
    assert harness.agent.sync().queued == []
    harness.clock.now = max(resynced) + 6 * 3600
    assert sorted(harness.agent.sync().queued) == sorted(RESYNC_ORDER)


def test_a_clock_stepped_back_holds_up_neither_deltas_nor_the_heartbeat_nor_the_drain_and_queues_no_resync(
    harness: Harness,
) -> None:
    populate(harness, 2)
    quiet_start(harness)
    harness.clock.advance(60)
    harness.agent.sync()
    harness.sent()
    harness.clock.advance(-360)  # NTP steps the hub's clock six minutes back
    harness.inventory.apply(CLUSTERS, cluster_changes(harness.hub, 1, seed=8, start=80))
    result = harness.agent.sync()

    assert result.queued == []  # the periodic resyncs count from now: a step costs no resync
    assert sorted(m.short_type for m in harness.sent(2)) == [CLUSTERS, "managedhub.heartbeat"]
    harness.agent.queue.push([CLUSTERS])
    assert harness.agent.next_drain_in() == 0  # the last drain's start lies ahead: it does not hold this one up
    assert harness.agent.drain() is not None
    harness.clock.advance(5)
    harness.inventory.apply(CLUSTERS, cluster_changes(harness.hub, 1, seed=8, start=81))
    assert CLUSTERS in [report.type for report in harness.agent.sync().sent]  # and the interval counts from the step


def test_the_heartbeat_goes_every_minute_with_a_growing_generation(harness: Harness) -> None:
    harness.agent.start()
    harness.agent.queue.clear()
    harness.agent.sync()
    harness.clock.advance(30)
    harness.agent.sync()
    harness.clock.advance(30)
    harness.agent.sync()

    beats = [m for m in harness.sent(2) if m.short_type == "managedhub.heartbeat"]
    assert [m.version for m in beats] == ["0.0", "1.0"]
    assert all(m.event.data == b"[]" for m in beats)


def test_a_changed_complete_type_sends_its_whole_state(harness: Harness) -> None:
    entries: list[dict[str, Any]] = [
        {
            "policyId": str(uuid.uuid4()),
            "compliantClusters": ["a", "b"],
            "nonCompliantClusters": [],
            "unknownComplianceClusters": [],
            "pendingComplianceClusters": [],
        }
        for _ in range(3)
    ]
    harness.inventory.apply(COMPLIANCE, [Change(e["policyId"], e) for e in entries])
    quiet_start(harness)
    flipped = {**entries[0], "compliantClusters": ["a"], "nonCompliantClusters": ["b"]}
    harness.inventory.apply(COMPLIANCE, [Change(entries[0]["policyId"], flipped)])

    harness.clock.advance(5)
    harness.agent.sync()

    (message,) = [m for m in harness.sent(1) if m.short_type == COMPLIANCE]
    state = {entry["policyId"]: entry for entry in message.json()}
    assert len(state) == 3
    assert state[entries[0]["policyId"]]["nonCompliantClusters"] == ["b"]
    assert message.event.extensions["extframe"] == "complete"
    assert message.event.extensions["extobjectcount"] == "3"
    assert message.version == "1.1"


def test_a_trimmed_change_log_makes_the_agent_queue_a_full_resync(harness: Harness) -> None:
    populate(harness, 2)
    quiet_start(harness)
    harness.inventory.apply(CLUSTERS, cluster_changes(harness.hub, 3, seed=8, start=70))
    harness.redis.xtrim(harness.inventory.changes_key(CLUSTERS), maxlen=1, approximate=False)

    harness.clock.advance(5)
    result = harness.agent.sync()

    assert CLUSTERS in result.queued
    assert [w.type for w in harness.agent.queue.items()] == [CLUSTERS]


def test_changes_kafka_refused_are_sent_once_it_accepts_them_again(harness: Harness) -> None:
    populate(harness, 2)
    quiet_start(harness)
    real = harness.emitter.producer
    harness.emitter.producer = ConfirmedProducer(
        KafkaSettings(bootstrap_servers="127.0.0.1:9"), **{"message.timeout.ms": 1500}
    )
    added = cluster_changes(harness.hub, 3, seed=21, start=200)
    harness.inventory.apply(CLUSTERS, added)
    cursor_before = StateStore(harness.redis, harness.hub).get(CLUSTERS).cursor

    harness.clock.advance(5)
    harness.agent.sync()
    state = StateStore(harness.redis, harness.hub).get(CLUSTERS)
    assert state.cursor == cursor_before  # nothing counted as sent
    assert state.last_error.startswith("sync:")

    harness.emitter.producer = real
    harness.clock.advance(5)
    harness.agent.sync()
    (delta,) = [m for m in harness.sent(1) if m.short_type == CLUSTERS]
    assert sorted(o["status"]["clusterClaims"][0]["value"] for o in delta.json()["update"]) == sorted(
        c.object_id for c in added
    )
    assert StateStore(harness.redis, harness.hub).get(CLUSTERS).last_error == ""


@pytest.mark.parametrize("harness", [SendMode.SINGLE], ids=["single"], indirect=True)
def test_single_mode_sends_one_event_per_changed_object_all_with_one_version(harness: Harness) -> None:
    existing = populate(harness, 3)
    quiet_start(harness)
    added = cluster_changes(harness.hub, 2, seed=31, start=300)
    harness.inventory.apply(CLUSTERS, [*added, Change(existing[0].object_id, None)])

    harness.clock.advance(5)
    harness.agent.sync()

    messages = [m for m in harness.sent(3) if m.short_type == CLUSTERS]
    assert len(messages) == 3
    assert {m.event.extensions["sendmode"] for m in messages} == {"single"}
    assert {m.version for m in messages} == {"1.3"}
    bodies: list[dict[str, Any]] = [m.json() for m in messages]
    assert sum(len(b.get("update", [])) for b in bodies) == 2
    assert [b["delete"][0]["id"] for b in bodies if "delete" in b] == [existing[0].object_id]


def test_the_cursor_moves_to_the_end_of_the_log_after_a_resync(harness: Harness) -> None:
    populate(harness, 2)
    harness.agent.start()
    harness.inventory.apply(CLUSTERS, cluster_changes(harness.hub, 2, seed=3, start=400))
    while harness.agent.queue.length():
        harness.agent.drain()
        harness.clock.advance(1)
    position = harness.inventory.log_position(CLUSTERS)
    assert Cursor.parse(StateStore(harness.redis, harness.hub).get(CLUSTERS).cursor) == Cursor.at(position)


# --- a drain that dies, a queue that is lost (issue 11) ------------------------------------------------------------


def die_mid_resync(redis_url: str, hub: str, ready: Any) -> None:
    """What a drain does up to the middle of a resync: both leases held, the type popped. Then it hangs."""
    client = redis.Redis.from_url(redis_url)
    drain_lease = Lease(client, lease_prefix(hub) + "drain")
    type_lease = Lease(client, lease_prefix(hub) + f"type:{CLUSTERS}")
    assert drain_lease.acquire() and type_lease.acquire()
    assert ResyncQueue(client, hub).pop(owner=drain_lease.owner) is not None
    ready.set()
    time.sleep(600)


def test_a_drain_killed_mid_resync_holds_nothing_up_and_its_type_is_resynced_within_seconds(
    harness: Harness, redis_url: str
) -> None:
    populate(harness, 3)
    harness.agent.queue.push([CLUSTERS, "policy.localspec"])
    context = multiprocessing.get_context("spawn")
    ready = context.Event()
    drain = context.Process(target=die_mid_resync, args=(redis_url, harness.hub, ready), daemon=True)
    drain.start()
    assert ready.wait(60)
    os.kill(drain.pid, signal.SIGKILL)  # type: ignore[arg-type]
    drain.join(30)
    assert status(harness.redis, harness.hub)["in_flight"][0]["type"] == CLUSTERS

    # Beat's ticks: settle, then drain. The dead drain's leases lapse within LEASE_SECONDS; its type goes back to
    # the head of the queue and is sent first. A bound that holds at a third of normal speed.
    deadline = time.monotonic() + 3 * LEASE_SECONDS
    sent: list[str] = []
    while CLUSTERS not in sent and time.monotonic() < deadline:
        harness.clock.advance(1)
        harness.agent.next_drain_in()
        report = harness.agent.drain()
        if report is not None:
            sent.append(report.type)
        else:
            time.sleep(0.2)
    assert sent[:1] == [CLUSTERS]
    assert harness.agent.queue.in_flight() == []
    assert [frame.short_type for frame in harness.sent(2)] == [CLUSTERS, CLUSTERS]


def test_a_queue_list_lost_during_a_drain_costs_one_tick_and_no_request(harness: Harness) -> None:
    populate(harness, 2)
    harness.agent.queue.note_answers([CLUSTERS], "31")
    harness.agent.request_resync(["policy.localspec", CLUSTERS, COMPLIANCE])
    harness.redis.delete(f"gh:{harness.hub}:resync:queue")  # lost, while its index says three types wait

    assert harness.agent.request_resync(["policy.localspec", CLUSTERS, COMPLIANCE]) == 0  # they look queued
    assert harness.agent.next_drain_in() == 0  # the next tick
    assert [w.type for w in harness.agent.queue.items()] == ["policy.localspec", CLUSTERS, COMPLIANCE]
    sent = []
    for _ in range(3):
        report = harness.agent.drain()
        assert report is not None
        sent.append(report.type)
        harness.clock.advance(1)
    assert sent == ["policy.localspec", CLUSTERS, COMPLIANCE]
    assert harness.agent.queue.answers(CLUSTERS) == []  # request 31 was answered


class RecordingRefusal:
    """A producer that takes every message of a send, notes its version, and then says Kafka refused it."""

    def __init__(self) -> None:
        self.versions: list[str] = []

    def send(self, topic: str, messages: Any, *, timeout: float | None = None) -> int:
        for message in messages:
            self.versions.extend(value.decode() for name, value in message.headers if name == "ce_extversion")
        raise DeliveryFailed("refused by the test")


def test_a_resync_retried_after_changes_carries_a_newer_version_than_the_failed_attempt(harness: Harness) -> None:
    clusters = populate(harness, 3)
    harness.agent.start()
    harness.agent.queue.clear()
    good = harness.emitter.producer
    refusing = RecordingRefusal()
    harness.emitter.producer = refusing  # type: ignore[assignment]
    harness.agent.request_resync([CLUSTERS])
    assert harness.agent.drain() is None  # its frames may still have reached Kafka in part
    failed_attempt = Version.parse(refusing.versions[0])

    harness.inventory.apply(CLUSTERS, [Change(clusters[0].object_id, None)])  # while Kafka is down
    harness.emitter.producer = good
    harness.clock.advance(1)
    harness.agent.next_drain_in()
    assert harness.agent.drain() is not None

    retry = [Version.parse(frame.event.extensions["extversion"]) for frame in harness.sent(2)]
    assert retry[0] == retry[1]
    # Other content, so another version: one with the failed attempt's would read as a copy of it.
    assert retry[0].newer_than(failed_attempt)
