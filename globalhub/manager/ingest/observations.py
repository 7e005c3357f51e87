"""What the manager last received per (hub, type), and the types whose bundles keep being refused.

Recorded with each batch; read by the hub view, and by the stall detector: a type whose bundles were refused
``STALL_REFUSALS`` times in a row, for at least ``STALL_AFTER``, while the hub speaks, is **stalled**. A resync
request (reason ``stalled``) then heals it: its answer is authoritative (see ``ingest/admission.py``). Any bundle
that takes effect ends the stall.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
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
    applied: bool = False  # the last bundle took its whole effect (that ends a stall)
    refused: int = 0  # bundles refused (after the last one that took effect)
    refusal: str = ""  # why the last one was refused


def save_observations(observations: dict[tuple[str, str], Observation], now: datetime) -> list[tuple[str, str]]:
    """Upsert, keeping earlier values where this batch saw nothing new (a delta does not erase a full state).

    Returns the (hub, type) slots that became stalled with this batch.
    """
    if not observations:
        return []
    table = HubTypeStatus._meta.db_table
    rows = [
        (
            hub,
            event_type,
            seen.full_state_at,
            seen.full_state_objects,
            seen.delta_at,
            seen.version,
            0 if seen.applied else seen.refused,
            None if seen.applied or not seen.refused else now,
            seen.refusal,
            seen.applied,
            seen.applied,
            seen.applied,
        )
        for (hub, event_type), seen in sorted(observations.items())
    ]
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
                refused = CASE WHEN %s THEN 0 ELSE t.refused + EXCLUDED.refused END,
                refused_since = CASE WHEN %s THEN NULL ELSE COALESCE(t.refused_since, EXCLUDED.refused_since) END,
                last_refusal = CASE WHEN EXCLUDED.last_refusal <> '' THEN EXCLUDED.last_refusal ELSE t.last_refusal END,
                stalled_since = CASE WHEN %s THEN NULL ELSE t.stalled_since END
            """,
            rows,
        )
    refusing = [(hub, event_type) for (hub, event_type), seen in observations.items() if seen.refused]
    return _newly_stalled(refusing, now)


def _newly_stalled(slots: Iterable[tuple[str, str]], now: datetime) -> list[tuple[str, str]]:
    wanted = sorted(set(slots))
    if not wanted:
        return []
    table = HubTypeStatus._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            UPDATE {table} SET stalled_since = %s, stalls = stalls + 1
            WHERE (hub_id, event_type) IN (SELECT * FROM unnest(%s::text[], %s::text[]))
              AND stalled_since IS NULL AND refused >= %s AND refused_since <= %s
            RETURNING hub_id, event_type
            """,
            [now, [h for h, _ in wanted], [t for _, t in wanted], STALL_REFUSALS, now - STALL_AFTER],
        )
        return sorted((hub, event_type) for hub, event_type in cursor.fetchall())
