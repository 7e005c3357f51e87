"""Asking the real broker for the topics' ends, as the probe and the lag refresh do: no topic asked lists no
topic (the cluster's description says whether Kafka answers), and one admin client serves every pass of a
process (a new one waits for its connection at every pass)."""

from __future__ import annotations

import os
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient, ClusterMetadata  # type: ignore[attr-defined]

from globalhub.manager import lifecycle
from globalhub.protocol.kafka import STATUS_TOPIC_CONFIG, KafkaSettings, ensure_topics, topic_ends
from tests.helpers import wait_for


def test_the_ends_of_no_topic_are_an_answer_from_the_broker_without_any_topic(kafka_settings: KafkaSettings) -> None:
    listed: list[object] = []
    original = AdminClient.list_topics

    class Spy(AdminClient):
        def list_topics(self, *args: Any, **kwargs: Any) -> ClusterMetadata:
            listed.append(args)
            return original(self, *args, **kwargs)

    admin = Spy(kafka_settings.client_config())
    assert topic_ends(kafka_settings, [], admin=admin) == {}
    assert listed == []  # the cluster's description, not every topic's metadata


def test_a_reused_admin_client_reads_the_same_ends_as_a_new_one(
    kafka_settings: KafkaSettings, status_prefix: str
) -> None:
    topic = f"{status_prefix}hub-ends"
    ensure_topics(kafka_settings, [topic], STATUS_TOPIC_CONFIG, partitions=2)
    wait_for(lambda: len(topic_ends(kafka_settings, [topic]).get(topic, {})) == 2, timeout=30, what="the new topic")
    admin = AdminClient(kafka_settings.client_config())
    missing = f"{status_prefix}no-such-hub"
    fresh = topic_ends(kafka_settings, [topic, missing])
    assert topic_ends(kafka_settings, [topic, missing], admin=admin) == fresh
    assert topic_ends(kafka_settings, [topic, missing], admin=admin) == fresh  # and again, connected
    assert fresh[topic] == {0: 0, 1: 0} and fresh[missing] == {}


def test_the_probe_keeps_one_admin_client_per_process_and_configuration(
    kafka_settings: KafkaSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lifecycle, "_admin_clients", {})
    assert lifecycle.broker_topic_ends([]) == {}
    assert lifecycle.broker_topic_ends([]) == {}
    assert list(lifecycle._admin_clients) == [
        (os.getpid(), repr(sorted(KafkaSettings.from_env().client_config().items())))
    ]
