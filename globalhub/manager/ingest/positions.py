"""Consumed positions: where each partition's ingest ends, stored in the batch's transaction with its data.

A batch first claims its partitions (:func:`claim`): a transaction-scoped advisory lock per partition, then the
stored positions, below which records were already ingested. It stores the positions after its records last
(:func:`store_positions`), in the same transaction, so data and position commit together or not at all.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from django.db import connection

from globalhub.manager.ingest.records import Record
from globalhub.manager.models import ConsumedPosition

log = logging.getLogger(__name__)


def claim(records: Sequence[Record]) -> list[Record]:
    """Lock the batch's partitions and drop records another consumer (or an earlier try) already ingested.

    The transaction-scoped advisory lock serialises consumers that overlap during a rebalance; the stored
    position then says where the data ends, so nothing is applied twice.
    """
    partitions = sorted({(record.topic, record.partition) for record in records})
    with connection.cursor() as cursor:
        # One statement, the locks taken in this (sorted) order: the subquery's order is the order the outer scan
        # calls the function in, as with one statement per partition.
        cursor.execute(
            "SELECT count(pg_advisory_xact_lock(hashtext(p.topic), p.partition)) FROM ("
            "SELECT topic, partition FROM unnest(%s::text[], %s::int[]) WITH ORDINALITY AS u(topic, partition, n) "
            "ORDER BY n) AS p",
            [[topic for topic, _ in partitions], [partition for _, partition in partitions]],
        )
    start = stored_positions(partitions)
    fresh = [r for r in records if r.offset >= start.get((r.topic, r.partition), 0)]
    if len(fresh) < len(records):
        log.info("skipped %d records already ingested (stored positions are ahead)", len(records) - len(fresh))
    return fresh


def store_positions(records: Sequence[Record]) -> None:
    """Upsert, per partition, the offset after the last record of the batch."""
    if not records:
        return
    after: dict[tuple[str, int], int] = {}
    for record in records:
        key = (record.topic, record.partition)
        after[key] = max(after.get(key, 0), record.offset + 1)
    ConsumedPosition.objects.bulk_create(
        [
            ConsumedPosition(topic=topic, partition=partition, next_offset=offset)
            for (topic, partition), offset in after.items()
        ],
        update_conflicts=True,
        unique_fields=["topic", "partition"],
        update_fields=["next_offset", "updated_at"],
    )


def stored_positions(partitions: Sequence[tuple[str, int]]) -> dict[tuple[str, int], int]:
    """The next offset to read for each given partition that has one stored."""
    topics = {topic for topic, _ in partitions}
    rows = ConsumedPosition.objects.filter(topic__in=topics).values_list("topic", "partition", "next_offset")
    wanted = set(partitions)
    return {(topic, partition): offset for topic, partition, offset in rows if (topic, partition) in wanted}
