"""Convergence on the manager (real PostgreSQL, through ``ingest_batch``): no version can stall a hub, older
content never overwrites newer, a request is complete only when *its* answer was ingested, and a hub the manager
lost track of is asked for everything.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine
from django.conf import settings
from django.utils import timezone

from globalhub.manager.ingest.observations import STALL_AFTER
from globalhub.manager.ingest.pipeline import BatchStats, ingest_batch
from globalhub.manager.ingest.records import Record
from globalhub.manager.models import (
    DeadLetter,
    Hub,
    HubTypeStatus,
    LocalCompliance,
    ManagedCluster,
    ResyncRequest,
    ResyncTarget,
    TypeVersion,
)
from globalhub.manager.resync_requests import create_request
from globalhub.protocol.bundles import ObjectMetadata, dumps, frame_resync
from globalhub.protocol.codec import encode
from globalhub.protocol.events import EXT_VERSION, RESYNC_TYPES, EventType
from globalhub.protocol.objects import CLUSTER_ID_CLAIM
from globalhub.protocol.requests import answers_extension
from tests.helpers import record_of

pytestmark = pytest.mark.django_db

PREFIX = "gh-status."
T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
CLUSTERS = EventType.MANAGED_CLUSTER


def claim(index: int) -> str:
    return str(uuid.UUID(int=index + 1))


def cluster(index: int, label: str) -> dict[str, Any]:
    return {
        "metadata": {"name": f"c{index}", "labels": {"l": label}},
        "status": {"clusterClaims": [{"name": CLUSTER_ID_CLAIM, "value": claim(index)}]},
    }


class HubTopic:
    """One hub's status topic: records with growing offsets, the hub's send times and Kafka's store times."""

    def __init__(self) -> None:
        self.hub = f"hub-{uuid.uuid4().hex[:8]}"
        self.offset = 0

    def record(
        self,
        payload: Any,
        version: str,
        sent: datetime | None = None,
        stored: datetime | None = None,
        extensions: Mapping[str, str | int] | None = None,
        event_type: EventType = CLUSTERS,
        log_append: bool = True,
    ) -> Record:
        """``stored``: Kafka's timestamp (default: now, as a broker stamps every message); ``log_append``: whether it
        is the broker's (a ``LogAppendTime`` topic) or the producer's."""
        message = encode(
            event_type=event_type,
            source=self.hub,
            data=payload if isinstance(payload, bytes) else dumps(payload),
            extensions={EXT_VERSION: version, **(extensions or {})},
            time=sent or timezone.now(),
        )
        timestamp = stored or timezone.now()
        record = replace(record_of(message, PREFIX + self.hub, self.offset), timestamp=timestamp, log_append=log_append)
        self.offset += 1
        return record

    def update(self, index: int, label: str, version: str, sent: datetime | None = None) -> Record:
        return self.record({"update": [cluster(index, label)]}, version, sent)

    def resync(
        self,
        objects: dict[int, str],
        version: str,
        *,
        answers: list[int] | None = None,
        sent: datetime | None = None,
        stored: datetime | None = None,
        event_type: EventType = CLUSTERS,
    ) -> list[Record]:
        """A framed full resync (as this project's agent sends it), carrying the ids of the requests it answers."""
        pairs = [(ObjectMetadata(claim(i), f"c{i}"), dumps(cluster(i, label))) for i, label in objects.items()]
        answered = answers_extension(str(i) for i in answers or [])
        return [
            self.record(frame.payload, version, sent, stored, {**frame.extensions(), **answered}, event_type)
            for frame in frame_resync(pairs)
        ]

    def upstream_resync(
        self, objects: dict[int, str], version: str, stored: datetime, log_append: bool = True
    ) -> list[Record]:
        """An upstream agent's full state: ``resync`` objects then ``resync_metadata``, no frames, no request ids."""
        listing = [{"id": claim(i), "name": f"c{i}"} for i in objects]
        resync = {"resync": [cluster(i, label) for i, label in objects.items()]}
        return [
            self.record(resync, version, None, stored, log_append=log_append),
            self.record({"resync_metadata": listing}, version, None, stored, log_append=log_append),
        ]

    def ingest(self, *records: Record | list[Record]) -> BatchStats:
        flat: list[Record] = []
        for item in records:
            flat.extend(item if isinstance(item, list) else [item])
        return ingest_batch(flat, topic_prefix=PREFIX)

    def labels(self) -> dict[int, str]:
        rows = ManagedCluster.objects.filter(hub_id=self.hub, deleted_at__isnull=True).values_list(
            "cluster_id", "payload"
        )
        return {uuid.UUID(str(cid)).int - 1: payload["metadata"]["labels"]["l"] for cid, payload in rows}

    def version(self) -> str:
        row = TypeVersion.objects.get(hub_id=self.hub, event_type=CLUSTERS.value)
        return f"{row.generation}.{row.value}"

    def status(self) -> HubTypeStatus:
        return HubTypeStatus.objects.get(hub_id=self.hub, event_type=CLUSTERS.value)


def sent(request: ResyncRequest, at: datetime) -> ResyncRequest:
    """As the outbox does once Kafka confirmed the send."""
    ResyncRequest.objects.filter(pk=request.pk).update(sent_at=at)
    request.refresh_from_db()
    return request


def complete(request: ResyncRequest) -> bool:
    request.refresh_from_db()
    return request.completed_at is not None


@pytest.fixture
def topic() -> HubTopic:
    return HubTopic()


# --- no regression ----------------------------------------------------------------------------------------------------


def test_a_replay_or_an_older_bundle_never_overwrites_newer_rows_nor_moves_the_version_back(topic: HubTopic) -> None:
    topic.ingest(topic.update(1, "5.7", "5.7"), topic.update(1, "5.8", "5.8"))
    assert topic.labels() == {1: "5.8"}

    topic.ingest(topic.update(1, "5.7", "5.7"))  # a replay (upstream's producer: acks=1, no idempotence)
    topic.ingest(topic.update(1, "5.6", "5.6"))
    assert topic.labels() == {1: "5.8"}
    assert topic.version() == "5.8"
    assert "older than the row's" in topic.status().last_refusal

    topic.ingest(topic.update(1, "5.9", "5.9"), topic.update(2, "5.9", "5.9"))  # newer data is still admitted
    assert topic.labels() == {1: "5.9", 2: "5.9"}


def test_a_delete_older_than_the_row_leaves_it_live(topic: HubTopic) -> None:
    topic.ingest(topic.update(1, "a", "3.4"))
    topic.ingest(topic.record({"delete": [{"id": claim(1), "name": "c1"}]}, "3.2"))
    assert topic.labels() == {1: "a"}


def test_a_straggler_of_an_earlier_agent_run_never_overwrites_the_new_runs_rows(topic: HubTopic) -> None:
    topic.ingest(topic.update(1, "run1", "7.1", sent=T0))
    topic.ingest(topic.update(1, "restarted", "0.2", sent=T0 + timedelta(minutes=2)))  # the agent restarted
    stats = topic.ingest(topic.update(1, "straggler", "7.2", sent=T0 + timedelta(minutes=1)))

    assert topic.labels() == {1: "restarted"}
    assert stats.superseded == 1
    assert "before the agent's run began" in topic.status().last_refusal
    topic.ingest(topic.update(1, "next", "0.3", sent=T0 + timedelta(minutes=3)))
    assert topic.labels() == {1: "next"}


def test_a_replay_of_the_generation_0_bundle_that_started_the_run_changes_nothing(topic: HubTopic) -> None:
    topic.ingest(topic.update(1, "run1", "7.1", sent=T0))
    topic.ingest(topic.update(1, "start", "0.1", sent=T0 + timedelta(minutes=1)))  # the agent restarted
    topic.ingest(topic.update(1, "next", "1.2", sent=T0 + timedelta(minutes=2)))
    topic.ingest(topic.update(1, "start", "0.1", sent=T0 + timedelta(minutes=1)))  # a replay (acks=1)
    assert topic.labels() == {1: "next"}
    assert topic.version() == "1.2"


def test_a_generation_0_frame_reordered_behind_its_runs_next_bundle_never_overwrites_it(topic: HubTopic) -> None:
    topic.ingest(topic.update(1, "run1", "7.1", sent=T0), topic.update(2, "run1", "7.1", sent=T0))
    pairs = [(ObjectMetadata(claim(i), f"c{i}"), dumps(cluster(i, "restart"))) for i in (1, 2)]
    frames = list(frame_resync(pairs, limit=300))  # the restarted agent's resync: c1, then c2, then the listing
    assert [f.kind.value for f in frames] == ["begin", "chunk", "complete"]

    def frame(seq: int) -> Record:
        sent_at = T0 + timedelta(minutes=1, milliseconds=seq)
        return topic.record(frames[seq].payload, "0.5", sent_at, extensions=frames[seq].extensions())

    topic.ingest(frame(0))
    # The run's next bundle overtakes the resync's last frames (upstream's producer: acks=1, no idempotence): Kafka
    # stores them after it.
    topic.ingest(topic.update(2, "changed after the restart", "1.6", sent=T0 + timedelta(minutes=2)))
    topic.ingest(frame(1), frame(2))
    assert topic.labels() == {1: "restart", 2: "changed after the restart"}
    assert topic.version() == "1.6"


# --- authority: no version can hold a hub back past one resync round trip ---------------------------------------------


def test_a_poisoned_version_is_healed_by_the_answer_to_a_request(topic: HubTopic) -> None:
    topic.ingest(topic.update(1, "ok", "24.1"), topic.update(2, "ok", "24.1"))
    topic.ingest(topic.update(1, "poison", "999.1"))  # one valid bundle with a poisoned version
    topic.ingest(topic.update(1, "24.3", "24.3"))
    assert topic.labels() == {1: "poison", 2: "ok"}  # held by the poisoned row

    request = sent(create_request(topic.hub, ["managedcluster"], ResyncRequest.Reason.OPERATOR, "test"), T0)
    topic.ingest(topic.resync({1: "answer", 2: "answer", 3: "answer"}, "24.4", answers=[request.pk]))

    assert topic.labels() == {1: "answer", 2: "answer", 3: "answer"}
    assert topic.version() == "24.4"
    assert complete(request)
    topic.ingest(topic.update(1, "after", "24.5"))  # the hub's next deltas are admitted again
    assert topic.labels()[1] == "after"


def test_a_resync_that_answers_a_request_deletes_what_a_poisoned_version_wrote(topic: HubTopic) -> None:
    topic.ingest(topic.update(1, "ok", "3.1"))
    topic.ingest(topic.update(9, "ghost", "999.9"))  # poisoned and not on the hub
    request = sent(create_request(topic.hub, ["managedcluster"], ResyncRequest.Reason.OPERATOR, "test"), T0)
    topic.ingest(topic.resync({1: "ok"}, "3.2", answers=[request.pk]))
    assert topic.labels() == {1: "ok"}
    topic.ingest(topic.update(9, "real", "3.3"))  # the id comes back for real: the poisoned stamp is gone
    assert topic.labels() == {1: "ok", 9: "real"}


def test_an_upstream_full_state_stored_after_the_request_was_sent_answers_it(topic: HubTopic) -> None:
    topic.ingest(topic.update(1, "poison", "999.1"))
    request = sent(create_request(topic.hub, ["managedcluster"], ResyncRequest.Reason.OPERATOR, "test"), T0)

    topic.ingest(topic.upstream_resync({1: "backlog"}, "30.1", stored=T0 - timedelta(seconds=1)))
    assert topic.labels() == {1: "poison"} and not complete(request)  # older than the request: answers nothing

    topic.ingest(topic.upstream_resync({1: "answer", 2: "answer"}, "30.2", stored=T0 + timedelta(seconds=1)))
    assert topic.labels() == {1: "answer", 2: "answer"} and complete(request)


def test_our_agents_whole_state_without_ids_answers_nothing_whenever_kafka_stored_it(topic: HubTopic) -> None:
    """A complete type's change (or the agent's own resync) is a whole state, stored after the request: it names no
    request, so it answers none (only an upstream agent's is judged by the broker's time)."""
    kind = EventType.LOCAL_COMPLIANCE
    topic.ingest(topic.record([], "1.1", event_type=kind))
    request = sent(create_request(topic.hub, [kind.short], ResyncRequest.Reason.OPERATOR, "test"), T0)
    own = answers_extension([])
    topic.ingest(topic.record([], "2.1", stored=T0 + timedelta(seconds=5), extensions=own, event_type=kind))
    assert not complete(request)
    answer = answers_extension([str(request.pk)])
    topic.ingest(topic.record([], "2.2", stored=T0 + timedelta(seconds=6), extensions=answer, event_type=kind))
    assert complete(request)


def test_an_upstream_full_state_on_a_topic_with_producer_timestamps_answers_nothing(topic: HubTopic) -> None:
    """Without the broker's clock, the time says nothing about when the state was read on the hub."""
    topic.ingest(topic.update(1, "a", "1.1"))
    request = sent(create_request(topic.hub, ["managedcluster"], ResyncRequest.Reason.OPERATOR, "test"), T0)
    topic.ingest(topic.upstream_resync({1: "b"}, "1.2", stored=T0 + timedelta(seconds=1), log_append=False))
    assert topic.labels() == {1: "b"} and not complete(request)


def test_an_answer_naming_a_request_whose_send_is_not_committed_yet_answers_it(topic: HubTopic) -> None:
    """The outbox commits ``sent_at`` after Kafka confirmed the send: the answer may be ingested before that."""
    topic.ingest(topic.update(1, "poison", "999.1"))
    request = create_request(topic.hub, ["managedcluster"], ResyncRequest.Reason.STALLED, "stall detector")
    assert request.sent_at is None
    topic.ingest(topic.resync({1: "answer"}, "24.1", answers=[request.pk]))
    assert topic.labels() == {1: "answer"} and topic.version() == "24.1"
    assert complete(request)


# --- stall detection ----------------------------------------------------------------------------------------------


def test_a_type_whose_bundles_keep_being_refused_is_stalled_asks_once_for_a_resync_and_heals(topic: HubTopic) -> None:
    with time_machine.travel(T0, tick=False):
        topic.ingest(topic.update(1, "poison", "999.1"))
    for step, seconds in enumerate([1, 10, STALL_AFTER.seconds + 5, STALL_AFTER.seconds + 20]):
        with time_machine.travel(T0 + timedelta(seconds=seconds), tick=False):
            topic.ingest(topic.update(1, f"refused-{step}", f"25.{step}"))

    status = topic.status()
    assert status.stalled_since == T0 + timedelta(seconds=STALL_AFTER.seconds + 5)
    assert status.stalls == 1 and status.refused == 4
    (request,) = ResyncRequest.objects.filter(reason=ResyncRequest.Reason.STALLED)
    assert request.subject == topic.hub and request.types == [CLUSTERS.value]

    sent(request, T0 + timedelta(minutes=1))
    with time_machine.travel(T0 + timedelta(minutes=2), tick=False):
        topic.ingest(topic.resync({1: "healed"}, "25.9", answers=[request.pk]))
    status = topic.status()
    assert topic.labels() == {1: "healed"} and complete(request)
    assert status.stalled_since is None and status.refused == 0 and status.stalls == 1


def test_refusals_spread_over_less_than_the_stall_time_do_not_stall(topic: HubTopic) -> None:
    with time_machine.travel(T0, tick=False):
        topic.ingest(topic.update(1, "new", "9.9"))
        for step in range(5):
            topic.ingest(topic.update(1, "replayed", f"9.{step}"))
    status = topic.status()
    assert status.refused == 5 and status.stalled_since is None
    assert not ResyncRequest.objects.filter(reason=ResyncRequest.Reason.STALLED).exists()


def test_a_stall_whose_request_goes_unanswered_asks_again_once_the_request_is_overdue(topic: HubTopic) -> None:
    overdue = settings.GLOBALHUB.resync_overdue
    with time_machine.travel(T0, tick=False):
        topic.ingest(topic.update(1, "poison", "999.1"))
    for step, seconds in enumerate([1, 10, STALL_AFTER.seconds + 5]):
        with time_machine.travel(T0 + timedelta(seconds=seconds), tick=False):
            topic.ingest(topic.update(1, f"refused-{step}", f"25.{step}"))
    (first,) = ResyncRequest.objects.filter(reason=ResyncRequest.Reason.STALLED)
    sent(first, T0 + timedelta(minutes=1))  # the agent was down: the answer never comes

    with time_machine.travel(first.requested_at + overdue - timedelta(seconds=1), tick=False):
        topic.ingest(topic.update(1, "refused", "25.5"))
    assert ResyncRequest.objects.filter(reason=ResyncRequest.Reason.STALLED).count() == 1  # still on its way
    with time_machine.travel(first.requested_at + overdue + timedelta(seconds=1), tick=False):
        topic.ingest(topic.update(1, "refused", "25.6"))
    first_again, second = ResyncRequest.objects.filter(reason=ResyncRequest.Reason.STALLED).order_by("id")
    assert first_again == first and second.types == [CLUSTERS.value]
    sent(second, first.requested_at + overdue + timedelta(seconds=2))

    with time_machine.travel(first.requested_at + overdue + timedelta(minutes=1), tick=False):
        topic.ingest(topic.resync({1: "healed"}, "25.9", answers=[second.pk]))
    assert topic.labels() == {1: "healed"} and complete(second) and complete(first)
    assert topic.status().stalled_since is None


def test_a_stalled_complete_compliance_is_healed_by_its_next_state(topic: HubTopic) -> None:
    """Upstream's complete compliance cannot be asked for: once stalled, its next whole state re-bases it."""
    kind = EventType.LOCAL_COMPLETE_COMPLIANCE
    policy = str(uuid.uuid4())
    failing = [{"policyId": policy, "nonCompliantClusters": ["c1"]}]

    def state(version: str, entries: list[dict[str, Any]]) -> Record:
        return topic.record(entries, version, event_type=kind)

    with time_machine.travel(T0, tick=False):
        topic.ingest(topic.record(failing, "1.1", event_type=EventType.LOCAL_COMPLIANCE))
        topic.ingest(state("999.1", failing))  # poisoned
    for seconds in [1, 10, STALL_AFTER.seconds + 5]:
        with time_machine.travel(T0 + timedelta(seconds=seconds), tick=False):
            topic.ingest(state(f"5.{seconds}", []))  # c1 compliant again, refused
    status = HubTypeStatus.objects.get(hub_id=topic.hub, event_type=kind.value)
    assert status.stalled_since is not None
    assert LocalCompliance.objects.get(hub_id=topic.hub).compliance == "non_compliant"

    with time_machine.travel(T0 + timedelta(seconds=STALL_AFTER.seconds + 10), tick=False):
        topic.ingest(state("5.99", []))
    assert LocalCompliance.objects.get(hub_id=topic.hub).compliance == "compliant"
    row = TypeVersion.objects.get(hub_id=topic.hub, event_type=kind.value)
    assert f"{row.generation}.{row.value}" == "5.99"
    status.refresh_from_db()
    assert status.stalled_since is None and status.refused == 0
    with time_machine.travel(T0 + timedelta(seconds=STALL_AFTER.seconds + 15), tick=False):
        topic.ingest(state("5.100", failing))  # its next states are admitted as usual
    assert LocalCompliance.objects.get(hub_id=topic.hub).compliance == "non_compliant"


def test_a_bundle_applied_whole_restarts_the_count_even_when_a_later_one_of_its_batch_is_refused(
    topic: HubTopic,
) -> None:
    with time_machine.travel(T0, tick=False):
        topic.ingest(topic.update(1, "new", "9.9"))
    for step, seconds in enumerate([1, 10]):
        with time_machine.travel(T0 + timedelta(seconds=seconds), tick=False):
            topic.ingest(topic.update(1, "replayed", f"9.{step}"))
    assert topic.status().refused == 2

    with time_machine.travel(T0 + timedelta(seconds=STALL_AFTER.seconds + 10), tick=False):
        topic.ingest(topic.update(2, "fresh", "9.10"), topic.update(1, "replayed", "9.3"))  # applied, then refused
    status = topic.status()
    assert status.refused == 1 and status.stalled_since is None
    assert status.refused_since == T0 + timedelta(seconds=STALL_AFTER.seconds + 10)
    assert not ResyncRequest.objects.filter(reason=ResyncRequest.Reason.STALLED).exists()


# --- true completion ------------------------------------------------------------------------------------------------


def test_a_request_completes_only_with_a_full_state_that_answers_it(topic: HubTopic) -> None:
    topic.ingest(topic.update(1, "a", "1.1"))
    first = sent(create_request(topic.hub, ["managedcluster"], ResyncRequest.Reason.OPERATOR, "t"), T0)
    second = sent(
        create_request(topic.hub, ["managedcluster"], ResyncRequest.Reason.OPERATOR, "t"), T0 + timedelta(seconds=1)
    )

    # The agent's own periodic resync, stored by Kafka after both requests were sent: it answers nobody.
    topic.ingest(topic.resync({1: "a"}, "1.2", stored=T0 + timedelta(seconds=5)))
    assert not complete(first) and not complete(second)
    topic.ingest(topic.resync({1: "a"}, "1.3", answers=[first.pk]))
    assert complete(first) and not complete(second)
    topic.ingest(topic.resync({1: "a"}, "1.4", answers=[second.pk]))
    assert complete(second)


def test_the_answer_to_a_request_answers_the_requests_sent_before_it_too(topic: HubTopic) -> None:
    topic.ingest(topic.update(1, "a", "1.1"))
    older = [
        sent(
            create_request(topic.hub, ["managedcluster"], ResyncRequest.Reason.OPERATOR, "t"), T0 + timedelta(seconds=s)
        )
        for s in range(3)
    ]
    later = sent(
        create_request(topic.hub, ["managedcluster"], ResyncRequest.Reason.OPERATOR, "t"), T0 + timedelta(seconds=9)
    )
    topic.ingest(topic.resync({1: "a"}, "1.2", answers=[older[-1].pk]))  # the agent lost the first two ids
    assert all(complete(request) for request in older) and not complete(later)


def test_a_backlog_of_full_states_ingested_after_the_send_completes_nothing(topic: HubTopic) -> None:
    """Issue 10 case 6: a lagging consumer ingests full states stored before the request was sent."""
    topic.ingest(topic.update(1, "a", "1.1"))
    request = sent(create_request(topic.hub, None, ResyncRequest.Reason.OPERATOR, "t"), T0)
    before = T0 - timedelta(seconds=5)  # stored by Kafka before the request was sent, ingested after it
    for kind in (CLUSTERS, EventType.LOCAL_POLICY_SPEC):
        assert topic.ingest(topic.resync({}, "2.1", stored=before, event_type=kind)).applied == 2
    assert topic.ingest(topic.record({}, "2.1", stored=before, event_type=EventType.HUB_INFO)).applied == 1
    assert topic.ingest(topic.record([], "2.1", stored=before, event_type=EventType.LOCAL_COMPLIANCE)).applied == 1
    assert not complete(request)
    assert ResyncTarget.objects.get(request=request).answered_types == []


def test_a_request_for_several_types_completes_when_every_type_answered(topic: HubTopic) -> None:
    topic.ingest(topic.update(1, "a", "1.1"))
    request = sent(
        create_request(topic.hub, ["managedcluster", "policy.localspec"], ResyncRequest.Reason.OPERATOR, "t"), T0
    )
    topic.ingest(topic.resync({1: "a"}, "1.2", answers=[request.pk]))
    assert not complete(request)
    assert ResyncTarget.objects.get(request=request).answered_types == [CLUSTERS.value]
    topic.ingest(topic.resync({}, "1.1", answers=[request.pk], event_type=EventType.LOCAL_POLICY_SPEC))
    assert complete(request)


def test_a_broadcast_while_no_hub_is_active_is_complete_when_recorded() -> None:
    request = create_request(None, None, ResyncRequest.Reason.OPERATOR, "t")
    assert request.completed_at is not None


# --- hubs the manager lost track of ---------------------------------------------------------------------------------


def test_a_hub_first_seen_gets_a_full_resync_request(topic: HubTopic) -> None:
    topic.ingest(topic.update(1, "a", "1.1"))
    (request,) = ResyncRequest.objects.filter(targets__hub_id=topic.hub)
    assert request.reason == ResyncRequest.Reason.FIRST_SEEN
    assert request.types == [t.value for t in RESYNC_TYPES]
    topic.ingest(topic.update(1, "b", "1.2"))
    assert ResyncRequest.objects.filter(targets__hub_id=topic.hub).count() == 1  # known now: no more


def test_a_hub_deleted_in_the_admin_is_asked_for_everything_when_it_speaks_again(topic: HubTopic) -> None:
    topic.ingest(topic.resync({i: "a" for i in range(50)}, "1.1"))
    Hub.objects.filter(name=topic.hub).delete()  # the admin's Delete: its rows go with it
    topic.ingest(topic.update(7, "b", "1.2"))

    assert topic.labels() == {7: "b"}
    request = ResyncRequest.objects.filter(targets__hub_id=topic.hub).get()
    assert request.reason == ResyncRequest.Reason.FIRST_SEEN and request.sent_at is None
    sent(request, timezone.now() - timedelta(seconds=1))
    topic.ingest(topic.resync({i: "a" for i in range(50)}, "1.3", answers=[request.pk]))
    assert len(topic.labels()) == 50
    assert ResyncTarget.objects.get(request=request).answered_types == [CLUSTERS.value]


# --- bundles ------------------------------------------------------------------------------------------------------


def test_a_delete_and_a_re_create_of_one_object_in_one_bundle_leave_it_live(topic: HubTopic) -> None:
    topic.ingest(topic.update(1, "old", "1.1"))
    topic.ingest(topic.record({"update": [cluster(1, "new")], "delete": [{"id": claim(1), "name": "c1"}]}, "1.2"))
    assert topic.labels() == {1: "new"}


def test_a_resync_abandoned_midway_leaves_a_truncated_resync_dead_letter(topic: HubTopic) -> None:
    first = topic.resync({i: "a" for i in range(40)}, "1.1")
    frames = [
        topic.record(f.payload, "1.1", extensions=f.extensions())
        for f in frame_resync(
            [(ObjectMetadata(claim(i), f"c{i}"), dumps(cluster(i, "a"))) for i in range(200)], limit=4096
        )
    ]
    assert len(frames) > 3
    topic.ingest(first, frames[:2])  # a resync begins, then the agent gives it up and starts another
    topic.ingest(topic.resync({1: "b"}, "1.2"))

    (letter,) = DeadLetter.objects.filter(hub_name=topic.hub)
    assert letter.reason.startswith("truncated resync: resync") and "abandoned after 2 frames" in letter.reason
    assert topic.labels() == {1: "b"}


# --- an inactive hub ----------------------------------------------------------------------------------------------


def test_an_inactive_hubs_backlog_does_not_revive_its_rows(topic: HubTopic) -> None:
    topic.ingest(topic.update(1, "a", "1.1"))
    now = timezone.now()
    Hub.objects.filter(name=topic.hub).update(state=Hub.State.INACTIVE, last_heartbeat=now - timedelta(hours=1))
    ManagedCluster.objects.filter(hub_id=topic.hub).update(deleted_at=now)

    stats = topic.ingest(topic.update(1, "backlog", "1.2"), topic.update(2, "backlog", "1.3"))
    assert stats.inactive == 2 and topic.labels() == {}
    assert Hub.objects.get(name=topic.hub).state == Hub.State.INACTIVE

    heartbeat = topic.record(b"[]", "1.0", stored=timezone.now(), event_type=EventType.HEARTBEAT)
    stats = topic.ingest(topic.update(3, "same batch", "1.4"), heartbeat)
    assert stats.inactive == 1 and topic.labels() == {}  # read before the hub was back: its resync brings it
    assert Hub.objects.get(name=topic.hub).state == Hub.State.ACTIVE
    assert ResyncRequest.objects.filter(targets__hub_id=topic.hub, reason="reactivation").count() == 1
