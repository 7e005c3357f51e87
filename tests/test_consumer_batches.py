"""How the status consumer cuts its batches: up to the batch size and the batch bytes, taking nothing it drops."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from globalhub.manager import consumer as consumer_module
from globalhub.manager.consumer import ConsumerOptions, StatusConsumer
from globalhub.protocol.kafka import KafkaSettings


@dataclass
class FakeMessage:
    payload: bytes

    def value(self) -> bytes:
        return self.payload


@dataclass
class FakeKafka:
    """What a consumer has fetched: ``poll`` and ``consume`` hand out from it in order."""

    fetched: list[FakeMessage]
    asked: list[int] = field(default_factory=list)

    def poll(self, timeout: float) -> FakeMessage | None:
        return self.fetched.pop(0) if self.fetched else None

    def consume(self, count: int, timeout: float) -> list[FakeMessage]:
        self.asked.append(count)
        taken, self.fetched = self.fetched[:count], self.fetched[count:]
        return taken


def batches(messages: int, size: int, *, batch_size: int, batch_bytes: int) -> tuple[list[int], FakeKafka]:
    kafka = FakeKafka([FakeMessage(b"x" * size) for _ in range(messages)])
    consumer = object.__new__(StatusConsumer)
    consumer._consumer = kafka  # type: ignore[assignment]
    consumer._options = ConsumerOptions(group_id="g", topic_prefix="p.", batch_size=batch_size, batch_bytes=batch_bytes)
    sizes = []
    while batch := consumer._next_batch():
        sizes.append(len(batch))
    return sizes, kafka


def test_a_batch_ends_at_the_batch_size() -> None:
    sizes, _ = batches(1200, 10, batch_size=500, batch_bytes=10**9)
    assert sizes == [500, 500, 200]


def test_a_batch_of_large_messages_ends_once_its_bytes_reach_the_limit() -> None:
    sizes, _ = batches(300, 800 * 1024, batch_size=500, batch_bytes=16 * 1024 * 1024)
    # 16 MiB holds 20 records of 800 KiB and a bit: the 21st passes the limit, and the batch ends there.
    assert sizes[0] == 21 and sum(sizes) == 300
    assert all(size <= 21 for size in sizes)


def test_every_message_taken_is_in_a_batch() -> None:
    sizes, kafka = batches(77, 1000, batch_size=10, batch_bytes=5000)
    assert sum(sizes) == 77 and not kafka.fetched


def client_config(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> dict[str, object]:
    """The configuration the consumer gives librdkafka's ``Consumer``, with ``env`` set."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    seen: dict[str, object] = {}
    monkeypatch.setattr(consumer_module, "Consumer", seen.update)
    StatusConsumer(KafkaSettings.from_env(), ConsumerOptions(group_id="g", topic_prefix="p."))
    return seen


def test_what_the_kafka_client_holds_ahead_is_bounded_in_all_and_settable(monkeypatch: pytest.MonkeyPatch) -> None:
    config = client_config(monkeypatch, {})
    assert config["max.partition.fetch.bytes"] == 1024 * 1024
    assert config["queued.max.messages.kbytes"] == 8 * 1024
    settable = {"KAFKA_CLIENT_QUEUED_MAX_MESSAGES_KBYTES": "4096"}
    assert client_config(monkeypatch, settable)["queued.max.messages.kbytes"] == "4096"
