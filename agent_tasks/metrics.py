"""Prometheus metrics of one hub's agent, read from the hub's Redis at scrape time.

Served by the spec listener when ``GH_AGENT_METRICS_PORT`` is set. Every process of the agent writes its state to
Redis, so one endpoint describes them all: queue length and waits, versions, sends, errors, listener counters.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import redis
from prometheus_client import start_http_server
from prometheus_client.core import REGISTRY, CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from agent_tasks.config import AgentConfig
from agent_tasks.kube.status import SourceStatus
from agent_tasks.lease import held_leases
from agent_tasks.redisutil import text
from agent_tasks.resync_queue import ResyncQueue
from agent_tasks.state import StateStore
from agent_tasks.versions import VersionStore


class AgentCollector(Collector):
    def __init__(self, client: redis.Redis, hub: str) -> None:
        self._redis = client
        self._hub = hub
        self._queue = ResyncQueue(client, hub)
        self._state = StateStore(client, hub)
        self._versions = VersionStore(client, hub)
        self._source = SourceStatus(client, hub)

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        now = time.time()
        waiting = self._queue.items()
        length = GaugeMetricFamily(
            "globalhub_agent_resync_queue_length", "Types waiting for a full resync", labels=["hub"]
        )
        length.add_metric([self._hub], len(waiting))
        yield length
        wait = GaugeMetricFamily(
            "globalhub_agent_resync_queue_wait_seconds", "How long each queued type has waited", labels=["hub", "type"]
        )
        for item in waiting:
            wait.add_metric([self._hub, item.type], item.waited(now))
        yield wait
        generation = GaugeMetricFamily(
            "globalhub_agent_version_generation", "Bundle Generation", labels=["hub", "type"]
        )
        value = GaugeMetricFamily("globalhub_agent_version_value", "Bundle Value", labels=["hub", "type"])
        for name, version in self._versions.all().items():
            generation.add_metric([self._hub, name], version.generation)
            value.add_metric([self._hub, name], version.value)
        yield generation
        yield value
        sent = CounterMetricFamily("globalhub_agent_sent_messages", "Confirmed status messages", labels=["hub", "type"])
        age = GaugeMetricFamily(
            "globalhub_agent_last_send_age_seconds", "Time since the last send", labels=["hub", "type"]
        )
        errors = GaugeMetricFamily("globalhub_agent_failing", "1 while the last attempt failed", labels=["hub", "type"])
        for name, state in self._state.all().items():
            sent.add_metric([self._hub, name], state.sent_messages)
            if state.last_sent is not None:
                age.add_metric([self._hub, name], now - state.last_sent)
            errors.add_metric([self._hub, name], 1.0 if state.last_error else 0.0)
        yield sent
        yield age
        yield errors
        listener = CounterMetricFamily(
            "globalhub_agent_spec_events", "Spec events by outcome", labels=["hub", "outcome"]
        )
        for key, raw in self._redis.hgetall(f"gh:{self._hub}:agent:listener").items():
            name = text(key)
            if not name.startswith("last_"):
                listener.add_metric([self._hub, name], float(text(raw)))
        yield listener
        yield from self._resync_metrics(now)
        yield from self._source_metrics(now)

    def _resync_metrics(self, now: float) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        """Resyncs in flight and retrying, leases, queue repairs: what shows a stuck agent."""
        running = GaugeMetricFamily(
            "globalhub_agent_resync_in_flight_seconds", "How long each resync in flight has run", labels=["hub", "type"]
        )
        for entry in self._queue.in_flight():
            running.add_metric([self._hub, entry.type], now - entry.started_at)
        yield running
        failures = GaugeMetricFamily(
            "globalhub_agent_resync_failures_in_a_row",
            "Failed resyncs of a type since its last success (retried with backoff)",
            labels=["hub", "type"],
        )
        for name, attempts in self._queue.attempts().items():
            failures.add_metric([self._hub, name], attempts)
        yield failures
        leases = GaugeMetricFamily(
            "globalhub_agent_lease_held_seconds", "How long each lease has been held", labels=["hub", "lease"]
        )
        for lease in held_leases(self._redis, self._hub, now):
            if lease.held_seconds is not None:
                leases.add_metric([self._hub, lease.name], lease.held_seconds)
        yield leases
        repairs = CounterMetricFamily(
            "globalhub_agent_resync_queue_repairs", "Entries the queue's self-repair restored", labels=["hub"]
        )
        repairs.add_metric([self._hub], self._queue.repairs())
        yield repairs

    def _source_metrics(self, now: float) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        """The Kubernetes source, when this hub has one (``python -m agent_tasks.watch_kube``)."""
        source = self._source.read(now)
        if source is None:
            return
        up = GaugeMetricFamily("globalhub_agent_source_up", "1 while the inventory watcher runs", labels=["hub"])
        up.add_metric([self._hub], 1.0 if source["running"] else 0.0)
        yield up
        labels = ["hub", "resource"]
        connected = GaugeMetricFamily(
            "globalhub_agent_source_connected", "1 while the watch of a resource is open", labels=labels
        )
        objects = GaugeMetricFamily("globalhub_agent_source_objects", "Objects of a resource followed", labels=labels)
        age = GaugeMetricFamily(
            "globalhub_agent_source_last_event_age_seconds", "Time since the last change of a resource", labels=labels
        )
        relists = CounterMetricFamily(
            "globalhub_agent_source_relists", "Complete lists (start, 410 Gone, after errors)", labels=labels
        )
        errors = CounterMetricFamily("globalhub_agent_source_errors", "Failed lists and watches", labels=labels)
        for resource, row in source["resources"].items():
            connected.add_metric([self._hub, resource], 1.0 if row.get("connected") else 0.0)
            objects.add_metric([self._hub, resource], row.get("objects", 0))
            if "last_event_age_seconds" in row:
                age.add_metric([self._hub, resource], row["last_event_age_seconds"])
            relists.add_metric([self._hub, resource], row.get("relists", 0))
            errors.add_metric([self._hub, resource], row.get("errors", 0))
        inventory = GaugeMetricFamily(
            "globalhub_agent_source_inventory_objects", "Inventory entries the source wrote", labels=["hub", "type"]
        )
        for short_type, count in source["types"].items():
            inventory.add_metric([self._hub, short_type], count)
        yield from (connected, objects, age, relists, errors, inventory)


def serve_metrics(config: AgentConfig) -> None:
    REGISTRY.register(AgentCollector(redis.Redis.from_url(config.redis_url), config.hub_name))
    start_http_server(config.metrics_port)
