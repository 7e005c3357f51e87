"""From a consumed record to a :class:`StatusEvent`, or a :class:`Rejected` saying why not."""

from __future__ import annotations

from collections.abc import Sequence

from globalhub.manager.ingest.records import Record, Rejected, StatusEvent
from globalhub.protocol import jsonutil
from globalhub.protocol.bundles import BundleError, FrameInfo
from globalhub.protocol.codec import InvalidEvent, decode
from globalhub.protocol.events import EXT_VERSION, EventType, hub_from_status_topic, validate_hub_name
from globalhub.protocol.version import Version, VersionError


def open_envelope(record: Record, topic_prefix: str, shared_topic: str = "") -> StatusEvent:
    """Check everything about a record except its type-specific payload shape.

    On a per-hub topic (``<prefix><hub>``) the hub is the topic's and the event's source must name it. On the
    shared status topic (``shared_topic``, when set) the hub is the event's source: any producer on that topic
    can speak for any hub (see docs/protocol.md, "Shared status topic").
    """
    shared = bool(shared_topic) and record.topic == shared_topic
    hub = None if shared else hub_from_status_topic(record.topic, topic_prefix)
    if hub is None and not shared:
        raise Rejected(f"topic {record.topic!r} is not a hub status topic ({topic_prefix}<hub>)")
    try:
        event = decode(record.key, record.value, record.headers)
    except InvalidEvent as error:
        raise Rejected(str(error), hub=hub or "") from None
    if hub is None:
        hub = hub_of_shared_record(event.source, record.topic, event.type)
    if event.source != hub:
        raise Rejected(
            f"source {event.source[:100]!r} is not the hub of topic {record.topic!r}: a hub may only report "
            "about itself",
            hub=hub,
            event_type=event.type,
        )
    try:
        event_type = EventType(event.type)
    except ValueError:
        raise Rejected(f"unknown event type {event.type[:200]!r}", hub=hub, event_type=event.type) from None
    raw_version = event.extension(EXT_VERSION)
    if raw_version is None:
        raise Rejected(f"missing {EXT_VERSION}", hub=hub, event_type=event_type)
    try:
        version = Version.parse(raw_version)
    except VersionError as error:
        raise Rejected(f"malformed {EXT_VERSION}: {error}", hub=hub, event_type=event_type) from None
    try:
        frame = FrameInfo.from_extensions(event.extensions)
    except BundleError as error:
        raise Rejected(f"bad resync framing: {error}", hub=hub, event_type=event_type) from None
    try:
        parsed = jsonutil.loads(event.data) if event.data else None
    except (ValueError, UnicodeDecodeError) as error:
        raise Rejected(f"payload is not valid JSON: {error}", hub=hub, event_type=event_type) from None
    if parsed is None:
        raise Rejected("payload is empty (a JSON value is required)", hub=hub, event_type=event_type)
    return StatusEvent(
        record=record,
        hub=hub,
        type=event_type,
        version=version,
        frame=frame,
        event_id=event.id,
        time=event.time,
        data=event.data,
        extensions=dict(event.extensions),
        parsed=parsed,
    )


def hub_of_shared_record(source: str, topic: str, event_type: str = "") -> str:
    """The hub a record of the shared status topic speaks for: its source, which must be a valid hub name."""
    try:
        return validate_hub_name(source)
    except ValueError as error:
        raise Rejected(
            f"source of a record of the shared topic {topic!r} is not a hub name: {error}", event_type=event_type
        ) from None


def hub_of_record(record: Record, topic_prefix: str, shared_topic: str = "") -> str | None:
    """The hub a record speaks for, read cheaply (the topic, or the shared topic's source); None: none can be told
    (the envelope's check says why)."""
    if not shared_topic or record.topic != shared_topic:
        return hub_from_status_topic(record.topic, topic_prefix)
    source = _source_header(record.headers)
    if source is None:
        return None  # the envelope's check makes it a dead letter, saying why
    try:
        return hub_of_shared_record(source, record.topic)
    except Rejected:
        return None


def _source_header(headers: Sequence[tuple[str, bytes | None]] | None) -> str | None:
    """The CloudEvent's source from its ``ce_source`` header (binary content mode), without decoding the event:
    the record is decoded once, by :func:`open_envelope`. As the decoder does, a repeated header counts by its last
    copy; a record without the headers every CloudEvent has names no hub (it will be a dead letter)."""
    found: dict[str, bytes] = {}
    for name, raw in headers or ():
        if raw is not None and name.lower() in ("ce_source", "ce_specversion", "ce_id"):
            found[name.lower()] = raw
    if "ce_specversion" not in found or not found.get("ce_id") or "ce_source" not in found:
        return None
    try:
        return found["ce_source"].decode("utf-8")
    except UnicodeDecodeError:
        return None
