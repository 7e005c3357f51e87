"""Shared-topic mode: one status topic for many hubs (upstream's bring-your-own-Kafka default ``gh-status``), each
record speaking for the hub its source names; read besides the per-hub topics (real PostgreSQL)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured

from globalhub.manager import lifecycle
from globalhub.manager.conf import shared_status_topic
from globalhub.manager.ingest.pipeline import ingest_batch
from globalhub.manager.ingest.records import Record
from globalhub.manager.models import ConsumedPosition, DeadLetter, Hub, LocalPolicy, ResyncRequest
from globalhub.protocol.events import EventType
from tests.helpers import record_of, status_message
from tests.test_hub_lifecycle import T0, TIMING, give_data, make_hub

pytestmark = pytest.mark.django_db

PREFIX = "gh-status."
SHARED = "gh-status"
SHARED_TIMING = replace(TIMING, shared_topic=SHARED)


def policy(name: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "default", "uid": str(uuid.uuid4())}, "spec": {}}


class SharedTopic:
    def __init__(self) -> None:
        self.offset = 0

    def record(self, source: str, payload: Any, version: str = "1.1", topic: str = SHARED) -> Record:
        message = status_message(source, EventType.LOCAL_POLICY_SPEC, {"update": payload}, version)
        record = record_of(message, topic, self.offset)
        self.offset += 1
        return record


def hub_name() -> str:
    return f"hub-{uuid.uuid4().hex[:8]}"


def test_records_of_the_shared_topic_speak_for_the_hub_their_source_names() -> None:
    topic, first, second = SharedTopic(), hub_name(), hub_name()
    records = [topic.record(first, [policy("p1")]), topic.record(second, [policy("p2"), policy("p3")])]

    stats = ingest_batch(records, topic_prefix=PREFIX, shared_topic=SHARED)

    assert (stats.applied, stats.dead_letters) == (2, 0)
    assert LocalPolicy.objects.filter(hub_id=first).count() == 1
    assert LocalPolicy.objects.filter(hub_id=second).count() == 2
    hubs = dict(Hub.objects.filter(name__in=[first, second]).values_list("name", "status_topic"))
    assert hubs == {first: SHARED, second: SHARED}  # the probe reads that topic's ends before judging them
    assert ResyncRequest.objects.filter(targets__hub_id=first, reason="first_seen").exists()


def test_without_the_setting_the_shared_topic_is_not_a_hub_topic() -> None:
    stats = ingest_batch([SharedTopic().record(hub_name(), [policy("p")])], topic_prefix=PREFIX)
    assert stats.dead_letters == 1
    assert "is not a hub status topic" in DeadLetter.objects.get(topic=SHARED).reason


@pytest.mark.parametrize("source", ["hub/with/slash", "a hub with spaces", "x" * 300])
def test_a_shared_topic_record_whose_source_is_no_hub_name_is_a_dead_letter(source: str) -> None:
    stats = ingest_batch([SharedTopic().record(source, [policy("p")])], topic_prefix=PREFIX, shared_topic=SHARED)
    assert stats.dead_letters == 1
    letter = DeadLetter.objects.get(topic=SHARED)
    assert "is not a hub name" in letter.reason


def test_a_per_hub_topic_still_only_speaks_for_its_own_hub() -> None:
    own = hub_name()
    record = SharedTopic().record("someone-else", [policy("p")], topic=PREFIX + own)
    stats = ingest_batch([record], topic_prefix=PREFIX, shared_topic=SHARED)
    assert stats.dead_letters == 1
    assert "a hub may only report about itself" in DeadLetter.objects.get(topic=PREFIX + own).reason


def test_a_hub_back_on_its_own_topic_is_judged_on_its_own_topic_again() -> None:
    topic, hub = SharedTopic(), hub_name()
    ingest_batch([topic.record(hub, [policy("p")])], topic_prefix=PREFIX, shared_topic=SHARED)
    assert lifecycle.hub_topics([hub], PREFIX, SHARED) == {hub: SHARED}
    assert lifecycle.hub_topics([hub], PREFIX, "") == {hub: PREFIX + hub}  # the setting turned off: its own topic
    own = topic.record(hub, [policy("q")], "1.2", topic=PREFIX + hub)
    ingest_batch([own], topic_prefix=PREFIX, shared_topic=SHARED)
    assert Hub.objects.get(name=hub).status_topic == ""
    assert lifecycle.hub_topics([hub], PREFIX, SHARED) == {hub: PREFIX + hub}


def test_a_quiet_hub_of_the_shared_topic_is_judged_once_the_shared_topic_is_read_to_its_end() -> None:
    hub = make_hub(heartbeat=T0)
    Hub.objects.filter(name=hub).update(status_topic=SHARED)
    give_data(hub)
    ConsumedPosition.objects.update_or_create(topic=SHARED, partition=0, defaults={"next_offset": 90})
    now = T0 + timedelta(minutes=20)
    asked: list[list[str]] = []

    def ends(topics: Sequence[str]) -> Mapping[str, Mapping[int, int]]:
        asked.append(list(topics))
        return {SHARED: {0: 100}}

    result = lifecycle.probe(now=now, timing=SHARED_TIMING, ends=ends)
    assert asked == [[SHARED]]
    assert result.not_judged == {hub: "10 messages of its topic are not ingested yet"}

    ConsumedPosition.objects.filter(topic=SHARED).update(next_offset=100)
    assert lifecycle.probe(now=now, timing=SHARED_TIMING, ends=ends).inactivated == [hub]


def test_a_shared_topic_inside_the_per_hub_prefix_is_refused_with_the_reason() -> None:
    assert shared_status_topic("gh-status", "gh-status.") == "gh-status"
    assert shared_status_topic("", "gh-status.") == ""
    with pytest.raises(ValueError, match="would be read as the topic of a hub named 'all'"):
        shared_status_topic("gh-status.all", "gh-status.")


def test_the_setting_is_checked_when_django_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    import globalhub.settings as settings_module

    monkeypatch.setenv("GH_SHARED_STATUS_TOPIC", "gh-status.all")
    with pytest.raises(ImproperlyConfigured, match="GH_SHARED_STATUS_TOPIC"):
        settings_module._shared_status_topic()
