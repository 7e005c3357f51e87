"""Ingest a batch of consumed status records in one transaction, together with the consumed positions.

A record either changes the manager's copy, is skipped as superseded (version admission), or becomes a dead
letter with its reason; in every case the partition moves on, in the same transaction as the effect. Database
trouble that is not about one record's data (connection lost, server restarting) propagates: the caller rolls
back, keeps its position and retries the batch.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from django.db import DataError, IntegrityError, connection, transaction

from globalhub.manager.ingest import versions
from globalhub.manager.ingest.envelope import open_envelope
from globalhub.manager.ingest.handlers import HANDLERS
from globalhub.manager.ingest.records import Record, Rejected
from globalhub.manager.models import ConsumedPosition, DeadLetter, Hub
from globalhub.protocol.events import hub_from_status_topic

log = logging.getLogger(__name__)


@dataclass
class BatchStats:
    applied: int = 0
    superseded: int = 0
    dead_letters: int = 0
    already_ingested: int = 0
    by_type: dict[str, int] = field(default_factory=dict)


def ingest_batch(records: Sequence[Record], *, topic_prefix: str) -> BatchStats:
    """Apply ``records`` (in partition order) and store the positions after them, atomically."""
    stats = BatchStats()
    if not records:
        return stats
    with transaction.atomic():
        fresh = _claim(records, stats)
        _register_hubs(fresh, topic_prefix)
        for record in fresh:
            _ingest_one(record, topic_prefix, stats)
        store_positions(fresh)
    return stats


def _claim(records: Sequence[Record], stats: BatchStats) -> list[Record]:
    """Lock the batch's partitions and drop records another consumer (or an earlier try) already ingested.

    The transaction-scoped advisory lock serialises consumers that overlap during a rebalance; the stored
    position then says where the data ends, so nothing is applied twice.
    """
    partitions = sorted({(record.topic, record.partition) for record in records})
    with connection.cursor() as cursor:
        for topic, partition in partitions:
            cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s), %s)", [topic, partition])
    start = stored_positions(partitions)
    fresh = [r for r in records if r.offset >= start.get((r.topic, r.partition), 0)]
    stats.already_ingested = len(records) - len(fresh)
    if stats.already_ingested:
        log.info("skipped %d records already ingested (stored positions are ahead)", stats.already_ingested)
    return fresh


def _register_hubs(records: Sequence[Record], topic_prefix: str) -> None:
    hubs = {hub_from_status_topic(record.topic, topic_prefix) for record in records}
    names = sorted(hub for hub in hubs if hub)
    if names:
        Hub.objects.bulk_create([Hub(name=name) for name in names], ignore_conflicts=True)


def _ingest_one(record: Record, topic_prefix: str, stats: BatchStats) -> None:
    try:
        event = open_envelope(record, topic_prefix)
        handler = HANDLERS.get(event.type)
        if handler is None:
            raise Rejected(
                f"event type {event.type.short} is not ingested by this manager", hub=event.hub, event_type=event.type
            )
        if not versions.is_admitted(event):
            stats.superseded += 1
            log.info(
                "hub=%s type=%s version=%s superseded, skipped (offset %s)",
                event.hub,
                event.type.short,
                event.version,
                record.offset,
            )
            return
        with transaction.atomic():  # a savepoint: a rejected record leaves no partial effect
            problem = handler(event)
            versions.record_processed(event)
    except Rejected as rejected:
        _dead_letter(record, rejected)
        stats.dead_letters += 1
        return
    except (DataError, IntegrityError) as error:
        # The database refused this record's data: retrying cannot help, recording it does.
        _dead_letter(record, Rejected(f"database rejected the data: {error}"))
        stats.dead_letters += 1
        return
    stats.applied += 1
    stats.by_type[event.type.short] = stats.by_type.get(event.type.short, 0) + 1
    if problem:
        _dead_letter(record, Rejected(f"truncated resync: {problem}", hub=event.hub, event_type=event.type))
        stats.dead_letters += 1


def _dead_letter(record: Record, rejected: Rejected) -> None:
    log.warning(
        "dead letter topic=%s partition=%s offset=%s hub=%s type=%s: %s",
        record.topic,
        record.partition,
        record.offset,
        rejected.hub or "-",
        rejected.event_type or "-",
        rejected.reason,
    )
    DeadLetter.objects.create(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        reason=rejected.reason,
        hub_name=rejected.hub,
        event_type=str(rejected.event_type),
        key=record.key,
        headers=record.headers_json(),
        value=record.value,
    )


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
