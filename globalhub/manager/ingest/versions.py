"""The last processed version per (hub, type), loaded once per batch, checked in memory, saved with the batch.

Admission itself is decided in :mod:`globalhub.manager.ingest.admission`; this module only remembers versions.
They are stored in ``TypeVersion``, in the batch's transaction, so a manager restart does not forget them.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal

from globalhub.manager.ingest.admission import MODES, admits
from globalhub.manager.ingest.records import StatusEvent
from globalhub.manager.models import TypeVersion
from globalhub.protocol.version import Version

Slot = tuple[str, str]  # (hub, full event type)


class VersionBook:
    def __init__(self, known: dict[Slot, Version]) -> None:
        self._last = known
        self._changed: set[Slot] = set()

    @classmethod
    def load(cls, hubs: Iterable[str]) -> VersionBook:
        rows = TypeVersion.objects.filter(hub_id__in=list(hubs)).values_list(
            "hub_id", "event_type", "generation", "value"
        )
        return cls({(hub, event_type): Version(int(g), int(v)) for hub, event_type, g, v in rows})

    def last(self, event: StatusEvent) -> Version | None:
        return self._last.get((event.hub, event.type.value))

    def last_of(self, hub: str, event_type: str) -> Version | None:
        return self._last.get((hub, str(event_type)))

    def admits(self, event: StatusEvent) -> bool:
        return admits(MODES[event.type], event.version, self.last(event))

    def processed(self, event: StatusEvent) -> None:
        """Remember ``event``'s version as the slot's last processed one (saved by :meth:`save`)."""
        slot = (event.hub, event.type.value)
        self._last[slot] = event.version.copy()
        self._changed.add(slot)

    def save(self) -> None:
        if not self._changed:
            return
        TypeVersion.objects.bulk_create(
            [
                TypeVersion(
                    hub_id=hub,
                    event_type=event_type,
                    generation=Decimal(self._last[(hub, event_type)].generation),
                    value=Decimal(self._last[(hub, event_type)].value),
                )
                for hub, event_type in sorted(self._changed)
            ],
            update_conflicts=True,
            unique_fields=["hub", "event_type"],
            update_fields=["generation", "value", "updated_at"],
        )
        self._changed.clear()
