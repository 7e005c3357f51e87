"""The agent on a hub read from a Kubernetes API server: fill time, watch-to-row latency, memory.

    bin/stack up && eval "$(bin/stack env)"
    .venv/bin/python bench/agent_kube.py [--clusters 10000] [--rate 100] [--seconds 120] [--delta 1s]

1. **Population.** ``--clusters`` realistic ManagedClusters (the simulator's, about 3 KB each) in the local API
   server, labelled ``globalhub.io/simulated-hub=kubebench``; a later run reuses them when the count matches. Every
   other ManagedCluster, Policy and ClusterClaim is deleted first: this is the stack's own API server.
2. **Fill.** The agent's processes start at once (worker, beat, spec listener and the inventory watcher, running as
   the agent's ServiceAccount user with the deployed RBAC); the time from that start until the hub's inventory in
   Redis holds every cluster (target <= 10 s).
3. **Latency.** The manager's status consumer on a scratch database runs meanwhile. Once it holds every cluster,
   ``--rate`` label changes per second go to the API for ``--seconds`` (each a merge patch setting the label
   ``bench-seq``), with the agent's delta interval at ``--delta``. A trigger on the manager's cluster table records
   when each ``bench-seq`` value was written; latency = that moment minus the moment the patch was sent (target p99
   <= delta interval + 1 s).
4. **Memory.** RSS and PSS of every agent process, sampled every 0.1 s throughout; the largest sum at one moment
   (target <= 250 MB RSS).

The last line of stdout is one JSON object with every figure. Nothing is asserted.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import os
import random
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import redis

from agent_tasks.inventory import RedisInventory
from agent_tasks.kube.resources import MANAGED_CLUSTERS, RESOURCES
from agent_tasks.simulate import cluster_changes
from agent_tasks.simulate_kube import SIMULATED_LABEL, KubeTarget
from bench.common import (
    AgentProcesses,
    BenchNames,
    Report,
    RssSampler,
    agent_env,
    beat_argv,
    cleanup_redis,
    default_kafka,
    default_redis_url,
    delete_topics,
    drop_database,
    group_members,
    listener_argv,
    log_dir_for,
    progress,
    redis_url_with_db,
    stop_on_sigterm,
    worker_argv,
)
from globalhub.envconf import parse_duration
from tests.helpers import REPO, Process, python_argv
from tests.kube import KubeStack, delete, deployed_agent_rules, list_all

POPULATION = "kubebench"
CLUSTER_TABLE = "manager_managedcluster"
WITNESS = """
CREATE TABLE bench_witness (seq text NOT NULL, at timestamptz NOT NULL);
CREATE FUNCTION bench_witness() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.payload -> 'metadata' -> 'labels' ? 'bench-seq' THEN
        INSERT INTO bench_witness VALUES (NEW.payload -> 'metadata' -> 'labels' ->> 'bench-seq', clock_timestamp());
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER bench_witness AFTER INSERT OR UPDATE ON manager_managedcluster
    FOR EACH ROW EXECUTE FUNCTION bench_witness();
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clusters", type=int, default=10_000)
    p.add_argument("--rate", type=float, default=100.0, help="label changes per second through the API")
    p.add_argument("--seconds", type=float, default=120.0, help="how long the changes go on")
    p.add_argument("--delta", default="1s", help="the agent's delta interval for managedcluster")
    p.add_argument("--redis-db", type=int, default=14)
    p.add_argument("--log-dir", default=None)
    p.add_argument("--keep", action="store_true", help="keep the database, Redis keys and topics")
    return p.parse_args(argv)


# --- the API server ------------------------------------------------------------------------------------------------


def populate(kube: KubeStack, clusters: int) -> float:
    """Exactly the bench's clusters in the API server; returns the seconds it took (0 when reused)."""
    api = kube.admin()
    for resource in RESOURCES:  # everything that is not the bench's population goes
        for obj in list_all(api, resource):
            metadata = obj["metadata"]
            if (metadata.get("labels") or {}).get(SIMULATED_LABEL) != POPULATION or resource is not MANAGED_CLUSTERS:
                delete(api, resource, metadata["name"], metadata.get("namespace"))
    have = len(list_all(api, MANAGED_CLUSTERS))
    if have == clusters:
        api.close()
        return 0.0
    target = KubeTarget(api, POPULATION)
    try:
        started = time.monotonic()
        target.clear("managedcluster")
        for start in range(0, clusters, 1000):
            target.apply("managedcluster", cluster_changes(POPULATION, min(1000, clusters - start), 1, start))
            progress(f"{start + min(1000, clusters - start)} of {clusters} clusters in the API server")
        return time.monotonic() - started
    finally:
        target.close()


class ChangeMaker:
    """Label changes through the API at a steady rate; remembers when each was sent."""

    def __init__(self, kube: KubeStack, names: list[str], tag: str) -> None:
        self._api = kube.admin()
        self._names = names
        self._tag = tag  # the label values of this run: the population keeps an earlier run's
        self.sent: dict[str, float] = {}
        self.failed = 0
        self.late = 0  # changes that could not be sent on time (the machine or the API server fell behind)

    def run(self, rate: float, seconds: float) -> None:
        total = int(rate * seconds)
        started = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            for seq in range(total):
                due = started + seq / rate
                wait = due - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                elif wait < -1.0:
                    self.late += 1
                pool.submit(self._change, seq)

    def _change(self, seq: int) -> None:
        name = self._names[seq % len(self._names)]
        value = f"{self._tag}.{seq}"
        patch = {"metadata": {"labels": {"bench-seq": value}}}
        self.sent[value] = time.time()
        try:
            self._api.patch(MANAGED_CLUSTERS, name, patch)
        except Exception:
            self.failed += 1


# --- the manager ---------------------------------------------------------------------------------------------------


def scratch_database(base_url: str, name: str) -> str:
    parts = urlsplit(base_url)
    with psycopg.connect(urlunsplit(parts._replace(path="/postgres")), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return urlunsplit(parts._replace(path=f"/{name}"))


def live_clusters(db_url: str, hub: str) -> int:
    with psycopg.connect(db_url) as conn:
        row = conn.execute(
            f"SELECT count(*) FROM {CLUSTER_TABLE} WHERE leaf_hub_name = %s AND deleted_at IS NULL", (hub,)
        ).fetchone()
    return int(row[0]) if row else 0


def witnessed(db_url: str) -> dict[str, float]:
    with psycopg.connect(db_url) as conn:
        rows = conn.execute("SELECT seq, min(extract(epoch FROM at)) FROM bench_witness GROUP BY seq").fetchall()
    return {str(seq): float(at) for seq, at in rows}


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * (len(ordered) - 1))))]


def wait(condition: Any, timeout: float, what: str, processes: AgentProcesses) -> float:
    started = time.monotonic()
    while not condition():
        processes.check_running()
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)
    return time.monotonic() - started


# --- the run -------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:  # noqa: PLR0915 - one run, told in order
    args = parse_args(argv)
    stop_on_sigterm()
    names = BenchNames.fresh("kube")
    kube = KubeStack.from_env()
    kube.grant_agent(deployed_agent_rules())
    base_url = os.environ.get("DATABASE_URL", "postgres://globalhub:globalhub@127.0.0.1:55432/globalhub")
    db_name = f"gh_bench_{names.tag.removeprefix('bench')}"
    url = redis_url_with_db(default_redis_url(), args.redis_db)
    kafka = default_kafka()
    client = redis.Redis.from_url(url)
    log_dir = log_dir_for(names, args.log_dir)
    delta = parse_duration(args.delta).total_seconds()
    report = Report("agent_kube")
    f = report.figures
    f.update({"clusters": args.clusters, "rate": args.rate, "seconds": args.seconds, "delta_interval": delta})

    progress(f"populating {args.clusters} ManagedClusters in the API server")
    f["populate_seconds"] = round(populate(kube, args.clusters), 1)
    db_url = scratch_database(base_url, db_name)
    env = agent_env(
        names,
        url,
        kafka,
        {
            "DATABASE_URL": db_url,
            "GH_KUBECONFIG": str(kube.agent_kubeconfig),
            "GH_AGENT_INTERVALS": f"managedcluster={args.delta}",
            "GH_CONSUMER_GROUP": f"{names.tag}-manager",
            "GH_TOPIC_REFRESH_MS": "500",
            "LOG_LEVEL": "WARNING",
        },
    )
    agent = AgentProcesses(env, log_dir)
    consumer: Process | None = None
    try:
        subprocess.run(python_argv("manage.py", "migrate", "--noinput", "-v", "0"), cwd=REPO, env=env, check=True)
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute(WITNESS)
        consumer = Process("consumer", python_argv("manage.py", "consume_status"), env, log_dir)
        inventory = RedisInventory(client, names.hub)

        progress("starting the agent (worker, beat, listener, inventory watcher)")
        started = time.monotonic()
        agent.start("watcher", python_argv("-m", "agent_tasks.watch_kube"))
        agent.start("worker", worker_argv([]))
        agent.start("beat", beat_argv())
        agent.start("listener", listener_argv())
        pgids = [agent.pgid(kind) for kind in agent.processes]
        with RssSampler(pgids) as memory:
            wait(lambda: inventory.count("managedcluster") >= args.clusters, 120, "the inventory", agent)
            f["fill_seconds"] = round(time.monotonic() - started, 2)
            f["fill_rss_watcher_mib"] = round(memory.peak_kb.get(agent.pgid("watcher"), 0) / 1024, 1)
            progress(f"inventory filled {f['fill_seconds']} s after the agent's start")
            wait(lambda: live_clusters(db_url, names.hub) >= args.clusters, 300, "the manager's rows", agent)
            f["manager_filled_seconds"] = round(time.monotonic() - started, 1)
            cluster_names = [f"{POPULATION}-cluster-{index:05d}" for index in range(args.clusters)]
            random.Random(3).shuffle(cluster_names)
            maker = ChangeMaker(kube, cluster_names, names.tag)
            progress(f"{args.rate:.0f} label changes per second for {args.seconds:.0f} s")
            changes_started = time.monotonic()
            maker.run(args.rate, args.seconds)
            f["changes_sent_seconds"] = round(time.monotonic() - changes_started, 1)
            expected = set(maker.sent)
            deadline = time.monotonic() + 60
            seen: dict[str, float] = {}
            while time.monotonic() < deadline:
                seen = witnessed(db_url)
                if expected <= set(seen):
                    break
                time.sleep(0.5)
            agent.check_running()
        latencies = [seen[seq] - maker.sent[seq] for seq in expected if seq in seen]
        f.update(
            {
                "changes": len(expected),
                "changes_failed": maker.failed,
                "changes_sent_late": maker.late,
                "changes_missing": len(expected - set(seen)),
                "latency_p50": round(percentile(latencies, 0.50), 3) if latencies else None,
                "latency_p99": round(percentile(latencies, 0.99), 3) if latencies else None,
                "latency_max": round(max(latencies), 3) if latencies else None,
                "latency_target": delta + 1.0,
                "peak_total_rss_mib": round(memory.peak_total_rss_kb / 1024, 1),
                "peak_total_pss_mib": round(memory.peak_total_pss_kb / 1024, 1),
                "peak_rss_by_process_mib": peak_by_kind(agent, memory),
            }
        )
        render(report, f)
        report.emit()
        return 0
    finally:
        agent.stop_all()
        if consumer is not None:
            consumer.stop()
        if not args.keep:
            cleanup_redis(client, names.hub)
            delete_topics(kafka, [names.status_topic, names.spec_topic])
            drop_database(base_url, db_name)


def peak_by_kind(agent: AgentProcesses, memory: RssSampler) -> dict[str, float]:
    """The largest RSS any process of each kind reached (MiB)."""
    peaks = {}
    for kind in agent.processes:
        members = group_members(agent.pgid(kind))
        peaks[kind] = round(max((memory.peak_kb.get(m.pid, 0) for m in members), default=0) / 1024, 1)
    return peaks


def render(report: Report, f: dict[str, Any]) -> None:
    report.say(f"API server: {f['clusters']} ManagedClusters (populated in {f['populate_seconds']} s; 0 = reused)")
    report.say(f"agent start -> inventory filled: {f['fill_seconds']} s (target <= 10 s)")
    report.say(f"agent start -> manager holds every cluster: {f['manager_filled_seconds']} s")
    report.say(
        f"{f['changes']} label changes at {f['rate']:.0f}/s over {f['changes_sent_seconds']} s"
        f" ({f['changes_failed']} failed, {f['changes_sent_late']} sent over 1 s late, {f['changes_missing']} never"
        " reached the manager)"
    )
    report.say(
        f"change sent -> manager row: p50 {f['latency_p50']} s, p99 {f['latency_p99']} s, max {f['latency_max']} s"
        f" (delta interval {f['delta_interval']} s; target p99 <= {f['latency_target']} s)"
    )
    report.say(
        f"agent processes: peak sum {f['peak_total_rss_mib']} MiB RSS / {f['peak_total_pss_mib']} MiB PSS"
        f" (target <= 250 MB); per process {f['peak_rss_by_process_mib']}"
    )


if __name__ == "__main__":
    sys.exit(main())
