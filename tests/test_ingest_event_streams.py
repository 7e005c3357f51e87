"""Upstream's event streams (``event.managedcluster``, ``event.localrootpolicy``, ``event.localreplicatedpolicy``):
stored once each, in upstream's payload shapes (reference section 2.3), with a bounded retention (real PostgreSQL).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from globalhub.manager.ingest.pipeline import ingest_batch
from globalhub.manager.models import DeadLetter, Hub, LocalPolicyEvent, LocalRootPolicyEvent, ManagedClusterEvent
from globalhub.manager.retention import prune_events
from globalhub.protocol.events import EXT_SEND_MODE, EventType
from tests.test_ingest_status_types import PREFIX, Topic

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


@pytest.fixture
def topic() -> Topic:
    return Topic(f"hub-{uuid.uuid4().hex[:8]}")


def cluster_event(name: str, at: datetime = T0, **fields: Any) -> dict[str, Any]:
    return {
        "eventNamespace": "cluster1",
        "eventName": name,
        "clusterName": "cluster1",
        "clusterId": "0a1b2c3d-0000-4000-8000-000000000001",
        "leafHubName": "somebody-else",  # never trusted: the hub is the event's source
        "message": "The cluster is available",
        "reason": "AvailableConditionChanged",
        "reportingController": "registration-controller",
        "reportingInstance": "registration-controller-abc",
        "type": "Normal",
        "createdAt": at.isoformat(),
        **fields,
    }


def policy_event(name: str, count: int = 1, at: datetime = T0, **fields: Any) -> dict[str, Any]:
    return {
        "eventName": name,
        "eventNamespace": "policies",
        "message": "NonCompliant; violation - pods not found",
        "reason": "PolicyStatusSync",
        "count": count,
        "source": {"component": "policy-status-history-sync"},
        "createdAt": at.isoformat(),
        "policyId": "7d2f1a52-1111-4222-8333-444455556666",
        "compliance": "NonCompliant",
        **fields,
    }


def test_managed_cluster_events_are_stored_with_the_sources_hub(topic: Topic) -> None:
    events = [cluster_event("cluster1.17a"), cluster_event("cluster1.17b", T0 + timedelta(seconds=5), type="Warning")]
    stats = ingest_batch([topic.record(EventType.MANAGED_CLUSTER_EVENT, events, "0.1")], topic_prefix=PREFIX)

    assert (stats.applied, stats.dead_letters) == (1, 0)
    rows = ManagedClusterEvent.objects.filter(hub_id=topic.hub).order_by("created_at")
    assert [(r.event_name, r.event_type, r.created_at) for r in rows] == [
        ("cluster1.17a", "Normal", T0),
        ("cluster1.17b", "Warning", T0 + timedelta(seconds=5)),
    ]
    first = rows[0]
    assert (first.cluster_name, str(first.cluster_id), first.reporting_controller) == (
        "cluster1",
        "0a1b2c3d-0000-4000-8000-000000000001",
        "registration-controller",
    )
    assert not ManagedClusterEvent.objects.filter(hub_id="somebody-else").exists()


def test_an_event_redelivered_resent_or_sent_again_by_a_restarted_agent_is_stored_once(topic: Topic) -> None:
    batch = [cluster_event("cluster1.1"), cluster_event("cluster1.2")]
    first = topic.record(EventType.MANAGED_CLUSTER_EVENT, batch, "0.1")
    ingest_batch([first], topic_prefix=PREFIX)
    ingest_batch([topic.record_again(first)], topic_prefix=PREFIX)  # the same message at a later offset
    resent = [cluster_event("cluster1.2"), cluster_event("cluster1.3")]  # a failed send's list goes out again
    ingest_batch([topic.record(EventType.MANAGED_CLUSTER_EVENT, resent, "1.1")], topic_prefix=PREFIX)
    restarted = [cluster_event("cluster1.3"), cluster_event("cluster1.4")]  # Generation 0 after a restart
    ingest_batch([topic.record(EventType.MANAGED_CLUSTER_EVENT, restarted, "0.1")], topic_prefix=PREFIX)

    names = sorted(ManagedClusterEvent.objects.filter(hub_id=topic.hub).values_list("event_name", flat=True))
    assert names == ["cluster1.1", "cluster1.2", "cluster1.3", "cluster1.4"]


def test_single_mode_sends_one_event_object_per_message(topic: Topic) -> None:
    records = [
        topic.record(EventType.LOCAL_ROOT_POLICY_EVENT, policy_event(f"p.{i}"), "3.7", **{EXT_SEND_MODE: "single"})
        for i in range(3)
    ]
    stats = ingest_batch(records, topic_prefix=PREFIX)
    assert (stats.applied, stats.dead_letters) == (3, 0)
    row = LocalRootPolicyEvent.objects.get(hub_id=topic.hub, event_name="p.0")
    assert (row.count, row.compliance, row.source) == (1, "NonCompliant", {"component": "policy-status-history-sync"})


def test_policy_events_of_two_hubs_with_the_same_name_count_and_time_are_both_kept() -> None:
    """Upstream's key (event_name, count, created_at) leaves the hub out: the second hub's event was lost."""
    hubs = [Topic(f"hub-{uuid.uuid4().hex[:8]}") for _ in range(2)]
    for hub in hubs:
        replicated = policy_event("policies.p1.17c", clusterName="c1", clusterId="0a1b2c3d-0000-4000-8000-00000000000c")
        ingest_batch(
            [
                hub.record(EventType.LOCAL_ROOT_POLICY_EVENT, [policy_event("policies.p1.17c")], "0.1"),
                hub.record(EventType.LOCAL_REPLICATED_POLICY_EVENT, [replicated], "0.1"),
            ],
            topic_prefix=PREFIX,
        )
    assert LocalRootPolicyEvent.objects.filter(hub_id__in=[h.hub for h in hubs]).count() == 2
    assert LocalPolicyEvent.objects.filter(hub_id__in=[h.hub for h in hubs]).count() == 2
    row = LocalPolicyEvent.objects.get(hub_id=hubs[0].hub)
    assert (row.cluster_name, str(row.cluster_id)) == ("c1", "0a1b2c3d-0000-4000-8000-00000000000c")


def test_a_root_policy_event_counted_again_is_a_new_row(topic: Topic) -> None:
    events = [policy_event("p.1", count=1), policy_event("p.1", count=2)]
    ingest_batch([topic.record(EventType.LOCAL_ROOT_POLICY_EVENT, events, "0.1")], topic_prefix=PREFIX)
    counts = LocalRootPolicyEvent.objects.filter(hub_id=topic.hub).values_list("count", flat=True)
    assert sorted(counts) == [1, 2]


def test_an_older_or_replayed_event_bundle_still_stores_what_is_new_in_it(topic: Topic) -> None:
    ingest_batch([topic.record(EventType.MANAGED_CLUSTER_EVENT, [cluster_event("a")], "5.9")], topic_prefix=PREFIX)
    older = topic.record(EventType.MANAGED_CLUSTER_EVENT, [cluster_event("a"), cluster_event("b")], "5.2")
    stats = ingest_batch([older], topic_prefix=PREFIX)  # reordered behind a newer one: nothing in it is lost
    assert (stats.applied, stats.superseded) == (1, 0)
    assert ManagedClusterEvent.objects.filter(hub_id=topic.hub).count() == 2


def test_an_inactive_hubs_events_are_still_stored(topic: Topic) -> None:
    """No resync brings events back, and an event revives nothing: they are kept while the hub is inactive."""
    Hub.objects.create(name=topic.hub, state=Hub.State.INACTIVE)
    stats = ingest_batch(
        [topic.record(EventType.MANAGED_CLUSTER_EVENT, [cluster_event("x")], "0.1")], topic_prefix=PREFIX
    )
    assert (stats.applied, stats.inactive) == (1, 0)
    assert ManagedClusterEvent.objects.filter(hub_id=topic.hub).count() == 1


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ([cluster_event("ok"), {"eventNamespace": "x", "createdAt": T0.isoformat()}], "event 1 has no eventName"),
        ([cluster_event("ok", createdAt="yesterday")], "event 0: createdAt:"),
        ([cluster_event("ok", createdAt="2026-11-30T12:00:00")], "has no time zone"),
        ([cluster_event("ok", createdAt="0001-01-01T00:00:00+01:00")], "is not a plausible time"),
        ([cluster_event("ok", createdAt="9999-12-31T23:00:00-05:00")], "is not a plausible time"),
        ([cluster_event("ok", message=["not", "text"])], "event 0: message: expected a string, got list"),
        ([42], "event 0 must be a JSON object, got int"),
    ],
)
def test_an_event_bundle_with_an_event_that_cannot_be_stored_is_a_dead_letter_and_stores_nothing(
    topic: Topic, payload: Any, reason: str
) -> None:
    stats = ingest_batch([topic.record(EventType.MANAGED_CLUSTER_EVENT, payload, "0.1")], topic_prefix=PREFIX)
    assert stats.dead_letters == 1
    assert reason in DeadLetter.objects.get(hub_name=topic.hub).reason
    assert not ManagedClusterEvent.objects.filter(hub_id=topic.hub).exists()


def test_events_older_than_the_retention_are_pruned_in_chunks(topic: Topic) -> None:
    now = timezone.now()
    long_ago = now - timedelta(days=100)
    old = [cluster_event(f"old.{i}", long_ago + timedelta(minutes=i)) for i in range(25)]
    recent = [cluster_event(f"new.{i}", now - timedelta(days=1)) for i in range(3)]
    old_policy = [policy_event("old.p", at=long_ago)]
    ingest_batch(
        [
            topic.record(EventType.MANAGED_CLUSTER_EVENT, old + recent, "0.1"),
            topic.record(EventType.LOCAL_ROOT_POLICY_EVENT, old_policy, "0.1"),
        ],
        topic_prefix=PREFIX,
    )
    deleted = prune_events(now, timedelta(days=90), chunk=10)
    assert deleted[ManagedClusterEvent._meta.db_table] == 25
    assert deleted[LocalRootPolicyEvent._meta.db_table] == 1
    names = set(ManagedClusterEvent.objects.filter(hub_id=topic.hub).values_list("event_name", flat=True))
    assert names == {"new.0", "new.1", "new.2"}


def test_migrate_installs_the_hourly_prune_schedule() -> None:
    task = PeriodicTask.objects.get(name="prune events")
    assert task.task == "manager.prune_events" and task.interval is not None and task.interval.every == 3600


def test_the_admin_lists_each_stream_read_only(topic: Topic, admin_client: Client) -> None:
    ingest_batch(
        [
            topic.record(EventType.MANAGED_CLUSTER_EVENT, [cluster_event("cluster1.admin")], "0.1"),
            topic.record(EventType.LOCAL_ROOT_POLICY_EVENT, [policy_event("policies.p.admin")], "0.1"),
            topic.record(
                EventType.LOCAL_REPLICATED_POLICY_EVENT, [policy_event("c1.p.admin", clusterName="c1")], "0.1"
            ),
        ],
        topic_prefix=PREFIX,
    )
    for model, shown in (
        ("managedclusterevent", "AvailableConditionChanged"),
        ("localrootpolicyevent", "policies.p.admin"),
        ("localpolicyevent", "c1.p.admin"),
    ):
        page = admin_client.get(f"/admin/manager/{model}/")
        assert page.status_code == 200 and shown in page.content.decode()
        assert admin_client.get(f"/admin/manager/{model}/add/").status_code == 403
    row = ManagedClusterEvent.objects.get(hub_id=topic.hub)
    page = admin_client.get(f"/admin/manager/managedclusterevent/{row.pk}/change/")
    assert page.status_code == 200 and "Save" not in page.content.decode()
