"""Every full state this project's agent sends says that it names the requests it answers (``ghanswersnamed``),
so the manager never takes the agent's own resync, or a complete type's change, for the answer to a request it
never saw. Real Redis; the producer only collects the messages."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import cast

import redis

from agent_tasks.emitter import Emitter
from agent_tasks.inventory import Change, RedisInventory
from agent_tasks.state import StateStore
from agent_tasks.types import LOCAL_COMPLIANCE, MANAGED_CLUSTERS
from agent_tasks.versions import VersionStore
from globalhub.protocol.codec import OutgoingMessage, ReceivedEvent, decode
from globalhub.protocol.events import EXT_ANSWERS
from globalhub.protocol.kafka import ConfirmedProducer
from globalhub.protocol.objects import CLUSTER_ID_CLAIM
from globalhub.protocol.requests import answered_requests, names_its_answers


class Collecting:
    """Stands in for the confirmed producer: every message is 'confirmed' and kept."""

    def __init__(self) -> None:
        self.messages: list[OutgoingMessage] = []

    def send(self, topic: str, messages: Iterable[OutgoingMessage]) -> int:
        batch = list(messages)
        self.messages.extend(batch)
        return len(batch)

    def take(self) -> list[ReceivedEvent]:
        events = [decode(m.key, m.value, m.headers) for m in self.messages]
        self.messages.clear()
        return events


def emitter(redis_client: redis.Redis, inventory: RedisInventory, hub: str) -> tuple[Emitter, Collecting]:
    producer = Collecting()
    versions, state = VersionStore(redis_client, hub), StateStore(redis_client, hub)
    sender = Emitter(hub, "unused", inventory, versions, state, cast(ConfirmedProducer, producer))
    return sender, producer


def test_every_full_state_names_its_answers_even_when_it_answers_none(
    redis_client: redis.Redis, inventory: RedisInventory, hub_name: str
) -> None:
    claim = str(uuid.uuid4())
    cluster = {"metadata": {"name": "c1"}, "status": {"clusterClaims": [{"name": CLUSTER_ID_CLAIM, "value": claim}]}}
    inventory.apply(MANAGED_CLUSTERS.short, [Change(claim, cluster)])
    policy = str(uuid.uuid4())
    inventory.apply(LOCAL_COMPLIANCE.short, [Change(policy, {"policyId": policy, "compliantClusters": ["c1"]})])
    sender, producer = emitter(redis_client, inventory, hub_name)

    sender.full_resync(MANAGED_CLUSTERS)  # the agent's own resync (periodic, or a trimmed log)
    sender.full_resync(LOCAL_COMPLIANCE)
    own = producer.take()
    assert own and all(names_its_answers(e.extensions) and EXT_ANSWERS not in e.extensions for e in own)

    sender.full_resync(MANAGED_CLUSTERS, answers=["7", "8"])
    answering = producer.take()
    assert answering and all(answered_requests(e.extensions) == ["7", "8"] for e in answering)

    flipped = {"policyId": policy, "nonCompliantClusters": ["c1"]}
    inventory.apply(LOCAL_COMPLIANCE.short, [Change(policy, flipped)])
    assert sender.delta(LOCAL_COMPLIANCE) is not None  # a complete type sends its whole state on a change
    (change,) = producer.take()
    assert names_its_answers(change.extensions) and answered_requests(change.extensions) == []
