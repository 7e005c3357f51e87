"""Event streams: upstream's append-only ``event.*`` types, each event stored once.

A bundle is a JSON array of events (upstream's batch mode) or one event object (single mode). Each event becomes a
row of its stream's table. A row already stored (the same hub and key: see each model's unique constraint) is left
as it is, so a redelivery, a resend after a failed send, or the agent's startup resync of its recent events stores
nothing twice. An event without its name or its time cannot be identified: the whole bundle is refused (a dead
letter, with the index of the event and what is missing). The hub is the trusted source's, never the payload's
``leafHubName``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from globalhub.manager.ingest.records import Rejected, StatusEvent
from globalhub.manager.models import HubEvent
from globalhub.protocol.objects import canonical_uuid

Convert = Callable[[Any], Any]  # the JSON value -> the column's value; ValueError when it cannot be one

# An event's time must be a real one: not before this, nor more than FUTURE_TOLERANCE after it was received (a
# broken clock or a forged time would otherwise outlive the retention, or break the admin's date drill-down).
EARLIEST_EVENT = datetime(2000, 1, 1, tzinfo=UTC)
FUTURE_TOLERANCE = timedelta(days=1)


def text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return str(value)
    raise ValueError(f"expected a string, got {type(value).__name__}")


def uuid_or_none(value: Any) -> str | None:
    return canonical_uuid(value) if isinstance(value, str) else None


def integer(value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected an integer, got {type(value).__name__}")
    return int(value)


def timestamp(value: Any) -> datetime:
    if not isinstance(value, str):
        raise ValueError(f"expected an RFC 3339 time, got {type(value).__name__}")
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        raise ValueError(f"time {value!r} has no time zone")
    return moment


def json_value(value: Any) -> Any:
    return value


@dataclass(frozen=True)
class Column:
    field: str  # the model's field
    key: str  # the event's JSON key
    convert: Convert = text
    required: bool = False


# Every stream's events carry these (upstream's pkg/bundle/event).
COMMON_COLUMNS = (
    Column("event_name", "eventName", required=True),
    Column("event_namespace", "eventNamespace"),
    Column("message", "message"),
    Column("reason", "reason"),
    Column("created_at", "createdAt", timestamp, required=True),
)


@dataclass(frozen=True)
class EventStream:
    """An append-only event type: its table (a :class:`HubEvent` model) and how an event's keys fill its columns."""

    model: type[HubEvent]
    columns: tuple[Column, ...]

    def rows(self, event: StatusEvent, received_at: datetime) -> list[HubEvent]:
        """The bundle's events as unsaved rows; raises :class:`Rejected` saying which event is wrong and how."""
        payload = event.parsed
        events = payload if isinstance(payload, list) else [payload]
        rows = []
        for index, item in enumerate(events):
            if not isinstance(item, dict):
                raise Rejected(
                    f"event {index} must be a JSON object, got {type(item).__name__}",
                    hub=event.hub,
                    event_type=event.type,
                )
            values = self._values(item, index, event)
            created = values.get("created_at")
            if isinstance(created, datetime) and not EARLIEST_EVENT <= created <= received_at + FUTURE_TOLERANCE:
                raise Rejected(
                    f"event {index}: createdAt {created.isoformat()} is not a plausible time (before "
                    f"{EARLIEST_EVENT.year} or more than a day after it was received)",
                    hub=event.hub,
                    event_type=event.type,
                )
            rows.append(self.model(hub_id=event.hub, received_at=received_at, **values))
        return rows

    def _values(self, item: dict[str, Any], index: int, event: StatusEvent) -> dict[str, Any]:
        values = {}
        for column in self.columns:
            raw = item.get(column.key)
            if raw is None and column.required:
                raise Rejected(f"event {index} has no {column.key}", hub=event.hub, event_type=event.type)
            try:
                values[column.field] = column.convert(raw)
            except ValueError as error:
                raise Rejected(f"event {index}: {column.key}: {error}", hub=event.hub, event_type=event.type) from None
        return values

    def store(self, rows: list[HubEvent]) -> None:
        """Insert the rows; one already stored (its unique key) is left as it is."""
        if rows:
            self.model._default_manager.bulk_create(rows, ignore_conflicts=True, batch_size=500)
