"""The status consumer loop: Kafka ``gh-status.*`` -> :func:`ingest_batch` -> PostgreSQL.

Offsets: Kafka auto-commit and offset storage are off. The database is the only offset authority: positions are
written with the data (:mod:`globalhub.manager.ingest.pipeline`) and every assigned partition starts from its stored
position (or from the beginning of a hub's topic never read before). On a database failure the batch is rolled
back, its partitions are rewound to its first records, and it is fetched again after a backoff until it succeeds:
the consumer never skips a message.

Group membership: a consumer that stops heartbeating (``kill -9``, a lost host) keeps its partitions for one session
timeout (``ConsumerOptions.session_timeout``, 6 s, not librdkafka's 45 s). With an ``instance_id`` (Kafka's static
membership) a restarted process with the same id takes its partitions back without waiting for that at all. The
loop polls between two tries of a failing batch, so a long database outage does not get the consumer removed from
its group for not polling (``max.poll.interval.ms``).

Metrics: each consumer serves its own (batch duration histogram, records read, batches, errors) on
``ConsumerOptions.metrics_addr`` while it runs (``globalhub/manager/metrics.py`` lists them).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from confluent_kafka import (
    OFFSET_BEGINNING,
    TIMESTAMP_LOG_APPEND_TIME,
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)
from django.db import DatabaseError, close_old_connections, connection

from globalhub.manager.ingest.pipeline import BatchStats, ingest_batch
from globalhub.manager.ingest.positions import stored_positions
from globalhub.manager.ingest.records import Record
from globalhub.manager.metrics import BATCH_DURATION, BATCHES, ERRORS, RECORDS_READ, serve_consumer_metrics
from globalhub.protocol.events import status_topic_pattern
from globalhub.protocol.kafka import KafkaSettings, headers_of

log = logging.getLogger(__name__)

# Errors after which the consumer would never get a partition again: better stopped, loudly, than idle.
_UNRECOVERABLE = {
    KafkaError._FATAL,  # e.g. fenced: another process joined the group with this one's instance id
    KafkaError.INVALID_SESSION_TIMEOUT,  # the broker's group.min/max.session.timeout.ms refuse ours, at every join
}


_CHUNK = 32  # messages taken at once while a batch fills (the bytes are checked between chunks)
_GATHER = 0.02  # seconds a batch waits for more records after its first


@dataclass(frozen=True)
class ConsumerOptions:
    group_id: str
    topic_prefix: str
    batch_size: int = 500
    batch_bytes: int = 16 * 1024 * 1024  # a batch ends once its records' values reach this many bytes
    # A shared status topic read besides the per-hub topics ("" : none); its records speak for their source's hub.
    shared_topic: str = ""
    poll_timeout: float = 1.0
    topic_refresh_ms: int = 5000
    retry_initial: float = 0.5
    retry_max: float = 30.0
    # Seconds the group waits for a member that stopped heartbeating; the broker bounds it with
    # group.min.session.timeout.ms and group.max.session.timeout.ms (6 s and 30 min by default).
    session_timeout: float = 6.0
    # Kafka static membership (group.instance.id): one stable id per process, or None for a new member per start.
    instance_id: str | None = None
    # The longest one ingest attempt may take before librdkafka counts the consumer as stuck and leaves the group.
    attempt_timeout: float = 300.0
    # Where this process serves its own metrics while it runs (host:port, port 0: any free one; "": not served).
    metrics_addr: str = ""

    def membership_config(self) -> dict[str, int | str]:
        """librdkafka's group membership settings for these options.

        Between two polls the consumer runs at most one ingest attempt and one backoff wait, so that is the
        ``max.poll.interval.ms`` it needs (librdkafka also wants it no shorter than the session). A heartbeat
        goes every third of a session, as Kafka advises, so one lost heartbeat does not cost the partitions.
        """
        session_ms = max(round(self.session_timeout * 1000), 1)
        config: dict[str, int | str] = {
            "session.timeout.ms": session_ms,
            "heartbeat.interval.ms": max(session_ms // 3, 1),
            "max.poll.interval.ms": max(round((self.retry_max + self.attempt_timeout) * 1000), session_ms),
        }
        if self.instance_id:
            config["group.instance.id"] = self.instance_id
        return config


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
        self._retry_delay = options.retry_initial
        # The membership settings come first, so that a KAFKA_CLIENT_* setting of the same name still wins; the
        # ones after them are what the loop is built on and win over anything.
        config: dict[str, object] = {
            **options.membership_config(),
            # What librdkafka fetches ahead, per partition and in all: with one partition per hub, 10 MiB per
            # partition let a 1,000-hub consumer hold hundreds of MB of prefetched records. A record larger than
            # the per-partition size is still fetched whole (KIP-74): frames are at most 800 KiB. 8 MiB in all
            # (it was 32) took a 1,000-hub broadcast's peak RSS from 320-379 to 185 MiB at the same speed
            # (bench/fleet_broadcast.py, docs/scaling.md): the ingest takes under 10 MB/s, so 8 MiB is ahead enough.
            "max.partition.fetch.bytes": 1024 * 1024,
            "queued.max.messages.kbytes": 8 * 1024,
            **settings.client_config(),
        }
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
            }
        )
        self._consumer = Consumer(config)

    def stop(self) -> None:
        self._stopping.set()

    def run(self) -> None:
        pattern = status_topic_pattern(self._options.topic_prefix)
        shared = [self._options.shared_topic] if self._options.shared_topic else []
        self._consumer.subscribe([pattern, *shared], on_assign=self._on_assign, on_revoke=self._on_revoke)
        log.info(
            "status consumer started: group=%s instance=%s pattern=%s shared topic=%s",
            self._options.group_id,
            self._options.instance_id or "(dynamic)",
            pattern,
            self._options.shared_topic or "(none)",
        )
        metrics = serve_consumer_metrics(self._options.metrics_addr)
        try:
            while not self._stopping.is_set():
                records = self._records(self._next_batch())
                RECORDS_READ.inc(len(records))
                if records and not self._ingested(records):
                    self._rewind(records)
                    self._back_off()
        finally:
            if metrics is not None:
                metrics.shutdown()
            self._consumer.close()
            connection.close()
            log.info("status consumer stopped")

    def _next_batch(self) -> list[Message]:
        """Wait for the first message, then take whatever else is already fetched, up to the batch size and the
        batch bytes (memory is what a batch of large frames costs: a fleet's broadcast held 450 MB at 500 records).

        ``consume(n, timeout)`` alone would wait the whole timeout for ``n`` messages, adding latency to every
        small burst. Messages are taken in small chunks so the bytes are checked between them; nothing is taken
        that the batch does not keep.
        """
        first = self._consumer.poll(self._options.poll_timeout)
        if first is None:
            return []
        batch = [first]
        size = largest = max(len(first.value() or b""), 1)
        deadline = time.monotonic() + _GATHER
        while len(batch) < self._options.batch_size and size < self._options.batch_bytes:
            # No more than the bytes left can hold at the largest size seen: a batch passes its bytes by one record
            # at most.
            fits = max(1, (self._options.batch_bytes - size) // largest)
            want = min(_CHUNK, self._options.batch_size - len(batch), fits)
            chunk = self._consumer.consume(want, max(0.0, deadline - time.monotonic()))
            if not chunk:
                break  # nothing more fetched within the gathering time
            batch.extend(chunk)
            for message in chunk:
                length = len(message.value() or b"")
                size += length
                largest = max(largest, length)
        return batch

    def _records(self, messages: Sequence[Message]) -> list[Record]:
        records = []
        for message in messages:
            error = message.error()
            if error is not None:
                if error.fatal() or error.code() in _UNRECOVERABLE:
                    log.critical("kafka consumer error it cannot recover from, stopping: %s", error)
                    raise KafkaException(error)
                if error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                    log.debug("no hub status topic yet: %s", error)  # normal until the first agent starts
                elif error.code() != KafkaError._PARTITION_EOF:
                    ERRORS.labels("kafka").inc()
                    log.warning("kafka consumer error: %s", error)
                continue
            records.append(_record(message))
        return records

    def _ingested(self, records: list[Record]) -> bool:
        """Ingest the batch in one transaction; False when the database failed and nothing was applied.

        The caller then gives the records back to Kafka and waits, rather than retrying them here: the consumer
        polls between two tries through a database outage of any length, so librdkafka never removes it from the
        group for not polling (``max.poll.interval.ms``), and a rebalance waits at most one backoff for it. If the
        partitions move to another consumer meanwhile, the stored positions (checked under a lock in the same
        transaction) keep either side from applying twice.
        """
        close_old_connections()
        started = time.monotonic()
        try:
            stats = self._ingest(
                records, topic_prefix=self._options.topic_prefix, shared_topic=self._options.shared_topic
            )
        except DatabaseError as error:
            ERRORS.labels("database").inc()
            log.error(
                "database error, batch of %d not ingested, retrying in %.1fs: %s",
                len(records),
                self._retry_delay,
                error,
            )
            connection.close()
            return False
        elapsed = time.monotonic() - started
        BATCH_DURATION.observe(elapsed)
        BATCHES.inc()
        self._retry_delay = self._options.retry_initial
        log.info(
            "ingested %d records in %.0f ms: applied=%d superseded=%d dead_letters=%d %s",
            len(records),
            elapsed * 1000,
            stats.applied,
            stats.superseded,
            stats.dead_letters,
            stats.by_type,
        )
        return True

    def _rewind(self, records: list[Record]) -> None:
        """Seek each partition of a batch that was not ingested back to its first record, to fetch it again."""
        first: dict[tuple[str, int], int] = {}
        for record in records:
            key = (record.topic, record.partition)
            first[key] = min(first.get(key, record.offset), record.offset)
        for (topic, partition), offset in first.items():
            try:
                self._consumer.seek(TopicPartition(topic, partition, offset))
            except KafkaException as error:
                # No longer assigned here: whoever gets it next starts from its stored position.
                log.info("%s[%d] not rewound to %d: %s", topic, partition, offset, error)

    def _back_off(self) -> None:
        """Wait before the next try of a failed batch (exponential, capped at ``retry_max``), or until stopping."""
        self._stopping.wait(self._retry_delay)
        self._retry_delay = min(self._retry_delay * 2, self._options.retry_max)

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
        log_append=message.timestamp()[0] == TIMESTAMP_LOG_APPEND_TIME,
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
