"""The manager's side of the anti-entropy digests: one hub's rows of one type as a ``Digest``, in SQL.

The row hashes are generated columns (migration ``0011_digest_rows``), so the digest is one aggregate over the hub's
live rows (``count(*)``, ``bit_xor(digest_row)``), found through the (hub, id) unique index. The agent keeps the same
digest of its inventory (``agent_tasks/inventory.py``); ``globalhub/protocol/digest.py`` defines both.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db import connection

from globalhub.manager.models import LocalCompliance, LocalPolicy, ManagedCluster
from globalhub.protocol.digest import Digest
from globalhub.protocol.events import EventType

# Event type -> (table, whether soft-deleted rows exist there).
DIGEST_TABLES = {
    EventType.MANAGED_CLUSTER: (ManagedCluster._meta.db_table, True),
    EventType.LOCAL_POLICY_SPEC: (LocalPolicy._meta.db_table, True),
    EventType.LOCAL_COMPLIANCE: (LocalCompliance._meta.db_table, False),
}


def hub_digests(pairs: Iterable[tuple[str, EventType]]) -> dict[tuple[str, EventType], Digest]:
    """The digests of many (hub, type) pairs: one aggregate per type over all their hubs (a batch mixes many hubs'
    heartbeats; one query per pair cost a fifth of a 1,000-hub broadcast's ingest)."""
    hubs_of: dict[EventType, set[str]] = {}
    for hub, event_type in pairs:
        hubs_of.setdefault(event_type, set()).add(hub)
    found: dict[tuple[str, EventType], Digest] = {}
    for event_type, hubs in hubs_of.items():
        table, soft_deletes = DIGEST_TABLES[event_type]
        live = " AND deleted_at IS NULL" if soft_deletes else ""
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT leaf_hub_name, count(*), coalesce(bit_xor(digest_row), 0) FROM {table} "
                f"WHERE leaf_hub_name = ANY(%s){live} GROUP BY leaf_hub_name",
                [sorted(hubs)],
            )
            rows = {hub: Digest(int(count), int(xor)) for hub, count, xor in cursor.fetchall()}
        for hub in hubs:
            found[(hub, event_type)] = rows.get(hub, Digest(0, 0))
    return found


def hub_digest(hub: str, event_type: EventType) -> Digest:
    """The digest of the hub's live rows of ``event_type`` (one of ``DIGEST_TABLES``)."""
    table, soft_deletes = DIGEST_TABLES[event_type]
    live = " AND deleted_at IS NULL" if soft_deletes else ""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT count(*), coalesce(bit_xor(digest_row), 0) FROM {table} WHERE leaf_hub_name = %s{live}", [hub]
        )
        count, xor = cursor.fetchone()
    return Digest(int(count), int(xor))
