"""The status consumer under fire, with real processes: ``kill -9`` at random moments, two consumers in one group
with a rebalance, and PostgreSQL restarting under it.

Each scenario replays streams built from a model of every hub (deltas, framed resyncs, compliance states and
garbage), then checks that the manager's copy equals the model, that every position is at the end of its topic,
and -- the exactly-once witness -- that a database trigger counted exactly one committed dead-letter insert per
garbage message: a message processed twice would be counted twice.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from django.db import connection

from globalhub.manager.models import ConsumedPosition, LocalCompliance, ManagedCluster
from globalhub.protocol.bundles import ObjectMetadata, dumps, frame_resync
from globalhub.protocol.codec import OutgoingMessage
from globalhub.protocol.events import EventType
from globalhub.protocol.kafka import STATUS_TOPIC_CONFIG, ConfirmedProducer, KafkaSettings, ensure_topics
from globalhub.protocol.objects import CLUSTER_ID_CLAIM
from tests.helpers import REPO, Process, frame_message, start_consumer, status_message, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@dataclass
class HubStream:
    """One hub's messages and the state they must leave behind."""

    hub: str
    topic: str
    messages: list[OutgoingMessage | bytes] = field(default_factory=list)  # bytes: garbage, not a CloudEvent
    clusters: dict[str, int] = field(default_factory=dict)  # claim -> label
    compliance: dict[str, str] = field(default_factory=dict)  # cluster name -> status
    generation: int = 0
    value: int = 0

    def version(self, changes: int) -> str:
        self.value += changes
        self.generation += 1
        return f"{self.generation}.{self.value}"

    @property
    def garbage(self) -> int:
        return sum(isinstance(m, bytes) for m in self.messages)


def cluster(index: int, label: int) -> dict[str, Any]:
    claim = str(uuid.UUID(int=index + 1))
    return {
        "metadata": {"name": f"c{index}", "labels": {"l": str(label)}},
        "status": {"clusterClaims": [{"name": CLUSTER_ID_CLAIM, "value": claim}]},
    }


def build_stream(hub: str, prefix: str, rng: random.Random, sends: int) -> HubStream:
    stream = HubStream(hub, prefix + hub)
    policy_id = str(uuid.uuid5(uuid.NAMESPACE_URL, hub))
    for send in range(sends):
        roll = rng.random()
        if roll < 0.05:
            stream.messages.append(b"garbage " + str(send).encode())
        elif roll < 0.10:
            stream.messages.extend(_resync(stream))
        elif roll < 0.25:
            state = {f"c{i}": rng.choice(["compliant", "non_compliant"]) for i in rng.sample(range(30), 5)}
            stream.compliance = state
            entry = {
                "policyId": policy_id,
                "compliantClusters": [c for c, s in state.items() if s == "compliant"],
                "nonCompliantClusters": [c for c, s in state.items() if s == "non_compliant"],
            }
            stream.messages.append(status_message(hub, EventType.LOCAL_COMPLIANCE, [entry], stream.version(1)))
        else:
            stream.messages.append(_delta(stream, rng))
    return stream


def _delta(stream: HubStream, rng: random.Random) -> OutgoingMessage:
    updates: list[dict[str, Any]] = []
    deletes: list[dict[str, str]] = []
    for _ in range(rng.randint(1, 6)):
        index = rng.randrange(40)
        claim = str(uuid.UUID(int=index + 1))
        if rng.random() < 0.3:
            deletes.append({"id": claim})
            stream.clusters.pop(claim, None)
        else:
            label = rng.randrange(1000)
            updates = [u for u in updates if u["status"]["clusterClaims"][0]["value"] != claim]
            deletes = [d for d in deletes if d["id"] != claim]
            updates.append(cluster(index, label))
            stream.clusters[claim] = label
    deleted = {d["id"] for d in deletes}
    updates = [u for u in updates if u["status"]["clusterClaims"][0]["value"] not in deleted]
    payload: dict[str, Any] = {}
    if updates:
        payload["update"] = updates
    if deletes:
        payload["delete"] = deletes
    return status_message(stream.hub, EventType.MANAGED_CLUSTER, payload, stream.version(len(updates) + len(deletes)))


def _resync(stream: HubStream) -> list[OutgoingMessage]:
    """A framed full resync of the current model (small frames, so it spans several messages)."""
    objects = []
    for claim, label in stream.clusters.items():
        index = uuid.UUID(claim).int - 1
        objects.append((ObjectMetadata(claim, f"c{index}"), dumps(cluster(index, label))))
    version = stream.version(0)
    return [frame_message(stream.hub, frame, version) for frame in frame_resync(objects, limit=600)]


def produce(settings: KafkaSettings, streams: list[HubStream]) -> None:
    ensure_topics(settings, [s.topic for s in streams], STATUS_TOPIC_CONFIG)
    raw = Producer(settings.client_config())
    confirmed = ConfirmedProducer(settings, **{"linger.ms": 0})
    for stream in streams:
        for message in stream.messages:  # one at a time keeps garbage and events in stream order
            if isinstance(message, bytes):
                raw.produce(stream.topic, value=message)
                assert raw.flush(10) == 0
            else:
                confirmed.send(stream.topic, [message])
    confirmed.close()


@pytest.fixture
def dead_letter_witness() -> Iterator[None]:
    """A trigger that counts committed dead-letter inserts (conflicting ones included)."""
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE IF NOT EXISTS test_dead_letter_witness (n bigint NOT NULL)")
        cursor.execute("DELETE FROM test_dead_letter_witness")
        cursor.execute("INSERT INTO test_dead_letter_witness VALUES (0)")
        cursor.execute(
            "CREATE OR REPLACE FUNCTION test_count_dead_letter() RETURNS trigger AS $$ "
            "BEGIN UPDATE test_dead_letter_witness SET n = n + 1; RETURN NEW; END $$ LANGUAGE plpgsql"
        )
        cursor.execute("DROP TRIGGER IF EXISTS test_count_dead_letter ON manager_deadletter")
        cursor.execute(
            "CREATE TRIGGER test_count_dead_letter BEFORE INSERT ON manager_deadletter "
            "FOR EACH ROW EXECUTE FUNCTION test_count_dead_letter()"
        )
    yield
    connection.close()
    with connection.cursor() as cursor:
        cursor.execute("DROP TRIGGER IF EXISTS test_count_dead_letter ON manager_deadletter")


def witnessed_dead_letters() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT n FROM test_dead_letter_witness")
        return int(cursor.fetchone()[0])


def converged(streams: list[HubStream]) -> bool:
    for stream in streams:
        position = ConsumedPosition.objects.filter(topic=stream.topic).values_list("next_offset", flat=True).first()
        if position != len(stream.messages):
            return False
    return True


def assert_copy_equals_model(streams: list[HubStream]) -> None:
    for stream in streams:
        live = ManagedCluster.objects.filter(hub_id=stream.hub, deleted_at__isnull=True).values_list(
            "cluster_id", "payload"
        )
        assert {str(cid): int(p["metadata"]["labels"]["l"]) for cid, p in live} == stream.clusters, stream.hub
        rows = LocalCompliance.objects.filter(hub_id=stream.hub).values_list("cluster_name", "compliance")
        assert dict(rows) == stream.compliance, stream.hub
    assert witnessed_dead_letters() == sum(s.garbage for s in streams)


def consumer_env(process_env: dict[str, str], batch_size: int) -> dict[str, str]:
    env = dict(process_env)
    env["GH_CONSUMER_BATCH_SIZE"] = str(batch_size)
    # A killed member's partitions move on after the session timeout: the broker's minimum, not librdkafka's 45 s.
    env["KAFKA_CLIENT_SESSION_TIMEOUT_MS"] = "6000"
    env["KAFKA_CLIENT_HEARTBEAT_INTERVAL_MS"] = "1000"
    return env


def test_kill_9_at_random_moments_loses_nothing_and_applies_nothing_twice(
    process_env: dict[str, str],
    kafka_settings: KafkaSettings,
    status_prefix: str,
    run_id: str,
    tmp_path: Path,
    processes: list[Process],
    dead_letter_witness: None,
) -> None:
    rng = random.Random(run_id)
    streams = [build_stream(f"hub-{run_id}-k{i}", status_prefix, rng, 400) for i in range(3)]
    produce(kafka_settings, streams)
    env = consumer_env(process_env, batch_size=7)

    for round_ in range(6):
        consumer = start_consumer(env, tmp_path, name=f"consumer-{round_}")
        wait_for(partial(_at_work, consumer, streams), timeout=60, what="the consumer to be at work")
        time.sleep(rng.uniform(0.0, 0.8))
        consumer.kill()  # SIGKILL: no clean shutdown, whatever it was doing
        if converged(streams):
            break
    final = start_consumer(env, tmp_path, name="consumer-final")
    processes.append(final)
    wait_for(lambda: converged(streams), timeout=120, what="every topic consumed to its end")
    assert_copy_equals_model(streams)


def test_two_consumers_in_one_group_share_the_hubs_and_survive_a_rebalance(
    process_env: dict[str, str],
    kafka_settings: KafkaSettings,
    status_prefix: str,
    run_id: str,
    tmp_path: Path,
    processes: list[Process],
    dead_letter_witness: None,
) -> None:
    rng = random.Random(run_id + "rebalance")
    streams = [build_stream(f"hub-{run_id}-r{i}", status_prefix, rng, 150) for i in range(4)]
    env = consumer_env(process_env, batch_size=10)
    ensure_topics(kafka_settings, [s.topic for s in streams], STATUS_TOPIC_CONFIG)
    first = start_consumer(env, tmp_path, name="consumer-a")
    second = start_consumer(env, tmp_path, name="consumer-b")
    processes.extend([first, second])
    # Both members hold some of the hubs' topics before anything is produced, so both have work to do.
    wait_for(lambda: _holds_topics(first) and _holds_topics(second), timeout=60, what="the group to share the topics")
    halves = [HubStream(s.hub, s.topic, s.messages[: len(s.messages) // 2]) for s in streams]
    produce(kafka_settings, halves)
    wait_for(lambda: converged(halves), timeout=60, what="the first halves")
    assert first.log_text().count("ingested") > 0 and second.log_text().count("ingested") > 0

    os.killpg(first.popen.pid, signal.SIGKILL)  # the other consumer must take over its hubs
    rest = [HubStream(s.hub, s.topic, s.messages[len(s.messages) // 2 :]) for s in streams]
    produce(kafka_settings, rest)
    wait_for(lambda: converged(streams), timeout=120, what="the survivor to consume every hub")
    assert_copy_equals_model(streams)


def _holds_topics(consumer: Process) -> bool:
    """Whether the consumer's latest assignment (its log's last "assigned" line) names at least one partition."""
    lines = [line for line in consumer.log_text().splitlines() if " assigned " in line or line.endswith(" assigned")]
    return bool(lines) and "[0]" in lines[-1]


def _at_work(consumer: Process, streams: list[HubStream]) -> bool:
    return "ingested" in consumer.log_text() or converged(streams)


def stack(*args: str) -> None:
    subprocess.run([str(REPO / "bin" / "stack"), *args], check=True, capture_output=True, timeout=180)


def test_the_consumer_rides_out_a_postgresql_restart_without_skipping_anything(
    process_env: dict[str, str],
    kafka_settings: KafkaSettings,
    status_prefix: str,
    run_id: str,
    tmp_path: Path,
    processes: list[Process],
    dead_letter_witness: None,
) -> None:
    rng = random.Random(run_id + "pg")
    streams = [build_stream(f"hub-{run_id}-p{i}", status_prefix, rng, 120) for i in range(2)]
    consumer = start_consumer(consumer_env(process_env, batch_size=10), tmp_path)
    processes.append(consumer)
    halves = [HubStream(s.hub, s.topic, s.messages[: len(s.messages) // 2]) for s in streams]
    produce(kafka_settings, halves)
    wait_for(lambda: converged(halves), timeout=60, what="the first halves")

    connection.close()
    stack("down", "postgres")
    try:
        produce(kafka_settings, [HubStream(s.hub, s.topic, s.messages[len(s.messages) // 2 :]) for s in streams])
        wait_for(lambda: "database error" in consumer.log_text(), timeout=30, what="the consumer to hit the outage")
        time.sleep(3)
    finally:
        stack("up", "postgres")
    wait_for(lambda: _converged_after_restart(streams), timeout=120, what="the consumer to resume by itself")
    assert consumer.is_running()
    assert_copy_equals_model(streams)


def _converged_after_restart(streams: list[HubStream]) -> bool:
    try:
        return converged(streams)
    except Exception:
        connection.close()  # our own connection died with the server; the next poll reconnects
        return False
