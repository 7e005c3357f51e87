"""The agent's long-lived objects (Redis, Kafka producer, the engine), created once per process, after any fork."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

import redis

from agent_tasks.config import AgentConfig
from agent_tasks.emitter import Emitter
from agent_tasks.engine import Agent
from agent_tasks.intervals import Intervals
from agent_tasks.inventory import RedisInventory
from agent_tasks.resync_queue import ResyncQueue
from agent_tasks.state import StateStore
from agent_tasks.telemetry import RedisRecorder
from agent_tasks.versions import VersionStore
from globalhub.protocol.kafka import STATUS_TOPIC_CONFIG, ConfirmedProducer, ensure_topics


@dataclass
class Runtime:
    config: AgentConfig
    redis: redis.Redis
    agent: Agent

    @classmethod
    def create(cls, config: AgentConfig) -> Runtime:
        client = redis.Redis.from_url(config.redis_url)
        inventory = RedisInventory(client, config.hub_name)
        versions = VersionStore(client, config.hub_name)
        state = StateStore(client, config.hub_name)
        producer = ConfirmedProducer(config.kafka, stall_timeout=config.send_timeout_ms / 1000)
        topic = _TopicOnce(config)
        emitter = Emitter(
            config.hub_name,
            config.status_topic,
            inventory,
            versions,
            state,
            producer,
            send_mode=config.send_mode,
            before_send=topic.ensure,
            recorder=RedisRecorder(client, config.hub_name),
        )
        agent = Agent(
            config.hub_name,
            client,
            inventory,
            versions,
            state,
            ResyncQueue(client, config.hub_name),
            Intervals(client, config.hub_name),
            emitter,
        )
        return cls(config, client, agent)


class _TopicOnce:
    """Creates the hub's status topic before the first send of this process (retried until it succeeds)."""

    def __init__(self, config: AgentConfig) -> None:
        self._config = config
        self._done = False

    def ensure(self) -> None:
        if not self._done:
            ensure_topics(self._config.kafka, [self._config.status_topic], STATUS_TOPIC_CONFIG, timeout=10)
            self._done = True


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
