"""The spec listener: which requests queue resyncs for this hub, what is counted, and the real process on Kafka."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from agent_tasks.config import AgentConfig
from agent_tasks.listen_spec import ListenerCounters, Outcome, handle_spec_message
from agent_tasks.redisutil import text
from agent_tasks.resync_queue import ResyncQueue
from globalhub.protocol.bundles import dumps
from globalhub.protocol.codec import OutgoingMessage, encode
from globalhub.protocol.events import BROADCAST, MANAGER_SOURCE, RESYNC_EVENT_TYPE, EventType
from globalhub.protocol.kafka import SPEC_TOPIC_CONFIG, ConfirmedProducer, KafkaSettings, ensure_topics
from globalhub.protocol.requests import resync_request
from tests.helpers import Process, python_argv, wait_for

CLUSTER = EventType.MANAGED_CLUSTER
POLICY = EventType.LOCAL_POLICY_SPEC
NOPE = "io.example.nope"


def delete_hub_keys(client: redis.Redis, hub: str) -> None:
    keys = list(client.scan_iter(match=f"gh:{hub}:*"))
    if keys:
        client.delete(*keys)


@pytest.fixture
def queue(redis_client: redis.Redis, hub_name: str) -> Iterator[ResyncQueue]:
    yield ResyncQueue(redis_client, hub_name)
    delete_hub_keys(redis_client, hub_name)


def handle(message: OutgoingMessage, hub: str, queue: ResyncQueue) -> Outcome:
    headers: list[tuple[str, bytes | None]] = list(message.headers)
    return handle_spec_message(message.key, message.value, headers, hub, queue)


def raw_resync(subject: str | None, data: bytes, source: str = MANAGER_SOURCE) -> OutgoingMessage:
    """A ``Resync`` with any data, for what :func:`resync_request` refuses to build."""
    return encode(event_type=RESYNC_EVENT_TYPE, source=source, subject=subject, data=data)


def waiting(queue: ResyncQueue) -> list[str]:
    return [item.type for item in queue.items()]


def counters(client: redis.Redis, hub: str) -> dict[str, str]:
    return {text(key): text(value) for key, value in client.hgetall(f"gh:{hub}:agent:listener").items()}


# --- one message at a time -----------------------------------------------------------------------------------------


def test_a_request_for_this_hub_queues_its_types_in_request_order(queue: ResyncQueue, hub_name: str) -> None:
    outcome = handle(resync_request(hub_name, [POLICY, CLUSTER, EventType.HUB_INFO]), hub_name, queue)

    assert outcome == Outcome(queued=["policy.localspec", "managedcluster", "managedhub.info"], request=True)
    assert waiting(queue) == ["policy.localspec", "managedcluster", "managedhub.info"]


def test_a_requests_id_is_noted_for_each_type_it_queues_or_finds_waiting(queue: ResyncQueue, hub_name: str) -> None:
    handle(resync_request(hub_name, [CLUSTER], request_id="41"), hub_name, queue)
    handle(resync_request(BROADCAST, [CLUSTER, POLICY], request_id="42"), hub_name, queue)
    handle(resync_request(hub_name, [POLICY], request_id="not an id!"), hub_name, queue)

    assert waiting(queue) == ["managedcluster", "policy.localspec"]
    assert queue.answers("managedcluster") == ["41", "42"]
    assert queue.answers("policy.localspec") == ["42"]
    assert queue.answers(NOPE) == []


def test_a_type_asked_for_twice_is_queued_once_and_a_waiting_type_keeps_its_place(
    queue: ResyncQueue, hub_name: str
) -> None:
    queue.push(["policy.localspec"])

    outcome = handle(resync_request(hub_name, [CLUSTER, POLICY, CLUSTER]), hub_name, queue)

    assert outcome.queued == ["managedcluster", "policy.localspec"]
    assert waiting(queue) == ["policy.localspec", "managedcluster"]


def test_a_request_naming_no_type_is_counted_as_a_request_and_queues_nothing(
    queue: ResyncQueue, hub_name: str, redis_client: redis.Redis
) -> None:
    outcome = handle(resync_request(hub_name, []), hub_name, queue)
    ListenerCounters(redis_client, hub_name).record(outcome)

    assert outcome == Outcome(request=True)
    assert waiting(queue) == []
    assert counters(redis_client, hub_name) == {"requests": "1"}


def test_a_broadcast_request_is_queued(queue: ResyncQueue, hub_name: str) -> None:
    outcome = handle(resync_request(BROADCAST, [EventType.LOCAL_COMPLIANCE]), hub_name, queue)

    assert outcome == Outcome(queued=["policy.localcompliance"], request=True)
    assert waiting(queue) == ["policy.localcompliance"]


def test_a_request_for_another_hub_is_ignored(queue: ResyncQueue, hub_name: str) -> None:
    outcome = handle(resync_request(hub_name + "-other", [CLUSTER]), hub_name, queue)

    assert outcome == Outcome(ignored=True)
    assert queue.length() == 0


def test_a_request_from_anyone_but_the_manager_is_rejected(queue: ResyncQueue, hub_name: str) -> None:
    outcome = handle(raw_resync(hub_name, dumps([CLUSTER.value]), source="mallory"), hub_name, queue)

    assert "source 'mallory'" in outcome.rejected
    assert outcome.queued == []
    assert not outcome.ignored
    assert queue.length() == 0


def test_a_request_without_a_subject_is_rejected(queue: ResyncQueue, hub_name: str) -> None:
    outcome = handle(raw_resync(None, dumps([CLUSTER.value])), hub_name, queue)

    assert "without a subject" in outcome.rejected
    assert queue.length() == 0


@pytest.mark.parametrize(
    "data",
    [
        b'{"types": ["io.open-cluster-management.operator.multiclusterglobalhubs.managedcluster"]}',
        b'"io.open-cluster-management.operator.multiclusterglobalhubs.managedcluster"',
        b"[1, 2]",
        b'["io.open-cluster-management.operator.multiclusterglobalhubs.managedcluster", null]',
        b"managedcluster",
        b"\xff\xfe[",
        b"",
    ],
    ids=["object", "string", "numbers", "null-in-list", "not-json", "not-utf8", "empty"],
)
def test_a_request_whose_data_is_not_a_json_array_of_strings_is_rejected(
    queue: ResyncQueue, hub_name: str, data: bytes
) -> None:
    outcome = handle(raw_resync(hub_name, data), hub_name, queue)

    assert outcome.rejected.startswith("Resync data")
    assert outcome.queued == []
    assert queue.length() == 0


def test_a_message_that_is_not_a_cloudevent_is_rejected(queue: ResyncQueue, hub_name: str) -> None:
    outcome = handle_spec_message(b"Resync", b'["managedcluster"]', [("content-type", b"json")], hub_name, queue)

    assert "not a CloudEvent" in outcome.rejected
    assert queue.length() == 0


def test_unknown_types_are_counted_while_the_known_ones_are_still_queued(queue: ResyncQueue, hub_name: str) -> None:
    data = dumps([NOPE, CLUSTER.value, EventType.HEARTBEAT.value, POLICY.value])

    outcome = handle(raw_resync(hub_name, data), hub_name, queue)

    # The heartbeat is a real type, but it is sent every minute and cannot be resynced.
    assert outcome == Outcome(
        queued=["managedcluster", "policy.localspec"], unknown=[NOPE, EventType.HEARTBEAT.value], request=True
    )
    assert waiting(queue) == ["managedcluster", "policy.localspec"]


def test_a_request_of_only_unknown_types_queues_nothing(queue: ResyncQueue, hub_name: str) -> None:
    outcome = handle(raw_resync(BROADCAST, dumps([NOPE])), hub_name, queue)

    assert outcome == Outcome(unknown=[NOPE], request=True)
    assert queue.length() == 0


def test_a_spec_event_that_is_not_a_resync_is_ignored(queue: ResyncQueue, hub_name: str) -> None:
    message = encode(event_type="HubStatusUpdate", source=MANAGER_SOURCE, subject=hub_name, data=b"{}")

    outcome = handle(message, hub_name, queue)

    assert outcome == Outcome(ignored=True)
    assert queue.length() == 0


# --- counters ------------------------------------------------------------------------------------------------------


def test_counters_add_up_what_the_listener_saw(redis_client: redis.Redis, queue: ResyncQueue, hub_name: str) -> None:
    recorder = ListenerCounters(redis_client, hub_name)

    recorder.record(Outcome(queued=["managedcluster"], request=True))
    recorder.record(Outcome(queued=["policy.localspec"], unknown=["io.example.a", "io.example.b"], request=True))
    recorder.record(Outcome(unknown=["io.example.c"], request=True))
    recorder.record(Outcome(ignored=True))
    recorder.record(Outcome(ignored=True))
    recorder.record(Outcome(rejected="Resync without a subject"))
    recorder.record(Outcome(rejected="x" * 2000))

    seen = counters(redis_client, hub_name)
    assert seen == {
        "requests": "3",
        "unknown_types": "3",
        "last_unknown_type": "io.example.c",
        "ignored": "2",
        "rejected": "2",
        "last_rejection": "x" * 500,
    }


def test_an_ignored_message_counts_nothing_but_ignored(
    redis_client: redis.Redis, queue: ResyncQueue, hub_name: str
) -> None:
    ListenerCounters(redis_client, hub_name).record(Outcome(ignored=True))

    assert counters(redis_client, hub_name) == {"ignored": "1"}


# --- the real process ----------------------------------------------------------------------------------------------


def spec_group(hub: str) -> str:
    return AgentConfig(hub_name=hub, redis_url="", kafka=KafkaSettings()).spec_group


class SpecTopic:
    """A fresh spec topic with a confirmed producer, and a look at how far a consumer group has got."""

    def __init__(self, settings: KafkaSettings, name: str) -> None:
        self.settings = settings
        self.name = name
        ensure_topics(settings, [name], SPEC_TOPIC_CONFIG)
        self.producer = ConfirmedProducer(settings)

    def send(self, *messages: OutgoingMessage) -> None:
        self.producer.send(self.name, messages, timeout=30)

    def group_has_assignment(self, group: str) -> bool:
        admin = AdminClient(self.settings.client_config())
        try:
            description = admin.describe_consumer_groups([group], request_timeout=10)[group].result(timeout=15)
        except KafkaException:  # e.g. NOT_COORDINATOR while the group is being created: ask again
            return False
        return any(
            partition.topic == self.name
            for member in description.members
            for partition in (member.assignment.topic_partitions if member.assignment else [])
        )

    def caught_up(self, group: str) -> bool:
        """The group committed past every message in the topic: all of them were handled."""
        config = self.settings.client_config()
        config.update({"group.id": group, "enable.auto.commit": False})
        consumer = Consumer(config)  # never subscribes, so it does not join the group
        try:
            partition = TopicPartition(self.name, 0)
            try:
                _, high = consumer.get_watermark_offsets(partition, timeout=10)
                committed = consumer.committed([partition], timeout=10)[0].offset
            except KafkaException:  # a coordinator moving or not known yet: ask again
                return False
            return bool(committed == high)
        finally:
            consumer.close()

    def close(self) -> None:
        self.producer.close()


@pytest.fixture
def spec_topic(kafka_settings: KafkaSettings, run_id: str) -> Iterator[SpecTopic]:
    topic = SpecTopic(kafka_settings, f"t{run_id}-gh-spec-{uuid.uuid4().hex[:6]}")
    yield topic
    topic.close()


@pytest.fixture
def listener_processes(tmp_path: Path) -> Iterator[list[Process]]:
    started: list[Process] = []
    yield started
    for process in started:
        if not process.is_running():
            print(f"--- {process.name} exited early; log:\n{process.log_text()[-5000:]}")
        process.stop()


def start_listener(hub: str, topic: SpecTopic, redis_url: str, tmp_path: Path, processes: list[Process]) -> Process:
    env = dict(os.environ)
    env.pop("GH_AGENT_METRICS_PORT", None)
    env.update(
        {
            "HUB_NAME": hub,
            "REDIS_URL": redis_url,
            "KAFKA_BOOTSTRAP_SERVERS": topic.settings.bootstrap_servers,
            "GH_SPEC_TOPIC": topic.name,
            "PYTHONUNBUFFERED": "1",
        }
    )
    process = Process(f"listen-spec-{hub}", python_argv("-m", "agent_tasks.listen_spec"), env, tmp_path)
    processes.append(process)
    return process


def wait_until_listening(process: Process, hub: str, topic: SpecTopic, client: redis.Redis) -> int:
    """Wait until the listener reads new requests; return its ``ignored`` count once it has caught up.

    A new group starts at the newest message, so a request produced before the partition is assigned (and its
    offset looked up) is missed by design. Probes (requests for another hub) are produced until one is seen.
    """
    group = spec_group(hub)
    wait_for(lambda: "spec listener started" in process.log_text(), timeout=60, what=f"{process.name} to start")
    wait_for(lambda: topic.group_has_assignment(group), timeout=60, interval=0.5, what=f"{group} to be assigned")

    def probe_seen() -> bool:
        assert process.is_running(), process.log_text()
        topic.send(resync_request(hub + "-probe", [CLUSTER]))
        return int(counters(client, hub).get("ignored", 0)) >= 1

    wait_for(probe_seen, timeout=60, interval=0.3, what=f"{process.name} to see a probe")
    wait_for(lambda: topic.caught_up(group), timeout=30, interval=0.2, what=f"{group} to handle every probe")
    return int(counters(client, hub)["ignored"])


@pytest.mark.e2e
def test_the_listener_process_queues_requests_for_its_hub_and_counts_the_rest(
    redis_client: redis.Redis,
    redis_url: str,
    hub_name: str,
    spec_topic: SpecTopic,
    tmp_path: Path,
    listener_processes: list[Process],
) -> None:
    queue = ResyncQueue(redis_client, hub_name)
    try:
        listener = start_listener(hub_name, spec_topic, redis_url, tmp_path, listener_processes)
        ignored_before = wait_until_listening(listener, hub_name, spec_topic, redis_client)
        assert queue.length() == 0

        spec_topic.send(
            resync_request(BROADCAST, [CLUSTER]),
            raw_resync(hub_name, dumps([POLICY.value, NOPE])),
            resync_request(hub_name + "-other", [EventType.HUB_INFO]),
            raw_resync(hub_name, b'{"types": ["managedcluster"]}'),
            OutgoingMessage(key=b"junk", value=b"not a cloudevent", headers=[], event_id="", event_type=""),
        )

        group = spec_group(hub_name)
        wait_for(lambda: spec_topic.caught_up(group), timeout=30, interval=0.2, what="every request to be handled")
        assert waiting(queue) == ["managedcluster", "policy.localspec"]
        seen = counters(redis_client, hub_name)
        assert {name: int(seen.get(name, 0)) for name in ("requests", "unknown_types", "ignored", "rejected")} == {
            "requests": 2,
            "unknown_types": 1,
            "ignored": ignored_before + 1,
            "rejected": 2,
        }
        assert seen["last_unknown_type"] == NOPE
        assert "not a CloudEvent" in seen["last_rejection"]
        assert listener.is_running(), "malformed requests must not stop the listener"

        assert listener.stop() == 0
        log = listener.log_text()
        assert "spec listener stopped" in log
        assert "Traceback" not in log
    finally:
        delete_hub_keys(redis_client, hub_name)


@pytest.mark.e2e
def test_a_listener_in_a_new_group_does_not_replay_older_requests(
    redis_client: redis.Redis,
    redis_url: str,
    hub_name: str,
    spec_topic: SpecTopic,
    tmp_path: Path,
    listener_processes: list[Process],
) -> None:
    queue = ResyncQueue(redis_client, hub_name)
    try:
        spec_topic.send(resync_request(hub_name, [CLUSTER]), resync_request(BROADCAST, [EventType.HUB_INFO]))

        listener = start_listener(hub_name, spec_topic, redis_url, tmp_path, listener_processes)
        wait_until_listening(listener, hub_name, spec_topic, redis_client)

        assert queue.length() == 0, "requests older than the group were replayed"
        assert "requests" not in counters(redis_client, hub_name)

        # It does handle what comes after it started.
        spec_topic.send(resync_request(hub_name, [POLICY]))
        wait_for(lambda: waiting(queue), timeout=30, what="the new request to be queued")
        assert waiting(queue) == ["policy.localspec"]
        assert listener.stop() == 0
    finally:
        delete_hub_keys(redis_client, hub_name)
