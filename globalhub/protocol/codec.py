"""CloudEvent <-> Kafka message, binary content mode, through the CloudEvents SDK's Kafka binding.

This is the only module that touches the SDK: everything else deals in :class:`OutgoingMessage` (what to produce)
and :class:`ReceivedEvent` (what was consumed and found to be a CloudEvent). The Kafka key is always the CE type,
as upstream's producer does.

The payload stays bytes on both sides: senders serialise JSON once (bundles are built from pre-encoded objects)
and receivers decide themselves how to parse it, so that "not JSON" is a clear, classified error rather than the
SDK's silent fallback to a string.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cloudevents.core.base import BaseCloudEvent
from cloudevents.core.bindings.common import decode_header_value
from cloudevents.core.bindings.kafka import KafkaMessage, from_binary, to_binary
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from globalhub.protocol.events import DATA_CONTENT_TYPE

# The binding turns a message key into this extension; it is transport, not event, so we drop it again.
_PARTITION_KEY = "partitionkey"


class InvalidEvent(ValueError):
    """A Kafka message that is not a usable CloudEvent. ``str()`` is the reason recorded with the dead letter."""


class _RawDataFormat(JSONFormat):
    """JSON format that leaves the data as bytes: we serialise and parse payloads ourselves."""

    def read_data(self, body: bytes, datacontenttype: str | None) -> bytes | None:
        return bytes(body) if body else None


_FORMAT = _RawDataFormat()


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """A CloudEvent rendered for confluent-kafka's ``produce``."""

    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]
    event_id: str
    event_type: str


@dataclass(frozen=True, slots=True)
class ReceivedEvent:
    """A consumed CloudEvent: its attributes (extensions included, all as strings except ``time``) and raw data."""

    id: str
    type: str
    source: str
    subject: str | None
    time: datetime | None
    extensions: Mapping[str, str]
    data: bytes
    attributes: Mapping[str, Any] = field(repr=False)

    def extension(self, name: str) -> str | None:
        return self.extensions.get(name)


def encode(
    *,
    event_type: str,
    source: str,
    data: bytes,
    subject: str | None = None,
    extensions: Mapping[str, str | int] | None = None,
    event_id: str | None = None,
    time: datetime | None = None,
) -> OutgoingMessage:
    """Build a binary-mode Kafka message for one CloudEvent whose data is already-serialised JSON."""
    attributes: dict[str, Any] = {
        "id": event_id or str(uuid.uuid4()),
        "type": event_type,
        "source": source,
        "specversion": "1.0",
        "time": time or datetime.now(UTC),
        "datacontenttype": DATA_CONTENT_TYPE,
    }
    if subject is not None:
        attributes["subject"] = subject
    for name, value in (extensions or {}).items():
        attributes[name] = str(value)
    event = CloudEvent(attributes, data)
    message = to_binary(event, _FORMAT, key_mapper=_type_as_key)
    key = message.key.encode() if isinstance(message.key, str) else (message.key or b"")
    return OutgoingMessage(
        key=key,
        value=message.value,
        headers=list(message.headers.items()),
        event_id=attributes["id"],
        event_type=event_type,
    )


def _type_as_key(event: BaseCloudEvent) -> str:
    return event.get_type()


def decode(
    key: bytes | str | None,
    value: bytes | None,
    headers: Sequence[tuple[str, bytes | None]] | None,
) -> ReceivedEvent:
    """Parse a consumed Kafka message; raise :class:`InvalidEvent` saying why it is not a CloudEvent."""
    header_map: dict[str, bytes] = {}
    for name, header_value in headers or ():
        if header_value is not None:
            header_map[name] = header_value
    if "ce_specversion" not in header_map:
        raise InvalidEvent("not a CloudEvent: no ce_specversion header (binary content mode expected)")
    for name, raw in header_map.items():
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidEvent(f"not a CloudEvent: header {name!r} is not UTF-8") from None
    # The SDK invents an id and a time for an event that lacks them; a consumed event must carry its own id (it
    # is what redeliveries share), and an absent time stays absent.
    attribute_headers = {name.lower(): raw.decode("utf-8") for name, raw in header_map.items()}
    if not attribute_headers.get("ce_id"):
        raise InvalidEvent("not a valid CloudEvent: missing required attribute 'id' (ce_id header)")
    raw_time = attribute_headers.get("ce_time")
    if raw_time is not None:
        try:
            decode_header_value("time", raw_time)
        except (ValueError, OverflowError) as error:
            raise InvalidEvent(
                f"not a valid CloudEvent: ce_time {raw_time[:60]!r} is not an RFC 3339 timestamp ({error})"
            ) from None
    try:
        event = from_binary(KafkaMessage(headers=header_map, key=key, value=value or b""), _FORMAT)
    except Exception as error:  # the SDK raises several unrelated types for bad attributes
        raise InvalidEvent(f"not a valid CloudEvent: {_describe(error)}") from error
    attributes = dict(event.get_attributes())
    attributes.pop(_PARTITION_KEY, None)
    if raw_time is None:
        attributes.pop("time", None)
    extensions = {
        name: str(val) for name, val in attributes.items() if name not in _CORE_ATTRIBUTES and val is not None
    }
    raw_data = event.get_data()
    return ReceivedEvent(
        id=event.get_id(),
        type=event.get_type(),
        source=event.get_source(),
        subject=event.get_subject(),
        time=event.get_time() if raw_time is not None else None,
        extensions=extensions,
        data=raw_data if isinstance(raw_data, bytes) else b"",
        attributes=attributes,
    )


_CORE_ATTRIBUTES = frozenset(
    {"id", "type", "source", "specversion", "subject", "time", "datacontenttype", "dataschema"}
)


def _describe(error: Exception) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:300]}"
