"""Issue 14, benchmark 5: what a fleet's heartbeats cost the manager in steady state.

    .venv/bin/python bench/fleet_heartbeats.py --hubs 1000 --heartbeat 10s --window 120

1. A scratch database ``gh_bench_<tag>`` (``<tag>`` is ``hb`` and 6 hex digits), topics ``<tag>-gh-status.<hub>``,
   a spec topic and a Redis database (``--redis-db``, the manager's Celery queue) of this run only.
2. The fleet emulator (``python -m bench.fleet``): ``--hubs`` hubs with small inventories, a heartbeat every
   ``--heartbeat``, no changes (``--changes-per-second 0``: delta syncs find nothing to send), ``--no-startup-resync``.
3. ``manage.py consume_status`` and the manager's Celery worker start: the startup broadcast is sent and every hub
   answers it. **Steady state**: every hub's answer is complete and every hub has a heartbeat, then ``--settle``
   seconds more.
4. For ``--window`` seconds, from /proc and the database's statistics:

   * the consumer's CPU (``utime+stime`` of ``/proc/<pid>/stat``, % of one core), and the worker's;
   * PostgreSQL's CPU: the backends connected to this run's database (``pg_stat_activity``), and every
     ``postgres`` process of the server for context (other sessions share it);
   * writes: ``pg_stat_database`` of this database (``xact_commit``, ``tup_inserted/updated/deleted`` per second)
     and ``pg_stat_user_tables`` per table (rows inserted, updated, HOT-updated, deleted per second);
   * heartbeats ingested per second (``IngestTotal`` of the heartbeat type), and records the consumer read
     (its metrics endpoint).

No log lines are read. The last stdout line is the JSON of every figure.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import (  # noqa: E402
    PySpy,
    Report,
    admin_execute,
    base_database_url,
    default_kafka,
    default_redis_url,
    delete_topics,
    free_port,
    progress,
    project_functions,
    read_stat,
    redis_url_with_db,
    scrape_metrics,
    stop_on_sigterm,
    with_database,
)
from tests.helpers import Process, celery_argv, python_argv  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hubs", type=int, default=1000)
    p.add_argument("--heartbeat", default="10s", help="the fleet's heartbeat interval")
    p.add_argument("--clusters", type=int, default=10, help="clusters per hub")
    p.add_argument("--policies", type=int, default=2, help="policies per hub")
    p.add_argument("--compliance", type=int, default=10, help="compliance rows per hub")
    p.add_argument("--no-digests", action="store_true", help="heartbeats without anti-entropy digests")
    p.add_argument("--window", type=float, default=120.0, help="seconds measured in steady state")
    p.add_argument("--settle", type=float, default=20.0, help="seconds waited after steady state is reached")
    p.add_argument("--fleet-processes", type=int, default=1)
    p.add_argument("--timeout", type=float, default=600.0, help="give up reaching steady state after this long")
    p.add_argument("--redis-db", type=int, default=7, help="the manager's Celery broker database")
    p.add_argument("--log-dir", type=Path)
    p.add_argument("--keep", action="store_true", help="keep the database and the topics")
    p.add_argument(
        "--py-spy",
        help="a py-spy binary: profile the consumer during the window (its figures then include the sampling)",
    )
    return p.parse_args(argv)


def wait_for(check: Callable[[], bool], timeout: float, what: str, every: float = 1.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(every)
    raise TimeoutError(f"{what}: not within {timeout:.0f} s")


def ticks(pid: int) -> int:
    stat = read_stat(pid)
    return 0 if stat is None else stat.total_ticks


def postgres_pids() -> list[int]:
    """Every process of the PostgreSQL server (backends and background processes), by command name."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = read_stat(int(entry))
            if stat is not None and stat.comm == "postgres":
                pids.append(stat.pid)
    return pids


class Database:
    """This run's database, read with plain SQL (no Django in this process)."""

    def __init__(self, url: str, name: str) -> None:
        import psycopg

        self.name = name
        self._conn = psycopg.connect(url, autocommit=True)
        self.pid = int(self._conn.execute("SELECT pg_backend_pid()").fetchone()[0])  # type: ignore[index]

    def one(self, sql: str, params: list[Any] | None = None) -> Any:
        row = self._conn.execute(sql, params or []).fetchone()
        return None if row is None else row[0]

    def steady(self, hubs: int, clusters: int) -> bool:
        """Every hub has a heartbeat and its clusters, and no resync asked of a hub is still open (a first-seen
        hub is asked for its full state once more after its answer to the broadcast)."""
        heard = self.one("SELECT count(*) FROM manager_hub WHERE last_heartbeat IS NOT NULL")
        filled = self.one(
            "SELECT count(*) FROM (SELECT leaf_hub_name FROM manager_managedcluster WHERE deleted_at IS NULL "
            "GROUP BY 1 HAVING count(*) >= %s) AS full_hubs",
            [clusters],
        )
        open_targets = self.one("SELECT count(*) FROM manager_resynctarget WHERE completed_at IS NULL")
        return int(heard or 0) >= hubs and int(filled or 0) >= hubs and int(open_targets or 0) == 0

    def backends(self) -> list[int]:
        """The server processes serving this database, but this reader's own."""
        rows = self._conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", [self.name]
        ).fetchall()
        return [int(row[0]) for row in rows]

    def database_stats(self) -> dict[str, int]:
        self._conn.execute("SELECT pg_stat_clear_snapshot()")
        row = self._conn.execute(
            "SELECT xact_commit, xact_rollback, tup_inserted, tup_updated, tup_deleted, blks_hit, blks_read "
            "FROM pg_stat_database WHERE datname = %s",
            [self.name],
        ).fetchone()
        keys = ("xact_commit", "xact_rollback", "tup_inserted", "tup_updated", "tup_deleted", "blks_hit", "blks_read")
        return dict(zip(keys, (int(v) for v in row or (0,) * len(keys)), strict=True))

    def table_stats(self) -> dict[str, tuple[int, int, int, int]]:
        """Per table: rows inserted, updated, HOT-updated, deleted."""
        rows = self._conn.execute(
            "SELECT relname, n_tup_ins, n_tup_upd, n_tup_hot_upd, n_tup_del FROM pg_stat_user_tables"
        ).fetchall()
        return {str(r[0]): (int(r[1]), int(r[2]), int(r[3]), int(r[4])) for r in rows}

    def heartbeats(self) -> int:
        return int(
            self.one("SELECT coalesce(sum(bundles), 0) FROM manager_ingesttotal WHERE event_type LIKE '%%heartbeat%%'")
        )

    def close(self) -> None:
        self._conn.close()


def main(argv: list[str] | None = None) -> int:  # noqa: PLR0915 - one run, told in order
    args = parse_args(argv)
    stop_on_sigterm()
    tag = f"hb{uuid.uuid4().hex[:6]}"
    prefix, spec_topic, database = f"{tag}-gh-status.", f"{tag}-gh-spec", f"gh_bench_{tag}"
    log_dir = args.log_dir or Path("/tmp") / tag
    log_dir.mkdir(parents=True, exist_ok=True)
    kafka = default_kafka()
    base_url = base_database_url()
    db_url = with_database(base_url, database)
    metrics_port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": db_url,
        "REDIS_URL": redis_url_with_db(default_redis_url(), args.redis_db),
        "KAFKA_BOOTSTRAP_SERVERS": kafka,
        "GH_STATUS_TOPIC_PREFIX": prefix,
        "GH_SPEC_TOPIC": spec_topic,
        "LOG_LEVEL": "INFO",
        "DJANGO_DEBUG": "false",  # as in production: DEBUG keeps every statement in a long-lived consumer
        # One connection (one server process) per manager process for the whole window, so its CPU can be read
        # (the default, 60 s, replaces it every minute).
        "DATABASE_CONN_MAX_AGE": "3600",
        "DJANGO_SECRET_KEY": uuid.uuid4().hex * 2,
    }
    f: dict[str, Any] = {
        "hubs": args.hubs,
        "heartbeat": args.heartbeat,
        "per_hub": {"clusters": args.clusters, "policies": args.policies, "compliance": args.compliance},
        "digests": not args.no_digests,
        "window_seconds": args.window,
        "loadavg_before": list(os.getloadavg()),
    }
    processes: list[Process] = []
    db: Database | None = None
    try:
        progress(f"scratch database {database}")
        admin_execute(base_url, f'CREATE DATABASE "{database}"')
        subprocess.run(python_argv("manage.py", "migrate", "--noinput", "-v", "0"), cwd=REPO, env=env, check=True)

        progress(f"fleet: {args.hubs} hubs, heartbeat {args.heartbeat}, no changes (topics {prefix}*)")
        ready = log_dir / "fleet-ready"
        fleet_argv = [
            *("-m", "bench.fleet", "--hubs", str(args.hubs), "--processes", str(args.fleet_processes)),
            *("--clusters", str(args.clusters), "--policies", str(args.policies)),
            *("--compliance", str(args.compliance), "--heartbeat", args.heartbeat, "--changes-per-second", "0"),
            *("--prefix", prefix, "--spec-topic", spec_topic, "--hub-prefix", f"{tag}-"),
            *("--no-startup-resync", "--ready-file", str(ready)),
            *(["--no-digests"] if args.no_digests else []),
        ]
        fleet = Process("fleet", python_argv(*fleet_argv), env, log_dir)
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

        progress("manager: consume_status and one Celery worker")
        worker = Process("worker", celery_argv("-A", "globalhub", "worker", "-l", "info", "-c", "1"), env, log_dir)
        consumer = Process(
            "consumer",
            python_argv("manage.py", "consume_status"),
            {**env, "GH_CONSUMER_METRICS_ADDR": f"127.0.0.1:{metrics_port}"},
            log_dir,
        )
        processes.extend([worker, consumer])
        db = Database(db_url, database)
        reader = db
        started = time.monotonic()
        wait_for(
            lambda: reader.steady(args.hubs, args.clusters),
            args.timeout,
            "every hub heard and its startup resync complete",
        )
        f["steady_after_seconds"] = round(time.monotonic() - started, 1)
        progress(f"steady after {f['steady_after_seconds']} s; settling {args.settle:.0f} s")
        time.sleep(args.settle)

        progress(f"measuring {args.window:.0f} s")
        backends = db.backends()
        servers = postgres_pids()
        before: dict[str, Any] = {
            "consumer": ticks(consumer.popen.pid),
            "worker": sum(ticks(s.pid) for s in _group(worker.popen.pid)),
            "fleet": sum(ticks(s.pid) for s in _group(fleet.popen.pid)),
            "backends": {pid: ticks(pid) for pid in backends},
            "postgres": {pid: ticks(pid) for pid in servers},
            "db": db.database_stats(),
            "tables": db.table_stats(),
            "heartbeats": db.heartbeats(),
            "records": scrape_metrics(metrics_port).get("globalhub_consumer_records_read_total", 0.0),
            "batches": scrape_metrics(metrics_port).get("globalhub_ingest_batch_duration_seconds_count", 0.0),
            "batch_seconds": scrape_metrics(metrics_port).get("globalhub_ingest_batch_duration_seconds_sum", 0.0),
        }
        spy = PySpy(args.py_spy, consumer.popen.pid, log_dir / "consumer.spy") if args.py_spy else None
        t0 = time.monotonic()
        last_backends = dict(before["backends"])
        while time.monotonic() - t0 < args.window:
            time.sleep(min(2.0, max(0.0, args.window - (time.monotonic() - t0))))
            for pid in db.backends():  # a connection opened meanwhile counts from when it was first seen
                before["backends"].setdefault(pid, ticks(pid))
                last_backends[pid] = ticks(pid) or last_backends.get(pid, 0)
        elapsed = time.monotonic() - t0
        collapsed = spy.stop() if spy is not None else None
        if collapsed is not None:
            f["consumer_profile"] = [(name, share) for name, share in project_functions(collapsed, 25)]
        after_backends = {pid: ticks(pid) or last_backends.get(pid, 0) for pid in before["backends"]}
        after_postgres = {pid: ticks(pid) for pid in servers}
        samples = scrape_metrics(metrics_port)
        after: dict[str, Any] = {
            "consumer": ticks(consumer.popen.pid),
            "worker": sum(ticks(s.pid) for s in _group(worker.popen.pid)),
            "fleet": sum(ticks(s.pid) for s in _group(fleet.popen.pid)),
            "db": db.database_stats(),
            "tables": db.table_stats(),
            "heartbeats": db.heartbeats(),
        }

        def cpu(ticks_used: float) -> float:
            return round(100.0 * ticks_used / TICKS / elapsed, 2)

        def per_s(value: float) -> float:
            return round(value / elapsed, 1)

        f["elapsed_seconds"] = round(elapsed, 1)
        f["cpu_percent"] = {
            "consumer": cpu(after["consumer"] - before["consumer"]),
            "worker": cpu(after["worker"] - before["worker"]),
            "fleet": cpu(after["fleet"] - before["fleet"]),
            "postgres_backends_of_this_database": cpu(
                sum(after_backends[p] - before["backends"].get(p, 0) for p in after_backends if after_backends[p])
            ),
            "postgres_whole_server_shared": cpu(
                sum(after_postgres[p] - before["postgres"].get(p, 0) for p in after_postgres if after_postgres[p])
            ),
        }
        f["db_per_second"] = {k: per_s(after["db"][k] - before["db"][k]) for k in after["db"]}
        tables = {}
        for table, (ins, upd, hot, dele) in sorted(after["tables"].items()):
            old = before["tables"].get(table, (0, 0, 0, 0))
            moved = (ins - old[0], upd - old[1], hot - old[2], dele - old[3])
            if any(moved):
                tables[table] = {
                    "inserted": per_s(moved[0]),
                    "updated": per_s(moved[1]),
                    "hot_updated": per_s(moved[2]),
                    "deleted": per_s(moved[3]),
                }
        f["tables_per_second"] = tables
        f["heartbeats_per_second"] = per_s(after["heartbeats"] - before["heartbeats"])
        f["expected_heartbeats_per_second"] = round(args.hubs / _seconds(args.heartbeat), 1)
        f["records_per_second"] = per_s(samples.get("globalhub_consumer_records_read_total", 0.0) - before["records"])
        batches = samples.get("globalhub_ingest_batch_duration_seconds_count", 0.0) - before["batches"]
        batch_seconds = samples.get("globalhub_ingest_batch_duration_seconds_sum", 0.0) - before["batch_seconds"]
        f["batches_per_second"] = per_s(batches)
        f["mean_batch_ms"] = round(1000 * batch_seconds / batches, 1) if batches else None
        f["consumer_ingesting_percent"] = round(100 * batch_seconds / elapsed, 1)
        f["loadavg_after"] = list(os.getloadavg())
    finally:
        for process in reversed(processes):
            process.stop()
        if db is not None:
            db.close()
        if not args.keep:
            admin_execute(base_url, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            delete_topics(kafka, [f"{prefix}{tag}-{i:05d}" for i in range(args.hubs)] + [spec_topic])
    report = Report("fleet_heartbeats", figures=f)
    report.say(
        f"{args.hubs} hubs, heartbeat {args.heartbeat}, no changes; steady after {f['steady_after_seconds']} s, "
        f"measured {f['elapsed_seconds']} s (load {f['loadavg_before'][0]:.2f} -> {f['loadavg_after'][0]:.2f})"
    )
    c = f["cpu_percent"]
    report.say(
        f"CPU % of one core: consumer {c['consumer']}, its database's PostgreSQL backends "
        f"{c['postgres_backends_of_this_database']} (whole server, shared: {c['postgres_whole_server_shared']}), "
        f"worker {c['worker']}, fleet {c['fleet']}"
    )
    d = f["db_per_second"]
    report.say(
        f"heartbeats ingested {f['heartbeats_per_second']}/s (expected {f['expected_heartbeats_per_second']}/s), "
        f"records {f['records_per_second']}/s, batches {f['batches_per_second']}/s of {f['mean_batch_ms']} ms "
        f"(ingesting {f['consumer_ingesting_percent']} % of the time)"
    )
    report.say(
        f"database per second: {d['xact_commit']} commits, {d['tup_inserted']} rows inserted, {d['tup_updated']} "
        f"updated, {d['tup_deleted']} deleted"
    )
    for table, moved in f["tables_per_second"].items():
        report.say(f"  {table}: {moved}")
    for name, share in f.get("consumer_profile", [])[:25]:
        report.say(f"  {share:5.1f}%  {name}")
    report.emit()
    return 0


def _group(pgid: int) -> list[Any]:
    from bench.common import group_members

    return group_members(pgid)


def _seconds(text: str) -> float:
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    for unit in ("ms", "s", "m", "h"):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * units[unit]
    return float(text)


if __name__ == "__main__":
    sys.exit(main())
