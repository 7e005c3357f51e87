"""The status consumer loop: Kafka ``gh-status.*`` -> :func:`ingest_batch` -> PostgreSQL.

Offsets: Kafka auto-commit and offset storage are off. The database is the only offset authority: positions are
written with the data (:mod:`globalhub.manager.ingest.pipeline`) and every assigned partition starts from its stored
position (or from the beginning of a hub's topic never read before). On a database failure the batch is rolled
back and retried with backoff until it succeeds: the consumer never skips a message.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from confluent_kafka import OFFSET_BEGINNING, TIMESTAMP_NOT_AVAILABLE, Consumer, KafkaError, Message, TopicPartition
from django.db import DatabaseError, close_old_connections, connection

from globalhub.manager.ingest.pipeline import BatchStats, ingest_batch, stored_positions
from globalhub.manager.ingest.records import Record
from globalhub.protocol.events import status_topic_pattern
from globalhub.protocol.kafka import KafkaSettings, headers_of

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConsumerOptions:
    group_id: str
    topic_prefix: str
    batch_size: int = 500
    poll_timeout: float = 1.0
    topic_refresh_ms: int = 5000
    retry_initial: float = 0.5
    retry_max: float = 30.0


class StatusConsumer:
    """Consumes every hub's status topic until :meth:`stop` is called (e.g. from a SIGTERM handler)."""

    def __init__(
        self,
        settings: KafkaSettings,
        options: ConsumerOptions,
        ingest: Callable[..., BatchStats] = ingest_batch,
    ) -> None:
        self._options = options
        self._ingest = ingest
        self._stopping = threading.Event()
        config = settings.client_config()
        config.update(
            {
                "group.id": options.group_id,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                # Every hub has its own one-partition topic; the default range assignor gives each topic's only
                # partition to the same member, so one consumer would get all hubs. Round-robin spreads them.
                "partition.assignment.strategy": "roundrobin",
                "topic.metadata.refresh.interval.ms": options.topic_refresh_ms,
                "metadata.max.age.ms": max(options.topic_refresh_ms * 3, 1000),
                "fetch.message.max.bytes": 10 * 1024 * 1024,
                "max.partition.fetch.bytes": 10 * 1024 * 1024,
            }
        )
        self._consumer = Consumer(config)

    def stop(self) -> None:
        self._stopping.set()

    def run(self) -> None:
        pattern = status_topic_pattern(self._options.topic_prefix)
        self._consumer.subscribe([pattern], on_assign=self._on_assign, on_revoke=self._on_revoke)
        log.info("status consumer started: group=%s pattern=%s", self._options.group_id, pattern)
        try:
            while not self._stopping.is_set():
                records = self._records(self._next_batch())
                if records:
                    self._ingest_with_retry(records)
        finally:
            self._consumer.close()
            connection.close()
            log.info("status consumer stopped")

    def _next_batch(self) -> list[Message]:
        """Wait for the first message, then take whatever else is already fetched, up to the batch size.

        ``consume(n, timeout)`` alone would wait the whole timeout for ``n`` messages, adding latency to every
        small burst.
        """
        first = self._consumer.poll(self._options.poll_timeout)
        if first is None:
            return []
        rest = self._consumer.consume(self._options.batch_size - 1, 0.02) if self._options.batch_size > 1 else []
        return [first, *rest]

    def _records(self, messages: Sequence[Message]) -> list[Record]:
        records = []
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                    log.debug("no hub status topic yet: %s", error)  # normal until the first agent starts
                elif error.code() != KafkaError._PARTITION_EOF:
                    log.warning("kafka consumer error: %s", error)
                continue
            records.append(_record(message))
        return records

    def _ingest_with_retry(self, records: list[Record]) -> None:
        """Ingest the batch, retrying with backoff while the database fails; give up only when stopping.

        The records stay in memory meanwhile. If the partitions move to another consumer during the outage, the
        stored positions (checked under a lock in the same transaction) keep either side from applying twice.
        """
        delay = self._options.retry_initial
        while True:
            close_old_connections()
            started = time.monotonic()
            try:
                stats = self._ingest(records, topic_prefix=self._options.topic_prefix)
            except DatabaseError as error:
                log.error("database error, batch of %d not ingested, retrying in %.1fs: %s", len(records), delay, error)
                connection.close()
                if self._stopping.wait(delay):
                    return
                delay = min(delay * 2, self._options.retry_max)
                continue
            log.info(
                "ingested %d records in %.0f ms: applied=%d superseded=%d dead_letters=%d %s",
                len(records),
                (time.monotonic() - started) * 1000,
                stats.applied,
                stats.superseded,
                stats.dead_letters,
                stats.by_type,
            )
            return

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        wanted = [(p.topic, p.partition) for p in partitions]
        positions = self._positions_with_retry(wanted)
        for partition in partitions:
            partition.offset = positions.get((partition.topic, partition.partition), OFFSET_BEGINNING)
        consumer.assign(partitions)
        log.info(
            "assigned %s",
            ", ".join(f"{p.topic}[{p.partition}]@{'start' if p.offset < 0 else p.offset}" for p in partitions),
        )

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("revoked %s", ", ".join(f"{p.topic}[{p.partition}]" for p in partitions))
        consumer.unassign()

    def _positions_with_retry(self, partitions: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        delay = self._options.retry_initial
        while True:
            try:
                close_old_connections()
                return stored_positions(partitions)
            except DatabaseError as error:
                log.error("cannot read stored positions, retrying in %.1fs: %s", delay, error)
                connection.close()
                time.sleep(delay)
                delay = min(delay * 2, self._options.retry_max)


def _record(message: Message) -> Record:
    """A consumed message as a Record. Headers the client cannot even decode are left out (the record then is not
    a CloudEvent and becomes a dead letter with its raw value), never an exception that would stop the loop."""
    try:
        headers = headers_of(message)
    except (UnicodeError, SystemError, TypeError, ValueError) as error:
        log.warning("offset %s of %s: unreadable headers left out: %s", message.offset(), message.topic(), error)
        headers = ()
    return Record(
        topic=message.topic() or "",
        partition=message.partition() or 0,
        offset=message.offset() or 0,
        key=message.key(),
        value=message.value(),
        headers=tuple(headers),
        timestamp=_timestamp(message),
    )


def _timestamp(message: Message) -> datetime | None:
    """When Kafka stored the message; None when unknown or beyond what a datetime holds (a producer's clock)."""
    kind, milliseconds = message.timestamp()
    if kind == TIMESTAMP_NOT_AVAILABLE or milliseconds is None or milliseconds <= 0:
        return None
    try:
        return datetime.fromtimestamp(milliseconds / 1000, UTC)
    except (ValueError, OverflowError, OSError):
        return None
