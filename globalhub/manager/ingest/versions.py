"""Persisted last-processed versions per (hub, type), and the admission check that uses them."""

from __future__ import annotations

from decimal import Decimal

from globalhub.manager.ingest.admission import MODES, admits
from globalhub.manager.ingest.records import StatusEvent
from globalhub.manager.models import TypeVersion
from globalhub.protocol.version import Version


def last_processed(hub: str, event_type: str) -> Version | None:
    row = TypeVersion.objects.filter(hub_id=hub, event_type=event_type).values_list("generation", "value").first()
    if row is None:
        return None
    return Version(int(row[0]), int(row[1]))


def is_admitted(event: StatusEvent) -> bool:
    return admits(MODES[event.type], event.version, last_processed(event.hub, event.type))


def record_processed(event: StatusEvent) -> None:
    TypeVersion.objects.update_or_create(
        hub_id=event.hub,
        event_type=event.type,
        defaults={"generation": Decimal(event.version.generation), "value": Decimal(event.version.value)},
    )
