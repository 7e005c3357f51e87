"""Issue 14, benchmarks 1, 6 and 7: a manager start's broadcast to a fleet, until every hub's data is in the DB.

    .venv/bin/python bench/fleet_broadcast.py --hubs 1000 --clusters 100 --policies 10 --compliance 50
    .venv/bin/python bench/fleet_broadcast.py --hubs 1000 --consumers 2        # scale-out: 1, 2, 4

1. A scratch database ``gh_bench_<tag>`` (``manage.py migrate``), topics ``<tag>-gh-status.<hub>``, a spec topic
   and a Redis database (the manager's Celery queue) of this run only.
2. The fleet emulator (``python -m bench.fleet``, ``--no-startup-resync``: the hubs wait for the manager) creates
   every hub's topic and listens on the spec topic.
3. ``consume_status`` (x ``--consumers``, one group) and the manager's Celery worker start. The first consumer's
   start records the broadcast resync request (reason ``startup``); the worker sends it; each hub queues its four
   types and drains one per second.
4. **Consistent**: every hub has exactly its clusters, policies and compliance rows, live, read from the database
   every 0.5 s. The time counts from the request's ``requested_at``.

The split of that time comes from the database (request sent, each hub's answer complete: ``ResyncTarget``) and
from each consumer's metrics endpoint (``globalhub_ingest_batch_duration_seconds``: time spent ingesting), not from
log lines. Peak RSS (``VmHWM``) of each consumer from /proc. The last stdout line is the JSON of every figure.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import (  # noqa: E402
    PySpy,
    Report,
    default_kafka,
    default_redis_url,
    delete_topics,
    progress,
    project_functions,
    redis_url_with_db,
    status_kb,
)
from bench.fleet.changes import Shape  # noqa: E402
from bench.manager_ingest import admin_execute, base_database_url, with_database  # noqa: E402
from tests.helpers import Process, celery_argv, python_argv  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hubs", type=int, default=1000)
    p.add_argument("--clusters", type=int, default=100)
    p.add_argument("--policies", type=int, default=10)
    p.add_argument("--compliance", type=int, default=50, help="compliance rows per hub")
    p.add_argument("--consumers", type=int, default=1, help="consume_status processes in one group")
    p.add_argument("--fleet-processes", type=int, default=2)
    p.add_argument("--timeout", type=float, default=600.0, help="give up after this long (seconds)")
    p.add_argument("--redis-db", type=int, default=11, help="the manager's Celery broker database")
    p.add_argument("--log-dir", type=Path)
    p.add_argument("--keep", action="store_true", help="keep the database and the topics")
    p.add_argument("--py-spy", help="a py-spy binary: profile consumer 0 during the restart's broadcast")
    return p.parse_args(argv)


@dataclass(frozen=True)
class Names:
    tag: str

    @property
    def prefix(self) -> str:
        return f"{self.tag}-gh-status."

    @property
    def spec_topic(self) -> str:
        return f"{self.tag}-gh-spec"

    @property
    def database(self) -> str:
        return f"gh_bench_{self.tag}"


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(check: Callable[[], bool], timeout: float, what: str, every: float = 0.5) -> float:
    """Poll ``check`` until true; the wall time it became true. Fails loudly after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return time.time()
        time.sleep(every)
    raise TimeoutError(f"{what}: not within {timeout:.0f} s")


class Manager:
    """The manager's tables of the scratch database, read with plain SQL (no Django in this process)."""

    def __init__(self, url: str, hubs: int, expected: tuple[int, int, int]) -> None:
        import psycopg

        self._conn = psycopg.connect(url, autocommit=True)
        self.hubs = hubs
        self.expected = expected

    def _one(self, sql: str) -> Any:
        row = self._conn.execute(sql).fetchone()
        return None if row is None else row[0]

    def consistent_hubs(self) -> int:
        """Hubs whose live clusters, live policies and compliance rows are exactly the fleet's."""
        clusters, policies, compliance = self.expected
        return int(
            self._one(
                f"""
                WITH c AS (SELECT leaf_hub_name h, count(*) n FROM manager_managedcluster
                           WHERE deleted_at IS NULL GROUP BY 1),
                     p AS (SELECT leaf_hub_name h, count(*) n FROM manager_localpolicy
                           WHERE deleted_at IS NULL GROUP BY 1),
                     s AS (SELECT leaf_hub_name h, count(*) n FROM manager_localcompliance GROUP BY 1)
                SELECT count(*) FROM manager_hub hub
                LEFT JOIN c ON c.h = hub.name LEFT JOIN p ON p.h = hub.name LEFT JOIN s ON s.h = hub.name
                WHERE coalesce(c.n, 0) = {clusters} AND coalesce(p.n, 0) = {policies}
                  AND coalesce(s.n, 0) = {compliance}
                """
            )
            or 0
        )

    def broadcast(self, after: int = 0) -> tuple[int, float, float | None] | None:
        """The first startup request after id ``after``: its id, requested and sent times (epoch seconds)."""
        row = self._conn.execute(
            "SELECT id, extract(epoch FROM requested_at), extract(epoch FROM sent_at) FROM manager_resyncrequest "
            "WHERE reason = 'startup' AND id > %s ORDER BY id LIMIT 1",
            [after],
        ).fetchone()
        if row is None:
            return None
        return int(row[0]), float(row[1]), None if row[2] is None else float(row[2])

    def answers(self, request: int) -> tuple[int, list[float]]:
        """The request's targets, and when each one's answer was complete (epoch seconds), in order."""
        rows = self._conn.execute(
            "SELECT extract(epoch FROM completed_at) FROM manager_resynctarget WHERE request_id = %s", [request]
        ).fetchall()
        return len(rows), sorted(float(row[0]) for row in rows if row[0] is not None)

    def rows(self) -> int:
        return int(
            self._one(
                "SELECT (SELECT count(*) FROM manager_managedcluster) + (SELECT count(*) FROM manager_localpolicy) "
                "+ (SELECT count(*) FROM manager_localcompliance)"
            )
        )

    def dead_letters(self) -> int:
        return int(self._one("SELECT count(*) FROM manager_deadletter"))

    def close(self) -> None:
        self._conn.close()


def scrape(port: int) -> dict[str, float]:
    """A consumer endpoint's samples by name (labels dropped: these families have none of interest)."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if not sample.labels or (set(sample.labels) == {"le"} and sample.labels["le"] == "+Inf"):
                samples[sample.name] = samples.get(sample.name, 0.0) + sample.value
    return samples


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def r3(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def start_manager(env: dict[str, str], ports: list[int], log_dir: Path, phase: str) -> list[Process]:
    """The manager's Celery worker (it sends the requests) and the consumers, each serving its metrics."""
    worker = Process(f"{phase}-worker", celery_argv("-A", "globalhub", "worker", "-l", "info", "-c", "2"), env, log_dir)
    consumers = [
        Process(
            f"{phase}-consumer-{index}",
            python_argv("manage.py", "consume_status"),
            {**env, "GH_CONSUMER_METRICS_ADDR": f"127.0.0.1:{port}"},
            log_dir,
        )
        for index, port in enumerate(ports)
    ]
    return [worker, *consumers]


def consumer_figures(ports: list[int], started: list[Process]) -> list[dict[str, Any]]:
    """Each consumer's batches and time spent ingesting (its metrics endpoint) and peak RSS (/proc)."""
    figures = []
    for port, process in zip(ports, started[1:], strict=True):
        samples = scrape(port)
        figures.append(
            {
                "batches": samples.get("globalhub_ingest_batch_duration_seconds_count"),
                "ingest_seconds": r3(samples.get("globalhub_ingest_batch_duration_seconds_sum")),
                "records": samples.get("globalhub_consumer_records_read_total"),
                "peak_rss_mib": r3((status_kb(process.popen.pid, "VmHWM") or 0) / 1024),
            }
        )
    return figures


def main(argv: list[str] | None = None) -> int:  # noqa: PLR0915 - one run, told in order
    args = parse_args(argv)
    names = Names(f"fleet{uuid.uuid4().hex[:6]}")
    log_dir = args.log_dir or Path("/tmp") / names.tag
    log_dir.mkdir(parents=True, exist_ok=True)
    kafka = default_kafka()
    base_url = base_database_url()
    db_url = with_database(base_url, names.database)
    env = {
        **os.environ,
        "DATABASE_URL": db_url,
        "REDIS_URL": redis_url_with_db(default_redis_url(), args.redis_db),
        "KAFKA_BOOTSTRAP_SERVERS": kafka,
        "GH_STATUS_TOPIC_PREFIX": names.prefix,
        "GH_SPEC_TOPIC": names.spec_topic,
        "LOG_LEVEL": "INFO",
        # A manager start within the probe interval of the last one sends no new broadcast (many processes start at
        # once); the restart phase comes sooner than the default 2 min. No beat runs: no probe is scheduled.
        "GH_PROBE_INTERVAL": "5s",
        # As in production: DEBUG's cursor wrapper keeps every statement (CPU and memory in a long-lived consumer).
        "DJANGO_DEBUG": "false",
        "DJANGO_SECRET_KEY": uuid.uuid4().hex * 2,
    }
    f: dict[str, Any] = {
        "hubs": args.hubs,
        "per_hub": {"clusters": args.clusters, "policies": args.policies, "compliance": args.compliance},
        "consumers": args.consumers,
        "fleet_processes": args.fleet_processes,
        "load_1min_before": os.getloadavg()[0],
    }
    processes: list[Process] = []
    manager: Manager | None = None
    try:
        progress(f"scratch database {names.database}")
        admin_execute(base_url, f'CREATE DATABASE "{names.database}"')
        import subprocess

        subprocess.run(python_argv("manage.py", "migrate", "--noinput", "-v", "0"), cwd=REPO, env=env, check=True)

        progress(f"fleet: {args.hubs} hubs in {args.fleet_processes} processes (topics {names.prefix}*)")
        ready = log_dir / "fleet-ready"
        started = time.monotonic()
        fleet = Process(
            "fleet",
            python_argv(
                "-m",
                "bench.fleet",
                *("--hubs", str(args.hubs), "--clusters", str(args.clusters), "--policies", str(args.policies)),
                *("--compliance", str(args.compliance), "--processes", str(args.fleet_processes)),
                *("--prefix", names.prefix, "--spec-topic", names.spec_topic, "--hub-prefix", f"{names.tag}-"),
                *("--no-startup-resync", "--heartbeat", "60s", "--delta-interval", "5s", "--ready-file", str(ready)),
            ),
            env,
            log_dir,
        )
        processes.append(fleet)
        wait_for(
            lambda: (
                all(ready.with_name(f"{ready.name}.{i}").exists() for i in range(args.fleet_processes))
                or not fleet.is_running()
            ),
            args.timeout,
            "the fleet to listen",
        )
        if not fleet.is_running():
            raise RuntimeError(f"the fleet stopped:\n{fleet.log_text()[-3000:]}")
        f["fleet_ready_seconds"] = r3(time.monotonic() - started)

        ports = [free_port() for _ in range(args.consumers)]
        shape = Shape(args.clusters, args.policies, args.compliance)
        expected = (shape.clusters, shape.policies, shape.policies * shape.clusters_per_policy)
        manager = Manager(db_url, args.hubs, expected)
        db = manager

        progress(f"first start: {args.consumers} consume_status, 1 Celery worker, a database that knows no hub")
        started_processes = start_manager(env, ports, log_dir, "first")
        processes.extend(started_processes)
        wait_for(lambda: db.broadcast() is not None, 120, "the startup broadcast request")
        first, requested, _ = db.broadcast() or (0, 0.0, None)
        consistent_at = wait_for(lambda: db.consistent_hubs() >= args.hubs, args.timeout, "every hub consistent")
        f["first_start"] = {
            "consistent_seconds": r3(consistent_at - requested),
            "rows": db.rows(),
            "consumer": consumer_figures(ports, started_processes),
        }
        progress(f"first start: consistent after {f['first_start']['consistent_seconds']} s; restarting the manager")
        for process in started_processes:
            process.stop()
            processes.remove(process)
        time.sleep(5)  # past the start dedupe window (GH_PROBE_INTERVAL above)

        started_processes = start_manager(env, ports, log_dir, "restart")
        processes.extend(started_processes)
        wait_for(lambda: db.broadcast(first) is not None, 120, "the restart's broadcast request")
        request, requested, _ = db.broadcast(first) or (0, 0.0, None)
        spy = PySpy(args.py_spy, started_processes[1].popen.pid, log_dir / "consumer.spy") if args.py_spy else None
        targets = args.hubs
        done_at = wait_for(
            lambda: len(db.answers(request)[1]) >= targets, args.timeout, "every hub's answer to the broadcast"
        )
        collapsed = spy.stop() if spy is not None else None
        _, _, sent = db.broadcast(first) or (0, 0.0, None)
        count, answers = db.answers(request)
        f["restart"] = {
            "targets": count,
            "complete_seconds": r3(done_at - requested),
            "sent_seconds": r3(None if sent is None else sent - requested),
            "first_answer_seconds": r3(answers[0] - requested if answers else None),
            "p50_answer_seconds": r3((percentile(answers, 0.5) or requested) - requested),
            "consistent": db.consistent_hubs(),
            "consumer": consumer_figures(ports, started_processes),
        }
        if collapsed is not None:
            f["restart"]["profile"] = [(name, round(share, 3)) for name, share in project_functions(collapsed, 20)]
        f["rows"] = db.rows()
        f["dead_letters"] = db.dead_letters()
        f["load_1min_after"] = os.getloadavg()[0]
    finally:
        for process in reversed(processes):
            process.stop()
        if manager is not None:
            manager.close()
        if not args.keep:
            admin_execute(base_url, f'DROP DATABASE IF EXISTS "{names.database}" WITH (FORCE)')
            topics = [f"{names.prefix}{names.tag}-{i:05d}" for i in range(args.hubs)] + [names.spec_topic]
            delete_topics(kafka, topics)
    report = Report("fleet_broadcast", figures=f)
    report.say(f"{args.hubs} hubs x ({args.clusters} clusters, {args.policies} policies, {args.compliance} compliance)")
    report.say(f"first start (hubs unknown): every hub consistent after {f['first_start']['consistent_seconds']} s")
    restart = f["restart"]
    report.say(
        f"restart broadcast: every hub's answer complete after {restart['complete_seconds']} s (target ≤ 30 s); "
        f"sent after {restart['sent_seconds']} s, first answer {restart['first_answer_seconds']} s, "
        f"median {restart['p50_answer_seconds']} s; {restart['consistent']} of {args.hubs} hubs consistent"
    )
    for phase in ("first_start", "restart"):
        for index, consumer in enumerate(f[phase]["consumer"]):
            report.say(
                f"  {phase} consumer {index}: {consumer['records']} records, {consumer['batches']} batches, "
                f"{consumer['ingest_seconds']} s ingesting, peak RSS {consumer['peak_rss_mib']} MiB (target ≤ 300)"
            )
    for name, share in restart.get("profile", [])[:12]:
        report.say(f"  {share:5.1f}%  {name}")
    report.say(f"{f['rows']} rows; dead letters: {f['dead_letters']}")
    report.emit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
