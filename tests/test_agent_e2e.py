"""The agent as it runs: worker, beat and spec listener processes, real Kafka, the manager's consumer.

* startup: every type resynced, one per second, Generation 0 first;
* a manager's ``Resync`` on the spec topic is served through the queue;
* inventory changes reach the manager as deltas;
* Kafka stopped in the middle of a large resync and started again: everything arrives.
"""

from __future__ import annotations

import itertools
import re
import subprocess
import time
from datetime import datetime
from pathlib import Path

import pytest
import redis

from agent_tasks.inventory import Change, RedisInventory
from agent_tasks.resync_queue import ResyncQueue
from agent_tasks.simulate import cluster_changes
from agent_tasks.state import StateStore
from agent_tasks.types import RESYNC_ORDER
from globalhub.manager.models import ManagedCluster, ResyncProgress
from globalhub.protocol.events import BROADCAST, EventType
from globalhub.protocol.kafka import SPEC_TOPIC_CONFIG, ConfirmedProducer, KafkaSettings, ensure_topics
from globalhub.protocol.requests import resync_request
from tests.helpers import REPO, Process, start_agent, start_consumer, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

CLUSTERS = EventType.MANAGED_CLUSTER.short
_STARTS = re.compile(r"\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}).*resync of (\S+) starts")


def live_ids(hub: str) -> set[str]:
    rows = ManagedCluster.objects.filter(hub_id=hub, deleted_at__isnull=True).values_list("cluster_id", flat=True)
    return {str(cluster_id) for cluster_id in rows}


def completed_resyncs(hub: str) -> set[str]:
    return set(
        ResyncProgress.objects.filter(
            hub_id=hub, event_type=EventType.MANAGED_CLUSTER, outcome="completed"
        ).values_list("resync_id", flat=True)
    )


def resync_starts(worker_log: str) -> list[tuple[float, str]]:
    """(time, type) of every resync the worker started, from its log."""
    starts = []
    for stamp, name in _STARTS.findall(worker_log):
        moment = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()
        starts.append((moment, name))
    return starts


def listener_is_listening(kafka: KafkaSettings, env: dict[str, str], client: redis.Redis) -> bool:
    """Send a request for another hub until the listener has seen one: its partition is assigned from then on.

    (A new listener group starts at the newest request, by design; without this, a request sent in the instant
    before the assignment would be skipped.)
    """
    producer = ConfirmedProducer(kafka)
    producer.send(env["GH_SPEC_TOPIC"], [resync_request("some-other-hub", [EventType.MANAGED_CLUSTER])])
    producer.close()
    return bool(client.hget(f"gh:{env['HUB_NAME']}:agent:listener", "ignored"))


def test_an_agent_start_resyncs_every_type_one_per_second_and_serves_the_managers_requests(
    process_env: dict[str, str],
    hub_name: str,
    redis_url: str,
    kafka_settings: KafkaSettings,
    tmp_path: Path,
    processes: list[Process],
) -> None:
    client = redis.Redis.from_url(redis_url)
    inventory = RedisInventory(client, hub_name)
    initial = cluster_changes(hub_name, 50, seed=4)
    inventory.apply(CLUSTERS, initial)
    process_env["GH_AGENT_INTERVALS"] = "managedcluster=1s"
    ensure_topics(kafka_settings, [process_env["GH_SPEC_TOPIC"]], SPEC_TOPIC_CONFIG)
    processes.append(start_consumer(process_env, tmp_path))
    processes.extend(start_agent(process_env, tmp_path))
    worker = processes[1]

    wait_for(lambda: live_ids(hub_name) == {c.object_id for c in initial}, timeout=60, what="the startup resync")
    wait_for(lambda: len(resync_starts(worker.log_text())) >= 4, timeout=30, what="four startup resyncs")
    starts = resync_starts(worker.log_text())[:4]
    assert [name for _, name in starts] == list(RESYNC_ORDER)
    gaps = [later - earlier for (earlier, _), (later, _) in itertools.pairwise(starts)]
    assert all(gap >= 0.8 for gap in gaps), f"resyncs closer than one per second: {gaps}"

    # The manager asks (broadcast) for a cluster resync: it is served through the queue.
    wait_for(lambda: listener_is_listening(kafka_settings, process_env, client), timeout=30, what="the listener")
    before = completed_resyncs(hub_name)
    producer = ConfirmedProducer(kafka_settings)
    producer.send(process_env["GH_SPEC_TOPIC"], [resync_request(BROADCAST, [EventType.MANAGED_CLUSTER])])
    producer.close()
    wait_for(lambda: completed_resyncs(hub_name) - before, timeout=30, what="a resync answering the request")

    # Changes stream to the manager as deltas.
    joined = cluster_changes(hub_name, 5, seed=4, start=1000)
    left = initial[:3]
    inventory.apply(CLUSTERS, [*joined, *(Change(c.object_id, None) for c in left)])
    expected = {c.object_id for c in initial[3:]} | {c.object_id for c in joined}
    wait_for(lambda: live_ids(hub_name) == expected, timeout=30, what="the deltas of 5 joins and 3 leaves")
    assert StateStore(client, hub_name).get(CLUSTERS).last_error == ""


def stack(*args: str) -> None:
    subprocess.run([str(REPO / "bin" / "stack"), *args], check=True, capture_output=True, timeout=180)


def test_kafka_stopped_in_the_middle_of_a_resync_and_started_again_loses_nothing(
    process_env: dict[str, str],
    hub_name: str,
    redis_url: str,
    kafka_settings: KafkaSettings,
    tmp_path: Path,
    processes: list[Process],
) -> None:
    client = redis.Redis.from_url(redis_url)
    inventory = RedisInventory(client, hub_name)
    queue = ResyncQueue(client, hub_name)
    process_env["GH_AGENT_INTERVALS"] = "managedcluster=2s"
    processes.append(start_consumer(process_env, tmp_path))
    processes.extend(start_agent(process_env, tmp_path, listener=False))
    worker = processes[1]
    wait_for(lambda: queue.length() == 0 and completed_resyncs(hub_name), timeout=60, what="the startup resyncs")

    clusters = cluster_changes(hub_name, 20_000, seed=9)
    inventory.apply(CLUSTERS, clusters, chunk=2000)
    wait_for(lambda: len(live_ids(hub_name)) == 20_000, timeout=120, what="20,000 clusters arriving as deltas")
    before = completed_resyncs(hub_name)
    started_resyncs = len(resync_starts(worker.log_text()))
    queue.push([CLUSTERS])

    wait_for(lambda: len(resync_starts(worker.log_text())) > started_resyncs, timeout=30, what="the resync to start")
    stack("down", "kafka")
    # While Kafka is down the hub keeps changing: 10 clusters join, 5 leave.
    joined = cluster_changes(hub_name, 10, seed=9, start=50_000)
    left = clusters[:5]
    inventory.apply(CLUSTERS, [*joined, *(Change(c.object_id, None) for c in left)])
    time.sleep(5)
    stack("up", "kafka")

    expected = {c.object_id for c in clusters[5:]} | {c.object_id for c in joined}
    wait_for(lambda: live_ids(hub_name) == expected, timeout=180, what="the manager to converge after the outage")
    wait_for(lambda: completed_resyncs(hub_name) - before, timeout=120, what="a complete resync after the outage")
    assert live_ids(hub_name) == expected
    for process in processes:
        assert process.is_running(), f"{process.name} died:\n{process.log_text()[-3000:]}"
