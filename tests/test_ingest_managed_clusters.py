"""The manager's ingestion of managed clusters: framed resyncs, sweeps, deltas, positions (real PostgreSQL)."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from agent_tasks.simulate import make_cluster
from agent_tasks.types import tweak_cluster
from globalhub.manager.ingest import bulk
from globalhub.manager.ingest.pipeline import ingest_batch
from globalhub.manager.ingest.records import Record
from globalhub.manager.models import ConsumedPosition, DeadLetter, Hub, ManagedCluster, ResyncProgress
from globalhub.protocol.bundles import ObjectMetadata, dumps, frame_resync
from globalhub.protocol.events import EventType
from globalhub.protocol.objects import cluster_claim_id
from tests.helpers import frame_message, record_of, status_message

pytestmark = pytest.mark.django_db

PREFIX = "gh-status."
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def clusters(hub: str, count: int, seed: int = 1) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [tweak_cluster(make_cluster(hub, i, rng), hub) for i in range(count)]


def resync_records(
    hub: str, objects: list[dict[str, Any]], start_offset: int = 0, version: str = "1.1", limit: int = 800 * 1024
) -> list[Record]:
    pairs = [(ObjectMetadata(cluster_claim_id(o) or "", o["metadata"]["name"]), dumps(o)) for o in objects]
    frames = list(frame_resync(pairs, limit=limit))
    topic = PREFIX + hub
    return [record_of(frame_message(hub, f, version), topic, start_offset + i) for i, f in enumerate(frames)]


def live_ids(hub: str) -> set[str]:
    return {
        str(i)
        for i in ManagedCluster.objects.filter(hub_id=hub, deleted_at__isnull=True).values_list("cluster_id", flat=True)
    }


def test_a_complete_resync_creates_every_cluster_with_its_payload() -> None:
    objects = clusters("hub-a", 50)
    ingest_batch(resync_records("hub-a", objects), topic_prefix=PREFIX)

    assert Hub.objects.filter(name="hub-a").exists()
    rows = {str(r.cluster_id): r for r in ManagedCluster.objects.filter(hub_id="hub-a")}
    assert set(rows) == {cluster_claim_id(o) for o in objects}
    for obj in objects:
        row = rows[cluster_claim_id(obj) or ""]
        assert row.payload == obj
        assert row.cluster_name == obj["metadata"]["name"]
        assert row.deleted_at is None
    progress = ResyncProgress.objects.get(hub_id="hub-a", event_type=EventType.MANAGED_CLUSTER)
    assert progress.outcome == ResyncProgress.Outcome.COMPLETED
    assert progress.listed == 50


def test_a_later_resync_soft_deletes_exactly_the_clusters_it_does_not_list() -> None:
    objects = clusters("hub-b", 40)
    first = resync_records("hub-b", objects)
    ingest_batch(first, topic_prefix=PREFIX)
    kept = objects[:30]
    ingest_batch(resync_records("hub-b", kept, start_offset=len(first), version="2.1"), topic_prefix=PREFIX)

    assert live_ids("hub-b") == {cluster_claim_id(o) for o in kept}
    deleted = {
        str(i)
        for i in ManagedCluster.objects.filter(hub_id="hub-b", deleted_at__isnull=False).values_list(
            "cluster_id", flat=True
        )
    }
    assert deleted == {cluster_claim_id(o) for o in objects[30:]}


def test_a_resync_spanning_many_frames_is_applied_whole() -> None:
    objects = clusters("hub-c", 300)
    records = resync_records("hub-c", objects, limit=40 * 1024)
    assert len(records) > 10
    ingest_batch(records, topic_prefix=PREFIX)
    assert live_ids("hub-c") == {cluster_claim_id(o) for o in objects}


def test_a_resync_with_a_missing_frame_deletes_nothing_and_is_dead_lettered() -> None:
    objects = clusters("hub-d", 60)
    ingest_batch(resync_records("hub-d", objects), topic_prefix=PREFIX)
    second = resync_records("hub-d", objects[:10], start_offset=100, version="2.1", limit=8 * 1024)
    assert len(second) >= 4
    del second[2]  # a chunk frame lost on the way
    ingest_batch(second, topic_prefix=PREFIX)

    assert live_ids("hub-d") == {cluster_claim_id(o) for o in objects}
    progress = ResyncProgress.objects.get(hub_id="hub-d")
    assert progress.outcome == ResyncProgress.Outcome.INCOMPLETE
    reasons = list(DeadLetter.objects.filter(hub_name="hub-d").values_list("reason", flat=True))
    assert reasons and all(r.startswith("truncated resync") for r in reasons)


def test_a_resync_without_its_begin_frame_deletes_nothing() -> None:
    objects = clusters("hub-e", 20)
    ingest_batch(resync_records("hub-e", objects), topic_prefix=PREFIX)
    second = resync_records("hub-e", objects[:5], start_offset=10, version="2.1")
    ingest_batch(second[1:], topic_prefix=PREFIX)
    assert live_ids("hub-e") == {cluster_claim_id(o) for o in objects}


def test_an_empty_resync_soft_deletes_every_cluster_of_the_hub() -> None:
    ingest_batch(resync_records("hub-f", clusters("hub-f", 10)), topic_prefix=PREFIX)
    ingest_batch(resync_records("hub-g", clusters("hub-g", 5, seed=2)), topic_prefix=PREFIX)
    ingest_batch(resync_records("hub-f", [], start_offset=10, version="2.1"), topic_prefix=PREFIX)

    assert live_ids("hub-f") == set()
    assert len(live_ids("hub-g")) == 5  # another hub's rows are untouched


def test_an_upsert_brings_a_soft_deleted_cluster_back() -> None:
    objects = clusters("hub-h", 3)
    ingest_batch(resync_records("hub-h", objects), topic_prefix=PREFIX)
    ingest_batch(resync_records("hub-h", [], start_offset=10, version="2.1"), topic_prefix=PREFIX)
    assert live_ids("hub-h") == set()
    ingest_batch(resync_records("hub-h", objects, start_offset=20, version="3.1"), topic_prefix=PREFIX)
    assert live_ids("hub-h") == {cluster_claim_id(o) for o in objects}


def test_delta_updates_and_deletes_apply_in_order() -> None:
    objects = clusters("hub-i", 5)
    topic = PREFIX + "hub-i"
    ingest_batch(resync_records("hub-i", objects), topic_prefix=PREFIX)
    changed = dict(objects[0], spec={"hubAcceptsClient": False})
    delete = [{"id": cluster_claim_id(objects[1]), "name": objects[1]["metadata"]["name"]}]
    records = [
        record_of(status_message("hub-i", EventType.MANAGED_CLUSTER, {"update": [changed]}, "2.2"), topic, 10),
        record_of(status_message("hub-i", EventType.MANAGED_CLUSTER, {"delete": delete}, "3.3"), topic, 11),
    ]
    ingest_batch(records, topic_prefix=PREFIX)

    row = ManagedCluster.objects.get(hub_id="hub-i", cluster_id=cluster_claim_id(objects[0]) or "")
    assert row.payload["spec"] == {"hubAcceptsClient": False}
    assert live_ids("hub-i") == {cluster_claim_id(o) for o in objects} - {cluster_claim_id(objects[1])}


def test_an_upstream_unframed_resync_metadata_bundle_sweeps_unlisted_clusters() -> None:
    objects = clusters("hub-j", 6)
    topic = PREFIX + "hub-j"
    ingest_batch(resync_records("hub-j", objects), topic_prefix=PREFIX)
    keep = objects[:4]
    records = [
        record_of(status_message("hub-j", EventType.MANAGED_CLUSTER, {"resync": keep}, "2.0"), topic, 10),
        record_of(
            status_message(
                "hub-j",
                EventType.MANAGED_CLUSTER,
                {"resync_metadata": [{"id": cluster_claim_id(o), "name": o["metadata"]["name"]} for o in keep]},
                "2.0",
            ),
            topic,
            11,
        ),
    ]
    ingest_batch(records, topic_prefix=PREFIX)
    assert live_ids("hub-j") == {cluster_claim_id(o) for o in keep}


def test_an_older_generation_does_not_move_rows_backwards() -> None:
    objects = clusters("hub-k", 1)
    topic = PREFIX + "hub-k"
    newer = dict(objects[0], spec={"v": "new"})
    older = dict(objects[0], spec={"v": "old"})
    records = [
        record_of(status_message("hub-k", EventType.MANAGED_CLUSTER, {"update": [newer]}, "5.9"), topic, 0),
        record_of(status_message("hub-k", EventType.MANAGED_CLUSTER, {"update": [older]}, "4.10"), topic, 1),
    ]
    stats = ingest_batch(records, topic_prefix=PREFIX)
    assert stats.superseded == 1
    assert ManagedCluster.objects.get(hub_id="hub-k").payload["spec"] == {"v": "new"}


def test_generation_zero_means_the_agent_restarted_and_is_admitted() -> None:
    objects = clusters("hub-l", 1)
    topic = PREFIX + "hub-l"
    records = [
        record_of(status_message("hub-l", EventType.MANAGED_CLUSTER, {"update": [objects[0]]}, "9.9"), topic, 0),
        record_of(
            status_message("hub-l", EventType.MANAGED_CLUSTER, {"update": [dict(objects[0], spec={"r": 1})]}, "0.1"),
            topic,
            1,
        ),
    ]
    ingest_batch(records, topic_prefix=PREFIX)
    assert ManagedCluster.objects.get(hub_id="hub-l").payload["spec"] == {"r": 1}


def test_positions_are_stored_after_the_last_record_and_redelivery_has_no_effect() -> None:
    objects = clusters("hub-m", 10)
    records = resync_records("hub-m", objects, start_offset=7)
    ingest_batch(records, topic_prefix=PREFIX)
    position = ConsumedPosition.objects.get(topic=PREFIX + "hub-m", partition=0)
    assert position.next_offset == 7 + len(records)

    ManagedCluster.objects.filter(hub_id="hub-m").update(payload={"tampered": True})
    stats = ingest_batch(records, topic_prefix=PREFIX)  # the same messages again, as after a crash
    assert stats.already_ingested == len(records)
    assert stats.applied == 0
    payloads = list(ManagedCluster.objects.filter(hub_id="hub-m").values_list("payload", flat=True))
    assert payloads == [{"tampered": True}] * 10


@pytest.mark.parametrize(
    ("name", "build", "reason"),
    [
        ("not a cloudevent", lambda hub: (b"k", b'{"hello": 1}', ()), "not a CloudEvent"),
        (
            "no extversion",
            lambda hub: _parts(status_message(hub, EventType.MANAGED_CLUSTER, {"update": []}), drop="ce_extversion"),
            "missing extversion",
        ),
        (
            "malformed extversion",
            lambda hub: _parts(status_message(hub, EventType.MANAGED_CLUSTER, {"update": []}, version="1.x")),
            "malformed extversion",
        ),
        (
            "payload not json",
            lambda hub: _parts(status_message(hub, EventType.MANAGED_CLUSTER, b'{"update": [')),
            "payload is not valid JSON",
        ),
        (
            "payload nested too deeply",
            lambda hub: _parts(status_message(hub, EventType.MANAGED_CLUSTER, b"[" * 50_000 + b"]" * 50_000)),
            "payload is not valid JSON: JSON nested too deeply",
        ),
        (
            "an object nested past what JSON can write again",
            lambda hub: _parts(status_message(hub, EventType.MANAGED_CLUSTER, _deep_cluster_bundle(hub, 300))),
            "an object cannot be stored: JSON nested deeper than 255 levels",
        ),
        (
            "an object nested past the standard library's stack",
            lambda hub: _parts(status_message(hub, EventType.MANAGED_CLUSTER, _deep_cluster_bundle(hub, 1000))),
            "an object cannot be stored",
        ),
        (
            "text that is not unicode",
            lambda hub: _parts(status_message(hub, EventType.MANAGED_CLUSTER, b'{"update": [{"a": "\\udc00"}]}')),
            "not valid Unicode",
        ),
        (
            "no extversion, and a NUL in another header (kept in the dead letter's headers)",
            lambda hub: _parts(
                status_message(hub, EventType.MANAGED_CLUSTER, {"update": []}),
                drop="ce_extversion",
                set_={"ce_id": "a\x00b"},
            ),
            "missing extversion",
        ),
        (
            "an unknown type, long and with NUL characters",
            lambda hub: _parts(status_message(hub, EventType.MANAGED_CLUSTER, {}), type_="t\x00" * 200),
            "unknown event type 't\\x00t\\x00",
        ),
        (
            "an extversion with more digits than Python parses",
            lambda hub: _parts(status_message(hub, EventType.MANAGED_CLUSTER, {}, version="1." + "9" * 5000)),
            "overflows an unsigned 64-bit integer",
        ),
        (
            "an extversion of a thousand four-byte characters (the reason's index entry stays small)",
            lambda hub: _parts(status_message(hub, EventType.MANAGED_CLUSTER, {}, version="\U0001f600" * 1000)),
            "malformed extversion",
        ),
        (
            "source of another hub",
            lambda hub: _parts(status_message("someone-else", EventType.MANAGED_CLUSTER, {"update": []})),
            "a hub may only report about itself",
        ),
        (
            "unknown type",
            lambda hub: _parts(status_message(hub, EventType.MANAGED_CLUSTER, {}), type_="io.example.nope"),
            "unknown event type",
        ),
        (
            "wrong bundle shape",
            lambda hub: _parts(status_message(hub, EventType.MANAGED_CLUSTER, [1, 2, 3])),
            "bad bundle shape",
        ),
    ],
)
def test_bad_input_becomes_a_dead_letter_and_the_partition_goes_on(name: str, build: Any, reason: str) -> None:
    hub = f"hub-bad-{uuid.uuid4().hex[:6]}"
    topic = PREFIX + hub
    key, value, headers = build(hub)
    bad = Record(topic=topic, partition=0, offset=0, key=key, value=value, headers=tuple(headers))
    good = resync_records(hub, clusters(hub, 3), start_offset=1)
    stats = ingest_batch([bad, *good], topic_prefix=PREFIX)

    letter = DeadLetter.objects.get(topic=topic)
    assert reason in letter.reason, letter.reason
    assert (letter.partition, letter.offset) == (0, 0)
    assert letter.value is not None and bytes(letter.value) == value
    assert stats.dead_letters == 1
    assert len(live_ids(hub)) == 3
    assert ConsumedPosition.objects.get(topic=topic).next_offset == 1 + len(good)


def _deep_cluster_bundle(hub: str, depth: int) -> bytes:
    """An update with one real cluster (it has an id) carrying a field nested ``depth`` levels deep."""
    (cluster,) = clusters(hub, 1, seed=7)
    deep = b'{"a":' * depth + b"1" + b"}" * depth
    return b'{"update":[' + dumps(cluster)[:-1] + b',"deep":' + deep + b"}]}"


def _parts(
    message: Any, drop: str | None = None, type_: str | None = None, set_: dict[str, str] | None = None
) -> tuple[bytes, bytes, list[Any]]:
    headers = [(k, v) for k, v in message.headers if k != drop]
    changes = dict(set_ or {})
    if type_ is not None:
        changes["ce_type"] = type_
    headers = [(k, changes[k].encode() if k in changes else v) for k, v in headers]
    return message.key, message.value, headers


def test_data_the_database_refuses_becomes_a_dead_letter_and_the_rest_goes_on() -> None:
    objects = clusters("hub-n", 2)
    topic = PREFIX + "hub-n"
    too_long = dict(objects[0], metadata={**objects[0]["metadata"], "name": "x" * 300})  # over varchar(253)
    records = [
        record_of(status_message("hub-n", EventType.MANAGED_CLUSTER, {"update": [too_long]}, "1.1"), topic, 0),
        record_of(status_message("hub-n", EventType.MANAGED_CLUSTER, {"update": [objects[1]]}, "2.2"), topic, 1),
    ]
    stats = ingest_batch(records, topic_prefix=PREFIX)

    (letter,) = DeadLetter.objects.filter(topic=topic)
    assert letter.offset == 0 and letter.reason.startswith("database rejected the data")
    assert stats.applied == 1
    assert live_ids("hub-n") == {cluster_claim_id(objects[1])}


def test_one_id_written_in_two_cases_is_one_cluster() -> None:
    (obj,) = clusters("hub-o", 1)
    claim = cluster_claim_id(obj) or ""
    shouted = {**obj, "status": {"clusterClaims": [{"name": "id.k8s.io", "value": claim.upper()}]}}
    topic = PREFIX + "hub-o"
    message = status_message("hub-o", EventType.MANAGED_CLUSTER, {"update": [obj, shouted]}, "1.2")
    stats = ingest_batch([record_of(message, topic, 0)], topic_prefix=PREFIX)
    assert stats.dead_letters == 0
    assert live_ids("hub-o") == {claim}


def _updated_at(hub: str) -> dict[str, datetime]:
    return {str(i): at for i, at in ManagedCluster.objects.filter(hub_id=hub).values_list("cluster_id", "updated_at")}


def test_a_resync_rewrites_only_the_clusters_that_changed_and_still_sweeps() -> None:
    objects = clusters("hub-p", 20)
    first = resync_records("hub-p", objects)
    ingest_batch(first, topic_prefix=PREFIX)
    before = _updated_at("hub-p")
    changed = dict(objects[3], metadata={**objects[3]["metadata"], "labels": {"changed": "yes"}})
    again = [*objects[:3], changed, *objects[4:15]]  # 15 listed: 5 to sweep, 1 changed, 14 unchanged
    ingest_batch(resync_records("hub-p", again, start_offset=len(first), version="2.1"), topic_prefix=PREFIX)

    after = _updated_at("hub-p")
    ids = [cluster_claim_id(o) or "" for o in objects]
    assert live_ids("hub-p") == set(ids[:15])
    assert ManagedCluster.objects.get(hub_id="hub-p", cluster_id=ids[3]).payload == changed
    assert after[ids[3]] > before[ids[3]]
    for object_id in ids[:3] + ids[4:15]:
        assert after[object_id] == before[object_id]  # same content: not rewritten, only marked as listed
    progress = ResyncProgress.objects.get(hub_id="hub-p", event_type=EventType.MANAGED_CLUSTER)
    assert progress.outcome == ResyncProgress.Outcome.COMPLETED and progress.deleted_count == 5


def test_a_cluster_written_outside_the_ingest_is_rewritten_by_the_next_report() -> None:
    (obj,) = clusters("hub-q", 1)
    claim = cluster_claim_id(obj) or ""
    Hub.objects.create(name="hub-q")
    ManagedCluster.objects.create(
        hub_id="hub-q", cluster_id=claim, cluster_name="old", payload={}, created_at=T0, updated_at=T0
    )
    ingest_batch(resync_records("hub-q", [obj]), topic_prefix=PREFIX)
    row = ManagedCluster.objects.get(hub_id="hub-q", cluster_id=claim)
    assert row.payload == obj and row.cluster_name == obj["metadata"]["name"] and row.payload_digest


def test_a_cluster_inserted_between_the_lookup_and_the_copy_is_upserted(monkeypatch: pytest.MonkeyPatch) -> None:
    objects = clusters("hub-r", 3)
    ingest_batch(resync_records("hub-r", objects[:1]), topic_prefix=PREFIX)
    monkeypatch.setattr(bulk, "_known_rows", lambda *args: {})  # as if the first row was not there yet
    stats = ingest_batch(resync_records("hub-r", objects, start_offset=10, version="2.1"), topic_prefix=PREFIX)

    assert stats.dead_letters == 0
    assert live_ids("hub-r") == {cluster_claim_id(o) for o in objects}


@pytest.mark.parametrize("known", [False, True], ids=["new", "known"])
def test_a_payload_postgresql_cannot_store_is_a_dead_letter_not_a_stuck_partition(known: bool) -> None:
    objects = clusters("hub-s", 2)
    topic = PREFIX + "hub-s"
    offset = 0
    if known:
        ingest_batch(resync_records("hub-s", objects[:1]), topic_prefix=PREFIX)
        offset = 10
    nul = dict(objects[0], metadata={**objects[0]["metadata"], "labels": {"nul": "a\u0000b"}})  # jsonb refuses \u0000
    records = [
        record_of(status_message("hub-s", EventType.MANAGED_CLUSTER, {"update": [nul]}, "5.1"), topic, offset),
        record_of(
            status_message("hub-s", EventType.MANAGED_CLUSTER, {"update": [objects[1]]}, "5.2"), topic, offset + 1
        ),
    ]
    stats = ingest_batch(records, topic_prefix=PREFIX)

    (letter,) = DeadLetter.objects.filter(topic=topic)
    assert letter.offset == offset and letter.reason.startswith("database rejected the data")
    assert stats.applied == 1
    assert cluster_claim_id(objects[1]) in live_ids("hub-s")
    assert ConsumedPosition.objects.get(topic=topic).next_offset == offset + 2


def test_a_new_hub_s_cluster_written_twice_in_one_batch_ends_with_the_second_content() -> None:
    first, other = clusters("hub-t", 2)
    second = dict(first, metadata={**first["metadata"], "labels": {"round": "2"}})
    bad = dict(other, metadata={**other["metadata"], "labels": {"nul": "\u0000"}})
    topic = PREFIX + "hub-t"
    records = [
        # rolled back as a whole (the database refuses the second object): the first is not written either
        record_of(status_message("hub-t", EventType.MANAGED_CLUSTER, {"update": [first, bad]}, "1.1"), topic, 0),
        record_of(status_message("hub-t", EventType.MANAGED_CLUSTER, {"update": [first]}, "1.2"), topic, 1),
        record_of(status_message("hub-t", EventType.MANAGED_CLUSTER, {"update": [second]}, "1.3"), topic, 2),
    ]
    stats = ingest_batch(records, topic_prefix=PREFIX)

    assert stats.dead_letters == 1 and stats.applied == 2
    claim = cluster_claim_id(first) or ""
    assert live_ids("hub-t") == {claim}
    assert ManagedCluster.objects.get(hub_id="hub-t", cluster_id=claim).payload == second


def test_a_cluster_with_text_that_is_not_unicode_is_a_dead_letter() -> None:
    (obj,) = clusters("hub-u", 1)
    topic = PREFIX + "hub-u"
    raw = dumps({"update": [obj]}).replace(b'"labels":{', b'"labels":{"bad":"\\ud800",', 1)  # a lone surrogate
    assert b"\\ud800" in raw
    records = [record_of(status_message("hub-u", EventType.MANAGED_CLUSTER, raw, "1.1"), topic, 0)]
    stats = ingest_batch(records, topic_prefix=PREFIX)

    (letter,) = DeadLetter.objects.filter(topic=topic)
    assert "Unicode" in letter.reason
    assert stats.dead_letters == 1 and live_ids("hub-u") == set()


@pytest.mark.parametrize("known", [False, True], ids=["new", "changed"])
def test_text_that_copy_must_escape_arrives_exactly(known: bool) -> None:
    (obj,) = clusters("hub-v", 1)
    if known:
        ingest_batch(resync_records("hub-v", [obj]), topic_prefix=PREFIX)
    tricky = 'tab\there, new\nline, cr\r, back\\slash, "quoted", \\N, \\x00, ünï'
    odd = dict(obj, metadata={**obj["metadata"], "name": "c\t\\N\n1", "labels": {"k": tricky}})
    topic = PREFIX + "hub-v"
    message = status_message("hub-v", EventType.MANAGED_CLUSTER, {"update": [odd]}, "9.1")
    stats = ingest_batch([record_of(message, topic, 50)], topic_prefix=PREFIX)

    assert stats.dead_letters == 0
    row = ManagedCluster.objects.get(hub_id="hub-v", cluster_id=cluster_claim_id(obj) or "")
    assert row.payload == odd and row.cluster_name == "c\t\\N\n1"
    assert row.payload_digest is not None and bytes(row.payload_digest) == bulk.payload_digest(dumps(odd))


def test_a_frame_the_database_refuses_leaves_its_resync_incomplete_even_within_one_batch() -> None:
    objects = clusters("hub-w", 60)
    first = resync_records("hub-w", objects)
    ingest_batch(first, topic_prefix=PREFIX)
    kept = objects[:50]
    poisoned = dict(kept[20], metadata={**kept[20]["metadata"], "labels": {"nul": "\u0000"}})
    second = resync_records(
        "hub-w", [*kept[:20], poisoned, *kept[21:]], start_offset=100, version="2.1", limit=8 * 1024
    )
    assert len(second) >= 6
    stats = ingest_batch(second, topic_prefix=PREFIX)  # one batch: the frames share what the batch remembers

    reasons = sorted(DeadLetter.objects.filter(topic=PREFIX + "hub-w").values_list("reason", flat=True))
    assert reasons[0].startswith("database rejected the data")
    assert reasons[1:] and all(r.startswith("truncated resync: frames 10..10 missing") for r in reasons[1:])
    assert stats.dead_letters == len(reasons)
    progress = ResyncProgress.objects.get(hub_id="hub-w", event_type=EventType.MANAGED_CLUSTER)
    assert progress.outcome == ResyncProgress.Outcome.INCOMPLETE
    assert live_ids("hub-w") == {cluster_claim_id(o) for o in objects}  # an incomplete resync deletes nothing


def test_an_unexpected_error_preparing_a_bundle_is_a_dead_letter_not_a_stuck_partition(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Preparing needs no database, so an error there belongs to the record: retrying could not help."""
    from globalhub.manager.ingest import hybrid

    real_rows = hybrid._rows
    objects = clusters("hub-x", 3)
    second = cluster_claim_id(objects[1])

    def rows_failing_on_the_second(kind: Any, bundle_objects: list[dict[str, Any]]) -> Any:
        if any(cluster_claim_id(o) == second for o in bundle_objects):
            raise RuntimeError("a bug")
        return real_rows(kind, bundle_objects)

    monkeypatch.setattr(hybrid, "_rows", rows_failing_on_the_second)
    topic = PREFIX + "hub-x"
    records = [
        record_of(status_message("hub-x", EventType.MANAGED_CLUSTER, {"update": [o]}, f"1.{i}"), topic, i)
        for i, o in enumerate(objects)
    ]
    stats = ingest_batch(records, topic_prefix=PREFIX)

    (letter,) = DeadLetter.objects.filter(topic=topic)
    assert letter.offset == 1 and letter.reason == "the bundle could not be read: RuntimeError: a bug"
    assert stats.applied == 2
    assert live_ids("hub-x") == {cluster_claim_id(objects[0]), cluster_claim_id(objects[2])}


def _chunked_first_resync(hub: str, objects: list[dict[str, Any]], poisoned_index: int | None = None) -> list[Record]:
    """A hub's first resync in many frames (so its chunks go through one streamed COPY), one object poisoned."""
    if poisoned_index is not None:
        bad = objects[poisoned_index]
        objects = list(objects)
        objects[poisoned_index] = dict(bad, metadata={**bad["metadata"], "labels": {"nul": "\u0000"}})
    records = resync_records(hub, objects, limit=8 * 1024)
    assert len(records) > 6
    return records


def test_a_first_resync_in_many_chunks_is_written_whole_with_its_marks_and_progress() -> None:
    objects = clusters("hub-y", 80)
    records = _chunked_first_resync("hub-y", objects)
    stats = ingest_batch(records, topic_prefix=PREFIX)

    assert stats.applied == len(records) and stats.dead_letters == 0
    rows = {str(r.cluster_id): r for r in ManagedCluster.objects.filter(hub_id="hub-y")}
    assert set(rows) == {cluster_claim_id(o) for o in objects}
    progress = ResyncProgress.objects.get(hub_id="hub-y", event_type=EventType.MANAGED_CLUSTER)
    assert progress.outcome == ResyncProgress.Outcome.COMPLETED and progress.next_seq == len(records)
    assert {r.resync_mark for r in rows.values()} == {progress.resync_id}
    for obj in objects:
        assert rows[cluster_claim_id(obj) or ""].payload == obj


def test_a_poisoned_chunk_of_a_first_resync_is_the_only_dead_letter_and_the_resync_stays_incomplete() -> None:
    objects = clusters("hub-z", 80)
    records = _chunked_first_resync("hub-z", objects, poisoned_index=40)
    stats = ingest_batch(records, topic_prefix=PREFIX)

    reasons = sorted(DeadLetter.objects.filter(topic=PREFIX + "hub-z").values_list("reason", flat=True))
    assert reasons[0].startswith("database rejected the data")
    assert all(r.startswith("truncated resync") for r in reasons[1:])
    assert stats.dead_letters == len(reasons)
    progress = ResyncProgress.objects.get(hub_id="hub-z", event_type=EventType.MANAGED_CLUSTER)
    assert progress.outcome == ResyncProgress.Outcome.INCOMPLETE
    ids = [cluster_claim_id(o) or "" for o in objects]
    poisoned_frame = next(r.value or b"" for r in records[:-1] if ids[40].encode() in (r.value or b""))
    in_that_frame = {i for i in ids if i.encode() in poisoned_frame}
    assert live_ids("hub-z") == set(ids) - in_that_frame  # every other frame's objects are in


def test_a_heartbeat_between_chunks_ends_one_run_and_the_next_chunks_start_another() -> None:
    objects = clusters("hub-aa", 80)
    records = _chunked_first_resync("hub-aa", objects)
    topic = PREFIX + "hub-aa"
    middle = len(records) // 2
    beat = record_of(status_message("hub-aa", EventType.HEARTBEAT, [], "1.1"), topic, 999)
    shuffled = [*records[:middle], beat, *records[middle:]]
    renumbered = [Record(r.topic, r.partition, i, r.key, r.value, r.headers) for i, r in enumerate(shuffled)]
    stats = ingest_batch(renumbered, topic_prefix=PREFIX)

    assert stats.dead_letters == 0
    assert live_ids("hub-aa") == {cluster_claim_id(o) for o in objects}
    progress = ResyncProgress.objects.get(hub_id="hub-aa", event_type=EventType.MANAGED_CLUSTER)
    assert progress.outcome == ResyncProgress.Outcome.COMPLETED


def test_a_first_resync_larger_than_one_run_goes_through_several(monkeypatch: pytest.MonkeyPatch) -> None:
    from globalhub.manager.ingest import pipeline

    monkeypatch.setattr(pipeline, "RUN_MAX_BYTES", 20 * 1024)  # a run ends after a few 8 KiB frames
    runs = []
    real_init = pipeline._ChunkRun.__init__

    def counted_init(self: Any, *args: Any) -> None:
        runs.append(self)
        real_init(self, *args)

    monkeypatch.setattr(pipeline._ChunkRun, "__init__", counted_init)
    objects = clusters("hub-ab", 80)
    records = _chunked_first_resync("hub-ab", objects)
    stats = ingest_batch(records, topic_prefix=PREFIX)

    assert len(runs) > 2
    assert stats.applied == len(records) and stats.dead_letters == 0
    assert live_ids("hub-ab") == {cluster_claim_id(o) for o in objects}
    progress = ResyncProgress.objects.get(hub_id="hub-ab", event_type=EventType.MANAGED_CLUSTER)
    assert progress.outcome == ResyncProgress.Outcome.COMPLETED and progress.next_seq == len(records)
