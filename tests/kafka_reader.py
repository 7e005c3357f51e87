"""Reading what agents sent: every message of a topic, decoded, from the beginning."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError

from globalhub.protocol.codec import ReceivedEvent, decode
from globalhub.protocol.events import EVENT_TYPE_PREFIX
from globalhub.protocol.kafka import KafkaSettings, headers_of


@dataclass
class Sent:
    offset: int
    size: int
    event: ReceivedEvent

    @property
    def short_type(self) -> str:
        return self.event.type.removeprefix(EVENT_TYPE_PREFIX)

    @property
    def version(self) -> str:
        return self.event.extensions.get("extversion", "")

    def json(self) -> Any:
        return json.loads(self.event.data)


class TopicReader:
    """A consumer of one topic in a fresh group; ``read`` returns messages not returned before."""

    def __init__(self, settings: KafkaSettings, topic: str) -> None:
        config = settings.client_config()
        config.update(
            {
                "group.id": f"test-reader-{uuid.uuid4().hex}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "topic.metadata.refresh.interval.ms": 500,
                "fetch.message.max.bytes": 10 * 1024 * 1024,
            }
        )
        self._consumer = Consumer(config)
        self._consumer.subscribe([topic])
        self.topic = topic

    def read(self, count: int | None = None, timeout: float = 15.0, quiet: float = 0.5) -> list[Sent]:
        """Messages until ``count`` arrived (or, without a count, until none came for ``quiet`` seconds)."""
        received: list[Sent] = []
        deadline = time.monotonic() + timeout
        last_message = time.monotonic()
        while time.monotonic() < deadline:
            if count is not None and len(received) >= count:
                break
            if count is None and received and time.monotonic() - last_message > quiet:
                break
            message = self._consumer.poll(0.1)
            if message is None:
                continue
            error = message.error()
            if error is not None:
                if error.code() not in (KafkaError._PARTITION_EOF, KafkaError.UNKNOWN_TOPIC_OR_PART):
                    raise AssertionError(f"kafka error while reading {self.topic}: {error}")
                continue
            value = message.value() or b""
            received.append(
                Sent(message.offset() or 0, len(value), decode(message.key(), value, list(headers_of(message))))
            )
            last_message = time.monotonic()
        if count is not None and len(received) < count:
            raise AssertionError(f"expected {count} messages on {self.topic}, got {len(received)}")
        return received

    def close(self) -> None:
        self._consumer.close()
