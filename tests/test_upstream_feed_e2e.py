"""An upstream agent's whole feed through the real ``consume_status`` process (real Kafka and PostgreSQL): a hub on
the shared status topic and a hub on its own topic, each sending upstream-shaped policy specs, a delete by
namespace and name, and the three event streams in batch and single mode. Nothing becomes a dead letter."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
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


def test_an_upstream_feed_on_the_shared_topic_and_on_a_hub_topic_is_stored_whole(
    process_env: dict[str, str],
    kafka_settings: KafkaSettings,
    status_prefix: str,
    run_id: str,
    tmp_path: Path,
    processes: list[Process],
) -> None:
    shared_topic = f"t{run_id}-{uuid.uuid4().hex[:6]}-gh-status"
    on_shared, on_own = f"hub-{run_id}-shared", f"hub-{run_id}-own"
    ensure_topics(kafka_settings, [shared_topic, status_prefix + on_own], STATUS_TOPIC_CONFIG)
    env = {**process_env, "GH_SHARED_STATUS_TOPIC": shared_topic}
    processes.append(start_consumer(env, tmp_path))

    producer = ConfirmedProducer(kafka_settings)
    try:
        producer.send(shared_topic, feed(on_shared))
        producer.send(status_prefix + on_own, feed(on_own))
    finally:
        producer.close()

    wait_for(lambda: fed(on_shared) and fed(on_own), timeout=90, what="both hubs' feeds stored")
    assert dict(Hub.objects.filter(name__in=[on_shared, on_own]).values_list("name", "status_topic")) == {
        on_shared: shared_topic,
        on_own: "",
    }
    assert not DeadLetter.objects.filter(topic__in=[shared_topic, status_prefix + on_own]).exists()
