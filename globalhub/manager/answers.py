"""Which manager requests a full state answers, and the requests' completion. Used by the ingest, per batch.

* A full state of this project's agent names the requests it answers (``ghrequests``, and the marker
  ``ghanswersnamed`` on every full state, see ``globalhub/protocol/requests.py``). It **answers** an open request
  of its hub and type that it names, whether or not the request's ``sent_at`` is committed yet, and the open
  requests of that hub and type sent before one it names. It answers nothing else, whenever Kafka stored it: the
  agent's own periodic resync or a complete type's change answers nobody.
* An upstream agent names none: its full state answers the hub's open requests that were sent before Kafka stored
  it, by the broker's clock (a ``LogAppendTime`` topic). On a topic with producer timestamps (the hub's clock) it
  answers nothing.
* A full state that answers a request is **authoritative** (see ``ingest/admission.py``).
* A request's target (one hub) is **complete** when a full state answering the request was ingested whole for
  every requested type; the request, when all its targets are. An older full state ingested after the request was
  sent (a lagging consumer's backlog) answers nothing.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from django.db import connection

from globalhub.manager.ingest.records import StatusEvent
from globalhub.manager.models import ResyncRequest, ResyncTarget
from globalhub.protocol.requests import answered_requests, names_its_answers

SlotKey = tuple[str, str]  # (hub, full event type)


@dataclass(frozen=True)
class Owed:
    """An open request a hub owes an answer for one type."""

    requested_at: datetime
    sent_at: datetime | None  # None: not sent yet, or its send is not committed yet


@dataclass
class OpenRequests:
    """The open (request, hub, type) answers the batch's hubs owe, and the answers the batch found."""

    owed: dict[SlotKey, dict[int, Owed]] = field(default_factory=dict)  # -> request id: the request
    found: dict[SlotKey, set[int]] = field(default_factory=lambda: defaultdict(set))

    @classmethod
    def load(cls, hubs: Iterable[str]) -> OpenRequests:
        rows = ResyncTarget.objects.filter(hub_id__in=list(hubs), completed_at__isnull=True).values_list(
            "request_id", "hub_id", "request__types", "answered_types", "request__requested_at", "request__sent_at"
        )
        owed: dict[SlotKey, dict[int, Owed]] = {}
        for request_id, hub, types, answered, requested_at, sent_at in rows:
            for event_type in types:
                if event_type not in answered:
                    owed.setdefault((hub, event_type), {})[request_id] = Owed(requested_at, sent_at)
        return cls(owed)

    def answered_by(self, event: StatusEvent, *, full_state: bool) -> set[int]:
        """The open requests ``event`` answers: those it names and those sent before them, when it names its
        answers (this project's agent); else (an upstream agent's full state) those sent before Kafka stored it."""
        owed = self.owed.get((event.hub, event.type.value))
        if not owed:
            return set()
        if names_its_answers(event.extensions):
            ids = set(answered_requests(event.extensions))
            named = {request_id for request_id in owed if str(request_id) in ids}  # sent, committed or not
            sent = [owed[request_id].sent_at for request_id in named]
            latest = max((at for at in sent if at is not None), default=None)
            # A state fresh enough for a request is fresh enough for any sent before it (the agent's list of ids
            # is bounded, and a crash may lose it).
            earlier = {
                request_id
                for request_id, request in owed.items()
                if latest is not None and request.sent_at is not None and request.sent_at <= latest
            }
            return named | earlier
        record = event.record
        if not full_state or not record.log_append or record.timestamp is None:
            return set()  # only the broker's clock says the state is newer than the request
        stored_at = record.timestamp
        return {
            request_id
            for request_id, request in owed.items()
            if request.sent_at is not None and request.sent_at <= stored_at
        }

    def is_open(self, hub: str, event_type: str) -> bool:
        """Whether a request still owes the hub's answer for this type (one answered in this batch does not)."""
        key = (hub, event_type)
        return bool(set(self.owed.get(key, {})) - self.found.get(key, set()))

    def answer(self, event: StatusEvent, request_ids: set[int]) -> None:
        """The full state answering these requests was ingested whole: they are answered for its hub and type."""
        if not request_ids:
            return
        key = (event.hub, event.type.value)
        self.found[key] |= request_ids
        owed = self.owed.get(key, {})
        for request_id in request_ids:
            owed.pop(request_id, None)

    def save(self, now: datetime) -> int:
        """Record the answers found; complete the targets and requests they finish. Returns the requests touched."""
        if not self.found:
            return 0
        targets = ResyncTarget._meta.db_table
        requests = ResyncRequest._meta.db_table
        touched: set[int] = set()
        with connection.cursor() as cursor:
            for (hub, event_type), request_ids in sorted(self.found.items()):
                cursor.execute(
                    f"""
                    UPDATE {targets} SET answered_types = answered_types || to_jsonb(%s::text)
                    WHERE hub_id = %s AND request_id = ANY(%s) AND NOT (answered_types ? %s)
                    """,
                    [event_type, hub, sorted(request_ids), event_type],
                )
                touched |= request_ids
            ids = sorted(touched)
            cursor.execute(
                f"""
                UPDATE {targets} AS t SET completed_at = %s
                FROM {requests} AS r
                WHERE t.request_id = r.id AND t.request_id = ANY(%s) AND t.completed_at IS NULL
                  AND NOT EXISTS (SELECT 1 FROM jsonb_array_elements_text(r.types) AS wanted(type)
                                  WHERE NOT (t.answered_types ? wanted.type))
                """,
                [now, ids],
            )
            cursor.execute(
                f"""
                UPDATE {requests} AS r SET completed_at = %s
                WHERE r.id = ANY(%s) AND r.completed_at IS NULL
                  AND NOT EXISTS (SELECT 1 FROM {targets} t WHERE t.request_id = r.id AND t.completed_at IS NULL)
                """,
                [now, ids],
            )
        self.found.clear()
        return len(ids)
