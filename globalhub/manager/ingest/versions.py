"""The state of every (hub, type) slot, loaded once per batch, judged in memory, saved with the batch.

Admission itself is decided in :mod:`globalhub.manager.ingest.admission`; this module only remembers the slots.
They are stored in ``TypeVersion``, in the batch's transaction, so a manager restart does not forget them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from decimal import Decimal

from globalhub.manager.ingest.admission import Mode, Slot, Stamp, Verdict, judge, next_slot, stamp_of
from globalhub.manager.ingest.records import StatusEvent
from globalhub.manager.models import TypeVersion
from globalhub.protocol.events import EventType
from globalhub.protocol.version import Version

SlotKey = tuple[str, str]  # (hub, full event type)


class VersionBook:
    """``modes``: each type's admission mode (the ingest registry's)."""

    def __init__(self, known: dict[SlotKey, Slot], modes: Mapping[EventType, Mode]) -> None:
        self._slots = known
        self._modes = modes
        self._changed: set[SlotKey] = set()

    @classmethod
    def load(cls, hubs: Iterable[str], modes: Mapping[EventType, Mode]) -> VersionBook:
        rows = TypeVersion.objects.filter(hub_id__in=list(hubs)).values_list(
            "hub_id", "event_type", "generation", "value", "run_started_at", "last_sent_at"
        )
        slots = {(hub, t): Slot(Version(int(g), int(v)), run, last) for hub, t, g, v, run, last in rows}
        return cls(slots, modes)

    def slot(self, event: StatusEvent) -> Slot:
        return self._slots.get((event.hub, event.type.value), Slot())

    def last(self, event: StatusEvent) -> Version | None:
        return self.slot(event).version

    def last_of(self, hub: str, event_type: str) -> Version | None:
        return self._slots.get((hub, str(event_type)), Slot()).version

    def judge(self, event: StatusEvent, *, answers_request: bool = False, heals_stall: bool = False) -> Verdict:
        return judge(
            self._modes[event.type],
            event.version,
            event.time,
            self.slot(event),
            answers_request=answers_request,
            heals_stall=heals_stall,
        )

    def admits(self, event: StatusEvent) -> bool:
        """Whether the event would be admitted as an ordinary bundle (one that answers no request)."""
        return self.judge(event).admitted

    def stamp_for(self, event: StatusEvent, verdict: Verdict, now: datetime) -> Stamp:
        """The stamp an admitted ``event``'s rows get (nothing is remembered: see :meth:`processed`)."""
        return stamp_of(next_slot(self.slot(event), event.version, event.time, verdict, now), event.version)

    def processed(self, event: StatusEvent, verdict: Verdict, now: datetime) -> Stamp:
        """Take an admitted ``event`` into its slot (saved by :meth:`save`); returns the stamp its rows get."""
        key = (event.hub, event.type.value)
        slot = next_slot(self.slot(event), event.version, event.time, verdict, now)
        if slot != self._slots.get(key):
            self._slots[key] = slot
            self._changed.add(key)
        return stamp_of(slot, event.version)

    def save(self) -> None:
        if not self._changed:
            return
        TypeVersion.objects.bulk_create(
            [self._row(hub, event_type) for hub, event_type in sorted(self._changed)],
            update_conflicts=True,
            unique_fields=["hub", "event_type"],
            update_fields=["generation", "value", "run_started_at", "last_sent_at", "updated_at"],
        )
        self._changed.clear()

    def _row(self, hub: str, event_type: str) -> TypeVersion:
        slot = self._slots[(hub, event_type)]
        version = slot.version or Version()
        return TypeVersion(
            hub_id=hub,
            event_type=event_type,
            generation=Decimal(version.generation),
            value=Decimal(version.value),
            run_started_at=slot.run_started_at,
            last_sent_at=slot.last_sent_at,
        )
