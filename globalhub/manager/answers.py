"""Which manager requests a full state answers, and the requests' completion. Used by the ingest, per batch.

* A full state **answers** an open request when it carries the request's id (``ghrequests``, see
  ``globalhub/protocol/requests.py``) and the request asked its hub for its type, not answered yet; it answers too
  the open requests of that hub and type sent before that one. An upstream agent carries no ids: its full state
  answers the hub's open requests that were sent before Kafka stored it.
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
from globalhub.protocol.requests import answered_requests

SlotKey = tuple[str, str]  # (hub, full event type)


@dataclass
class OpenRequests:
    """The open (request, hub, type) answers the batch's hubs owe, and the answers the batch found."""

    owed: dict[SlotKey, dict[int, datetime]] = field(default_factory=dict)  # -> request id: when it was sent
    found: dict[SlotKey, set[int]] = field(default_factory=lambda: defaultdict(set))

    @classmethod
    def load(cls, hubs: Iterable[str]) -> OpenRequests:
        rows = ResyncTarget.objects.filter(
            hub_id__in=list(hubs), completed_at__isnull=True, request__sent_at__isnull=False
        ).values_list("request_id", "hub_id", "request__types", "answered_types", "request__sent_at")
        owed: dict[SlotKey, dict[int, datetime]] = {}
        for request_id, hub, types, answered, sent_at in rows:
            if sent_at is None:  # excluded by the query; the column may be null
                continue
            for event_type in types:
                if event_type not in answered:
                    owed.setdefault((hub, event_type), {})[request_id] = sent_at
        return cls(owed)

    def answered_by(self, event: StatusEvent, *, full_state: bool) -> set[int]:
        """The open requests ``event`` answers: those whose ids it carries, or (an upstream full state carries
        none) those sent before Kafka stored it."""
        owed = self.owed.get((event.hub, event.type.value))
        if not owed:
            return set()
        ids = answered_requests(event.extensions)
        if ids:
            named = [sent_at for request_id, sent_at in owed.items() if str(request_id) in ids]
            # A state fresh enough for a request is fresh enough for any sent before it (the agent's list of ids
            # is bounded, and a crash may lose it).
            return {request_id for request_id, sent_at in owed.items() if named and sent_at <= max(named)}
        stored_at = event.record.timestamp
        if not full_state or stored_at is None:
            return set()
        return {request_id for request_id, sent_at in owed.items() if sent_at <= stored_at}

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
