"""Anti-entropy digests (issue 11): one definition (``globalhub/protocol/digest.py``), kept by the agent one write
at a time, computed by the manager in SQL over generated columns; both must agree bit for bit."""

from __future__ import annotations

import random
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
import redis
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from hypothesis import given, settings
from hypothesis import strategies as st

from agent_tasks.inventory import Change, RedisInventory
from agent_tasks.resync_queue import ResyncQueue
from agent_tasks.simulate import cluster_changes, populate
from globalhub.manager.digests import hub_digest
from globalhub.manager.divergence import Claim, check_digests
from globalhub.manager.ingest.pipeline import ingest_batch
from globalhub.manager.ingest.records import Record
from globalhub.manager.models import (
    DeadLetter,
    Divergence,
    Hub,
    HubTypeStatus,
    LocalCompliance,
    LocalPolicy,
    ManagedCluster,
    ResyncRequest,
    ResyncTarget,
)
from globalhub.manager.resync_requests import dispatch_pending
from globalhub.protocol.bundles import dumps
from globalhub.protocol.digest import Digest, compliance_row_hash, digest_extension, object_row_hash, payload_digest
from globalhub.protocol.events import EventType
from globalhub.protocol.kafka import ConfirmedProducer, KafkaSettings
from tests.helpers import Process, start_agent, start_consumer, wait_for
from tests.test_convergence import PREFIX, HubTopic, claim, cluster

CLUSTER = EventType.MANAGED_CLUSTER.short
POLICY = EventType.LOCAL_POLICY_SPEC.short
COMPLIANCE = EventType.LOCAL_COMPLIANCE.short
KIND = EventType.MANAGED_CLUSTER


# --- the definition ------------------------------------------------------------------------------------------------


@given(st.lists(st.integers(min_value=-(2**63), max_value=2**63 - 1), max_size=30), st.randoms())
def test_a_digest_does_not_depend_on_order_and_a_row_removed_is_as_if_never_added(
    hashes: list[int], rng: random.Random
) -> None:
    shuffled = hashes[:]
    rng.shuffle(shuffled)
    assert Digest.of(hashes) == Digest.of(shuffled)
    total = Digest.of(hashes)
    for row_hash in hashes:
        total = total.without_rows(1, row_hash)
    assert total == Digest()
    assert Digest.parse(len(hashes), Digest.of(hashes).hex) == Digest.of(hashes)


def test_a_digest_from_the_wire_is_checked() -> None:
    for count, value in ((-1, "0" * 16), (True, "0" * 16), (1, "abc"), (1, None), ("1", "0" * 16)):
        with pytest.raises(ValueError):
            Digest.parse(count, value)


def test_an_id_that_is_not_a_uuid_makes_no_row_as_on_the_manager() -> None:
    assert object_row_hash("not-a-uuid", b"\0" * 16) is None
    assert compliance_row_hash("not-a-uuid", "c1", "compliant") is None
    assert Digest.of([None, None]) == Digest()


# --- the agent keeps it one write at a time ------------------------------------------------------------------------

changes = st.lists(
    st.tuples(st.integers(min_value=0, max_value=15), st.booleans(), st.integers(min_value=0, max_value=3)),
    min_size=1,
    max_size=40,
)


@settings(max_examples=25, deadline=None)
@given(changes)
def test_the_kept_digest_equals_the_one_computed_from_every_object(
    redis_url: str, steps: list[tuple[int, bool, int]]
) -> None:
    client = redis.Redis.from_url(redis_url)
    hub = f"hub-digest-{uuid.uuid4().hex[:8]}"
    inventory = RedisInventory(client, hub)
    clusters = cluster_changes(hub, 16, seed=3)
    policies = [str(uuid.UUID(int=i + 1)) for i in range(16)]
    statuses = ("compliantClusters", "nonCompliantClusters", "pendingComplianceClusters", "unknownComplianceClusters")
    try:
        for index, present, variant in steps:
            cluster = clusters[index]
            assert cluster.obj is not None
            obj = {**cluster.obj, "metadata": {**cluster.obj["metadata"], "labels": {"v": str(variant)}}}
            inventory.apply(CLUSTER, [Change(cluster.object_id, obj if present else None)], chunk=3)
            entry = {"policyId": policies[index], statuses[variant]: [f"c{index}", f"c{variant}"]}
            inventory.apply(COMPLIANCE, [Change(policies[index], entry if present else None)])
            for short_type in (CLUSTER, COMPLIANCE):
                assert inventory.digest(short_type) == inventory.computed_digest(short_type)
        assert inventory.digest(CLUSTER).count == inventory.count(CLUSTER)
    finally:
        for key in client.scan_iter(f"gh:{hub}:*"):
            client.delete(key)
        client.close()


def test_a_write_behind_the_change_stream_moves_the_digest_but_logs_no_change(
    redis_client: redis.Redis, inventory: RedisInventory
) -> None:
    clusters = cluster_changes("hub-x", 3, seed=5)
    inventory.apply(CLUSTER, clusters)
    position, before = inventory.digest_at(CLUSTER)

    inventory.apply(CLUSTER, [Change(clusters[0].object_id, None)], log_changes=False)

    after_position, after = inventory.digest_at(CLUSTER)
    assert after_position == position  # no change entry: a delta would never send it
    assert after != before and after.count == before.count - 1
    assert after == inventory.computed_digest(CLUSTER)


# --- agent and manager agree ---------------------------------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_after_a_resync_the_managers_digests_equal_the_agents_and_a_hand_edit_shows(
    process_env: dict[str, str], hub_name: str, redis_url: str, tmp_path: Path, processes: list[Process]
) -> None:
    process_env["GH_AGENT_INTERVALS"] = "managedcluster=1s,policy.localspec=1s,policy.localcompliance=1s"
    client = redis.Redis.from_url(redis_url)
    inventory = RedisInventory(client, hub_name)
    populate(inventory, hub_name, clusters=300, policies=12, clusters_per_policy=40, seed=4)
    processes.append(start_consumer(process_env, tmp_path))
    processes.extend(start_agent(process_env, tmp_path, listener=False))
    queue = ResyncQueue(client, hub_name)
    wait_for(lambda: queue.length() == 0, timeout=60, what="the startup resyncs")

    kinds = {
        CLUSTER: EventType.MANAGED_CLUSTER,
        POLICY: EventType.LOCAL_POLICY_SPEC,
        COMPLIANCE: EventType.LOCAL_COMPLIANCE,
    }

    def agreeing() -> bool:
        return all(inventory.digest(short) == hub_digest(hub_name, kind) for short, kind in kinds.items())

    wait_for(agreeing, timeout=120, what="the manager's digests to equal the agent's")
    assert hub_digest(hub_name, EventType.MANAGED_CLUSTER).count == 300
    assert (
        hub_digest(hub_name, EventType.LOCAL_COMPLIANCE).count
        == LocalCompliance.objects.filter(hub_id=hub_name).count()
        == 12 * 40
    )
    for short in kinds:
        assert inventory.digest(short) == inventory.computed_digest(short)

    # Live changes keep them equal.
    more = cluster_changes(hub_name, 5, seed=4, start=1000)
    inventory.apply(CLUSTER, [*more, Change(next(iter(inventory.ids(CLUSTER))), None)])
    wait_for(agreeing, timeout=60, what="the digests to agree again after deltas")

    # A hand edit of the manager's rows shows in its digest: the row hashes are generated from the columns.
    agreed = hub_digest(hub_name, EventType.LOCAL_COMPLIANCE)
    row = LocalCompliance.objects.filter(hub_id=hub_name).first()
    assert row is not None
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE manager_localcompliance SET compliance = %s WHERE id = %s",
            ["pending" if row.compliance != "pending" else "compliant", row.id],
        )
    assert hub_digest(hub_name, EventType.LOCAL_COMPLIANCE) != agreed
    cluster = ManagedCluster.objects.filter(hub_id=hub_name, deleted_at__isnull=True).first()
    assert cluster is not None
    before = hub_digest(hub_name, EventType.MANAGED_CLUSTER)
    ManagedCluster.objects.filter(pk=cluster.pk).update(payload_digest=b"\x00" * 16)
    assert hub_digest(hub_name, EventType.MANAGED_CLUSTER).count == before.count
    assert hub_digest(hub_name, EventType.MANAGED_CLUSTER) != before
    assert LocalPolicy.objects.filter(hub_id=hub_name, deleted_at__isnull=True).count() == 12
    client.close()
    for process in processes:
        assert process.is_running(), f"{process.name} died:\n{process.log_text()[-3000:]}"


# --- the manager checks what a heartbeat carries -------------------------------------------------------------------


def cluster_rows_digest(objects: dict[int, str]) -> Digest:
    return Digest.of(
        object_row_hash(claim(i), payload_digest(dumps(cluster(i, label)))) for i, label in objects.items()
    )


def heartbeat(topic: HubTopic, digests: dict[str, Digest] | None = None, raw: str | None = None) -> Record:
    extensions = digest_extension(digests or {}) if raw is None else {"ghdigest": raw}
    return topic.record(b"[]", "1.0", event_type=EventType.HEARTBEAT, extensions=extensions)


def known_hub(objects: dict[int, str]) -> HubTopic:
    """A hub whose clusters the manager holds, with no request open (the first-seen one is dropped)."""
    topic = HubTopic()
    ingest_batch(topic.resync(objects, "0.0"), topic_prefix=PREFIX)
    ResyncRequest.objects.all().delete()
    return topic


def status_of(topic: HubTopic) -> HubTypeStatus:
    return HubTypeStatus.objects.get(hub_id=topic.hub, event_type=EventType.MANAGED_CLUSTER.value)


@pytest.mark.django_db
def test_a_digest_equal_to_the_rows_agrees() -> None:
    objects = {1: "a", 2: "b", 3: "c"}
    topic = known_hub(objects)

    stats = ingest_batch([heartbeat(topic, {CLUSTER: cluster_rows_digest(objects)})], topic_prefix=PREFIX)

    assert (stats.digests_agreed, stats.digests_diverged) == (1, 0)
    assert status_of(topic).digest_agreed is True
    assert not Divergence.objects.filter(hub_id=topic.hub).exists()
    assert not ResyncRequest.objects.exists()


def checked_digests(count: int, diverging: int) -> tuple[int, list[bool]]:
    """``count`` known hubs' digests checked at once, the ``diverging``-th claiming a cluster it does not have:
    the statements it took and the outcomes."""
    objects = {1: "a", 2: "b"}
    hubs = [known_hub(objects).hub for _ in range(count)]
    agreeing, wrong = cluster_rows_digest(objects), cluster_rows_digest({1: "a"})
    claims = [
        Claim(hub, EventType.MANAGED_CLUSTER, wrong if i == diverging else agreeing, request_open=False)
        for i, hub in enumerate(hubs)
    ]
    with CaptureQueriesContext(connection) as queries:
        outcomes = check_digests(claims, timezone.now())
    (asked,) = ResyncRequest.objects.filter(reason=ResyncRequest.Reason.DIVERGED)  # for the diverging hub only
    assert asked.subject == hubs[diverging]
    return len(queries), outcomes


@pytest.mark.django_db
def test_the_digests_of_many_hubs_are_checked_in_a_fixed_number_of_statements() -> None:
    few, outcomes = checked_digests(3, diverging=1)
    assert outcomes == [True, False, True]
    many, outcomes = checked_digests(30, diverging=7)
    assert outcomes == [i != 7 for i in range(30)]
    assert many == few  # the agreeing ones in bulk; the one difference costs the same in both
    assert Divergence.objects.count() == 2


@pytest.mark.django_db
def test_a_digest_that_differs_records_the_divergence_and_asks_for_that_type_once_while_it_is_open() -> None:
    topic = known_hub({1: "a", 2: "b"})
    hub_has = cluster_rows_digest({1: "a", 2: "b", 3: "c"})  # the hub has a cluster the manager never got

    ingest_batch([heartbeat(topic, {CLUSTER: hub_has})], topic_prefix=PREFIX)
    ingest_batch([heartbeat(topic, {CLUSTER: hub_has})], topic_prefix=PREFIX)

    divergences = list(Divergence.objects.filter(hub_id=topic.hub).order_by("seen_at"))
    assert [(d.expected_count, d.found_count) for d in divergences] == [(3, 2), (3, 2)]
    (request,) = ResyncRequest.objects.all()
    assert request.reason == ResyncRequest.Reason.DIVERGED and request.subject == topic.hub
    assert request.types == [EventType.MANAGED_CLUSTER.value]
    assert divergences[0].request_id == request.pk and divergences[1].request is None
    assert status_of(topic).digest_agreed is False


@pytest.mark.django_db
def test_a_divergence_a_resync_did_not_cure_asks_again_only_after_a_backoff() -> None:
    topic = known_hub({1: "a"})
    claimed = cluster_rows_digest({1: "b"})
    ingest_batch([heartbeat(topic, {CLUSTER: claimed})], topic_prefix=PREFIX)
    ResyncTarget.objects.update(completed_at=timezone.now())  # answered, and still different (a bug, say)
    ResyncRequest.objects.update(completed_at=timezone.now())

    ingest_batch([heartbeat(topic, {CLUSTER: claimed})], topic_prefix=PREFIX)

    assert ResyncRequest.objects.count() == 1  # within a minute of the last: it waits
    assert status_of(topic).diverged_in_a_row == 2
    HubTypeStatus.objects.filter(hub_id=topic.hub).update(divergence_requested_at=timezone.now() - timedelta(minutes=2))
    ingest_batch([heartbeat(topic, {CLUSTER: claimed})], topic_prefix=PREFIX)
    assert ResyncRequest.objects.count() == 2


@pytest.mark.django_db
def test_a_digest_followed_by_more_of_its_type_in_the_batch_is_not_checked() -> None:
    topic = known_hub({1: "a"})
    ingest_batch(
        [heartbeat(topic, {CLUSTER: cluster_rows_digest({1: "a"})}), topic.update(2, "b", "1.0")], topic_prefix=PREFIX
    )
    assert status_of(topic).digest_checked_at is None
    assert not Divergence.objects.exists()


@pytest.mark.django_db
def test_a_malformed_digest_is_a_dead_letter_and_the_heartbeat_still_counts() -> None:
    topic = known_hub({1: "a"})
    before = Hub.objects.get(name=topic.hub).last_heartbeat

    stats = ingest_batch([heartbeat(topic, raw="managedcluster:many:zz")], topic_prefix=PREFIX)

    assert stats.dead_letters == 1
    letter = DeadLetter.objects.get(hub_name=topic.hub)
    assert "digests ignored" in letter.reason
    assert Hub.objects.get(name=topic.hub).last_heartbeat != before


# --- the whole loop: a divergence is found and healed --------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_a_change_behind_the_change_stream_and_a_row_edited_by_hand_are_found_and_healed(
    process_env: dict[str, str],
    hub_name: str,
    redis_url: str,
    kafka_settings: KafkaSettings,
    tmp_path: Path,
    processes: list[Process],
) -> None:
    process_env["GH_AGENT_INTERVALS"] = "managedhub.heartbeat=2s,managedcluster=1s"
    client = redis.Redis.from_url(redis_url)
    inventory = RedisInventory(client, hub_name)
    populate(inventory, hub_name, clusters=50, policies=2, clusters_per_policy=10, seed=6)
    processes.append(start_consumer(process_env, tmp_path))
    processes.extend(start_agent(process_env, tmp_path, listener=True))
    producer = ConfirmedProducer(kafka_settings)
    spec_topic = process_env["GH_SPEC_TOPIC"]

    def agreed() -> bool:
        dispatch_pending(producer, spec_topic)  # the manager's outbox, run here instead of a Celery worker
        status = HubTypeStatus.objects.filter(hub_id=hub_name, event_type=EventType.MANAGED_CLUSTER.value).first()
        return bool(status and status.digest_agreed and inventory.digest(CLUSTER) == hub_digest(hub_name, KIND))

    wait_for(agreed, timeout=120, what="a first digest check that agrees")

    # An object removed behind the change stream: no delta will ever say so.
    gone = sorted(inventory.ids(CLUSTER))[0]
    inventory.apply(CLUSTER, [Change(gone, None)], log_changes=False)
    wait_for(
        lambda: agreed() and not ManagedCluster.objects.filter(hub_id=hub_name, cluster_id=gone, deleted_at=None),
        timeout=120,
        what="the divergence found and the removed cluster soft-deleted",
    )
    assert Divergence.objects.filter(hub_id=hub_name, expected_count=49, found_count=50).exists()

    # A row edited by hand in the manager's database.
    edited = ManagedCluster.objects.filter(hub_id=hub_name, deleted_at=None).first()
    assert edited is not None
    original = edited.payload
    ManagedCluster.objects.filter(pk=edited.pk).update(payload={"edited": True}, payload_digest=b"\1" * 16)
    wait_for(
        lambda: agreed() and ManagedCluster.objects.get(pk=edited.pk).payload == original,
        timeout=120,
        what="the edited row found and restored",
    )
    assert ResyncRequest.objects.filter(subject=hub_name, reason=ResyncRequest.Reason.DIVERGED).count() >= 2
    producer.close()
    client.close()
    for process in processes:
        assert process.is_running(), f"{process.name} died:\n{process.log_text()[-3000:]}"


def test_an_inventory_written_before_digests_were_kept_gets_its_digest_built(
    redis_client: redis.Redis, inventory: RedisInventory
) -> None:
    inventory.apply(CLUSTER, cluster_changes("hub-y", 7, seed=8))
    redis_client.delete(
        inventory.digest_key(CLUSTER), inventory.entry_digests_key(CLUSTER)
    )  # as an older agent left it

    _, digest = inventory.digest_at(CLUSTER)

    assert digest.count == 7 and digest == inventory.computed_digest(CLUSTER)
    inventory.apply(CLUSTER, [Change(sorted(inventory.ids(CLUSTER))[0], None)])  # kept one write at a time again
    assert inventory.digest(CLUSTER) == inventory.computed_digest(CLUSTER)
