"""Ingest counters (``IngestTotal``): bundles and rows per event type and outcome, kept in the database.

A batch tallies what became of each bundle in memory (:class:`Totals`) and adds it to the stored counters with one
statement, in the batch's own transaction (:func:`save_totals`): a rolled-back batch counts nothing, a retried one
counts once, and the totals survive restarts. The web process serves them as ``globalhub_ingest_*_total``
(``globalhub/manager/metrics.py``). A bundle counts under one outcome, except one that took effect and also left a
dead letter (a resync it gave up, or a heartbeat's unreadable digests): it counts under both.

The rows are shared by every consumer and stay locked until the batch commits, so the statement is the batch's
last, and it writes its rows in one order (sorted): two batches never wait for each other in opposite orders.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from django.db import connection
from django.utils import timezone

from globalhub.manager.models import IngestTotal
from globalhub.protocol.events import EventType


class Outcome(StrEnum):
    """What became of a bundle (a record of the status topics), as counted."""

    STORED = "stored"  # it took effect (``rows``: the objects it wrote)
    SUPERSEDED = "superseded"  # its version was not admitted, or a newer state of its slot replaced it in the batch
    REFUSED = "refused"  # admitted, but every object it carried is older than the row's
    DEAD_LETTER = "dead_letter"  # stored as a dead letter with its reason
    INACTIVE = "inactive"  # of an inactive hub: no effect (its reactivation's resync brings its state)
    STAGED = "staged"  # a frame of a larger state, waiting for the rest of it
    NOT_STORED = "not_stored"  # a type the manager accepts and counts without storing it


UNKNOWN_TYPE = "unknown"
"""The type label of a dead letter whose event type is not one the manager knows: hubs choose the type strings,
so anything else is never used as a label (a metric label must have a small, fixed set of values)."""


def type_label(event_type: str) -> str:
    """The short name of a known event type (``managedcluster``), else :data:`UNKNOWN_TYPE`."""
    try:
        return EventType.from_any(event_type).short
    except ValueError:
        return UNKNOWN_TYPE


@dataclass
class Totals:
    """One batch's counts: (type, outcome) -> [bundles, rows]."""

    counts: dict[tuple[str, str], list[int]] = field(default_factory=dict)

    def add(self, event_type: str, outcome: Outcome, rows: int = 0) -> None:
        counted = self.counts.setdefault((type_label(event_type), outcome.value), [0, 0])
        counted[0] += 1
        counted[1] += rows


def save_totals(totals: Totals) -> None:
    """Add a batch's counts to the stored ones: one ``INSERT … ON CONFLICT DO UPDATE`` (none when empty)."""
    if not totals.counts:
        return
    table = connection.ops.quote_name(IngestTotal._meta.db_table)
    now = timezone.now()
    keys = sorted(totals.counts)
    values = ", ".join(["(%s, %s, %s, %s, %s)"] * len(keys))
    parameters: list[str | int | datetime] = []
    for event_type, outcome in keys:
        bundles, rows = totals.counts[(event_type, outcome)]
        parameters += [event_type, outcome, bundles, rows, now]
    statement = (
        f'INSERT INTO {table} (event_type, outcome, bundles, "rows", updated_at) VALUES {values} '
        f"ON CONFLICT (event_type, outcome) DO UPDATE SET bundles = {table}.bundles + excluded.bundles, "
        f'"rows" = {table}."rows" + excluded."rows", updated_at = excluded.updated_at'
    )
    with connection.cursor() as cursor:
        cursor.execute(statement, parameters)
