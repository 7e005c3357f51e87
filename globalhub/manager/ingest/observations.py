"""What the manager last received per (hub, type), and the types whose bundles keep being refused.

Recorded with each batch; read by the hub view, and by the stall detector: a type whose bundles were refused
``STALL_REFUSALS`` times in a row, for at least ``STALL_AFTER``, while the hub speaks, is **stalled**. A resync
request (reason ``stalled``) then heals it: its answer is authoritative (see ``ingest/admission.py``). Any bundle
that takes its whole effect ends the stall and restarts the count, even when later bundles of the same batch are
refused: only the refusals after the last such bundle count.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db import connection

from globalhub.manager.models import HubTypeStatus

STALL_REFUSALS = 3
STALL_AFTER = timedelta(seconds=30)


@dataclass
class Observation:
    version: str = ""
    full_state_at: datetime | None = None
    full_state_objects: int | None = None
    delta_at: datetime | None = None
    reset_at: int | None = None  # the offset of the batch's last bundle that took its whole effect
    refusals: list[tuple[int, str]] = field(default_factory=list)  # (offset, why) of the batch's refused bundles

    def took_effect(self, offset: int) -> None:
        """The bundle at ``offset`` took its whole effect: the refusals before it no longer count."""
        self.reset_at = offset if self.reset_at is None else max(self.reset_at, offset)

    def refuse(self, offset: int, reason: str) -> None:
        self.refusals.append((offset, reason))

    @property
    def reset(self) -> bool:
        """A bundle of the batch took its whole effect: the count restarts (and a stall ends)."""
        return self.reset_at is not None

    @property
    def refused(self) -> int:
        """Bundles refused after the last one that took its whole effect (in partition order)."""
        return sum(1 for offset, _ in self.refusals if self.reset_at is None or offset > self.reset_at)

    @property
    def refusal(self) -> str:
        """Why the last refused bundle was refused."""
        return max(self.refusals)[1] if self.refusals else ""


@dataclass(frozen=True)
class Stalled:
    """A (hub, type) stalled after a batch: ``new`` when this batch made it stalled."""

    hub: str
    event_type: str
    new: bool


def save_observations(observations: dict[tuple[str, str], Observation], now: datetime) -> list[Stalled]:
    """Upsert, keeping earlier values where this batch saw nothing new (a delta does not erase a full state).

    Returns the (hub, type) slots this batch refused bundles of that are stalled: newly, or still.
    """
    if not observations:
        return []
    table = HubTypeStatus._meta.db_table
    rows = []
    for (hub, event_type), seen in sorted(observations.items()):
        refused = seen.refused
        rows.append(
            (
                hub,
                event_type,
                seen.full_state_at,
                seen.full_state_objects,
                seen.delta_at,
                seen.version,
                refused,
                now if refused else None,
                seen.refusal,
                seen.reset,
                seen.reset,
                seen.reset,
            )
        )
    with connection.cursor() as cursor:
        cursor.executemany(
            f"""
            INSERT INTO {table} AS t (hub_id, event_type, last_full_state_at, last_full_state_objects, last_delta_at,
                                      version, refused, refused_since, last_refusal)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
            ON CONFLICT (hub_id, event_type) DO UPDATE SET
                last_full_state_at = COALESCE(EXCLUDED.last_full_state_at, t.last_full_state_at),
                last_full_state_objects = COALESCE(EXCLUDED.last_full_state_objects, t.last_full_state_objects),
                last_delta_at = COALESCE(EXCLUDED.last_delta_at, t.last_delta_at),
                version = CASE WHEN EXCLUDED.version <> '' THEN EXCLUDED.version ELSE t.version END,
                refused = CASE WHEN %s THEN EXCLUDED.refused ELSE t.refused + EXCLUDED.refused END,
                refused_since = CASE WHEN %s THEN EXCLUDED.refused_since
                                     ELSE COALESCE(t.refused_since, EXCLUDED.refused_since) END,
                last_refusal = CASE WHEN EXCLUDED.last_refusal <> '' THEN EXCLUDED.last_refusal ELSE t.last_refusal END,
                stalled_since = CASE WHEN %s THEN NULL ELSE t.stalled_since END
            """,
            rows,
        )
    refusing = sorted({(hub, event_type) for (hub, event_type), seen in observations.items() if seen.refused})
    return _stalled(refusing, now)


def _stalled(slots: list[tuple[str, str]], now: datetime) -> list[Stalled]:
    """Mark stalled the slots whose refusals reached the threshold; return every one of ``slots`` now stalled."""
    if not slots:
        return []
    table = HubTypeStatus._meta.db_table
    hubs, types = [h for h, _ in slots], [t for _, t in slots]
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            UPDATE {table} SET stalled_since = %s, stalls = stalls + 1
            WHERE (hub_id, event_type) IN (SELECT * FROM unnest(%s::text[], %s::text[]))
              AND stalled_since IS NULL AND refused >= %s AND refused_since <= %s
            RETURNING hub_id, event_type
            """,
            [now, hubs, types, STALL_REFUSALS, now - STALL_AFTER],
        )
        new = set(cursor.fetchall())
        cursor.execute(
            f"""
            SELECT hub_id, event_type FROM {table}
            WHERE (hub_id, event_type) IN (SELECT * FROM unnest(%s::text[], %s::text[])) AND stalled_since IS NOT NULL
            """,
            [hubs, types],
        )
        stalled = sorted(cursor.fetchall())
    return [Stalled(hub, event_type, (hub, event_type) in new) for hub, event_type in stalled]
