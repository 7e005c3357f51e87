"""An upstream agent's whole feed through the real ``consume_status`` process (real Kafka and PostgreSQL): a hub on
the shared status topic and a hub on its own topic, each sending upstream-shaped policy specs, a delete by
namespace and name, and the three event streams in batch and single mode. Nothing becomes a dead letter."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from globalhub.manager.models import (
    DeadLetter,
    Hub,
    LocalPolicy,
    LocalPolicyEvent,
    LocalRootPolicyEvent,
    ManagedClusterEvent,
)
from globalhub.protocol.codec import OutgoingMessage
from globalhub.protocol.events import EXT_SEND_MODE, EventType
from globalhub.protocol.kafka import STATUS_TOPIC_CONFIG, ConfirmedProducer, KafkaSettings, ensure_topics
from tests.helpers import Process, start_consumer, status_message, wait_for
from tests.upstream_agent import UpstreamLikeHub, holds_everything

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

AT = datetime(2026, 12, 1, 9, 30, tzinfo=UTC).isoformat()


def policy(name: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "policy.open-cluster-management.io/v1",
        "kind": "Policy",
        "metadata": {"name": name, "namespace": namespace, "uid": str(uuid.uuid4())},
        "spec": {"remediationAction": "inform"},
        "status": {},
    }


def feed(hub: str) -> list[OutgoingMessage]:
    """What an upstream agent sends: specs (two policies of one name in two namespaces, then an id-less delete of
    one), a batch of cluster events, single-mode root-policy events and a replicated-policy event."""
    cluster_event = {"eventName": "c1.a", "eventNamespace": "c1", "clusterName": "c1", "reason": "Ok", "createdAt": AT}
    root_event = {
        "eventName": "p.1",
        "eventNamespace": "ns-a",
        "count": 1,
        "reason": "PolicyStatusSync",
        "createdAt": AT,
    }
    replicated = {**root_event, "eventName": "c1.p.1", "clusterName": "c1"}
    specs = [policy("dup", "ns-a"), policy("dup", "ns-b")]
    single = {EXT_SEND_MODE: "single"}
    return [
        status_message(hub, EventType.LOCAL_POLICY_SPEC, {"update": specs}, "1.1"),
        status_message(hub, EventType.LOCAL_POLICY_SPEC, {"delete": [{"ns": "ns-a", "name": "dup"}]}, "1.2"),
        status_message(
            hub, EventType.MANAGED_CLUSTER_EVENT, [cluster_event, {**cluster_event, "eventName": "c1.b"}], "1.1"
        ),
        status_message(hub, EventType.LOCAL_ROOT_POLICY_EVENT, root_event, "2.1", single),
        status_message(hub, EventType.LOCAL_ROOT_POLICY_EVENT, {**root_event, "count": 2}, "2.1", single),
        status_message(hub, EventType.LOCAL_REPLICATED_POLICY_EVENT, [replicated], "1.1"),
        status_message(hub, EventType.CLUSTER_GROUP_UPGRADE_EVENT, [{"eventName": "cgu.1", "createdAt": AT}], "1.1"),
    ]


def fed(hub: str) -> bool:
    live = LocalPolicy.objects.filter(hub_id=hub, deleted_at=None).values_list("payload", flat=True)
    return (
        [p["metadata"]["namespace"] for p in live] == ["ns-b"]
        and ManagedClusterEvent.objects.filter(hub_id=hub).count() == 2
        and LocalRootPolicyEvent.objects.filter(hub_id=hub).count() == 2
        and LocalPolicyEvent.objects.filter(hub_id=hub).count() == 1
    )


@dataclass
class Feed:
    """A consumer reading a shared status topic besides the per-hub ones, and a producer: two hubs, one on each."""

    shared_topic: str
    own_topic_prefix: str
    producer: ConfirmedProducer


@pytest.fixture
def two_topics(
    process_env: dict[str, str],
    kafka_settings: KafkaSettings,
    status_prefix: str,
    run_id: str,
    tmp_path: Path,
    processes: list[Process],
) -> Iterator[Feed]:
    shared_topic = f"t{run_id}-{uuid.uuid4().hex[:6]}-gh-status"
    ensure_topics(kafka_settings, [shared_topic], STATUS_TOPIC_CONFIG)
    processes.append(start_consumer({**process_env, "GH_SHARED_STATUS_TOPIC": shared_topic}, tmp_path))
    producer = ConfirmedProducer(kafka_settings)
    yield Feed(shared_topic, status_prefix, producer)
    producer.close()


def test_an_upstream_feed_on_the_shared_topic_and_on_a_hub_topic_is_stored_whole(
    two_topics: Feed, kafka_settings: KafkaSettings, run_id: str
) -> None:
    on_shared, on_own = f"hub-{run_id}-shared", f"hub-{run_id}-own"
    topics = [two_topics.shared_topic, two_topics.own_topic_prefix + on_own]
    ensure_topics(kafka_settings, topics, STATUS_TOPIC_CONFIG)
    for hub, topic in zip((on_shared, on_own), topics, strict=True):
        two_topics.producer.send(topic, feed(hub))

    wait_for(lambda: fed(on_shared) and fed(on_own), timeout=90, what="both hubs' feeds stored")
    assert dict(Hub.objects.filter(name__in=[on_shared, on_own]).values_list("name", "status_topic")) == {
        on_shared: two_topics.shared_topic,
        on_own: "",
    }
    assert not DeadLetter.objects.filter(topic__in=topics).exists()


def test_a_simulated_upstream_agent_emitting_every_type_leaves_no_dead_letter_and_a_whole_copy(
    two_topics: Feed, kafka_settings: KafkaSettings, run_id: str
) -> None:
    """The short form of ``bench/upstream_feed.py`` (whose 10-minute run is in bench/README.md)."""
    hubs = [UpstreamLikeHub(f"hub-{run_id}-up{i}", seed=i) for i in range(2)]
    topics = [two_topics.shared_topic, two_topics.own_topic_prefix + hubs[1].hub]
    ensure_topics(kafka_settings, topics, STATUS_TOPIC_CONFIG)
    for hub, topic in zip(hubs, topics, strict=True):
        two_topics.producer.send(topic, hub.start())
    for _ in range(15):
        for hub, topic in zip(hubs, topics, strict=True):
            two_topics.producer.send(topic, hub.tick())

    for hub in hubs:
        wait_for(partial(holds_everything, hub), timeout=90, what=f"{hub.hub}'s whole copy and every event")
    assert not DeadLetter.objects.filter(topic__in=topics).exists()
