"""The agent's metrics: recorded in Redis by whichever process works, served by ``python -m agent_tasks.metrics``.

* histograms (send latency, resync duration, bundle bytes) and errors by kind, with their exact buckets;
* the served endpoint, scraped and parsed with ``prometheus_client``'s parser: what an agent in other processes
  (the Celery worker's pool) records shows there, and grows with each send, resync and failure;
* the metrics process refuses an address it cannot serve, clearly, so agents of several hubs never share a port;
* docs/agent.md names exactly the metrics a scrape exports.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from agent_tasks.emitter import Emitter
from agent_tasks.engine import Agent
from agent_tasks.intervals import Intervals
from agent_tasks.inventory import RedisInventory
from agent_tasks.kube.status import ResourceState, SourceStatus
from agent_tasks.liveness import MARKS, mark
from agent_tasks.metrics import AgentCollector
from agent_tasks.resync_queue import ResyncQueue
from agent_tasks.simulate import cluster_changes
from agent_tasks.state import StateStore
from agent_tasks.telemetry import RedisRecorder
from agent_tasks.versions import VersionStore
from globalhub.protocol.kafka import STATUS_TOPIC_CONFIG, ConfirmedProducer, KafkaSettings, ensure_topics
from tests.helpers import REPO, Process, python_argv, start_agent, wait_for

CLUSTERS = "managedcluster"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def free_port() -> int:
    """A port nobody listens on now (the metrics process binds it a moment later; tests run many agents at once)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def parse(text: str) -> Samples:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def scrape_text(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return str(response.read().decode())


def scrape(port: int) -> Samples:
    return parse(scrape_text(port))


def collected(client: redis.Redis, hub: str) -> Samples:
    """What a scrape would return, without the HTTP server (same collector, same exposition)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(AgentCollector(client, hub))
    return parse(generate_latest(registry).decode())


def labels(hub: str, **values: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted({"hub": hub, **values}.items()))


@pytest.fixture
def metrics_env(hub_name: str, redis_url: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"HUB_NAME": hub_name, "REDIS_URL": redis_url, "PYTHONUNBUFFERED": "1"})
    env["GH_AGENT_METRICS_ADDR"] = f"127.0.0.1:{free_port()}"
    return env


def start_metrics(env: dict[str, str], log_dir: Path, processes: list[Process]) -> int:
    """Start ``python -m agent_tasks.metrics`` and wait until it answers; its port."""
    port = int(env["GH_AGENT_METRICS_ADDR"].rpartition(":")[2])
    process = Process("agent-metrics", python_argv("-m", "agent_tasks.metrics"), env, log_dir)
    processes.append(process)

    def answers() -> bool:
        assert process.is_running(), process.log_text()
        try:
            scrape_text(port)
        except OSError:
            return False
        return True

    wait_for(answers, timeout=30, what="the metrics process to answer")
    return port


def build_agent(client: redis.Redis, hub: str, topic: str, producer: ConfirmedProducer) -> Agent:
    """An agent as the worker's pool process builds it (``agent_tasks/runtime.py``), recording into Redis."""
    inventory = RedisInventory(client, hub)
    versions = VersionStore(client, hub)
    state = StateStore(client, hub)
    emitter = Emitter(hub, topic, inventory, versions, state, producer, recorder=RedisRecorder(client, hub))
    return Agent(hub, client, inventory, versions, state, ResyncQueue(client, hub), Intervals(client, hub, {}), emitter)


def drain_all(agent: Agent) -> None:
    """Run the drain until the queue is empty (one type per second, as the worker would)."""
    wait_for(
        lambda: agent.drain() is None and agent.next_drain_in() is None,
        timeout=30,
        interval=0.2,
        what="the resync queue to drain",
    )


# --- recording and exposition --------------------------------------------------------------------------------------


def test_histograms_are_exposed_with_cumulative_buckets_sum_and_count(
    redis_client: redis.Redis, hub_name: str, inventory: RedisInventory
) -> None:
    recorder = RedisRecorder(redis_client, hub_name)
    recorder.observe_send(CLUSTERS, "delta", 0.003, [100, 2000])
    recorder.observe_send(CLUSTERS, "delta", 0.2, [900 * 1024])
    recorder.observe_send(CLUSTERS, "delta", 45.0, [])
    recorder.observe_send(CLUSTERS, "resync", None, [])  # a resync with nothing to send: no latency
    recorder.observe_resync(CLUSTERS, 3.0)

    samples = collected(redis_client, hub_name)

    delta = {"type": CLUSTERS, "send": "delta"}
    latency = "globalhub_agent_send_latency_seconds"
    assert samples[(f"{latency}_bucket", labels(hub_name, **delta, le="0.005"))] == 1
    assert samples[(f"{latency}_bucket", labels(hub_name, **delta, le="0.1"))] == 1
    assert samples[(f"{latency}_bucket", labels(hub_name, **delta, le="0.25"))] == 2
    assert samples[(f"{latency}_bucket", labels(hub_name, **delta, le="30.0"))] == 2
    assert samples[(f"{latency}_bucket", labels(hub_name, **delta, le="+Inf"))] == 3
    assert samples[(f"{latency}_count", labels(hub_name, **delta))] == 3
    assert samples[(f"{latency}_sum", labels(hub_name, **delta))] == pytest.approx(45.203)
    assert (f"{latency}_count", labels(hub_name, type=CLUSTERS, send="resync")) not in samples

    size = "globalhub_agent_bundle_bytes"
    assert samples[(f"{size}_bucket", labels(hub_name, type=CLUSTERS, le="256.0"))] == 1
    assert samples[(f"{size}_bucket", labels(hub_name, type=CLUSTERS, le="4096.0"))] == 2
    assert samples[(f"{size}_bucket", labels(hub_name, type=CLUSTERS, le="819200.0"))] == 2
    assert samples[(f"{size}_bucket", labels(hub_name, type=CLUSTERS, le="1048576.0"))] == 3
    assert samples[(f"{size}_sum", labels(hub_name, type=CLUSTERS))] == 100 + 2000 + 900 * 1024

    resync = "globalhub_agent_resync_duration_seconds"
    assert samples[(f"{resync}_bucket", labels(hub_name, type=CLUSTERS, le="2.5"))] == 0
    assert samples[(f"{resync}_bucket", labels(hub_name, type=CLUSTERS, le="5.0"))] == 1
    assert samples[(f"{resync}_count", labels(hub_name, type=CLUSTERS))] == 1


def test_every_error_kind_is_exported_from_zero_and_kube_read_errors_come_from_the_watcher(
    redis_client: redis.Redis, hub_name: str, inventory: RedisInventory
) -> None:
    errors = "globalhub_agent_errors_total"
    samples = collected(redis_client, hub_name)
    assert {
        kind: samples[(errors, labels(hub_name, kind=kind))] for kind in ("send", "sync", "resync", "kube_read")
    } == {
        "send": 0,
        "sync": 0,
        "resync": 0,
        "kube_read": 0,
    }

    RedisRecorder(redis_client, hub_name).count_error("sync")
    failing = ResourceState()
    failing.failed("list policies: 403 Forbidden", time.time())
    failing.failed("list policies: 403 Forbidden", time.time())
    SourceStatus(redis_client, hub_name).publish({"source": "kubernetes"}, {"policies": failing}, now=time.time())

    samples = collected(redis_client, hub_name)
    assert samples[(errors, labels(hub_name, kind="sync"))] == 1
    assert samples[(errors, labels(hub_name, kind="kube_read"))] == 2
    assert samples[(errors, labels(hub_name, kind="send"))] == 0


def test_liveness_marks_are_exported_as_timestamps(
    redis_client: redis.Redis, hub_name: str, inventory: RedisInventory
) -> None:
    for offset, which in enumerate(MARKS):
        mark(redis_client, hub_name, which, 1_800_000_000.0 + offset)

    samples = collected(redis_client, hub_name)

    assert {
        which: samples[("globalhub_agent_liveness_timestamp_seconds", labels(hub_name, mark=which))] for which in MARKS
    } == {
        "worker": 1_800_000_000.0,
        "beat": 1_800_000_001.0,
        "tick": 1_800_000_002.0,
    }


# --- docs and exports agree ----------------------------------------------------------------------------------------


def exported_names(text: str) -> set[str]:
    """Metric names as a scrape exposes them: a counter with ``_total``, a histogram by its family name."""
    return {
        family.name + "_total" if family.type == "counter" else family.name
        for family in text_string_to_metric_families(text)
    }


def test_the_agent_docs_name_exactly_the_metrics_a_scrape_exports(
    redis_client: redis.Redis, hub_name: str, inventory: RedisInventory
) -> None:
    # Families that only appear with a Kubernetes source (the rest are always exported, with or without samples).
    SourceStatus(redis_client, hub_name).publish(
        {"source": "kubernetes"}, {"managedclusters": ResourceState(connected=True)}, now=time.time()
    )
    registry = CollectorRegistry(auto_describe=False)
    registry.register(AgentCollector(redis_client, hub_name))
    exported = exported_names(generate_latest(registry).decode())

    documented = set(re.findall(r"\bglobalhub_agent_[a-z0-9_]*[a-z0-9]", (REPO / "docs" / "agent.md").read_text()))

    assert exported, "the collector exported nothing"
    assert all(name.startswith("globalhub_agent_") for name in exported)
    assert sorted(documented - exported) == [], "named in docs/agent.md but not exported"
    assert sorted(exported - documented) == [], "exported but not in docs/agent.md"


# --- the served endpoint -------------------------------------------------------------------------------------------


@pytest.fixture
def status_topic(kafka_settings: KafkaSettings, status_prefix: str, hub_name: str) -> str:
    topic = status_prefix + hub_name
    ensure_topics(kafka_settings, [topic], STATUS_TOPIC_CONFIG)
    return topic


@pytest.fixture
def producer(kafka_settings: KafkaSettings) -> Iterator[ConfirmedProducer]:
    confirmed = ConfirmedProducer(kafka_settings)
    yield confirmed
    confirmed.close()


def test_the_metrics_process_serves_what_another_process_records_and_it_grows_with_each_send_and_resync(
    redis_client: redis.Redis,
    hub_name: str,
    inventory: RedisInventory,
    status_topic: str,
    producer: ConfirmedProducer,
    metrics_env: dict[str, str],
    tmp_path: Path,
    processes: list[Process],
) -> None:
    port = start_metrics(metrics_env, tmp_path, processes)
    latency = "globalhub_agent_send_latency_seconds_count"
    resync = "globalhub_agent_resync_duration_seconds_count"
    before = scrape(port)
    assert (resync, labels(hub_name, type=CLUSTERS)) not in before

    inventory.apply(CLUSTERS, cluster_changes(hub_name, 20, seed=3))
    agent = build_agent(redis_client, hub_name, status_topic, producer)
    agent.start()
    drain_all(agent)

    after_start = scrape(port)
    assert after_start[(resync, labels(hub_name, type=CLUSTERS))] == 1
    assert after_start[(latency, labels(hub_name, type=CLUSTERS, send="resync"))] >= 1
    assert after_start[("globalhub_agent_bundle_bytes_count", labels(hub_name, type=CLUSTERS))] >= 1
    assert after_start[("globalhub_agent_bundle_bytes_sum", labels(hub_name, type=CLUSTERS))] > 20 * 100

    inventory.apply(CLUSTERS, cluster_changes(hub_name, 2, seed=4, start=500))
    agent.sync()
    ResyncQueue(redis_client, hub_name).push([CLUSTERS])
    drain_all(agent)

    later = scrape(port)
    assert later[(latency, labels(hub_name, type=CLUSTERS, send="delta"))] >= 1
    assert later[(resync, labels(hub_name, type=CLUSTERS))] == 2
    assert later[("globalhub_agent_errors_total", labels(hub_name, kind="send"))] == 0


def test_a_send_kafka_never_confirms_counts_a_send_and_a_resync_error(
    redis_client: redis.Redis,
    hub_name: str,
    inventory: RedisInventory,
    metrics_env: dict[str, str],
    tmp_path: Path,
    processes: list[Process],
) -> None:
    port = start_metrics(metrics_env, tmp_path, processes)
    errors = "globalhub_agent_errors_total"
    assert scrape(port)[(errors, labels(hub_name, kind="send"))] == 0

    unreachable = ConfirmedProducer(KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}"), stall_timeout=1.0)
    inventory.apply(CLUSTERS, cluster_changes(hub_name, 3, seed=5))
    agent = build_agent(redis_client, hub_name, "gh-status.nowhere", unreachable)
    agent.start()

    def cluster_resync_failed() -> str:
        agent.drain()  # managedhub.info first (nothing to send: no message to confirm), then managedcluster
        return StateStore(redis_client, hub_name).get(CLUSTERS).last_error

    wait_for(cluster_resync_failed, timeout=30, interval=0.2, what="the cluster resync to fail")
    unreachable.close(0)

    samples = scrape(port)
    assert samples[(errors, labels(hub_name, kind="send"))] >= 1
    assert samples[(errors, labels(hub_name, kind="resync"))] >= 1
    assert (
        "globalhub_agent_resync_duration_seconds_count",
        labels(hub_name, type=CLUSTERS),
    ) not in samples  # only confirmed resyncs are timed


@pytest.mark.e2e
def test_what_the_workers_pool_processes_record_reaches_the_metrics_process(
    process_env: dict[str, str],
    hub_name: str,
    inventory: RedisInventory,
    metrics_env: dict[str, str],
    tmp_path: Path,
    processes: list[Process],
) -> None:
    inventory.apply(CLUSTERS, cluster_changes(hub_name, 30, seed=6))
    process_env["GH_AGENT_INTERVALS"] = "managedcluster=1s"
    port = start_metrics(
        {**process_env, "GH_AGENT_METRICS_ADDR": metrics_env["GH_AGENT_METRICS_ADDR"]}, tmp_path, processes
    )
    processes.extend(start_agent(process_env, tmp_path, listener=False))

    resync = ("globalhub_agent_resync_duration_seconds_count", labels(hub_name, type=CLUSTERS))
    wait_for(lambda: scrape(port).get(resync, 0) >= 1, timeout=90, what="the startup resync's duration")
    delta = ("globalhub_agent_send_latency_seconds_count", labels(hub_name, type=CLUSTERS, send="delta"))
    inventory.apply(CLUSTERS, cluster_changes(hub_name, 1, seed=7, start=900))
    wait_for(lambda: scrape(port).get(delta, 0) >= 1, timeout=60, what="a delta's send latency")
    ticks = scrape(port)[("globalhub_agent_liveness_timestamp_seconds", labels(hub_name, mark="tick"))]
    assert ticks > time.time() - 60


# --- the address ---------------------------------------------------------------------------------------------------


def run_metrics(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        python_argv("-m", "agent_tasks.metrics"), check=False, env=env, capture_output=True, text=True, timeout=60
    )


def test_a_port_in_use_is_a_clear_error_naming_the_setting(metrics_env: dict[str, str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_metrics({**metrics_env, "GH_AGENT_METRICS_ADDR": f"127.0.0.1:{port}"})

    assert result.returncode == 2
    assert f"error: cannot serve metrics on 127.0.0.1:{port}: Address already in use" in result.stderr
    assert "GH_AGENT_METRICS_ADDR" in result.stderr


@pytest.mark.parametrize("address", ["9109", "127.0.0.1:", "127.0.0.1:0", "127.0.0.1:http", "localhost:70000"])
def test_a_malformed_address_is_refused(metrics_env: dict[str, str], address: str) -> None:
    result = run_metrics({**metrics_env, "GH_AGENT_METRICS_ADDR": address})

    assert result.returncode == 2
    assert f"error: GH_AGENT_METRICS_ADDR={address!r} must be host:port" in result.stderr
