"""Prometheus metrics of one hub's agent, read from the hub's Redis at scrape time.

``python -m agent_tasks.metrics`` serves them on ``GH_AGENT_METRICS_ADDR`` (``127.0.0.1:9109`` by default), as a
process of its own that lives as long as the agent: it holds no agent state, so it can run beside the worker and
beat and outlive any of them (the liveness marks then show which one stopped). Every process of the agent,
including the worker's pool processes, writes its state and observations to Redis (``agent_tasks/telemetry.py``),
so one endpoint describes them all: queue length and waits, versions, sends and their latency, resync durations,
bundle sizes, errors by kind, liveness, listener counters, the Kubernetes source. The spec listener still serves
the same metrics when ``GH_AGENT_METRICS_PORT`` is set, for deployments that scrape it there.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from collections.abc import Iterator
from types import FrameType
from typing import Any
from wsgiref.simple_server import WSGIServer

import redis
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from agent_tasks.config import AgentConfig, MetricsConfig
from agent_tasks.kube.status import SourceStatus
from agent_tasks.lease import held_leases
from agent_tasks.liveness import read_marks
from agent_tasks.redisutil import text
from agent_tasks.resync_queue import ResyncQueue
from agent_tasks.state import StateStore
from agent_tasks.telemetry import ERROR_KUBE_READ, HISTOGRAMS, read_errors, read_histogram
from agent_tasks.versions import VersionStore
from globalhub.envconf import ConfigError

log = logging.getLogger("agent_tasks.metrics")
PREFIX = "globalhub_agent_"
Family = GaugeMetricFamily | CounterMetricFamily | HistogramMetricFamily


class AgentCollector(Collector):
    def __init__(self, client: redis.Redis, hub: str) -> None:
        self._redis = client
        self._hub = hub
        self._queue = ResyncQueue(client, hub)
        self._state = StateStore(client, hub)
        self._versions = VersionStore(client, hub)
        self._source = SourceStatus(client, hub)

    def collect(self) -> Iterator[Family]:
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
        source = self._source.read(now)
        yield from self._work_metrics(source)
        yield from self._liveness_metrics()
        yield from self._source_metrics(source)

    def _work_metrics(self, source: dict[str, Any] | None) -> Iterator[Family]:
        """Send latency, resync duration and bundle size histograms, and errors by kind."""
        for histogram in HISTOGRAMS:
            family = HistogramMetricFamily(PREFIX + histogram.name, histogram.help, labels=["hub", *histogram.labels])
            for series in read_histogram(self._redis, self._hub, histogram):
                family.add_metric([self._hub, *series.labels], series.cumulative(histogram), series.sum)
            yield family
        errors = CounterMetricFamily(
            PREFIX + "errors",
            "Failures by kind: send (Kafka did not confirm), sync (a delta or heartbeat), resync, kube_read (a list "
            "or watch of the hub's API; counted by the running watcher)",
            labels=["hub", "kind"],
        )
        counts = read_errors(self._redis, self._hub)
        counts[ERROR_KUBE_READ] = sum(row.get("errors", 0) for row in source["resources"].values()) if source else 0
        for kind, count in sorted(counts.items()):
            errors.add_metric([self._hub, kind], count)
        yield errors

    def _liveness_metrics(self) -> Iterator[Family]:
        """When each liveness mark was last written (``agent_tasks/liveness.py``): alert on its age."""
        marks = GaugeMetricFamily(
            PREFIX + "liveness_timestamp_seconds",
            "Last time the worker was seen (worker), beat sent a tick (beat), the worker ran a tick (tick)",
            labels=["hub", "mark"],
        )
        for name, at in sorted(read_marks(self._redis, self._hub).items()):
            marks.add_metric([self._hub, name], at)
        yield marks

    def _resync_metrics(self, now: float) -> Iterator[Family]:
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

    def _source_metrics(self, source: dict[str, Any] | None) -> Iterator[Family]:
        """The Kubernetes source, when this hub has one (``python -m agent_tasks.watch_kube``)."""
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


class ServeError(Exception):
    """The metrics cannot be served at the address given."""


def serve(hub: str, redis_url: str, host: str, port: int) -> WSGIServer:
    """Serve the hub's metrics on ``host:port`` from a thread; raise :class:`ServeError` when the port is taken."""
    registry = CollectorRegistry(auto_describe=False)  # only the agent's metrics: not this process's own
    # A scrape must not hang on an unreachable Redis: it fails (HTTP 500), and Prometheus marks the target down.
    registry.register(AgentCollector(redis.Redis.from_url(redis_url, socket_timeout=5), hub))
    try:
        server, _ = start_http_server(port, addr=host, registry=registry)
    except OSError as error:
        raise ServeError(f"cannot serve metrics on {host}:{port}: {error.strerror or error}") from error
    return server


def serve_metrics(config: AgentConfig) -> None:
    """The spec listener's endpoint (``GH_AGENT_METRICS_PORT``, every interface), as before the metrics process."""
    serve(config.hub_name, config.redis_url, "0.0.0.0", config.metrics_port)


def main() -> int:
    """``python -m agent_tasks.metrics``: serve until SIGTERM or SIGINT; exit 2 on a bad setting or a taken port."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        config = MetricsConfig.from_env()
        server = serve(config.hub.hub_name, config.hub.redis_url, config.host, config.port)
    except ConfigError as error:
        sys.stderr.write(f"error: {error}\n")
        return 2
    except ServeError as error:
        setting = "GH_AGENT_METRICS_ADDR" if config.explicit else "the default address (set GH_AGENT_METRICS_ADDR)"
        sys.stderr.write(f"error: {error}; each hub's metrics process needs a port of its own: {setting}\n")
        return 2
    stopping = threading.Event()

    def stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("hub=%s agent metrics on http://%s/metrics", config.hub.hub_name, config.address)
    stopping.wait()
    server.shutdown()
    server.server_close()
    log.info("hub=%s agent metrics stopped", config.hub.hub_name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
