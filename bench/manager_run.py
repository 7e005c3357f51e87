"""What the benchmarks of one big hub against the manager share (``manager_e2e.py``, ``manager_ingest_rate.py``).

* **Isolation**: a scratch database ``gh_bench_<tag>`` (created, ``manage.py migrate``d, dropped at the end), hub
  ``<tag>-ingest``, status topics ``<tag>-gh-status.``, spec topic ``<tag>-gh-spec``, consumer group
  ``<tag>-manager``, a Redis database of the run's choosing (``--redis-db``). ``<tag>`` is ``--tag`` (default
  ``bench``) plus six random hex digits.
* **The inventory**: the simulator's ``populate`` (clusters, root policies, compliance, hub info).
* **The manager's tables**, read with raw SQL on this process's Django connection (cheap checks first, counts only
  when they pass); their columns and conflict keys come from the models, not from lists kept here.
* **The records of a resync**, read back from Kafka as the consumer builds them.

State is read from the database and the agent's Redis; no process log is parsed (a log tail is only printed when a
process dies).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis

from agent_tasks.inventory import RedisInventory
from agent_tasks.simulate import populate
from bench.common import (
    BenchNames,
    Report,
    admin_execute,
    agent_env,
    base_database_url,
    cleanup_redis,
    default_kafka,
    default_redis_url,
    delete_topics,
    drop_database,
    log_dir_for,
    progress,
    redis_url_with_db,
    with_database,
)
from globalhub.manager.ingest.records import Record
from globalhub.protocol.events import RESYNC_TYPES, EventType
from globalhub.protocol.kafka import KafkaSettings, headers_of
from tests.helpers import REPO, Process, python_argv

BATCH = 500  # the consumer's default batch size (GH_CONSUMER_BATCH_SIZE)
TARGET_E2E_SECONDS = 5.0
TARGET_ROWS_PER_SECOND = 25_000
TARGET_COPY_RATIO = 3.0
# Delta sync of the big types out of the way: only the resyncs send them.
INTERVALS = "managedcluster=1h,policy.localspec=1h,policy.localcompliance=1h,managedhub.info=1h"
HYBRID = (EventType.MANAGED_CLUSTER, EventType.LOCAL_POLICY_SPEC)
COMPLETE = (EventType.HUB_INFO, EventType.LOCAL_COMPLIANCE)
FOUR = {t.value for t in RESYNC_TYPES}


def add_hub_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--clusters", type=int, default=10_000)
    p.add_argument("--policies", type=int, default=1_000)
    p.add_argument("--clusters-per-policy", type=int, default=50)
    p.add_argument("--redis-db", type=int, default=11, help="Redis database for this run (default 11)")
    p.add_argument("--tag", default="bench", help="names start with this (default bench): gh_bench_<hex>, ...")
    p.add_argument("--startup-timeout", type=float, default=600.0)
    p.add_argument("--log-dir", default=None, help="where the processes' logs go (default /tmp/<tag>)")
    p.add_argument("--keep", action="store_true", help="keep the database, the Redis keys and the topics")


def setup_django(db_url: str, names: BenchNames, redis_url: str) -> None:
    """This process's Django, on the scratch database (the environment is read when settings are imported).

    ``REDIS_URL`` is the run's database too, so nothing this process might queue reaches another run's workers.
    """
    os.environ["DJANGO_SETTINGS_MODULE"] = "globalhub.settings"
    os.environ["DATABASE_URL"] = db_url
    os.environ["REDIS_URL"] = redis_url
    os.environ["GH_STATUS_TOPIC_PREFIX"] = names.status_prefix
    os.environ["GH_SPEC_TOPIC"] = names.spec_topic
    os.environ.setdefault("LOG_LEVEL", "WARNING")  # the in-process ingest would log every resync it completes
    import django

    django.setup()


# --- the manager's tables ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Expected:
    clusters: int
    policies: int
    compliance: int

    @property
    def rows(self) -> int:
        return self.clusters + self.policies + self.compliance


@dataclass
class DbState:
    progress: dict[str, tuple[str, str]]  # short type -> (resync_id, outcome)
    versions: dict[str, tuple[int, int]]  # short type -> (generation, value)
    counts: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class TableShape:
    """A data table as its model defines it: the columns a row fills (all but the serial key) and the conflict key."""

    table: str
    columns: tuple[str, ...]
    key: tuple[str, ...]

    @property
    def column_list(self) -> str:
        return ", ".join(self.columns)


def table_shape(model: Any) -> TableShape:
    from django.db.models import UniqueConstraint

    meta = model._meta
    columns = tuple(f.column for f in meta.concrete_fields if not f.primary_key)
    unique = next(c for c in meta.constraints if isinstance(c, UniqueConstraint))
    return TableShape(meta.db_table, columns, tuple(meta.get_field(name).column for name in unique.fields))


class Tables:
    """Raw SQL on this process's Django connection: cheap checks first, counts only when they pass."""

    def __init__(self, hub: str) -> None:
        from globalhub.manager.models import (
            CompleteFrame,
            ConsumedPosition,
            DeadLetter,
            HubInfo,
            HubTypeStatus,
            IngestTotal,
            LocalCompliance,
            LocalPolicy,
            ManagedCluster,
            ResyncProgress,
            TypeVersion,
        )

        self.hub = hub
        self.cluster = ManagedCluster._meta.db_table
        self.policy = LocalPolicy._meta.db_table
        self.compliance = LocalCompliance._meta.db_table
        self.hub_info = HubInfo._meta.db_table
        self.progress = ResyncProgress._meta.db_table
        self.version = TypeVersion._meta.db_table
        self.frame = CompleteFrame._meta.db_table
        self.position = ConsumedPosition._meta.db_table
        self.dead = DeadLetter._meta.db_table
        self.type_status = HubTypeStatus._meta.db_table
        self.totals = IngestTotal._meta.db_table
        self.shapes = {
            "cluster": table_shape(ManagedCluster),
            "policy": table_shape(LocalPolicy),
            "compliance": table_shape(LocalCompliance),
            "hub_info": table_shape(HubInfo),
        }

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute(sql, list(params))
            return list(cursor.fetchall())

    def bookkeeping(self) -> DbState:
        progress = {
            EventType(t).short: (rid, outcome)
            for t, rid, outcome in self.rows(
                f"SELECT event_type, resync_id, outcome FROM {self.progress} WHERE hub_id = %s", [self.hub]
            )
        }
        versions = {
            EventType(t).short: (int(g), int(v))
            for t, g, v in self.rows(
                f"SELECT event_type, generation, value FROM {self.version} WHERE hub_id = %s", [self.hub]
            )
        }
        return DbState(progress, versions)

    def counts(self) -> dict[str, int]:
        (row,) = self.rows(
            f"""SELECT
                (SELECT count(*) FROM {self.cluster} WHERE leaf_hub_name = %s AND deleted_at IS NULL),
                (SELECT count(*) FROM {self.policy} WHERE leaf_hub_name = %s AND deleted_at IS NULL),
                (SELECT count(*) FROM {self.compliance} WHERE leaf_hub_name = %s),
                (SELECT count(*) FROM {self.hub_info} WHERE leaf_hub_name = %s AND deleted_at IS NULL),
                (SELECT count(*) FROM {self.dead})""",
            [self.hub] * 4,
        )
        return dict(zip(("clusters", "policies", "compliance", "hub_info", "dead_letters"), map(int, row), strict=True))

    def counts_ok(self, counts: dict[str, int], expected: Expected) -> bool:
        return (
            counts["clusters"] == expected.clusters
            and counts["policies"] == expected.policies
            and counts["compliance"] == expected.compliance
            and counts["hub_info"] >= 1
        )

    def positions(self) -> dict[tuple[str, int], int]:
        return {(t, p): int(o) for t, p, o in self.rows(f"SELECT topic, partition, next_offset FROM {self.position}")}

    # --- resetting between timed passes ---

    def forget_bookkeeping(self, topic: str) -> None:
        """Versions, resync progress, staged frames, positions, dead letters: the same records apply again."""
        from django.db import connection

        with connection.cursor() as cursor:
            for table, column in ((self.version, "hub_id"), (self.progress, "hub_id"), (self.frame, "hub_id")):
                cursor.execute(f"DELETE FROM {table} WHERE {column} = %s", [self.hub])
            cursor.execute(f"DELETE FROM {self.position} WHERE topic = %s", [topic])
            cursor.execute(f"DELETE FROM {self.dead} WHERE topic = %s", [topic])

    def empty_data(self) -> None:
        """The scratch database holds this hub only: TRUNCATE gives truly empty tables and indexes."""
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute(f"TRUNCATE {self.cluster}, {self.policy}, {self.compliance}, {self.hub_info}")

    def age_rows(self) -> None:
        """The rows look written by an older bundle than the records (their stamps back to the epoch), so the next
        pass overwrites them as a newer resync would; a replay of the same records would be refused row by row."""
        from django.db import connection

        from globalhub.manager.models import STAMP_EPOCH

        with connection.cursor() as cursor:
            for table in (self.cluster, self.policy):
                cursor.execute(
                    f"UPDATE {table} SET stamp_run = %s, stamp_generation = 0, stamp_value = 0", [STAMP_EPOCH]
                )

    def vacuum(self) -> None:
        """Same starting point for every timed pass: no dead tuples from the last one, fresh statistics."""
        from django.db import connection

        with connection.cursor() as cursor:
            for table in (self.cluster, self.policy, self.compliance, self.hub_info, self.progress, self.version):
                cursor.execute(f"VACUUM (ANALYZE) {table}")


# --- the records of a resync ------------------------------------------------------------------------------------


def read_records(kafka: str, topic: str, start: dict[int, int], end: dict[int, int]) -> tuple[list[Record], int]:
    """The messages between the offsets, as the consumer builds its records; the four types only (and how many
    others, e.g. heartbeats, were left out)."""
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    config = KafkaSettings(bootstrap_servers=kafka).client_config()
    config.update(
        {
            "group.id": f"bench-read-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "fetch.message.max.bytes": 10 * 1024 * 1024,
            "max.partition.fetch.bytes": 10 * 1024 * 1024,
        }
    )
    consumer = Consumer(config)
    wanted = {p: (start.get(p, 0), high) for p, high in end.items() if high > start.get(p, 0)}
    consumer.assign([TopicPartition(topic, p, lo) for p, (lo, _) in wanted.items()])
    records: list[Record] = []
    others = 0
    remaining = set(wanted)
    deadline = time.monotonic() + 120
    try:
        while remaining and time.monotonic() < deadline:
            message = consumer.poll(1.0)
            if message is None:
                continue
            error = message.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    raise RuntimeError(f"kafka error reading {topic}: {error}")
                continue
            partition, offset = message.partition() or 0, message.offset() or 0
            if partition not in remaining or offset >= wanted[partition][1]:
                continue
            headers = headers_of(message)
            ce_type = dict(headers).get("ce_type") or b""
            if ce_type.decode() in FOUR:
                _, ms = message.timestamp()
                records.append(
                    Record(
                        topic=message.topic() or "",
                        partition=partition,
                        offset=offset,
                        key=message.key(),
                        value=message.value(),
                        headers=headers,
                        timestamp=datetime.fromtimestamp(ms / 1000, UTC) if ms and ms > 0 else None,
                    )
                )
            else:
                others += 1
            if offset + 1 >= wanted[partition][1]:
                remaining.discard(partition)
    finally:
        consumer.close()
    if remaining:
        raise TimeoutError(f"could not read partitions {sorted(remaining)} of {topic} to their end")
    records.sort(key=lambda r: (r.partition, r.offset))
    return records, others


def record_figures(records: list[Record], others: int) -> dict[str, Any]:
    by_type = {t: sum(1 for r in records if dict(r.headers).get("ce_type") == t.encode()) for t in sorted(FOUR)}
    return {
        "records": len(records),
        "records_bytes": sum(len(r.value or b"") for r in records),
        "records_left_out": others,
        "records_by_type": {EventType(k).short: v for k, v in by_type.items()},
    }


# --- processes --------------------------------------------------------------------------------------------------


class Processes:
    """The real processes of this run (the manager's consumer, the agent's), each its own process group."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.started: list[Process] = []

    def add(self, processes: Sequence[Process]) -> None:
        self.started.extend(processes)

    def check(self) -> None:
        """Raise when a process died, with the end of its log for the person reading (nothing is parsed)."""
        dead = [p for p in self.started if not p.is_running()]
        if dead:
            tails = "\n".join(f"--- {p.name} exited ({p.popen.returncode}):\n{p.log_text()[-3000:]}" for p in dead)
            raise RuntimeError(f"process(es) exited early:\n{tails}")

    def stop(self) -> dict[str, int]:
        """SIGTERM to each process group (SIGKILL after 20 s)."""
        codes = {}
        for process in self.started:
            try:
                codes[process.name] = process.stop()
            except Exception as error:  # keep stopping the others
                codes[process.name] = -999
                progress(f"could not stop {process.name}: {error}")
        self.started = []
        return codes


# --- one run ----------------------------------------------------------------------------------------------------

MANAGER_CELERY_KEYS = ("celery", "_kombu.binding.celery", "_kombu.binding_permanent.celery", "_kombu.binding_deadlines")


def cleanup_leftovers(client: redis.Redis, hub: str) -> int:
    """What ``cleanup_redis`` leaves in this run's database: kombu's permanent binding of the hub's queue and, when
    no hub is left there, the manager's Celery queue (``consume_status`` got this database as ``REDIS_URL``)."""
    deleted = int(client.delete(f"_kombu.binding_permanent.gh-agent.{hub}"))
    if not any(True for _ in client.scan_iter(match="gh:*", count=1000)):
        deleted += int(client.delete(*MANAGER_CELERY_KEYS))
    return deleted


def tree_state() -> str:
    """The commit measured, and whether the product code differed from it (other work may be in progress)."""

    def git(*argv: str) -> str:
        return subprocess.run(["git", *argv], cwd=REPO, capture_output=True, text=True, check=False).stdout.strip()

    changed = git("status", "--porcelain", "--", "globalhub", "agent_tasks").splitlines()
    return f"{git('rev-parse', '--short', 'HEAD')}" + (f" + {len(changed)} changed product files" if changed else "")


class ScratchHub:
    """One run's names, scratch database, Redis database, environment and processes; :meth:`close` removes them."""

    def __init__(self, args: argparse.Namespace) -> None:
        tag = f"{args.tag}{uuid.uuid4().hex[:6]}"
        self.args = args
        self.names = BenchNames(tag, f"{tag}-ingest")
        self.db_name = f"gh_bench_{tag.removeprefix('bench')}"
        self.base_url = base_database_url()
        self.db_url = with_database(self.base_url, self.db_name)
        self.redis_url = redis_url_with_db(default_redis_url(), args.redis_db)
        self.kafka = default_kafka()
        self.client = redis.Redis.from_url(self.redis_url)
        self.log_dir = log_dir_for(self.names, args.log_dir)
        self.env = agent_env(
            self.names,
            self.redis_url,
            self.kafka,
            {
                "DATABASE_URL": self.db_url,
                "GH_AGENT_INTERVALS": INTERVALS,
                "GH_CONSUMER_GROUP": f"{tag}-manager",
                "GH_TOPIC_REFRESH_MS": "500",
                "DJANGO_SETTINGS_MODULE": "globalhub.settings",
            },
        )
        self.processes = Processes(self.env, self.log_dir)
        self.db_created = False
        self.tables: Tables | None = None
        self.expected = Expected(0, 0, 0)

    def create(self, f: dict[str, Any]) -> Tables:
        """Create and migrate the database, set up Django on it, populate the hub's inventory; figures into ``f``."""
        args = self.args
        progress(f"hub {self.names.hub}, database {self.db_name}, Redis {self.redis_url}, logs in {self.log_dir}")
        admin_execute(self.base_url, f'CREATE DATABASE "{self.db_name}"')
        self.db_created = True
        started = time.monotonic()
        subprocess.run(
            python_argv("manage.py", "migrate", "--noinput", "-v", "0"),
            cwd=REPO,
            env=self.env,
            check=True,
            timeout=600,
        )
        f["migrate_seconds"] = r3(time.monotonic() - started)
        f["tree"] = tree_state()
        setup_django(self.db_url, self.names, self.redis_url)
        self.tables = Tables(self.names.hub)
        progress(f"populating {args.clusters} clusters, {args.policies} policies x {args.clusters_per_policy}")
        filled = populate(
            RedisInventory(self.client, self.names.hub),
            self.names.hub,
            clusters=args.clusters,
            policies=args.policies,
            clusters_per_policy=args.clusters_per_policy,
        )
        self.expected = Expected(filled.clusters, filled.policies, filled.compliance_rows)
        f.update(
            {
                "hub": self.names.hub,
                "database": self.db_name,
                "clusters": self.expected.clusters,
                "policies": self.expected.policies,
                "compliance_rows": self.expected.compliance,
                "rows": self.expected.rows,
                "populate_seconds": r3(filled.seconds),
                "cpus": os.cpu_count(),
                "loadavg_start": [round(x, 2) for x in os.getloadavg()],
            }
        )
        return self.tables

    def close(self) -> None:
        """Stop the processes; unless ``--keep``, drop the database, delete the hub's Redis keys and the topics."""
        codes = self.processes.stop()
        if codes:
            progress(f"stopped: {codes}")
        try:
            from django.db import connections

            connections.close_all()
        except Exception:  # Django never set up
            pass
        if not self.args.keep:
            if self.db_created:
                try:
                    drop_database(self.base_url, self.db_name)
                    progress(f"dropped database {self.db_name}")
                except Exception as error:
                    progress(f"could not drop database {self.db_name}: {error}")
            deleted = cleanup_redis(self.client, self.names.hub) + cleanup_leftovers(self.client, self.names.hub)
            problems = delete_topics(self.kafka, [self.names.status_topic, self.names.spec_topic])
            progress(f"deleted {deleted} Redis keys; topics: {'; '.join(problems) or 'deleted'}")
        else:
            progress(
                f"kept database {self.db_name}, Redis db {self.args.redis_db} keys of {self.names.hub}, "
                f"topics of {self.names.tag}"
            )
        self.client.close()


# --- figures ----------------------------------------------------------------------------------------------------


def spread(values: list[float]) -> float | None:
    """(max - min) / min: how far apart the repeated timings are."""
    return round((max(values) - min(values)) / min(values), 3) if len(values) > 1 and min(values) > 0 else None


def r3(value: float) -> float:
    return round(value, 3)


def verdict(ok: bool) -> str:
    return "meets" if ok else "MISSES"


def render_setup(report: Report, f: dict[str, Any], what: str) -> None:
    say = report.say
    say(
        f"{what}, hub {f['hub']}: {f['clusters']} clusters + {f['policies']} policies + "
        f"{f['compliance_rows']} compliance rows = {f['rows']} rows (+ hub info); {f['cpus']} CPUs, "
        f"load {f['loadavg_start']} at start, {f['loadavg_end']} at end"
    )
    say(f"tree: {f['tree']}")
    startup = f.get("startup_ingested_seconds", f.get("startup_sent_seconds"))
    where = "ingested" if "startup_ingested_seconds" in f else "sent"
    say(
        f"setup: migrate {f['migrate_seconds']:.1f}s, populate {f['populate_seconds']:.1f}s, startup resyncs {where} "
        f"{startup:.1f}s after the processes started"
    )
