"""Kafka client configuration, topic creation and confirmed sends, shared by the manager and the agents.

Configuration comes from the environment (see README "Configuration"); SASL and TLS are optional. A send is
"done" only when Kafka's delivery report says so: :meth:`ConfirmedProducer.send` returns after every message of the
batch was acknowledged and raises :class:`DeliveryFailed` otherwise.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
    OffsetSpec,
    ResourceType,
)

from globalhub.protocol.codec import OutgoingMessage

log = logging.getLogger(__name__)

DEFAULT_BOOTSTRAP = "127.0.0.1:59092"
# Status topics keep data by time and size, never by compaction keyed on the CE type: compaction can discard
# deltas the manager has not read yet (upstream's ``compact,delete``).
STATUS_TOPIC_CONFIG: Mapping[str, str] = {
    "cleanup.policy": "delete",
    "retention.ms": str(7 * 24 * 3600 * 1000),
    "retention.bytes": str(1024**3),
    "max.message.bytes": str(10 * 1024 * 1024),
    # The broker stamps each message when it stores it: the manager judges liveness on that clock, not the hub's.
    "message.timestamp.type": "LogAppendTime",
}
SPEC_TOPIC_CONFIG: Mapping[str, str] = {
    "cleanup.policy": "delete",
    "retention.ms": str(24 * 3600 * 1000),
}


# Settings that ensure_topics also sets on a topic that already exists: the manager's liveness rules depend on them
# (a topic created before, or by upstream's agent or operator, has the producer's timestamps).
ENFORCED_TOPIC_SETTINGS = frozenset({"message.timestamp.type"})


class DeliveryFailed(RuntimeError):
    """Kafka did not acknowledge every message of a send."""


class KafkaUnavailable(RuntimeError):
    """The broker could not be asked (down, unreachable, or not answering in time)."""


def _env(name: str, environ: Mapping[str, str]) -> str | None:
    value = environ.get(name)
    if value:
        return value
    path = environ.get(name + "_FILE")
    if path:
        with open(path, encoding="utf-8") as handle:
            return handle.read().strip()
    return None


@dataclass(frozen=True)
class KafkaSettings:
    """Connection settings; ``client_config()`` renders them for librdkafka."""

    bootstrap_servers: str = DEFAULT_BOOTSTRAP
    security_protocol: str | None = None  # PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)
    ssl_ca_location: str | None = None
    ssl_certificate_location: str | None = None
    ssl_key_location: str | None = None
    extra: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> KafkaSettings:
        env = os.environ if environ is None else environ
        extra = {
            key[len("KAFKA_CLIENT_") :].lower().replace("_", "."): value
            for key, value in env.items()
            if key.startswith("KAFKA_CLIENT_")
        }
        return cls(
            bootstrap_servers=env.get("KAFKA_BOOTSTRAP_SERVERS") or DEFAULT_BOOTSTRAP,
            security_protocol=env.get("KAFKA_SECURITY_PROTOCOL") or None,
            sasl_mechanism=env.get("KAFKA_SASL_MECHANISM") or None,
            sasl_username=env.get("KAFKA_SASL_USERNAME") or None,
            sasl_password=_env("KAFKA_SASL_PASSWORD", env),
            ssl_ca_location=env.get("KAFKA_SSL_CA_LOCATION") or None,
            ssl_certificate_location=env.get("KAFKA_SSL_CERTIFICATE_LOCATION") or None,
            ssl_key_location=env.get("KAFKA_SSL_KEY_LOCATION") or None,
            extra=extra,
        )

    def client_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "socket.keepalive.enable": True,
            "log.connection.close": False,
        }
        optional = {
            "security.protocol": self.security_protocol,
            "sasl.mechanism": self.sasl_mechanism,
            "sasl.username": self.sasl_username,
            "sasl.password": self.sasl_password,
            "ssl.ca.location": self.ssl_ca_location,
            "ssl.certificate.location": self.ssl_certificate_location,
            "ssl.key.location": self.ssl_key_location,
        }
        config.update({key: value for key, value in optional.items() if value})
        config.update(self.extra)
        return config


def ensure_topics(
    settings: KafkaSettings,
    topics: Iterable[str],
    config: Mapping[str, str],
    *,
    partitions: int = 1,
    timeout: float = 30.0,
) -> None:
    """Create the topics that do not exist yet (idempotent).

    A topic that exists keeps its settings, except those in :data:`ENFORCED_TOPIC_SETTINGS` that ``config`` names:
    those are set to ``config``'s value (see :func:`align_topic_configs`; a refusal is logged, never raised). So a
    status topic created before, or by upstream's agent or operator, gets the broker's timestamps too.
    """
    admin = AdminClient(settings.client_config())
    wanted = [NewTopic(name, num_partitions=partitions, config=dict(config)) for name in topics]
    if not wanted:
        return
    existing: list[str] = []
    futures = admin.create_topics(wanted, request_timeout=timeout, operation_timeout=timeout)
    for name, future in futures.items():
        try:
            future.result(timeout=timeout)
            log.info("created topic %s", name)
        except KafkaException as error:
            if error.args and error.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS:
                existing.append(name)
                continue
            raise
    enforced = {key: value for key, value in config.items() if key in ENFORCED_TOPIC_SETTINGS}
    if existing and enforced:
        align_topic_configs(settings, existing, enforced, timeout=timeout)


@dataclass
class TopicConfigReport:
    """What :func:`align_topic_configs` found and did, per topic."""

    changed: dict[str, dict[str, str | None]] = field(default_factory=dict)  # topic -> setting -> its old value
    failed: dict[str, str] = field(default_factory=dict)  # topic -> why it could not be read or changed
    already: list[str] = field(default_factory=list)  # topics that had the wanted values


def align_topic_configs(
    settings: KafkaSettings, topics: Iterable[str], wanted: Mapping[str, str], *, timeout: float = 30.0
) -> TopicConfigReport:
    """Give existing topics the ``wanted`` values of these settings, and only these (an incremental SET).

    Every change is logged. A refusal (no ``AlterConfigs`` permission on the topic, a broker policy) or an unreachable
    broker is logged as a warning that says what the operator must run, and is reported, never raised.
    """
    report = TopicConfigReport()
    names = sorted(set(topics))
    if not names or not wanted:
        return report
    admin = AdminClient(settings.client_config())
    differing: dict[str, dict[str, str | None]] = {}
    try:
        described = admin.describe_configs(
            [ConfigResource(ResourceType.TOPIC, name) for name in names], request_timeout=timeout
        )
    except KafkaException as error:
        return _refused(report, names, wanted, f"cannot describe the topics: {error}")
    for resource, future in described.items():
        try:
            entries = future.result(timeout=timeout)
        except KafkaException as error:
            _refused(report, [resource.name], wanted, f"cannot describe it: {error}")
            continue
        current = {key: entries[key].value if key in entries else None for key in wanted}
        off = {key: old for key, old in current.items() if old != wanted[key]}
        if off:
            differing[resource.name] = off
        else:
            report.already.append(resource.name)
    if not differing:
        return report
    resources = [
        ConfigResource(
            ResourceType.TOPIC,
            name,
            incremental_configs=[
                ConfigEntry(key, wanted[key], incremental_operation=AlterConfigOpType.SET) for key in sorted(off)
            ],
        )
        for name, off in sorted(differing.items())
    ]
    try:
        altered = admin.incremental_alter_configs(resources, request_timeout=timeout)
    except KafkaException as error:
        return _refused(report, sorted(differing), wanted, f"cannot change the topics: {error}")
    for resource, future in altered.items():
        try:
            future.result(timeout=timeout)
        except KafkaException as error:
            _refused(report, [resource.name], wanted, f"refused: {error}")
            continue
        report.changed[resource.name] = differing[resource.name]
        log.warning(
            "topic %s: set %s",
            resource.name,
            ", ".join(f"{key}={wanted[key]} (was {old})" for key, old in sorted(differing[resource.name].items())),
        )
    return report


def _refused(
    report: TopicConfigReport, topics: Iterable[str], wanted: Mapping[str, str], why: str
) -> TopicConfigReport:
    settings_text = ",".join(f"{key}={value}" for key, value in sorted(wanted.items()))
    for topic in topics:
        report.failed[topic] = why
        log.warning(
            "topic %s: could not set %s (%s). An operator must run: kafka-configs.sh --bootstrap-server <broker> "
            "--alter --entity-type topics --entity-name %s --add-config %s (or grant this client AlterConfigs "
            "on the topic)",
            topic,
            settings_text,
            why,
            topic,
            settings_text,
        )
    return report


def topics_with_prefix(settings: KafkaSettings, prefix: str, *, timeout: float = 10.0) -> list[str]:
    """The broker's topics whose names start with ``prefix``; raise :class:`KafkaUnavailable` if it cannot tell."""
    admin = AdminClient(settings.client_config())
    try:
        metadata = admin.list_topics(timeout=timeout)
    except KafkaException as error:
        raise KafkaUnavailable(f"cannot list the topics: {error}") from error
    return sorted(name for name in metadata.topics if name.startswith(prefix))


def topic_ends(
    settings: KafkaSettings, topics: Iterable[str], *, timeout: float = 10.0, admin: AdminClient | None = None
) -> dict[str, dict[int, int]]:
    """The broker's high watermark (the offset the next message will get) of each partition of these topics.

    The broker is asked even for no topic (for its cluster's description): :class:`KafkaUnavailable` is raised
    whenever it cannot be reached, so the caller learns that too. A topic the broker does not have maps to ``{}``
    (nothing to read). A topic whose offsets could not be learnt is left out: the caller knows nothing about it.

    ``admin``: a client to reuse (made from ``settings``). A new client's first request waits for its connection
    (about 55 ms on a local broker, against about 1 ms once connected), which a periodic caller need not pay each time.
    """
    names = sorted(set(topics))
    if admin is None:  # not ``admin or``: a client's len() is its queue's length, 0 when idle
        admin = AdminClient(settings.client_config())
    if not names:
        # Only whether the broker answers: the cluster's description, not every topic's metadata (that grows with
        # the topics: about 13 ms for 2,000 of them, against 0.4 ms).
        try:
            admin.describe_cluster(request_timeout=timeout).result(timeout=timeout + 5)
        except (KafkaException, TimeoutError) as error:
            log.warning("could not reach Kafka: %s", error)
            raise KafkaUnavailable(f"cannot describe the cluster: {error or 'no answer'}") from error
        return {}
    try:
        metadata = admin.list_topics(timeout=timeout)
    except KafkaException as error:
        log.warning("could not read the topics' ends from Kafka: %s", error)
        raise KafkaUnavailable(f"cannot read the topics' metadata: {error}") from error
    ends: dict[str, dict[int, int]] = {}
    wanted: dict[TopicPartition, Any] = {}
    for name in names:
        topic = metadata.topics.get(name)
        if topic is None:
            ends[name] = {}
        elif topic.error is None:
            latest = OffsetSpec.latest()  # type: ignore[no-untyped-call]
            wanted.update({TopicPartition(name, partition): latest for partition in topic.partitions})
    unknown: set[str] = set()
    if wanted:
        for partition, future in admin.list_offsets(wanted, request_timeout=timeout).items():
            try:
                ends.setdefault(partition.topic, {})[partition.partition] = future.result(timeout=timeout).offset
            except KafkaException as error:
                log.warning("could not read the end of %s[%d]: %s", partition.topic, partition.partition, error)
                unknown.add(partition.topic)
    return {name: partitions for name, partitions in ends.items() if name not in unknown}


class ConfirmedProducer:
    """A producer whose ``send`` waits for Kafka's delivery report of every message it was given.

    A send fails when Kafka stops confirming: no delivery report for ``stall_timeout`` seconds while messages are
    outstanding (librdkafka's own per-message timeout stays as a far outer bound). So a long send that keeps being
    confirmed, such as a big resync on a slow machine, is never cut short because of what is queued ahead of its
    last messages. A failed send purges what it left queued and replaces the client: one that got stuck in an
    outage (stale connections, metadata or idempotence state) is not reused for the next try.
    """

    def __init__(self, settings: KafkaSettings, *, stall_timeout: float = 30.0, **overrides: Any) -> None:
        config = settings.client_config()
        config.update(
            {
                "acks": "all",
                "enable.idempotence": True,  # retries never duplicate or reorder within a partition
                "compression.type": "lz4",
                "linger.ms": 5,
                "message.max.bytes": 10 * 1024 * 1024,
                # Back-pressure: a big resync is built faster than Kafka acknowledges it; without a bound the
                # client would queue it all (up to 1 GiB by default). produce() waits for room instead.
                "queue.buffering.max.kbytes": 32 * 1024,
            }
        )
        config.update(overrides)
        self._config = config
        self.stall_timeout = stall_timeout
        self.replacements = 0  # clients replaced after failed sends
        self._producer = Producer(config)

    def send(self, topic: str, messages: Iterable[OutgoingMessage], *, timeout: float | None = None) -> int:
        """Produce in order and block until every message is acknowledged; raise :class:`DeliveryFailed`.

        ``messages`` may be a generator: large resyncs are produced while they are built. Returns the count.
        ``timeout``: how long Kafka may confirm nothing before the send fails (default ``stall_timeout``).
        """
        stall = self.stall_timeout if timeout is None else timeout
        tracker = _Deliveries()
        try:
            for message in messages:
                self._produce(topic, message, tracker, stall)
            while tracker.outstanding:
                remaining = tracker.last_progress + stall - time.monotonic()
                if remaining <= 0:
                    raise _Stalled
                self._producer.flush(min(remaining, 1.0))
        except _Stalled:
            tracker.failures.append(f"Kafka confirmed nothing for {stall:g}s")
        if tracker.failures:
            failed = DeliveryFailed(
                f"{tracker.delivered} of {tracker.produced} messages to {topic} delivered; "
                f"first problem: {tracker.failures[0]}"
            )
            self._replace()  # its purge reports more failures: the message above names the first
            raise failed
        return tracker.produced

    def _produce(self, topic: str, message: OutgoingMessage, tracker: _Deliveries, stall: float) -> None:
        if not tracker.outstanding:
            tracker.last_progress = time.monotonic()  # nothing was waiting for Kafka: the stall clock starts now
        while True:
            try:
                self._producer.produce(
                    topic,
                    value=message.value,
                    key=message.key,
                    headers=list(message.headers),
                    on_delivery=tracker.on_delivery,
                )
                tracker.produced += 1
                self._producer.poll(0)
                return
            except BufferError:
                # The local queue is full: serve delivery reports until there is room again.
                if time.monotonic() - tracker.last_progress > stall:
                    raise _Stalled from None
                self._producer.poll(0.1)

    def _replace(self) -> None:
        """Drop the client after a failed send (purging what it still holds) and start a new one."""
        old = self._producer
        try:
            old.purge(in_queue=True, in_flight=True, blocking=False)
            old.flush(0)  # serve the purged messages' reports: they belong to the failed send
        except KafkaException as error:
            log.warning("purging the failed producer: %s", error)
        self._producer = Producer(self._config)
        self.replacements += 1
        log.warning("Kafka producer replaced after a failed send (%d so far)", self.replacements)

    def close(self, timeout: float = 10.0) -> int:
        """Flush what is queued; return how many messages were still undelivered."""
        return int(self._producer.flush(timeout))


class _Stalled(Exception):
    """Kafka confirmed nothing for the stall timeout."""


class _Deliveries:
    """Counts one send's messages and delivery reports; any report is progress."""

    def __init__(self) -> None:
        self.produced = 0
        self.delivered = 0
        self.failures: list[str] = []
        self.last_progress = time.monotonic()

    @property
    def outstanding(self) -> int:
        return self.produced - self.delivered - len(self.failures)

    def on_delivery(self, error: KafkaError | None, message: Message) -> None:
        self.last_progress = time.monotonic()
        if error is None:
            self.delivered += 1
        else:
            self.failures.append(str(error))


def headers_of(message: Message) -> tuple[tuple[str, bytes | None], ...]:
    """A consumed message's headers as (name, bytes) pairs, whatever form the client returned them in."""
    raw = message.headers() or ()
    items = raw.items() if isinstance(raw, dict) else raw
    return tuple((name, value.encode() if isinstance(value, str) else value) for name, value in items)
