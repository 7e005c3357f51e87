"""Retention of the event streams: events older than ``GH_EVENT_RETENTION`` are deleted, a chunk at a time.

A retention job, not time-partitioned tables: the tables stay ordinary Django models (migrations, admin, the
test database), the delete walks the ``created_at`` index in chunks of ``CHUNK`` rows with a commit after each, so
it never holds long locks nor one huge transaction, and it catches up by itself after a pause. Partitioning by
month, as upstream does, makes the delete a ``DROP`` of a partition: worth it once a stream grows past what one
hourly job deletes comfortably (docs/operations.md gives the figures to watch).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.db import connection, transaction

from globalhub.manager.models import HubEvent, LocalPolicyEvent, LocalRootPolicyEvent, ManagedClusterEvent

log = logging.getLogger(__name__)

CHUNK = 10_000
STREAMS: tuple[type[HubEvent], ...] = (ManagedClusterEvent, LocalRootPolicyEvent, LocalPolicyEvent)


def prune_events(now: datetime, retention: timedelta, chunk: int = CHUNK) -> dict[str, int]:
    """Delete every stream's events whose own time is older than ``now - retention``; returns the counts."""
    cutoff = now - retention
    deleted = {}
    for model in STREAMS:
        table = model._meta.db_table
        total = 0
        while True:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(
                    f"DELETE FROM {table} WHERE id IN (SELECT id FROM {table} WHERE created_at < %s LIMIT %s)",
                    [cutoff, chunk],
                )
                count = cursor.rowcount
            total += count
            if count < chunk:
                break
        deleted[table] = total
        if total:
            log.info("pruned %d events older than %s from %s", total, cutoff.isoformat(), table)
    return deleted
