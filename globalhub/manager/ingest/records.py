"""What the status pipeline works on: consumed Kafka records, free of any Kafka client type."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from globalhub.protocol.bundles import FrameInfo
from globalhub.protocol.events import EventType
from globalhub.protocol.version import Version


@dataclass(frozen=True, slots=True)
class Record:
    """One consumed message, as bytes."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...] = ()
    timestamp: datetime | None = None  # Kafka's timestamp: the broker's log-append time, or the producer's
    log_append: bool = False  # the timestamp is the broker's (topic ``message.timestamp.type=LogAppendTime``)

    def headers_json(self) -> list[list[str]]:
        """Headers in a JSON-safe form for dead letters (values decoded leniently; the raw value is kept apart)."""
        return [[name, (value or b"").decode("utf-8", "replace")] for name, value in self.headers]


class Rejected(Exception):
    """A record that can never be ingested; the message is the dead-letter reason."""

    def __init__(self, reason: str, *, hub: str = "", event_type: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.hub = hub
        self.event_type = event_type


@dataclass(slots=True)
class StatusEvent:
    """A status CloudEvent that passed the envelope checks: trusted hub, known type, parsed version."""

    record: Record
    hub: str
    type: EventType
    version: Version
    frame: FrameInfo | None
    event_id: str
    time: datetime | None
    data: bytes
    extensions: dict[str, str] = field(default_factory=dict)
    parsed: Any = None
