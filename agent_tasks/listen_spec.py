"""Spec listener: ``python -m agent_tasks.listen_spec`` consumes ``gh-spec`` and queues requested resyncs.

* Accepts ``Resync`` events whose ``subject`` is this hub or ``broadcast`` and whose ``source`` is the manager.
* Each requested type that this agent reports is pushed onto the hub's resync queue (coalesced there).
* Unknown types and malformed requests are logged and counted (``python -m agent_tasks.ctl status``), never fatal.
* The consumer group is per hub. A new group starts at the newest request: the agent's startup resync already
  covers everything older. Offsets are committed after the types are queued.
* With ``GH_AGENT_METRICS_PORT`` set, serves Prometheus metrics for this hub (queue, versions, sends, errors).
* SIGTERM/SIGINT stop it cleanly.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from dataclasses import dataclass, field
from types import FrameType

import redis
from confluent_kafka import Consumer, KafkaError, Message

from agent_tasks.config import AgentConfig
from agent_tasks.resync_queue import ResyncQueue
from agent_tasks.types import STATUS_TYPES
from globalhub.protocol.codec import InvalidEvent, decode
from globalhub.protocol.kafka import SPEC_TOPIC_CONFIG, ensure_topics, headers_of
from globalhub.protocol.requests import RequestError, read_resync_request, short_type

log = logging.getLogger("agent_tasks.listen_spec")


@dataclass
class Outcome:
    queued: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    rejected: str = ""
    ignored: bool = False
    request: bool = False  # a Resync for this hub, even one that names nothing


class ListenerCounters:
    """Counts what the listener saw, in the hub's Redis (``gh:<hub>:agent:listener``) for the status command."""

    def __init__(self, client: redis.Redis, hub: str) -> None:
        self._redis = client
        self._key = f"gh:{hub}:agent:listener"

    def record(self, outcome: Outcome) -> None:
        pipe = self._redis.pipeline()
        if outcome.ignored:
            pipe.hincrby(self._key, "ignored", 1)
        if outcome.rejected:
            pipe.hincrby(self._key, "rejected", 1)
            pipe.hset(self._key, "last_rejection", outcome.rejected[:500])
        if outcome.request:
            pipe.hincrby(self._key, "requests", 1)
        if outcome.unknown:
            pipe.hincrby(self._key, "unknown_types", len(outcome.unknown))
            pipe.hset(self._key, "last_unknown_type", outcome.unknown[-1][:300])
        pipe.execute()


def handle_spec_message(
    message_key: bytes | None,
    value: bytes | None,
    headers: list[tuple[str, bytes | None]] | None,
    hub: str,
    queue: ResyncQueue,
) -> Outcome:
    """Decide what one spec message means for this hub and queue the resyncs it asks for."""
    outcome = Outcome()
    try:
        event = decode(message_key, value, headers)
        request = read_resync_request(event, hub)
    except (InvalidEvent, RequestError) as error:
        outcome.rejected = str(error)
        log.warning("hub=%s spec message rejected: %s", hub, error)
        return outcome
    if request is None:
        outcome.ignored = True
        return outcome
    outcome.request = True
    for name in request.types:
        short = short_type(name)
        kind = STATUS_TYPES.get(short)
        if kind is None or not kind.resyncable:
            outcome.unknown.append(name)
            log.warning("hub=%s resync request for unknown type %r ignored", hub, name[:200])
        elif short not in outcome.queued:
            outcome.queued.append(short)
    queue.note_answers(outcome.queued, request.request_id)  # before queuing: the resync that pops it answers
    added = queue.push(outcome.queued)
    log.info(
        "hub=%s resync requested (subject %s) for %s: %d newly queued",
        hub,
        request.subject,
        ", ".join(outcome.queued) or "nothing known",
        added,
    )
    return outcome


class SpecListener:
    def __init__(self, config: AgentConfig) -> None:
        self._config = config
        self._stopping = threading.Event()
        self._redis = redis.Redis.from_url(config.redis_url)
        self._queue = ResyncQueue(self._redis, config.hub_name)
        self._counters = ListenerCounters(self._redis, config.hub_name)
        settings = config.kafka.client_config()
        settings.update(
            {
                "group.id": config.spec_group,
                "auto.offset.reset": "latest",
                "enable.auto.commit": False,
            }
        )
        self._consumer = Consumer(settings)

    def stop(self) -> None:
        self._stopping.set()

    def run(self) -> None:
        self._ensure_spec_topic()
        self._consumer.subscribe([self._config.spec_topic])
        log.info(
            "hub=%s spec listener started on %s (group %s)",
            self._config.hub_name,
            self._config.spec_topic,
            self._config.spec_group,
        )
        try:
            while not self._stopping.is_set():
                message = self._consumer.poll(1.0)
                if message is not None:
                    self._handle(message)
        finally:
            self._consumer.close()
            log.info("hub=%s spec listener stopped", self._config.hub_name)

    def _nudge_drain(self) -> None:
        """Start the drain now instead of at beat's next tick (the drain itself keeps one type per second)."""
        from agent_tasks.celery import app

        try:
            app.send_task("agent.drain", expires=5)
        except Exception as error:  # beat's tick drains anyway; a nudge is only a head start
            log.warning("hub=%s could not nudge the drain: %s", self._config.hub_name, error)

    def _handle(self, message: Message) -> None:
        error = message.error()
        if error is not None:
            if error.code() != KafkaError._PARTITION_EOF:
                log.warning("kafka consumer error: %s", error)
            return
        outcome = handle_spec_message(
            message.key(), message.value(), list(headers_of(message)), self._config.hub_name, self._queue
        )
        self._counters.record(outcome)
        self._consumer.commit(message=message, asynchronous=False)
        if outcome.queued:
            self._nudge_drain()

    def _ensure_spec_topic(self) -> None:
        delay = 1.0
        while not self._stopping.is_set():
            try:
                ensure_topics(self._config.kafka, [self._config.spec_topic], SPEC_TOPIC_CONFIG, timeout=10)
                return
            except Exception as error:
                log.warning(
                    "cannot reach Kafka to check %s yet (%s); retrying in %.0fs", self._config.spec_topic, error, delay
                )
                time.sleep(delay)
                delay = min(delay * 2, 30.0)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    config = AgentConfig.from_env()
    if config.metrics_port:
        from agent_tasks.metrics import serve_metrics

        serve_metrics(config)
    listener = SpecListener(config)

    def stop(signum: int, frame: FrameType | None) -> None:
        listener.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    listener.run()


if __name__ == "__main__":
    main()
