"""The manager's ingestion of hub info, local policies, local compliance and heartbeats (real PostgreSQL).

Bundles are built in upstream's shapes (reference section 2.3), so these are also what an upstream Go agent sends.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from globalhub.manager.ingest.pipeline import ingest_batch
from globalhub.manager.ingest.records import Record
from globalhub.manager.models import (
    CompleteFrame,
    DeadLetter,
    Hub,
    HubInfo,
    LocalCompliance,
    LocalPolicy,
    ResyncRequest,
    ResyncTarget,
)
from globalhub.manager.resync_requests import create_request
from globalhub.protocol.bundles import dumps, frame_complete
from globalhub.protocol.codec import encode
from globalhub.protocol.events import EXT_DEPENDENCY_VERSION, EXT_VERSION, EventType
from globalhub.protocol.requests import answers_extension
from tests.helpers import record_of, status_message

pytestmark = pytest.mark.django_db

PREFIX = "gh-status."


class Topic:
    """Records of one hub's topic with growing offsets."""

    def __init__(self, hub: str) -> None:
        self.hub = hub
        self.name = PREFIX + hub
        self.offset = 0

    def record(self, event_type: EventType, payload: Any, version: str, **extensions: str | int) -> Record:
        message = status_message(self.hub, event_type, payload, version, extensions)
        record = record_of(message, self.name, self.offset)
        self.offset += 1
        return record

    def record_again(self, record: Record) -> Record:
        """The same message at the next offset (to put records of this topic in another order)."""
        again = Record(record.topic, record.partition, self.offset, record.key, record.value, record.headers)
        self.offset += 1
        return again

    def heartbeat(self, version: str, sent: datetime) -> Record:
        message = encode(
            event_type=EventType.HEARTBEAT, source=self.hub, data=b"[]", extensions={EXT_VERSION: version}, time=sent
        )
        record = record_of(message, self.name, self.offset)
        self.offset += 1
        return record


@pytest.fixture
def topic() -> Topic:
    return Topic(f"hub-{uuid.uuid4().hex[:8]}")


def policy(name: str, uid: str | None = None, namespace: str = "default") -> dict[str, Any]:
    return {
        "apiVersion": "policy.open-cluster-management.io/v1",
        "kind": "Policy",
        "metadata": {"name": name, "namespace": namespace, "uid": uid or str(uuid.uuid4()), "generation": 1},
        "spec": {"remediationAction": "inform", "disabled": False, "policy-templates": []},
        "status": {},
    }


def compliance_entry(policy_id: str, compliant: list[str], non: list[str] | None = None) -> dict[str, Any]:
    return {
        "policyId": policy_id,
        "compliantClusters": compliant,
        "nonCompliantClusters": non or [],
        "unknownComplianceClusters": [],
        "pendingComplianceClusters": [],
    }


def compliance_rows(hub: str) -> dict[tuple[str, str], str]:
    rows = LocalCompliance.objects.filter(hub_id=hub).values_list("policy_id", "cluster_name", "compliance")
    return {(str(p), c): s for p, c, s in rows}


def test_hub_info_is_upserted_and_an_upsert_clears_its_soft_delete(topic: Topic) -> None:
    cluster_id = str(uuid.uuid4())
    info = {
        "consoleURL": "https://console.example.com",
        "grafanaURL": "https://grafana.example.com",
        "mchVersion": "2.13.0",
        "clusterId": cluster_id,
    }
    ingest_batch([topic.record(EventType.HUB_INFO, info, "0.1")], topic_prefix=PREFIX)
    row = HubInfo.objects.get(hub_id=topic.hub)
    assert (str(row.cluster_id), row.console_url, row.payload) == (cluster_id, "https://console.example.com", info)

    HubInfo.objects.update(deleted_at=timezone.now())
    ingest_batch([topic.record(EventType.HUB_INFO, {**info, "mchVersion": "2.14.0"}, "1.1")], topic_prefix=PREFIX)
    row = HubInfo.objects.get(hub_id=topic.hub)
    assert row.deleted_at is None
    assert row.payload["mchVersion"] == "2.14.0"


def test_hub_info_without_a_cluster_id_is_ignored_as_upstream_does(topic: Topic) -> None:
    stats = ingest_batch([topic.record(EventType.HUB_INFO, {"consoleURL": "https://c"}, "0.1")], topic_prefix=PREFIX)
    assert not HubInfo.objects.filter(hub_id=topic.hub).exists()
    assert stats.dead_letters == 0


def test_local_policies_are_upserted_deleted_and_swept_like_clusters(topic: Topic) -> None:
    policies = [policy(f"p{i}") for i in range(4)]
    ingest_batch([topic.record(EventType.LOCAL_POLICY_SPEC, {"update": policies}, "1.4")], topic_prefix=PREFIX)
    assert LocalPolicy.objects.filter(hub_id=topic.hub, deleted_at=None).count() == 4

    gone = policies[0]["metadata"]
    listing = [{"id": p["metadata"]["uid"], "name": p["metadata"]["name"]} for p in policies[2:]]
    ingest_batch(
        [
            topic.record(EventType.LOCAL_POLICY_SPEC, {"delete": [{"id": gone["uid"], "name": gone["name"]}]}, "2.5"),
            topic.record(EventType.LOCAL_POLICY_SPEC, {"resync": policies[2:]}, "3.5"),
            topic.record(EventType.LOCAL_POLICY_SPEC, {"resync_metadata": listing}, "3.5"),
        ],
        topic_prefix=PREFIX,
    )
    live = set(LocalPolicy.objects.filter(hub_id=topic.hub, deleted_at=None).values_list("policy_name", flat=True))
    assert live == {"p2", "p3"}
    assert LocalPolicy.objects.get(hub_id=topic.hub, policy_name="p0").deleted_at is not None


def live_policies(hub: str) -> set[str]:
    rows = LocalPolicy.objects.filter(hub_id=hub, deleted_at=None).values_list("payload", flat=True)
    return {f"{row['metadata']['namespace']}/{row['metadata']['name']}" for row in rows}


def test_a_delete_without_an_id_takes_the_policy_of_its_namespace_only(topic: Topic) -> None:
    """Upstream's agent sends ``{"ns", "name"}`` for a policy without a finalizer; its manager matches both."""
    same_name = [policy("dup-policy", namespace="ns-a"), policy("dup-policy", namespace="ns-b"), policy("other")]
    ingest_batch([topic.record(EventType.LOCAL_POLICY_SPEC, {"update": same_name}, "1.1")], topic_prefix=PREFIX)
    ingest_batch(
        [topic.record(EventType.LOCAL_POLICY_SPEC, {"delete": [{"ns": "ns-a", "name": "dup-policy"}]}, "1.2")],
        topic_prefix=PREFIX,
    )
    assert live_policies(topic.hub) == {"ns-b/dup-policy", "default/other"}


def test_a_delete_without_an_id_of_a_policy_the_same_bundle_updates_leaves_it_live(topic: Topic) -> None:
    kept, gone = policy("p", namespace="ns-a"), policy("p", namespace="ns-b")
    ingest_batch([topic.record(EventType.LOCAL_POLICY_SPEC, {"update": [kept, gone]}, "1.1")], topic_prefix=PREFIX)
    deletes = [{"ns": "ns-a", "name": "p"}, {"ns": "ns-b", "name": "p"}]
    ingest_batch(
        [topic.record(EventType.LOCAL_POLICY_SPEC, {"delete": deletes, "update": [kept]}, "1.2")],
        topic_prefix=PREFIX,
    )
    assert live_policies(topic.hub) == {"ns-a/p"}  # deleted, then created again: live, as upstream's order ends


def test_an_id_less_delete_with_the_object_created_again_under_a_new_uid_takes_the_old_row_only(topic: Topic) -> None:
    """A policy without a finalizer deleted and created again: upstream's agent sends ``{ns, name}`` and the new
    object in one bundle. The row of the old uid goes, the new one stays."""
    old, other_namespace = policy("p", namespace="ns-a"), policy("p", namespace="ns-b")
    ingest_batch(
        [topic.record(EventType.LOCAL_POLICY_SPEC, {"update": [old, other_namespace]}, "1.1")], topic_prefix=PREFIX
    )
    new = policy("p", namespace="ns-a")
    bundle = {"delete": [{"ns": "ns-a", "name": "p"}], "update": [new]}
    ingest_batch([topic.record(EventType.LOCAL_POLICY_SPEC, bundle, "1.2")], topic_prefix=PREFIX)
    live = set(LocalPolicy.objects.filter(hub_id=topic.hub, deleted_at=None).values_list("policy_id", flat=True))
    assert {str(uid) for uid in live} == {new["metadata"]["uid"], other_namespace["metadata"]["uid"]}


def test_in_one_bundle_an_update_wins_over_the_resync_copy_of_the_same_object(topic: Topic) -> None:
    """Upstream applies ``resync``, then ``create``, then ``update``: the last copy of an object wins."""
    uid = str(uuid.uuid4())
    resync_copy, created, updated = policy("p", uid), policy("p", uid), policy("p", uid)
    created["spec"]["remediationAction"] = "enforce"
    updated["spec"]["disabled"] = True
    ingest_batch(
        [topic.record(EventType.LOCAL_POLICY_SPEC, {"update": [updated], "resync": [resync_copy]}, "1.1")],
        topic_prefix=PREFIX,
    )
    assert LocalPolicy.objects.get(hub_id=topic.hub, policy_id=uid).payload["spec"]["disabled"] is True
    ingest_batch(
        [topic.record(EventType.LOCAL_POLICY_SPEC, {"create": [created], "update": [updated]}, "1.2")],
        topic_prefix=PREFIX,
    )
    assert LocalPolicy.objects.get(hub_id=topic.hub, policy_id=uid).payload["spec"] == updated["spec"]


def test_an_upstream_cluster_group_upgrade_event_is_accepted_and_counted_not_dead_lettered(topic: Topic) -> None:
    """Upstream's agent emits it and upstream's manager stores nothing: accepted, counted, no dead letter."""
    event = {"eventName": "cgu.17a", "eventNamespace": "ztp", "message": "upgrade started", "reason": "Started"}
    stats = ingest_batch([topic.record(EventType.CLUSTER_GROUP_UPGRADE_EVENT, [event], "0.1")], topic_prefix=PREFIX)
    assert (stats.dead_letters, stats.not_stored, stats.by_type) == (0, 1, {"event.clustergroupupgrade": 1})
    assert not DeadLetter.objects.filter(hub_name=topic.hub).exists()


def test_hub_info_nested_past_what_json_can_write_again_is_a_dead_letter(topic: Topic) -> None:
    info = b'{"clusterId":"' + str(uuid.uuid4()).encode() + b'","deep":' + b"[" * 300 + b"]" * 300 + b"}"
    stats = ingest_batch([topic.record(EventType.HUB_INFO, info, "0.1")], topic_prefix=PREFIX)
    (letter,) = DeadLetter.objects.filter(hub_name=topic.hub)
    assert "hub info cannot be stored" in letter.reason
    assert stats.dead_letters == 1 and not HubInfo.objects.filter(hub_id=topic.hub).exists()


def test_local_compliance_replaces_the_hubs_rows_and_hard_deletes_the_unlisted(topic: Topic) -> None:
    other = Topic(f"hub-{uuid.uuid4().hex[:8]}")
    p1, p2 = str(uuid.uuid4()), str(uuid.uuid4())
    ingest_batch([other.record(EventType.LOCAL_COMPLIANCE, [compliance_entry(p1, ["x"])], "0.1")], topic_prefix=PREFIX)
    first = [compliance_entry(p1, ["a", "b"], ["c"]), compliance_entry(p2, ["a"])]
    ingest_batch([topic.record(EventType.LOCAL_COMPLIANCE, first, "0.1")], topic_prefix=PREFIX)
    assert compliance_rows(topic.hub) == {
        (p1, "a"): "compliant",
        (p1, "b"): "compliant",
        (p1, "c"): "non_compliant",
        (p2, "a"): "compliant",
    }

    second = [compliance_entry(p1, ["a"], ["b"])]  # c left, p2 is gone
    ingest_batch([topic.record(EventType.LOCAL_COMPLIANCE, second, "1.2")], topic_prefix=PREFIX)
    assert compliance_rows(topic.hub) == {(p1, "a"): "compliant", (p1, "b"): "non_compliant"}
    assert compliance_rows(other.hub) == {(p1, "x"): "compliant"}  # upstream would have deleted this (by id only)

    ingest_batch([topic.record(EventType.LOCAL_COMPLIANCE, [], "2.3")], topic_prefix=PREFIX)
    assert compliance_rows(topic.hub) == {}
    assert compliance_rows(other.hub) == {(p1, "x"): "compliant"}


@pytest.mark.parametrize("first_state", [True, False], ids=["first-state", "later-state"])
def test_a_compliance_state_postgresql_cannot_store_is_a_dead_letter(topic: Topic, first_state: bool) -> None:
    p1 = str(uuid.uuid4())
    if not first_state:
        ingest_batch(
            [topic.record(EventType.LOCAL_COMPLIANCE, [compliance_entry(p1, ["a"])], "0.1")], topic_prefix=PREFIX
        )
    nul = topic.record(EventType.LOCAL_COMPLIANCE, [compliance_entry(p1, ["a", "b\u0000"])], "1.1")  # NUL in a name
    heartbeat = topic.heartbeat("1.1", datetime.now(UTC))
    stats = ingest_batch([nul, heartbeat], topic_prefix=PREFIX)

    (letter,) = DeadLetter.objects.filter(topic=topic.name)
    assert letter.offset == nul.offset and letter.reason.startswith("database rejected the data")
    assert stats.applied == 1  # the heartbeat
    assert compliance_rows(topic.hub) == ({} if first_state else {(p1, "a"): "compliant"})


def compliance_and_info_of_hubs(count: int, p1: str) -> tuple[list[Topic], list[Record]]:
    """``count`` hubs, half of them with compliance rows already; then one batch of every hub's next states."""
    topics = [Topic(f"hub-{uuid.uuid4().hex[:8]}") for _ in range(count)]
    earlier = [t.record(EventType.LOCAL_COMPLIANCE, [compliance_entry(p1, ["a", "b"])], "0.1") for t in topics[::2]]
    ingest_batch(earlier, topic_prefix=PREFIX)
    records = []
    for index, t in enumerate(topics):
        state = [compliance_entry(p1, [f"c{index}"], ["a"])]  # b gone, a changed, c<index> new
        records.append(t.record(EventType.LOCAL_COMPLIANCE, state, "1.1"))
        info = {"consoleURL": f"https://console-{index}.example.com", "clusterId": str(uuid.uuid4())}
        records.append(t.record(EventType.HUB_INFO, info, "1.1"))
    return topics, records


def test_many_hubs_complete_states_in_one_batch_are_each_applied_for_the_statements_of_one() -> None:
    p1 = str(uuid.uuid4())
    counts = {}
    for count in (3, 30):
        topics, records = compliance_and_info_of_hubs(count, p1)
        with CaptureQueriesContext(connection) as queries:
            stats = ingest_batch(records, topic_prefix=PREFIX)
        assert stats.applied == 2 * count and stats.dead_letters == 0
        for index, t in enumerate(topics):
            assert compliance_rows(t.hub) == {(p1, "a"): "non_compliant", (p1, f"c{index}"): "compliant"}
            assert HubInfo.objects.get(hub_id=t.hub).console_url == f"https://console-{index}.example.com"
        tables = ("manager_localcompliance", "_stage_compliance", "manager_hubinfo")
        counts[count] = sum(1 for q in queries.captured_queries if any(t in q["sql"] for t in tables))
    assert counts[30] == counts[3]


def test_a_state_refused_among_many_hubs_states_is_the_only_dead_letter() -> None:
    p1 = str(uuid.uuid4())
    topics, records = compliance_and_info_of_hubs(4, p1)
    bad = topics[1]
    nul = bad.record(EventType.LOCAL_COMPLIANCE, [compliance_entry(p1, ["a", "b\u0000"])], "2.1")  # NUL in a name
    stats = ingest_batch([*records, nul], topic_prefix=PREFIX)

    (letter,) = DeadLetter.objects.filter(topic=bad.name)
    assert letter.offset == nul.offset and letter.reason.startswith("database rejected the data")
    assert stats.dead_letters == 1
    for index, t in enumerate(topics):
        if t is not bad:
            assert compliance_rows(t.hub) == {(p1, "a"): "non_compliant", (p1, f"c{index}"): "compliant"}
    assert compliance_rows(bad.hub) == {}  # a new hub: its only state was the refused one


def test_of_several_complete_bundles_in_one_batch_only_the_newest_is_applied(topic: Topic) -> None:
    p1 = str(uuid.uuid4())
    records = [
        topic.record(EventType.LOCAL_COMPLIANCE, [compliance_entry(p1, ["a"])], "0.1"),
        topic.record(EventType.LOCAL_COMPLIANCE, [compliance_entry(p1, [], ["a"])], "1.2"),
        topic.record(EventType.LOCAL_COMPLIANCE, [compliance_entry(p1, ["a", "b"])], "2.3"),
    ]
    stats = ingest_batch(records, topic_prefix=PREFIX)
    assert stats.superseded == 2
    assert stats.applied == 1
    assert compliance_rows(topic.hub) == {(p1, "a"): "compliant", (p1, "b"): "compliant"}


def test_a_request_answered_by_a_state_a_newer_one_replaces_in_the_batch_is_answered(topic: Topic) -> None:
    """Conflation keeps the newest state of a slot: the requests the replaced state answered go with it (they used to
    stay open until overdue when a delta followed the answer in the same batch)."""
    p1 = str(uuid.uuid4())
    ingest_batch([topic.record(EventType.LOCAL_COMPLIANCE, [compliance_entry(p1, ["a"])], "0.1")], topic_prefix=PREFIX)
    request = create_request(topic.hub, [EventType.LOCAL_COMPLIANCE], ResyncRequest.Reason.OPERATOR, "test")
    ResyncRequest.objects.filter(pk=request.pk).update(sent_at=timezone.now())
    answer = topic.record(
        EventType.LOCAL_COMPLIANCE, [compliance_entry(p1, ["a", "b"])], "1.1", **answers_extension([str(request.pk)])
    )
    delta = topic.record(EventType.LOCAL_COMPLIANCE, [compliance_entry(p1, ["a"], ["b"])], "1.2")
    stats = ingest_batch([answer, delta], topic_prefix=PREFIX)

    assert (stats.applied, stats.superseded) == (1, 1)
    assert compliance_rows(topic.hub) == {(p1, "a"): "compliant", (p1, "b"): "non_compliant"}
    target = ResyncTarget.objects.get(request=request, hub_id=topic.hub)
    assert target.completed_at is not None
    assert ResyncRequest.objects.get(pk=request.pk).completed_at is not None


def test_an_older_complete_bundle_never_moves_rows_backwards(topic: Topic) -> None:
    p1 = str(uuid.uuid4())
    ingest_batch(
        [topic.record(EventType.LOCAL_COMPLIANCE, [compliance_entry(p1, [], ["a"])], "5.9")], topic_prefix=PREFIX
    )
    stats = ingest_batch(
        [topic.record(EventType.LOCAL_COMPLIANCE, [compliance_entry(p1, ["a"])], "5.8")], topic_prefix=PREFIX
    )
    assert stats.superseded == 1
    assert compliance_rows(topic.hub) == {(p1, "a"): "non_compliant"}
    # An agent restart (Generation 0) is admitted even though its Value is lower.
    ingest_batch([topic.record(EventType.LOCAL_COMPLIANCE, [compliance_entry(p1, ["a"])], "0.1")], topic_prefix=PREFIX)
    assert compliance_rows(topic.hub) == {(p1, "a"): "compliant"}


def framed_compliance(topic: Topic, entries: list[dict[str, Any]], version: str, limit: int) -> list[Record]:
    frames = list(frame_complete((dumps(e) for e in entries), limit=limit))
    return [topic.record(EventType.LOCAL_COMPLIANCE, f.payload, version, **f.extensions()) for f in frames]


def test_a_compliance_state_in_frames_is_applied_once_every_frame_arrived_even_across_batches(topic: Topic) -> None:
    entries = [compliance_entry(str(uuid.uuid4()), [f"c{i}-{j}" for j in range(20)]) for i in range(30)]
    records = framed_compliance(topic, entries, "0.1", limit=2048)
    assert len(records) > 4
    half = len(records) // 2
    stats = ingest_batch(records[:half], topic_prefix=PREFIX)
    assert stats.staged_frames == half
    assert compliance_rows(topic.hub) == {}
    ingest_batch(records[half:], topic_prefix=PREFIX)
    assert len(compliance_rows(topic.hub)) == 600
    assert not CompleteFrame.objects.filter(hub_id=topic.hub).exists()


def test_frames_of_a_set_whole_within_one_batch_are_never_stored(topic: Topic) -> None:
    entries = [compliance_entry(str(uuid.uuid4()), [f"c{i}-{j}" for j in range(20)]) for i in range(30)]
    records = framed_compliance(topic, entries, "0.1", limit=2048)
    assert len(records) > 4
    with CaptureQueriesContext(connection) as queries:
        ingest_batch(records, topic_prefix=PREFIX)

    assert len(compliance_rows(topic.hub)) == 600
    table = CompleteFrame._meta.db_table
    assert not [q for q in queries.captured_queries if q["sql"].startswith(f'INSERT INTO "{table}"')]


def test_frames_still_waiting_at_the_end_of_a_batch_are_stored(topic: Topic) -> None:
    entries = [compliance_entry(str(uuid.uuid4()), [f"c{i}-{j}" for j in range(20)]) for i in range(30)]
    records = framed_compliance(topic, entries, "0.1", limit=2048)
    ingest_batch(records[:2], topic_prefix=PREFIX)
    assert sorted(CompleteFrame.objects.filter(hub_id=topic.hub).values_list("seq", flat=True)) == [0, 1]


def test_a_rejected_state_gives_back_the_frames_of_another_set_waiting_in_the_batch(topic: Topic) -> None:
    bad = [compliance_entry("not-a-uuid", ["x"])] + [
        compliance_entry(str(uuid.uuid4()), [f"b{i}-{j}" for j in range(20)]) for i in range(20)
    ]
    good = [compliance_entry(str(uuid.uuid4()), [f"g{i}-{j}" for j in range(20)]) for i in range(20)]
    first = framed_compliance(topic, bad, "1.1", limit=2048)  # an agent that restarted in the middle of it
    second = framed_compliance(topic, good, "1.2", limit=2048)
    assert len(first) > 2 and len(second) > 2
    records = [*first[:-1], *second[:-1], first[-1], second[-1]]
    stats = ingest_batch([topic.record_again(r) for r in records], topic_prefix=PREFIX)

    (letter,) = DeadLetter.objects.filter(hub_name=topic.hub)
    assert "needs a UUID policyId" in letter.reason
    assert stats.dead_letters == 1
    assert len(compliance_rows(topic.hub)) == 400


def test_a_compliance_state_with_a_missing_frame_is_not_applied(topic: Topic) -> None:
    p1 = str(uuid.uuid4())
    ingest_batch(
        [topic.record(EventType.LOCAL_COMPLIANCE, [compliance_entry(p1, ["keep"])], "0.1")], topic_prefix=PREFIX
    )
    entries = [compliance_entry(str(uuid.uuid4()), [f"c{i}-{j}" for j in range(20)]) for i in range(30)]
    records = framed_compliance(topic, entries, "1.2", limit=4096)
    del records[1]
    ingest_batch(records, topic_prefix=PREFIX)

    assert compliance_rows(topic.hub) == {(p1, "keep"): "compliant"}
    (letter,) = DeadLetter.objects.filter(hub_name=topic.hub)
    assert letter.reason.startswith("truncated state: frames [1]")
    assert not CompleteFrame.objects.filter(hub_id=topic.hub).exists()


def test_a_heartbeat_counts_when_it_reached_the_manager_and_shows_when_the_hub_sent_it(topic: Topic) -> None:
    sent = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    before = timezone.now()
    ingest_batch([topic.heartbeat("0.0", sent)], topic_prefix=PREFIX)
    hub = Hub.objects.get(name=topic.hub)
    assert hub.last_heartbeat_sent_at == sent
    assert hub.last_heartbeat is not None and before <= hub.last_heartbeat <= timezone.now()
    first_read = hub.last_heartbeat
    # A heartbeat sent earlier but delivered late (after an agent restart: Generation 0 is admitted): liveness
    # never moves back; the hub time shown is the one of the last heartbeat read.
    ingest_batch([topic.heartbeat("0.0", sent - timedelta(minutes=10))], topic_prefix=PREFIX)
    hub.refresh_from_db()
    assert hub.last_heartbeat is not None and hub.last_heartbeat >= first_read
    assert hub.last_heartbeat_sent_at == sent - timedelta(minutes=10)


def test_a_heartbeat_with_the_broker_time_counts_at_that_time_and_measures_the_hub_clock_skew(topic: Topic) -> None:
    stored = timezone.now() - timedelta(seconds=5)
    sent = stored + timedelta(minutes=6)  # the hub's clock runs 6 minutes ahead
    record = replace(topic.heartbeat("0.0", sent), timestamp=stored, log_append=True)
    ingest_batch([record], topic_prefix=PREFIX)
    hub = Hub.objects.get(name=topic.hub)
    assert hub.last_heartbeat == stored and hub.last_heartbeat_sent_at == sent
    assert hub.clock_skew_seconds == pytest.approx(360.0) and hub.skewed_heartbeats == 1
    # The producer's timestamp (CreateTime, the hub's clock) is not the manager's side: read time counts, no skew.
    before = timezone.now()
    ingest_batch([replace(topic.heartbeat("1.0", sent), timestamp=sent, log_append=False)], topic_prefix=PREFIX)
    hub.refresh_from_db()
    assert hub.last_heartbeat is not None and before <= hub.last_heartbeat <= timezone.now()
    assert hub.skewed_heartbeats == 1


def test_a_heartbeat_from_a_clock_far_in_the_future_is_capped_at_now(topic: Topic) -> None:
    ingest_batch([topic.heartbeat("0.0", timezone.now() + timedelta(days=1))], topic_prefix=PREFIX)
    stored = Hub.objects.get(name=topic.hub).last_heartbeat
    assert stored is not None and stored < timezone.now() + timedelta(minutes=1)


def test_upstream_complete_compliance_updates_statuses_on_top_of_its_compliance_bundle(topic: Topic) -> None:
    p1, p2 = str(uuid.uuid4()), str(uuid.uuid4())
    ingest_batch(
        [
            topic.record(
                EventType.LOCAL_COMPLIANCE, [compliance_entry(p1, ["a", "b"]), compliance_entry(p2, [], ["a"])], "0.3"
            )
        ],
        topic_prefix=PREFIX,
    )
    complete = [
        {
            "policyId": p1,
            "nonCompliantClusters": ["b"],
            "unknownComplianceClusters": [],
            "pendingComplianceClusters": [],
        }
    ]
    ingest_batch(
        [topic.record(EventType.LOCAL_COMPLETE_COMPLIANCE, complete, "0.3", **{EXT_DEPENDENCY_VERSION: "0.3"})],
        topic_prefix=PREFIX,
    )
    assert compliance_rows(topic.hub) == {(p1, "a"): "compliant", (p1, "b"): "non_compliant", (p2, "a"): "compliant"}


@pytest.mark.parametrize(
    ("event_type", "payload", "reason"),
    [
        (EventType.HUB_INFO, [1, 2], "hub info must be a JSON object"),
        (EventType.HUB_INFO, {"clusterId": "not-a-uuid"}, "clusterId must be a UUID"),
        (EventType.LOCAL_COMPLIANCE, {"policyId": "x"}, "local compliance must be a JSON array"),
        (EventType.LOCAL_COMPLIANCE, [{"policyId": "nope"}], "needs a UUID policyId"),
        (EventType.LOCAL_COMPLIANCE, [{"policyId": str(uuid.uuid4()), "compliantClusters": [1]}], "cluster names"),
        (EventType.LOCAL_POLICY_SPEC, {"update": "x"}, "bad bundle shape"),
        (EventType.HEARTBEAT, {"beat": True}, "a heartbeat must be a JSON array"),
    ],
)
def test_a_bundle_of_the_wrong_shape_is_a_dead_letter_and_changes_nothing(
    topic: Topic, event_type: EventType, payload: Any, reason: str
) -> None:
    stats = ingest_batch([topic.record(event_type, payload, "0.1")], topic_prefix=PREFIX)
    (letter,) = DeadLetter.objects.filter(hub_name=topic.hub)
    assert reason in letter.reason
    assert stats.applied == 0
    assert not HubInfo.objects.filter(hub_id=topic.hub).exists()
    assert not LocalCompliance.objects.filter(hub_id=topic.hub).exists()
    assert Hub.objects.get(name=topic.hub).last_heartbeat is None


def test_compliance_cluster_names_copy_must_escape_arrive_exactly(topic: Topic) -> None:
    p1 = str(uuid.uuid4())
    names = ["tab\tname", "back\\slash", "new\nline", "cr\rname", "\\N", "plain"]
    ingest_batch([topic.record(EventType.LOCAL_COMPLIANCE, [compliance_entry(p1, names)], "0.1")], topic_prefix=PREFIX)
    assert compliance_rows(topic.hub) == {(p1, name): "compliant" for name in names}


def test_a_frame_claiming_two_billion_frames_is_told_missing_frames_without_counting_them(topic: Topic) -> None:
    entries = [compliance_entry(str(uuid.uuid4()), ["a"])]
    (frame,) = frame_complete([dumps(e) for e in entries])
    total = 2_000_000_000
    extensions = {**frame.extensions(), "extframeseq": total - 1, "extframetotal": total}
    record = topic.record(EventType.LOCAL_COMPLIANCE, frame.payload, "0.1", **extensions)
    stats = ingest_batch([record], topic_prefix=PREFIX)

    (letter,) = DeadLetter.objects.filter(hub_name=topic.hub)
    assert letter.reason.startswith("truncated state: frames [0, 1, 2, 3, 4, 5, 6, 7, 8, 9] of 2000000000 missing")
    assert stats.dead_letters == 1


def test_a_heartbeat_from_a_clock_before_2000_is_kept_at_2000(topic: Topic) -> None:
    ingest_batch([topic.heartbeat("0.0", datetime(1, 1, 2, tzinfo=UTC))], topic_prefix=PREFIX)
    assert Hub.objects.get(name=topic.hub).last_heartbeat_sent_at == datetime(2000, 1, 1, tzinfo=UTC)
