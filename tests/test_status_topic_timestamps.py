"""Status topics carry the broker's timestamps even when someone else created them, on real Kafka and PostgreSQL.

A topic created before globalhub set ``message.timestamp.type=LogAppendTime``, or by upstream's agent or operator,
has the producer's timestamps: there a heartbeat counts from when the consumer read it, so one read from an old
backlog would bring a dead hub back. The agent (``ensure_topics``) and the manager's probe task
(``repair_status_topics``) switch such topics; a refusal is a warning, never an error. And the probe learns when
Kafka cannot be asked (``topic_ends`` raises).
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta

import pytest
import time_machine
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, ResourceType  # type: ignore[attr-defined]

from globalhub.manager.ingest.pipeline import ingest_batch
from globalhub.manager.ingest.records import Record
from globalhub.manager.models import Hub
from globalhub.protocol.codec import encode
from globalhub.protocol.events import EXT_VERSION, EventType
from globalhub.protocol.kafka import STATUS_TOPIC_CONFIG, ConfirmedProducer, KafkaSettings, ensure_topics
from tests.helpers import wait_for

UPSTREAM_STYLE = {"message.timestamp.type": "CreateTime", "retention.ms": str(3 * 24 * 3600 * 1000)}


def create_upstream_topic(settings: KafkaSettings, topic: str) -> None:
    """A topic as upstream's operator makes it: the producer's timestamps, its own retention."""
    admin = AdminClient(settings.client_config())
    admin.create_topics([NewTopic(topic, num_partitions=1, config=UPSTREAM_STYLE)])[topic].result(30)
    wait_for(lambda: config_once_known(settings, topic).get("message.timestamp.type") == "CreateTime", timeout=30)


def broker_clock(settings: KafkaSettings, topic: str) -> bool:
    return topic_config(settings, topic)["message.timestamp.type"] == "LogAppendTime"


def config_once_known(settings: KafkaSettings, topic: str) -> dict[str, str | None]:
    """:func:`topic_config`, or nothing while the broker does not know the topic yet: right after its creation a
    describe can still answer "unknown topic" (the metadata is on its way), which is "not yet", not a failure."""
    try:
        return topic_config(settings, topic)
    except KafkaException as error:
        if error.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
            return {}
        raise


def topic_config(settings: KafkaSettings, topic: str) -> dict[str, str | None]:
    admin = AdminClient(settings.client_config())
    (future,) = admin.describe_configs([ConfigResource(ResourceType.TOPIC, topic)]).values()
    return {name: entry.value for name, entry in future.result(30).items()}


def read_one(settings: KafkaSettings, topic: str) -> Record:
    """The topic's first message, read as the status consumer reads it."""
    from globalhub.manager.consumer import _record

    consumer = Consumer({**settings.client_config(), "group.id": f"test-{uuid.uuid4().hex}"})
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        message = wait_for(lambda: consumer.poll(0.5), timeout=30, what=f"a message on {topic}")
        assert message.error() is None, message.error()
        return _record(message)
    finally:
        consumer.close()


def test_the_agent_switches_an_existing_status_topic_to_the_brokers_clock_and_leaves_the_rest(
    kafka_settings: KafkaSettings, status_prefix: str, hub_name: str
) -> None:
    topic = status_prefix + hub_name
    create_upstream_topic(kafka_settings, topic)

    ensure_topics(kafka_settings, [topic], STATUS_TOPIC_CONFIG)  # what the agent runs before its first send

    # The broker applies an accepted change moments later (KRaft metadata): wait for it rather than read it once.
    wait_for(lambda: broker_clock(kafka_settings, topic), timeout=30, what=f"{topic} on the broker's clock")
    config = topic_config(kafka_settings, topic)
    assert config["retention.ms"] == UPSTREAM_STYLE["retention.ms"]  # the operator's other choices stay


@pytest.mark.django_db
def test_a_heartbeat_stored_before_the_timeout_does_not_reactivate_on_a_topic_upstream_created(
    kafka_settings: KafkaSettings, status_prefix: str, hub_name: str
) -> None:
    topic = status_prefix + hub_name
    create_upstream_topic(kafka_settings, topic)
    ensure_topics(kafka_settings, [topic], STATUS_TOPIC_CONFIG)
    heartbeat = encode(event_type=EventType.HEARTBEAT, source=hub_name, data=b"[]", extensions={EXT_VERSION: "1.0"})
    ConfirmedProducer(kafka_settings).send(topic, [heartbeat])
    record = read_one(kafka_settings, topic)
    assert record.log_append and record.timestamp is not None

    stored = record.timestamp
    Hub.objects.create(name=hub_name, state="inactive", last_heartbeat=stored - timedelta(hours=1))
    with time_machine.travel(stored + timedelta(minutes=10), tick=False):  # read from a backlog, 10 min later
        ingest_batch([record], topic_prefix=status_prefix)
    hub = Hub.objects.get(name=hub_name)
    assert hub.state == "inactive"
    assert hub.last_heartbeat == stored  # when Kafka stored it, not when it was read


@pytest.mark.django_db
def test_the_managers_probe_task_switches_status_topics_upstream_created(
    kafka_settings: KafkaSettings, status_prefix: str, run_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    from globalhub.manager import lifecycle

    upstream, ours = status_prefix + "hub-a", status_prefix + "hub-b"
    create_upstream_topic(kafka_settings, upstream)
    ensure_topics(kafka_settings, [ours], STATUS_TOPIC_CONFIG)
    other = f"t{run_id}-{uuid.uuid4().hex[:6]}-not-status"
    create_upstream_topic(kafka_settings, other)

    with caplog.at_level(logging.WARNING, logger="globalhub.protocol.kafka"):
        report = lifecycle.repair_status_topics(kafka_settings, status_prefix)
    assert report.changed == {upstream: {"message.timestamp.type": "CreateTime"}}
    assert report.already == [ours] and report.failed == {}
    assert f"topic {upstream}: set message.timestamp.type=LogAppendTime (was CreateTime)" in caplog.text
    # Applied by the broker moments after it was accepted.
    wait_for(lambda: broker_clock(kafka_settings, upstream), timeout=30, what=f"{upstream} on the broker's clock")
    assert topic_config(kafka_settings, other)["message.timestamp.type"] == "CreateTime"  # not a status topic

    # Checked topics are not asked again at every pass (only after ``recheck``).
    again = lifecycle.repair_status_topics(kafka_settings, status_prefix)
    assert again.changed == {} and again.already == []


def test_a_refused_change_is_a_warning_that_says_what_the_operator_must_run(
    kafka_settings: KafkaSettings, status_prefix: str, hub_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    from globalhub.protocol.kafka import align_topic_configs

    topic = status_prefix + hub_name
    create_upstream_topic(kafka_settings, topic)
    with caplog.at_level(logging.WARNING, logger="globalhub.protocol.kafka"):
        # The broker refuses this value, as it would a client without AlterConfigs on the topic.
        report = align_topic_configs(kafka_settings, [topic], {"message.timestamp.type": "BrokerTime"})
    assert list(report.failed) == [topic] and report.changed == {}
    assert f"--entity-name {topic} --add-config message.timestamp.type=BrokerTime" in caplog.text
    assert topic_config(kafka_settings, topic)["message.timestamp.type"] == "CreateTime"


def test_the_ends_of_topics_raise_when_kafka_cannot_be_asked_even_for_no_topic() -> None:
    from globalhub.protocol.kafka import KafkaUnavailable, topic_ends

    nowhere = KafkaSettings(bootstrap_servers="127.0.0.1:1")
    with pytest.raises(KafkaUnavailable):
        topic_ends(nowhere, [], timeout=2)
    with pytest.raises(KafkaUnavailable):
        topic_ends(nowhere, ["gh-status.hub1"], timeout=2)


@pytest.mark.django_db
def test_the_probe_task_judges_even_when_the_topics_cannot_be_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    from globalhub.manager import lifecycle, tasks
    from globalhub.protocol.kafka import KafkaUnavailable

    def unreachable(*args: object, **kwargs: object) -> None:
        raise KafkaUnavailable("no broker answers")

    monkeypatch.setattr(lifecycle, "broker_topic_ends", lambda topics: {topic: {} for topic in topics})
    monkeypatch.setattr(lifecycle, "repair_status_topics", unreachable)
    Hub.objects.create(name="silent-hub", state="active")
    Hub.objects.filter(name="silent-hub").update(created_at=Hub.objects.get().created_at - timedelta(hours=1))
    assert tasks.probe_hubs() == {"inactivated": ["silent-hub"], "reactivated": [], "not_judged": []}
