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
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec  # type: ignore[attr-defined]

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


class DeliveryFailed(RuntimeError):
    """Kafka did not acknowledge every message of a send."""


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
    """Create the topics that do not exist yet (idempotent; an existing topic is left as it is)."""
    admin = AdminClient(settings.client_config())
    wanted = [NewTopic(name, num_partitions=partitions, config=dict(config)) for name in topics]
    if not wanted:
        return
    futures = admin.create_topics(wanted, request_timeout=timeout, operation_timeout=timeout)
    for name, future in futures.items():
        try:
            future.result(timeout=timeout)
            log.info("created topic %s", name)
        except KafkaException as error:
            if error.args and error.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue
            raise


def topic_ends(settings: KafkaSettings, topics: Iterable[str], *, timeout: float = 10.0) -> dict[str, dict[int, int]]:
    """The broker's high watermark (the offset the next message will get) of each partition of these topics.

    A topic the broker does not have maps to ``{}`` (nothing to read). A topic whose offsets could not be learnt
    is left out, and so is every topic when the broker cannot be reached: the caller knows nothing about it.
    """
    names = sorted(set(topics))
    if not names:
        return {}
    admin = AdminClient(settings.client_config())
    try:
        metadata = admin.list_topics(timeout=timeout)
    except KafkaException as error:
        log.warning("could not read the topics' ends from Kafka: %s", error)
        return {}
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
    """A producer whose ``send`` waits for Kafka's delivery report of every message it was given."""

    def __init__(self, settings: KafkaSettings, **overrides: Any) -> None:
        config = settings.client_config()
        config.update(
            {
                "acks": "all",
                "enable.idempotence": True,  # retries never duplicate or reorder within a partition
                "compression.type": "lz4",
                "linger.ms": 5,
                "message.max.bytes": 10 * 1024 * 1024,
                "message.timeout.ms": 30_000,
                # Back-pressure: a big resync is built faster than Kafka acknowledges it; without a bound the
                # client would queue it all (up to 1 GiB by default). produce() waits for room instead.
                "queue.buffering.max.kbytes": 32 * 1024,
            }
        )
        config.update(overrides)
        self._producer = Producer(config)

    def send(self, topic: str, messages: Iterable[OutgoingMessage], *, timeout: float = 60.0) -> int:
        """Produce in order and block until every message is acknowledged; raise :class:`DeliveryFailed`.

        ``messages`` may be a generator: large resyncs are produced while they are built. Returns the count.
        """
        failures: list[str] = []
        delivered = 0

        def on_delivery(error: KafkaError | None, message: Message) -> None:
            nonlocal delivered
            if error is None:
                delivered += 1
            else:
                failures.append(str(error))

        produced = 0
        for message in messages:
            self._produce(topic, message, on_delivery)
            produced += 1
        deadline = time.monotonic() + timeout
        while delivered + len(failures) < produced:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._producer.flush(min(remaining, 1.0))
        if failures or delivered < produced:
            reason = failures[0] if failures else f"no delivery report within {timeout:.0f}s"
            raise DeliveryFailed(f"{delivered} of {produced} messages to {topic} delivered; first problem: {reason}")
        return produced

    def _produce(self, topic: str, message: OutgoingMessage, callback: Any) -> None:
        while True:
            try:
                self._producer.produce(
                    topic,
                    value=message.value,
                    key=message.key,
                    headers=list(message.headers),
                    on_delivery=callback,
                )
                self._producer.poll(0)
                return
            except BufferError:
                # The local queue is full: serve delivery reports until there is room again.
                self._producer.poll(0.1)

    def close(self, timeout: float = 10.0) -> int:
        """Flush what is queued; return how many messages were still undelivered."""
        return int(self._producer.flush(timeout))


def headers_of(message: Message) -> tuple[tuple[str, bytes | None], ...]:
    """A consumed message's headers as (name, bytes) pairs, whatever form the client returned them in."""
    raw = message.headers() or ()
    items = raw.items() if isinstance(raw, dict) else raw
    return tuple((name, value.encode() if isinstance(value, str) else value) for name, value in items)
