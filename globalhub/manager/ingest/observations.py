"""What the manager last received per (hub, type): recorded with each batch, read by the hub view and by the
resync requests (a request is answered once a full state of each requested type came after it was sent)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db import connection

from globalhub.manager.models import HubTypeStatus


@dataclass
class Observation:
    version: str
    full_state_at: datetime | None = None
    full_state_objects: int | None = None
    delta_at: datetime | None = None


def save_observations(observations: dict[tuple[str, str], Observation]) -> None:
    """Upsert, keeping earlier values where this batch saw nothing new (a delta does not erase a full state)."""
    if not observations:
        return
    table = HubTypeStatus._meta.db_table
    rows = [
        (hub, event_type, seen.full_state_at, seen.full_state_objects, seen.delta_at, seen.version)
        for (hub, event_type), seen in sorted(observations.items())
    ]
    with connection.cursor() as cursor:
        cursor.executemany(
            f"""
            INSERT INTO {table} AS t (hub_id, event_type, last_full_state_at, last_full_state_objects, last_delta_at,
                                      version)
            VALUES (%s, %s, %s, %s, %s, %s)
            ON CONFLICT (hub_id, event_type) DO UPDATE SET
                last_full_state_at = COALESCE(EXCLUDED.last_full_state_at, t.last_full_state_at),
                last_full_state_objects = COALESCE(EXCLUDED.last_full_state_objects, t.last_full_state_objects),
                last_delta_at = COALESCE(EXCLUDED.last_delta_at, t.last_delta_at),
                version = EXCLUDED.version
            """,
            rows,
        )
