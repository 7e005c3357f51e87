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
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import PySpy, Report, progress, project_functions  # noqa: E402
from bench.fleet.changes import Shape  # noqa: E402
from bench.fleet.harness import (  # noqa: E402
    FleetDB,
    Names,
    Scratch,
    consumer_figures,
    free_port,
    manager_env,
    percentile,
    r3,
    start_fleet,
    start_manager,
    stop_all,
    wait_for,
)
from tests.helpers import Process  # noqa: E402


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
    p.add_argument("--tag", default="fleet", help="names start with this: gh_bench_<tag><hex>, <tag><hex>-gh-status.")
    return p.parse_args(argv)


class Manager(FleetDB):
    """The manager's tables, and the broadcast's requests and answers."""

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


def main(argv: list[str] | None = None) -> int:  # noqa: PLR0915 - one run, told in order
    args = parse_args(argv)
    names = Names.fresh(args.tag)
    log_dir = args.log_dir or Path("/tmp") / names.tag
    log_dir.mkdir(parents=True, exist_ok=True)
    scratch = Scratch.for_names(names)
    db_url = scratch.db_url
    env = manager_env(names, db_url, args.redis_db, scratch.kafka)
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
        scratch.create(env)

        progress(f"fleet: {args.hubs} hubs in {args.fleet_processes} processes (topics {names.prefix}*)")
        started = time.monotonic()
        fleet = start_fleet(
            names,
            env,
            log_dir,
            hubs=args.hubs,
            shape=(args.clusters, args.policies, args.compliance),
            processes=args.fleet_processes,
            options=("--no-startup-resync", "--heartbeat", "60s", "--delta-interval", "5s"),
            timeout=args.timeout,
        )
        processes.append(fleet)
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
        stop_all(processes)
        if manager is not None:
            manager.close()
        if not args.keep:
            scratch.clean(names.topics(args.hubs))
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
