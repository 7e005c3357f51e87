"""``consume_status`` as a real process against real Kafka and PostgreSQL: bad input, SIGTERM, resuming."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
from confluent_kafka import Producer

from agent_tasks.simulate import make_cluster
from agent_tasks.types import tweak_cluster
from globalhub.manager.models import ConsumedPosition, DeadLetter, ManagedCluster
from globalhub.protocol.bundles import ObjectMetadata, dumps, frame_resync
from globalhub.protocol.codec import OutgoingMessage
from globalhub.protocol.kafka import STATUS_TOPIC_CONFIG, ConfirmedProducer, KafkaSettings, ensure_topics
from globalhub.protocol.objects import cluster_claim_id
from tests.helpers import Process, database_url, frame_message, python_argv, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def resync_messages(hub: str, count: int, version: str, seed: int = 3) -> list[OutgoingMessage]:
    rng = random.Random(seed)
    objects = [tweak_cluster(make_cluster(hub, i, rng), hub) for i in range(count)]
    pairs = [(ObjectMetadata(cluster_claim_id(o) or "", o["metadata"]["name"]), dumps(o)) for o in objects]
    return [frame_message(hub, frame, version) for frame in frame_resync(pairs)]


def live_count(hub: str) -> int:
    return ManagedCluster.objects.filter(hub_id=hub, deleted_at__isnull=True).count()


def test_the_consumer_dead_letters_garbage_stops_on_sigterm_and_resumes_from_its_stored_position(
    kafka_settings: KafkaSettings, hub_name: str, status_prefix: str, run_id: str, tmp_path: Path
) -> None:
    topic = status_prefix + hub_name
    ensure_topics(kafka_settings, [topic], STATUS_TOPIC_CONFIG)
    raw = Producer(kafka_settings.client_config())
    raw.produce(topic, key=b"junk", value=b"\x00\x01 definitely not a cloudevent")
    raw.flush(10)
    producer = ConfirmedProducer(kafka_settings)
    producer.send(topic, resync_messages(hub_name, 20, "1.1"))

    env = dict(os.environ)
    env.update(
        {
            "DATABASE_URL": database_url(),
            "KAFKA_BOOTSTRAP_SERVERS": kafka_settings.bootstrap_servers,
            "GH_STATUS_TOPIC_PREFIX": status_prefix,
            "GH_CONSUMER_GROUP": f"test-{run_id}-{hub_name}-a",
            "GH_TOPIC_REFRESH_MS": "500",
        }
    )
    first = Process("consumer-a", python_argv("manage.py", "consume_status"), env, tmp_path)
    try:
        wait_for(lambda: live_count(hub_name) == 20, timeout=60, what="20 clusters from the first resync")
        letter = wait_for(lambda: DeadLetter.objects.filter(topic=topic).first(), timeout=10, what="a dead letter")
        assert letter.offset == 0
        assert "not a CloudEvent" in letter.reason
        assert letter.value is not None and bytes(letter.value) == b"\x00\x01 definitely not a cloudevent"
    finally:
        code = first.stop(timeout=20)
    assert code == 0, first.log_text()[-3000:]
    assert "status consumer stopped" in first.log_text()

    position = ConsumedPosition.objects.get(topic=topic, partition=0)
    second_batch = resync_messages(hub_name, 12, "2.1")
    producer.send(topic, second_batch)
    producer.close()

    # A consumer in a brand-new group has no Kafka offsets at all: only the stored position can make it resume.
    env["GH_CONSUMER_GROUP"] = f"test-{run_id}-{hub_name}-b"
    second = Process("consumer-b", python_argv("manage.py", "consume_status"), env, tmp_path)
    try:
        wait_for(lambda: live_count(hub_name) == 12, timeout=60, what="the second resync to be applied")
        wait_for(
            lambda: ConsumedPosition.objects.get(topic=topic).next_offset == position.next_offset + len(second_batch),
            timeout=10,
            what="the position to move past the second resync",
        )
    finally:
        assert second.stop(timeout=20) == 0, second.log_text()[-3000:]
    assert DeadLetter.objects.filter(topic=topic).count() == 1  # the garbage was not read twice
    assert f"{topic}[0]@{position.next_offset}" in second.log_text()


class _Message:
    """Just enough of a confluent_kafka Message for the consumer's conversion."""

    def __init__(self, timestamp: tuple[int, int | None], headers: object = None) -> None:
        self._timestamp = timestamp
        self._headers = headers

    def timestamp(self) -> tuple[int, int | None]:
        return self._timestamp

    def headers(self) -> object:
        if isinstance(self._headers, Exception):
            raise self._headers
        return self._headers

    def topic(self) -> str:
        return "gh-status.hub"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return 7

    def key(self) -> bytes:
        return b"k"

    def value(self) -> bytes:
        return b"v"


@pytest.mark.parametrize("milliseconds", [2**62, 10**17, -5, None])
def test_a_producer_timestamp_no_datetime_holds_is_no_timestamp(milliseconds: int | None) -> None:
    from confluent_kafka import TIMESTAMP_CREATE_TIME

    from globalhub.manager.consumer import _record

    record = _record(_Message((TIMESTAMP_CREATE_TIME, milliseconds)))  # type: ignore[arg-type]
    assert record.timestamp is None and record.offset == 7


def test_headers_the_client_cannot_decode_are_left_out() -> None:
    from confluent_kafka import TIMESTAMP_CREATE_TIME

    from globalhub.manager.consumer import _record

    broken = _Message((TIMESTAMP_CREATE_TIME, 1), headers=UnicodeDecodeError("utf-8", b"\xff", 0, 1, "bad"))
    record = _record(broken)  # type: ignore[arg-type]
    assert record.headers == () and record.value == b"v"
