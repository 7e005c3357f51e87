"""The agent's long-lived clients (Redis, Kafka producer), created once per process, after any fork."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

import redis

from agent_tasks.config import AgentConfig
from agent_tasks.emitter import Emitter
from agent_tasks.inventory import RedisInventory
from agent_tasks.versions import VersionStore
from globalhub.protocol.kafka import STATUS_TOPIC_CONFIG, ConfirmedProducer, ensure_topics


@dataclass
class Runtime:
    config: AgentConfig
    redis: redis.Redis
    inventory: RedisInventory
    versions: VersionStore
    producer: ConfirmedProducer
    emitter: Emitter

    @classmethod
    def create(cls, config: AgentConfig) -> Runtime:
        client = redis.Redis.from_url(config.redis_url)
        inventory = RedisInventory(client, config.hub_name)
        versions = VersionStore(client, config.hub_name)
        producer = ConfirmedProducer(config.kafka)
        emitter = Emitter(config.hub_name, config.status_topic, inventory, versions, producer)
        return cls(config, client, inventory, versions, producer, emitter)

    def ensure_status_topic(self) -> None:
        ensure_topics(self.config.kafka, [self.config.status_topic], STATUS_TOPIC_CONFIG)


class _ProcessLocal:
    """Holds one runtime per process id."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.runtime: Runtime | None = None
        self.pid: int | None = None


_local = _ProcessLocal()


def get_runtime() -> Runtime:
    """This process's runtime; a forked child gets its own (librdkafka handles do not survive a fork)."""
    with _local.lock:
        if _local.runtime is None or _local.pid != os.getpid():
            _local.runtime = Runtime.create(AgentConfig.from_env())
            _local.pid = os.getpid()
        return _local.runtime
