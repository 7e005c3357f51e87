"""Full resyncs of any size through real Kafka: no objects at all, and 100,000 of them."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from agent_tasks.emitter import Emitter
from agent_tasks.inventory import Change, RedisInventory
from agent_tasks.state import StateStore
from agent_tasks.types import LOCAL_COMPLIANCE, MANAGED_CLUSTERS
from agent_tasks.versions import VersionStore
from globalhub.protocol.bundles import MAX_BUNDLE_BYTES
from globalhub.protocol.kafka import STATUS_TOPIC_CONFIG, ConfirmedProducer, KafkaSettings, ensure_topics
from globalhub.protocol.objects import CLUSTER_ID_CLAIM
from tests.kafka_reader import TopicReader


@pytest.fixture
def emitter_and_reader(
    redis_url: str, kafka_settings: KafkaSettings, hub_name: str, status_prefix: str
) -> Iterator[tuple[Emitter, RedisInventory, TopicReader]]:
    client = redis.Redis.from_url(redis_url)
    topic = status_prefix + hub_name
    ensure_topics(kafka_settings, [topic], STATUS_TOPIC_CONFIG)
    producer = ConfirmedProducer(kafka_settings)
    inventory = RedisInventory(client, hub_name)
    emitter = Emitter(
        hub_name, topic, inventory, VersionStore(client, hub_name), StateStore(client, hub_name), producer
    )
    reader = TopicReader(kafka_settings, topic)
    yield emitter, inventory, reader
    reader.close()
    producer.close()
    for key in client.scan_iter(f"gh:{hub_name}:*"):
        client.delete(key)
    client.close()


def small_cluster(index: int) -> tuple[str, dict[str, Any]]:
    claim = str(uuid.UUID(int=index + 1))
    return claim, {
        "apiVersion": "cluster.open-cluster-management.io/v1",
        "kind": "ManagedCluster",
        "metadata": {"name": f"c{index:06d}", "labels": {"vendor": "OpenShift", "cloud": "Amazon"}},
        "spec": {"hubAcceptsClient": True},
        "status": {"clusterClaims": [{"name": CLUSTER_ID_CLAIM, "value": claim}]},
    }


def test_an_empty_inventory_still_resyncs_as_begin_and_complete(
    emitter_and_reader: tuple[Emitter, RedisInventory, TopicReader],
) -> None:
    emitter, _, reader = emitter_and_reader
    report = emitter.full_resync(MANAGED_CLUSTERS)
    begin, complete = reader.read(2)

    assert report.objects == 0 and report.messages == 2
    assert (begin.event.extensions["extframe"], begin.json()) == ("begin", {})
    assert complete.event.extensions["extframe"] == "complete"
    assert complete.json() == {"resync_metadata": []}
    assert (complete.event.extensions["extframetotal"], complete.event.extensions["extobjectcount"]) == ("2", "0")

    emitter.full_resync(LOCAL_COMPLIANCE)
    (compliance,) = reader.read(1)
    assert compliance.json() == []
    assert compliance.event.extensions["extobjectcount"] == "0"


def test_a_resync_of_100000_objects_arrives_whole_in_frames_under_800_kib(
    emitter_and_reader: tuple[Emitter, RedisInventory, TopicReader],
) -> None:
    emitter, inventory, reader = emitter_and_reader
    clusters = dict(small_cluster(i) for i in range(100_000))
    inventory.apply("managedcluster", (Change(claim, obj) for claim, obj in clusters.items()), chunk=5000)

    report = emitter.full_resync(MANAGED_CLUSTERS)
    frames = reader.read(report.messages, timeout=120)

    assert report.objects == 100_000
    assert len(frames) == report.messages > 3
    assert max(frame.size for frame in frames) <= MAX_BUNDLE_BYTES
    assert [int(f.event.extensions["extframeseq"]) for f in frames] == list(range(len(frames)))
    assert {f.event.extensions["extresyncid"] for f in frames} == {frames[0].event.extensions["extresyncid"]}
    assert frames[0].event.extensions["extframe"] == "begin"
    assert frames[-1].event.extensions["extframe"] == "complete"
    assert frames[-1].event.extensions["extframetotal"] == str(len(frames))
    assert frames[-1].event.extensions["extobjectcount"] == "100000"

    sent_objects: list[str] = []
    listed: list[str] = []
    for frame in frames:
        body = json.loads(frame.event.data)
        sent_objects.extend(o["status"]["clusterClaims"][0]["value"] for o in body.get("resync", []))
        listed.extend(entry["id"] for entry in body.get("resync_metadata", []))
    assert len(sent_objects) == len(listed) == 100_000
    assert set(sent_objects) == set(listed) == set(clusters)
    metadata_frames = [f for f in frames if "resync_metadata" in json.loads(f.event.data)]
    assert len(metadata_frames) >= 2  # 100,000 ids do not fit one 800 KiB frame: the listing is framed too
