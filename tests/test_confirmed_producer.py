"""ConfirmedProducer's waiting rule, with librdkafka replaced by a scripted stand-in.

A send fails only when Kafka confirms nothing for the stall timeout, however long the whole send takes; a failed
send purges what it left and replaces the client, so the next send does not reuse one stuck since an outage.
(Real sends against Kafka are covered by the agent's tests, including a Kafka stopped mid-resync.)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from confluent_kafka import KafkaError

import globalhub.protocol.kafka as kafka_module
from globalhub.protocol.codec import OutgoingMessage
from globalhub.protocol.kafka import ConfirmedProducer, DeliveryFailed, KafkaSettings


class ScriptedClient:
    """Stands in for confluent_kafka.Producer: confirms one message per ``every`` seconds, or none (``every=None``)."""

    behaviours: list[float | None] = []
    made: list[ScriptedClient] = []

    def __init__(self, config: dict[str, Any]) -> None:
        self.every = ScriptedClient.behaviours.pop(0) if ScriptedClient.behaviours else 0.0
        self.capacity = 1000
        self.pending: list[Callable[[KafkaError | None, Any], None]] = []
        self.purged = False
        ScriptedClient.made.append(self)

    def produce(self, topic: str, *, on_delivery: Callable[[KafkaError | None, Any], None], **kwargs: Any) -> None:
        if len(self.pending) >= self.capacity:
            raise BufferError("queue full")
        self.pending.append(on_delivery)

    def _serve(self, timeout: float) -> int:
        if self.every is None or not self.pending:
            time.sleep(timeout)
        else:
            time.sleep(min(timeout, self.every))
            self.pending.pop(0)(None, None)
        return len(self.pending)

    def poll(self, timeout: float = 0) -> int:
        return self._serve(timeout) if timeout else 0

    def flush(self, timeout: float = 0) -> int:
        return self._serve(timeout) if timeout else len(self.pending)

    def purge(self, in_queue: bool = True, in_flight: bool = True, blocking: bool = True) -> None:
        self.purged = True
        for callback in self.pending:
            callback(KafkaError(KafkaError._PURGE_QUEUE), None)
        self.pending.clear()


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[ScriptedClient]]:
    ScriptedClient.behaviours = []
    ScriptedClient.made = []
    monkeypatch.setattr(kafka_module, "Producer", ScriptedClient)
    yield ScriptedClient


def messages(count: int) -> list[OutgoingMessage]:
    return [OutgoingMessage(key=b"k", value=b"x", headers=[], event_id=str(i), event_type="t") for i in range(count)]


def test_a_send_that_keeps_being_confirmed_is_not_cut_short_however_long_it_takes(
    scripted: type[ScriptedClient],
) -> None:
    scripted.behaviours = [0.05]  # one confirmation every 50 ms: 40 messages take 2 s, the stall timeout is 0.5 s
    producer = ConfirmedProducer(KafkaSettings(), stall_timeout=0.5)
    started = time.monotonic()

    assert producer.send("t", messages(40)) == 40

    assert time.monotonic() - started > 0.5 * 2  # it did outlast the stall timeout, confirmed all the while
    assert producer.replacements == 0


def test_a_send_kafka_stops_confirming_fails_and_the_next_send_gets_a_new_client(
    scripted: type[ScriptedClient],
) -> None:
    scripted.behaviours = [None, 0.0]  # the first client never confirms again (stuck after an outage); the next does
    producer = ConfirmedProducer(KafkaSettings(), stall_timeout=0.3)

    with pytest.raises(DeliveryFailed, match=r"0 of 3 messages to t delivered; .*confirmed nothing for 0.3s"):
        producer.send("t", messages(3))

    stuck, fresh = scripted.made
    assert stuck.purged and stuck.pending == []
    assert producer.replacements == 1
    assert producer.send("t", messages(3)) == 3
    assert fresh.pending == []


def test_a_send_blocked_on_a_full_local_queue_gives_up_after_the_stall_timeout(scripted: type[ScriptedClient]) -> None:
    scripted.behaviours = [None]
    producer = ConfirmedProducer(KafkaSettings(), stall_timeout=0.3)
    scripted.made[0].capacity = 2

    with pytest.raises(DeliveryFailed, match="0 of 2 messages"):
        producer.send("t", messages(5))
    assert producer.replacements == 1


def test_a_refused_message_fails_the_send_and_replaces_the_client(scripted: type[ScriptedClient]) -> None:
    producer = ConfirmedProducer(KafkaSettings(), stall_timeout=5)
    client = scripted.made[0]
    original = client.produce

    produced: list[int] = []

    def refuse_second(topic: str, *, on_delivery: Any, **kwargs: Any) -> None:
        original(topic, on_delivery=on_delivery, **kwargs)
        produced.append(1)
        if len(produced) == 2:
            client.pending.pop()(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE), None)

    client.produce = refuse_second  # type: ignore[method-assign]
    with pytest.raises(DeliveryFailed, match="2 of 3 messages to t delivered; first problem: "):
        producer.send("t", messages(3))
    assert producer.replacements == 1
