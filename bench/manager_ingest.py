"""Manager ingest: a full resync of one big hub, request -> manager DB consistent, and the ingest rate.

    .venv/bin/python bench/manager_ingest.py                     # 10,000 clusters, 1,000 policies x 50 clusters
    .venv/bin/python bench/manager_ingest.py --clusters 2000 --policies 200 --repeat 3 --profile

One run, on the local services (``bin/stack env``), with nothing shared with other runs or tests:

1. a scratch database ``gh_bench_<tag>`` (``manage.py migrate``), status topics ``bench<tag>-gh-status.``, spec topic
   ``bench<tag>-gh-spec``, hub ``bench<tag>-ingest`` in Redis database ``--redis-db`` (default 11);
2. the simulator's ``populate`` fills the hub's inventory (clusters, root policies, compliance, hub info);
3. **end to end**: the manager's ``consume_status`` and the agent's worker, beat and spec listener run as real
   processes (``GH_AGENT_INTERVALS`` keeps delta sync of the big types out of the way). Once the agent's startup
   resyncs are ingested (counts right, resync queue empty, consumer caught up) and the listener is known to be
   assigned (a request for another hub shows up as ``ignored``), a manager ``Resync`` of the four types goes to the
   spec topic and the clock runs until the DB is consistent *with that resync*: ``ResyncProgress`` completed with a
   new resync id for ``managedcluster`` and ``policy.localspec``, ``TypeVersion`` of hub info and compliance past
   their values before the request, and the counts right. The parts come from the processes' logs (listener queued,
   worker queue wait and send per type, consumer batches). ``--resyncs N`` repeats the request;
4. **ingest rate**: the first measured resync's messages, read back from Kafka as ``Record``s, go through
   ``ingest_batch`` in batches of 500 (as the consumer does), in this process, against the scratch database: into
   empty tables (the hub's rows and bookkeeping removed), then again into full tables (upserts of the same data);
5. **COPY baseline**: the same rows (read back from the tables in COPY text format, so pre-built in memory) are
   COPYed into the emptied tables (timed: COPY + commit), and, into full tables, staged (COPY into a temp table) and
   upserted with the same conflict rules as the ingest; ratios ingest / baseline;
6. **naive baseline**: Django ``update_or_create`` per row in autocommit (a transaction per row) for a sample
   (``--naive-clusters`` clusters, ``--naive-compliance`` compliance rows), into empty then full tables,
   extrapolated to all rows; the same sample with one plain ``INSERT ... ON CONFLICT`` + commit per row;
7. a short report and one JSON line (the last line of stdout). No assertion on timings; the verdicts against the
   targets use the median of the repeats.

Timings 4 and 5 run ``--repeat`` times (default 2) so the run's noise shows. ``--profile`` adds one untimed,
cProfiled ingest pass into empty tables and prints where its time goes. Processes are stopped (SIGTERM to their
process groups), the database dropped, the hub's Redis keys and the run's topics deleted, unless ``--keep``.
Targets (DESIGN "Performance targets"): request -> DB consistent <= 5 s; ingest >= 25,000 rows/s; <= 3x COPY.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import cProfile
import io
import itertools
import os
import pstats
import re
import subprocess
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from statistics import median
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import redis
from confluent_kafka import Consumer, KafkaError, TopicPartition
from psycopg import sql
from psycopg.types.json import Jsonb

from agent_tasks.inventory import RedisInventory
from agent_tasks.resync_queue import ResyncQueue
from agent_tasks.simulate import populate
from bench.common import (
    BenchNames,
    LogFollower,
    Report,
    agent_env,
    cleanup_redis,
    default_kafka,
    default_redis_url,
    delete_topics,
    kafka_trouble,
    log_dir_for,
    progress,
    redis_url_with_db,
    startup_done,
    stop_on_sigterm,
)
from globalhub.manager.ingest.records import Record
from globalhub.protocol.events import RESYNC_TYPES, EventType
from globalhub.protocol.kafka import SPEC_TOPIC_CONFIG, ConfirmedProducer, KafkaSettings, ensure_topics, headers_of
from globalhub.protocol.requests import resync_request
from tests.helpers import REPO, Process, python_argv, start_agent, start_consumer

BATCH = 500  # the consumer's default batch size (GH_CONSUMER_BATCH_SIZE)
TARGET_E2E_SECONDS = 5.0
TARGET_ROWS_PER_SECOND = 25_000
TARGET_COPY_RATIO = 3.0
INTERVALS = "managedcluster=1h,policy.localspec=1h,policy.localcompliance=1h,managedhub.info=1h"
HYBRID = (EventType.MANAGED_CLUSTER, EventType.LOCAL_POLICY_SPEC)
COMPLETE = (EventType.HUB_INFO, EventType.LOCAL_COMPLIANCE)
FOUR = {t.value for t in RESYNC_TYPES}

# Tables and the columns the ingest writes (bulk.upsert_objects, complete.apply_compliance / apply_hub_info).
CLUSTER_COLUMNS = (
    "leaf_hub_name, cluster_id, cluster_name, payload, payload_digest, error, created_at, updated_at, deleted_at, "
    "resync_mark"
)
POLICY_COLUMNS = (
    "leaf_hub_name, policy_id, policy_name, payload, payload_digest, error, created_at, updated_at, deleted_at, "
    "resync_mark"
)
COMPLIANCE_COLUMNS = "leaf_hub_name, policy_id, cluster_name, compliance, error, updated_at"
HUB_INFO_COLUMNS = "leaf_hub_name, cluster_id, payload, console_url, grafana_url, created_at, updated_at, deleted_at"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clusters", type=int, default=10_000)
    p.add_argument("--policies", type=int, default=1_000)
    p.add_argument("--clusters-per-policy", type=int, default=50)
    p.add_argument("--redis-db", type=int, default=11, help="Redis database for this run (default 11)")
    p.add_argument("--resyncs", type=int, default=1, help="measured resync requests, one after the other")
    p.add_argument("--repeat", type=int, default=2, help="runs of each ingest / COPY timing (default 2)")
    p.add_argument("--naive-clusters", type=int, default=2_000)
    p.add_argument("--naive-compliance", type=int, default=5_000)
    p.add_argument("--profile", action="store_true", help="one extra cProfiled ingest pass into empty tables")
    p.add_argument("--startup-timeout", type=float, default=600.0)
    p.add_argument("--resync-timeout", type=float, default=300.0)
    p.add_argument("--poll", type=float, default=0.02, help="DB polling interval while waiting (default 0.02 s)")
    p.add_argument("--log-dir", default=None, help="where the processes' logs go (default /tmp/<tag>)")
    p.add_argument("--keep", action="store_true", help="keep the database, the Redis keys and the topics")
    return p.parse_args(argv)


# --- scratch database -------------------------------------------------------------------------------------------


def base_database_url() -> str:
    return os.environ.get("DATABASE_URL", "postgres://globalhub:globalhub@127.0.0.1:55432/globalhub")


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


def admin_execute(base_url: str, sql: str) -> None:
    with psycopg.connect(with_database(base_url, "postgres"), autocommit=True) as conn:
        conn.execute(sql)


def setup_django(db_url: str, names: BenchNames) -> None:
    """This process's Django, on the scratch database (the environment is read when settings are imported)."""
    os.environ["DJANGO_SETTINGS_MODULE"] = "globalhub.settings"
    os.environ["DATABASE_URL"] = db_url
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


class Tables:
    """Raw SQL on this process's Django connection: cheap checks first, counts only when they pass."""

    def __init__(self, hub: str) -> None:
        from globalhub.manager.models import (
            CompleteFrame,
            ConsumedPosition,
            DeadLetter,
            HubInfo,
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

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute(sql, list(params))
            return list(cursor.fetchall())

    def bookkeeping(self) -> DbState:
        progress = {
            EventType(t).short: (rid, outcome)
            for t, rid, outcome in self._rows(
                f"SELECT event_type, resync_id, outcome FROM {self.progress} WHERE hub_id = %s", [self.hub]
            )
        }
        versions = {
            EventType(t).short: (int(g), int(v))
            for t, g, v in self._rows(
                f"SELECT event_type, generation, value FROM {self.version} WHERE hub_id = %s", [self.hub]
            )
        }
        return DbState(progress, versions)

    def counts(self) -> dict[str, int]:
        (row,) = self._rows(
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
        return {(t, p): int(o) for t, p, o in self._rows(f"SELECT topic, partition, next_offset FROM {self.position}")}

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


# --- the end-to-end resync --------------------------------------------------------------------------------------

TS = re.compile(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})")
LISTENER_QUEUED = re.compile(r"resync requested \(subject (\S+)\) for (.*): (\d+) newly queued")
DRAIN_STARTS = re.compile(r"resync of (\S+) starts after ([\d.]+)s in the queue")
RESYNC_SENT = re.compile(
    r"type=(\S+) resync sent: (\d+) objects in (\d+) messages, (\d+) bytes, version (\S+), (\d+) ms"
)
INGESTED = re.compile(r"ingested (\d+) records in (\d+) ms: applied=(\d+) superseded=(\d+) dead_letters=(\d+) (.*)$")


def stamp(line: str) -> float | None:
    """A log line's time (logging's local-time ``asctime``) as epoch seconds."""
    match = TS.search(line)
    if not match:
        return None
    return datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()


def watermarks(kafka: str, topic: str) -> dict[int, int]:
    """High watermark of every partition of ``topic``."""
    consumer = Consumer(
        {**KafkaSettings(bootstrap_servers=kafka).client_config(), "group.id": f"bench-wm-{uuid.uuid4().hex}"}
    )
    try:
        meta = consumer.list_topics(topic, timeout=10)
        partitions = sorted(meta.topics[topic].partitions) if topic in meta.topics else []
        return {p: int(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]) for p in partitions}
    finally:
        consumer.close()


def wait(
    condition: Callable[[], bool], *, timeout: float, what: str, check: Callable[[], None], interval: float
) -> float:
    started = time.monotonic()
    while not condition():
        check()
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)
    return time.monotonic() - started


class Run:
    """The manager's consumer and the agent's processes of this run."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.processes: list[Process] = []

    def start(self) -> None:
        self.processes.append(start_consumer(self.env, self.log_dir))
        self.processes.extend(start_agent(self.env, self.log_dir, listener=True))

    def by_name(self, name: str) -> Process:
        return next(p for p in self.processes if p.name == name)

    def check(self) -> None:
        dead = [p for p in self.processes if not p.is_running()]
        if dead:
            tails = "\n".join(f"--- {p.name} exited ({p.popen.returncode}):\n{p.log_text()[-3000:]}" for p in dead)
            raise RuntimeError(f"process(es) exited early:\n{tails}")

    def stop(self) -> dict[str, int]:
        """SIGTERM to each process group (SIGKILL after 20 s)."""
        codes = {}
        for process in self.processes:
            try:
                codes[process.name] = process.stop()
            except Exception as error:  # keep stopping the others
                codes[process.name] = -999
                progress(f"could not stop {process.name}: {error}")
        self.processes = []
        return codes


def listener_ignored(client: redis.Redis, hub: str) -> int:
    return int(client.hget(f"gh:{hub}:agent:listener", "ignored") or 0)


def make_listener_ready(
    producer: ConfirmedProducer, client: redis.Redis, names: BenchNames, run: Run, timeout: float
) -> float:
    """The listener's new group starts at the newest message: send requests for another hub until one is seen."""
    started = time.monotonic()
    other = f"{names.tag}-nobody"
    while listener_ignored(client, names.hub) == 0:
        run.check()
        if time.monotonic() - started > timeout:
            raise TimeoutError("the spec listener never saw a request (not assigned?)")
        producer.send(names.spec_topic, [resync_request(other, RESYNC_TYPES)])
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline and listener_ignored(client, names.hub) == 0:
            time.sleep(0.05)
    return time.monotonic() - started


@dataclass
class Resync:
    """One measured request -> DB consistent."""

    requested_at: float  # epoch seconds, just before the send
    publish_seconds: float
    consistent_seconds: float
    detected_by_checks: int
    start_offsets: dict[int, int]
    end_offsets: dict[int, int]
    before: DbState
    after: DbState
    counts: dict[str, int]
    parts: dict[str, Any] = field(default_factory=dict)


def resync_done(state: DbState, before: DbState) -> bool:
    for t in HYBRID:
        now, then = state.progress.get(t.short), before.progress.get(t.short)
        if now is None or now[1] != "completed" or (then is not None and now[0] == then[0]):
            return False
    for t in COMPLETE:
        now_v, then_v = state.versions.get(t.short), before.versions.get(t.short)
        if now_v is None or (then_v is not None and now_v <= then_v):
            return False
    return True


def measure_resync(
    tables: Tables,
    expected: Expected,
    producer: ConfirmedProducer,
    names: BenchNames,
    kafka: str,
    run: Run,
    args: argparse.Namespace,
) -> Resync:
    before = tables.bookkeeping()
    start_offsets = watermarks(kafka, names.status_topic)
    logs = {p.name: LogFollower(p.log_path) for p in run.processes}
    for follower in logs.values():
        follower.skip_to_end()
    request = resync_request(names.hub, RESYNC_TYPES)
    requested_at = time.time()
    t0 = time.monotonic()
    producer.send(names.spec_topic, [request])
    publish = time.monotonic() - t0
    checks = 0
    state = before
    while True:
        checks += 1
        state = tables.bookkeeping()
        if resync_done(state, before):
            counts = tables.counts()
            if tables.counts_ok(counts, expected):
                break
        if time.monotonic() - t0 > args.resync_timeout:
            raise TimeoutError(f"DB not consistent {args.resync_timeout:.0f}s after the request (last {state})")
        run.check()
        time.sleep(args.poll)
    consistent = time.monotonic() - t0
    time.sleep(1.5)  # let the processes' logs reach their files
    end_offsets = watermarks(kafka, names.status_topic)
    result = Resync(requested_at, publish, consistent, checks, start_offsets, end_offsets, before, state, counts)
    result.parts = timeline(requested_at, consistent, {name: f.new_lines() for name, f in logs.items()})
    return result


def timeline(t0: float, consistent: float, lines: dict[str, list[str]]) -> dict[str, Any]:
    """The resync's parts, from the processes' log lines after the request (times relative to it)."""
    end = t0 + consistent
    parts: dict[str, Any] = {"types": {}, "batches": []}
    for line in lines.get("agent-listener", []):
        match = LISTENER_QUEUED.search(line)
        ts = stamp(line)
        if match and ts is not None and "listener_queued_at" not in parts:
            parts["listener_queued_at"] = round(ts - t0, 3)
    for line in lines.get("agent-worker", []):
        ts = stamp(line)
        if ts is None:
            continue
        starts = DRAIN_STARTS.search(line)
        if starts:
            parts["types"].setdefault(starts.group(1), {}).update(
                {"drain_started_at": round(ts - t0, 3), "logged_queue_wait": float(starts.group(2))}
            )
        sent_line = RESYNC_SENT.search(line)
        if sent_line:
            short, objects, messages, size, version, ms = sent_line.groups()
            parts["types"].setdefault(short, {}).update(
                {
                    "sent_at": round(ts - t0, 3),
                    "send_ms": int(ms),
                    "objects": int(objects),
                    "messages": int(messages),
                    "bytes": int(size),
                    "version": version,
                }
            )
    for line in lines.get("consumer", []):
        ts = stamp(line)
        match = INGESTED.search(line)
        if ts is None or not match or ts > end + 0.05:
            continue
        records, ms, applied, _superseded, _dead, by_type = match.groups()
        parts["batches"].append(
            {
                "at": round(ts - t0, 3),
                "records": int(records),
                "ms": int(ms),
                "applied": int(applied),
                "by_type": by_type,
            }
        )
    types = parts["types"]
    sent = [t for t in types.values() if "sent_at" in t and "drain_started_at" in t]
    if sent:
        ordered = sorted(sent, key=lambda t: t["drain_started_at"])
        parts["agent_first_start_at"] = ordered[0]["drain_started_at"]
        parts["agent_last_sent_at"] = max(t["sent_at"] for t in sent)
        parts["agent_send_seconds"] = round(sum(t["send_ms"] for t in sent) / 1000, 3)
        gaps = [b["drain_started_at"] - a["sent_at"] for a, b in itertools.pairwise(ordered)]
        parts["agent_gaps_between_types_seconds"] = round(sum(gaps), 3)
        parts["agent_tail_to_consistent_seconds"] = round(consistent - parts["agent_last_sent_at"], 3)
    batches = parts["batches"]
    parts["consumer_ingest_seconds"] = round(sum(b["ms"] for b in batches) / 1000, 3)
    parts["consumer_batches"] = len(batches)
    parts["consumer_records"] = sum(b["records"] for b in batches)
    if batches:
        parts["consumer_first_batch_end_at"] = batches[0]["at"]
        parts["consumer_last_batch_end_at"] = batches[-1]["at"]
        parts["consumer_largest_batch_ms"] = max(b["ms"] for b in batches)
    parts["kafka_trouble_lines"] = sum(kafka_trouble(v) for v in lines.values())
    return parts


# --- reading the resync back ------------------------------------------------------------------------------------


def read_records(kafka: str, topic: str, start: dict[int, int], end: dict[int, int]) -> tuple[list[Record], int]:
    """The messages between the offsets, as the consumer builds its records; the four types only (and how many
    others, e.g. heartbeats, were left out)."""
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
    remaining = {p for p in wanted}
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


# --- in-process timings -----------------------------------------------------------------------------------------


@dataclass
class IngestPass:
    seconds: float
    batches: int
    applied: int
    dead_letters: int
    superseded: int
    counts: dict[str, int]


def prepare_pass(tables: Tables, topic: str, *, empty: bool) -> None:
    """Bookkeeping forgotten (so the same records apply again), data emptied or kept, VACUUM (ANALYZE)."""
    from django.db import connection

    tables.forget_bookkeeping(topic)
    if empty:
        tables.empty_data()
    else:
        tables.age_rows()
    tables.vacuum()
    connection.ensure_connection()


def run_batches(records: list[Record], prefix: str) -> tuple[float, int, int, int, int]:
    """``ingest_batch`` over the records in batches of 500: seconds, batches, applied, dead letters, superseded."""
    from globalhub.manager.ingest.pipeline import ingest_batch

    applied = dead = superseded = 0
    batches = [records[i : i + BATCH] for i in range(0, len(records), BATCH)]
    started = time.perf_counter()
    for batch in batches:
        stats = ingest_batch(batch, topic_prefix=prefix)
        applied += stats.applied
        dead += stats.dead_letters
        superseded += stats.superseded
    return time.perf_counter() - started, len(batches), applied, dead, superseded


def ingest_pass(records: list[Record], prefix: str, tables: Tables, topic: str, *, empty: bool) -> IngestPass:
    prepare_pass(tables, topic, empty=empty)
    seconds, batches, applied, dead, superseded = run_batches(records, prefix)
    return IngestPass(seconds, batches, applied, dead, superseded, tables.counts())


def statement_label(sql_text: str) -> str:
    """A statement's kind: its first words, table names kept, literals and lists dropped."""
    words = " ".join(sql_text.split())
    return re.sub(r"%s|\(.*", "", words)[:90].strip()


def profile_pass(records: list[Record], prefix: str, tables: Tables, topic: str, count: int = 22) -> dict[str, Any]:
    """An untimed ingest pass into empty tables under cProfile, with every SQL statement (Django's cursor) timed by
    kind: where the ingest's time goes (COPY goes round Django's cursor: see psycopg's ``copy``/``finish``)."""
    from django.db import connection

    spent: dict[str, list[float]] = {}

    def timer(execute: Callable[..., Any], sql_text: str, params: Any, many: bool, context: Any) -> Any:
        started = time.perf_counter()
        try:
            return execute(sql_text, params, many, context)
        finally:
            entry = spent.setdefault(statement_label(sql_text), [0, 0.0])
            entry[0] += 1
            entry[1] += time.perf_counter() - started

    prepare_pass(tables, topic, empty=True)
    profiler = cProfile.Profile()
    with connection.execute_wrapper(timer):
        profiler.enable()
        total = run_batches(records, prefix)[0]
        profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("cumulative").print_stats(r"globalhub/|psycopg/_copy.py.*finish|connection.py.*wait|json", count)
    lines = [line for line in out.getvalue().splitlines() if line.strip()]
    start = next((i for i, line in enumerate(lines) if line.lstrip().startswith("ncalls")), 0)
    statements = sorted(spent.items(), key=lambda kv: -kv[1][1])
    return {
        "seconds_with_profiler": r3(total),
        "functions": lines[start : start + count + 1],
        "statements": [
            {"statement": label, "calls": int(calls), "seconds": r3(seconds)}
            for label, (calls, seconds) in statements[:14]
        ],
    }


@dataclass
class TableDump:
    """A table's rows of the hub in COPY text format, and the columns they fill."""

    table: str
    columns: str
    data: bytes
    rows: int


def dump_rows(db_url: str, tables: Tables) -> list[TableDump]:
    """What the ingest wrote, read back in COPY text format (so the baseline's data is pre-built in memory)."""
    specs = [
        (tables.cluster, CLUSTER_COLUMNS),
        (tables.policy, POLICY_COLUMNS),
        (tables.compliance, COMPLIANCE_COLUMNS),
        (tables.hub_info, HUB_INFO_COLUMNS),
    ]
    dumps = []
    with psycopg.connect(db_url) as conn, conn.cursor() as cursor:
        for table, columns in specs:
            chunks = []
            query = sql.SQL("COPY (SELECT {} FROM {} WHERE leaf_hub_name = {}) TO STDOUT").format(
                sql.SQL(columns),
                sql.Identifier(table),
                sql.Literal(tables.hub),
            )
            with cursor.copy(query) as copy:
                for chunk in copy:
                    chunks.append(bytes(chunk))
            data = b"".join(chunks)
            dumps.append(TableDump(table, columns, data, data.count(b"\n")))
    return dumps


COPY_CHUNK = 1 << 20


def copy_into_empty(db_url: str, tables: Tables, dumps: list[TableDump]) -> tuple[float, dict[str, float]]:
    """TRUNCATE (untimed), then COPY every table's rows and commit (timed); also the seconds per table."""
    tables.empty_data()
    tables.vacuum()
    per_table = {}
    with psycopg.connect(db_url) as conn:
        with conn.cursor() as cursor:
            started = time.perf_counter()
            for dump in dumps:
                table_started = time.perf_counter()
                with cursor.copy(f"COPY {dump.table} ({dump.columns}) FROM STDIN") as copy:
                    for i in range(0, len(dump.data), COPY_CHUNK):
                        copy.write(dump.data[i : i + COPY_CHUNK])
                per_table[dump.table] = r3(time.perf_counter() - table_started)
        conn.commit()
        return time.perf_counter() - started, per_table


UPSERTS = {
    "cluster": (
        "(leaf_hub_name, cluster_id)",
        "cluster_name = EXCLUDED.cluster_name, payload = EXCLUDED.payload, error = EXCLUDED.error, "
        "updated_at = EXCLUDED.updated_at, deleted_at = NULL, resync_mark = EXCLUDED.resync_mark",
    ),
    "policy": (
        "(leaf_hub_name, policy_id)",
        "policy_name = EXCLUDED.policy_name, payload = EXCLUDED.payload, error = EXCLUDED.error, "
        "updated_at = EXCLUDED.updated_at, deleted_at = NULL, resync_mark = EXCLUDED.resync_mark",
    ),
    # as the ingest: an unchanged compliance row is not rewritten
    "compliance": (
        "(leaf_hub_name, policy_id, cluster_name)",
        "compliance = EXCLUDED.compliance, updated_at = EXCLUDED.updated_at "
        "WHERE t.compliance IS DISTINCT FROM EXCLUDED.compliance",
    ),
    "hub_info": (
        "(leaf_hub_name, cluster_id)",
        "payload = EXCLUDED.payload, console_url = EXCLUDED.console_url, grafana_url = EXCLUDED.grafana_url, "
        "updated_at = EXCLUDED.updated_at, deleted_at = NULL",
    ),
}


def staged_upsert_into_full(db_url: str, tables: Tables, dumps: list[TableDump]) -> float:
    """Tables full (untimed VACUUM), then per table COPY into a temp table and one INSERT ... ON CONFLICT (timed)."""
    tables.vacuum()
    kinds = {
        tables.cluster: "cluster",
        tables.policy: "policy",
        tables.compliance: "compliance",
        tables.hub_info: "hub_info",
    }
    with psycopg.connect(db_url) as conn:
        with conn.cursor() as cursor:
            started = time.perf_counter()
            for dump in dumps:
                conflict, update = UPSERTS[kinds[dump.table]]
                stage = f"_bench_stage_{kinds[dump.table]}"
                cursor.execute(f"CREATE TEMP TABLE {stage} AS SELECT {dump.columns} FROM {dump.table} WITH NO DATA")
                with cursor.copy(f"COPY {stage} ({dump.columns}) FROM STDIN") as copy:
                    for i in range(0, len(dump.data), COPY_CHUNK):
                        copy.write(dump.data[i : i + COPY_CHUNK])
                cursor.execute(
                    f"INSERT INTO {dump.table} AS t ({dump.columns}) SELECT {dump.columns} FROM {stage} "
                    f"ON CONFLICT {conflict} DO UPDATE SET {update}"
                )
        conn.commit()
        return time.perf_counter() - started


@dataclass
class NaiveRows:
    clusters: list[dict[str, Any]]
    compliance: list[dict[str, Any]]


def naive_sample(db_url: str, tables: Tables, clusters: int, compliance: int) -> NaiveRows:
    """A sample of the rows the ingest wrote, as the keyword arguments a naive consumer would pass (pre-built)."""
    with psycopg.connect(db_url) as conn, conn.cursor() as cursor:
        cursor.execute(
            f"SELECT cluster_id, cluster_name, payload, payload_digest, resync_mark FROM {tables.cluster} "
            "WHERE leaf_hub_name = %s ORDER BY cluster_id LIMIT %s",
            [tables.hub, clusters],
        )
        cluster_rows = [
            {"cluster_id": cid, "cluster_name": name, "payload": payload, "payload_digest": digest, "resync_mark": mark}
            for cid, name, payload, digest, mark in cursor.fetchall()
        ]
        cursor.execute(
            f"SELECT policy_id, cluster_name, compliance FROM {tables.compliance} "
            "WHERE leaf_hub_name = %s ORDER BY policy_id, cluster_name LIMIT %s",
            [tables.hub, compliance],
        )
        compliance_rows = [
            {"policy_id": pid, "cluster_name": name, "compliance": status} for pid, name, status in cursor.fetchall()
        ]
    return NaiveRows(cluster_rows, compliance_rows)


def naive_pass(rows: NaiveRows, tables: Tables, *, empty: bool) -> tuple[float, float]:
    """``update_or_create`` per row, autocommit (each call is its own transaction); seconds for clusters, compliance."""
    from django.db import connection
    from django.utils import timezone

    from globalhub.manager.models import LocalCompliance, ManagedCluster

    if empty:
        tables.empty_data()
    tables.vacuum()
    connection.ensure_connection()
    hub = tables.hub
    started = time.perf_counter()
    for row in rows.clusters:
        now = timezone.now()
        ManagedCluster.objects.update_or_create(
            hub_id=hub,
            cluster_id=row["cluster_id"],
            defaults={
                "cluster_name": row["cluster_name"],
                "payload": row["payload"],
                "payload_digest": row["payload_digest"],
                "error": "none",
                "updated_at": now,
                "deleted_at": None,
                "resync_mark": row["resync_mark"],
            },
            create_defaults={
                "cluster_name": row["cluster_name"],
                "payload": row["payload"],
                "payload_digest": row["payload_digest"],
                "error": "none",
                "created_at": now,
                "updated_at": now,
                "deleted_at": None,
                "resync_mark": row["resync_mark"],
            },
        )
    clusters_seconds = time.perf_counter() - started
    started = time.perf_counter()
    for row in rows.compliance:
        LocalCompliance.objects.update_or_create(
            hub_id=hub,
            policy_id=row["policy_id"],
            cluster_name=row["cluster_name"],
            defaults={"compliance": row["compliance"], "error": "none", "updated_at": timezone.now()},
        )
    return clusters_seconds, time.perf_counter() - started


def per_row_sql_pass(rows: NaiveRows, tables: Tables, *, empty: bool) -> tuple[float, float]:
    """The same sample, one ``INSERT ... ON CONFLICT DO UPDATE`` and one commit per row, plain psycopg."""
    from django.db import connection

    if empty:
        tables.empty_data()
    tables.vacuum()
    settings = connection.settings_dict
    conninfo = psycopg.conninfo.make_conninfo(
        host=settings["HOST"],
        port=settings["PORT"],
        dbname=settings["NAME"],
        user=settings["USER"],
        password=settings["PASSWORD"],
    )
    hub = tables.hub
    with psycopg.connect(conninfo) as conn:
        started = time.perf_counter()
        for row in rows.clusters:
            conn.execute(
                f"INSERT INTO {tables.cluster} AS t ({CLUSTER_COLUMNS}) "
                "VALUES (%s, %s, %s, %s, %s, 'none', now(), now(), NULL, %s) "
                "ON CONFLICT (leaf_hub_name, cluster_id) DO UPDATE SET cluster_name = EXCLUDED.cluster_name, "
                "payload = EXCLUDED.payload, payload_digest = EXCLUDED.payload_digest, error = 'none', "
                "updated_at = now(), deleted_at = NULL, resync_mark = EXCLUDED.resync_mark",
                [
                    hub,
                    row["cluster_id"],
                    row["cluster_name"],
                    Jsonb(row["payload"]),
                    row["payload_digest"],
                    row["resync_mark"],
                ],
            )
            conn.commit()
        clusters_seconds = time.perf_counter() - started
        started = time.perf_counter()
        for row in rows.compliance:
            conn.execute(
                f"INSERT INTO {tables.compliance} AS t ({COMPLIANCE_COLUMNS}) VALUES (%s, %s, %s, %s, 'none', now()) "
                "ON CONFLICT (leaf_hub_name, policy_id, cluster_name) DO UPDATE SET compliance = EXCLUDED.compliance, "
                "updated_at = now()",
                [hub, row["policy_id"], row["cluster_name"], row["compliance"]],
            )
            conn.commit()
        return clusters_seconds, time.perf_counter() - started


def naive_figures(cluster_s: float, compliance_s: float, sample: NaiveRows, expected: Expected) -> dict[str, Any]:
    per_cluster = cluster_s / max(1, len(sample.clusters))
    per_compliance = compliance_s / max(1, len(sample.compliance))
    extrapolated = per_cluster * (expected.clusters + expected.policies) + per_compliance * expected.compliance
    return {
        "cluster_seconds": r3(cluster_s),
        "compliance_seconds": r3(compliance_s),
        "rows_per_second": round((len(sample.clusters) + len(sample.compliance)) / (cluster_s + compliance_s)),
        "cluster_rows_per_second": round(1 / per_cluster) if per_cluster else None,
        "compliance_rows_per_second": round(1 / per_compliance) if per_compliance else None,
        "extrapolated_seconds_all_rows": round(extrapolated, 1),
    }


# --- the run ----------------------------------------------------------------------------------------------------


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


def spread(values: list[float]) -> float | None:
    """(max - min) / min: how far apart the repeated timings are."""
    return round((max(values) - min(values)) / min(values), 3) if len(values) > 1 and min(values) > 0 else None


def r3(value: float) -> float:
    return round(value, 3)


def main(argv: list[str] | None = None) -> int:  # noqa: PLR0912, PLR0915 - one run, told in order
    args = parse_args(argv)
    stop_on_sigterm()
    names = BenchNames.fresh("ingest")
    db_name = f"gh_bench_{names.tag.removeprefix('bench')}"
    base_url = base_database_url()
    db_url = with_database(base_url, db_name)
    url = redis_url_with_db(default_redis_url(), args.redis_db)
    kafka = default_kafka()
    client = redis.Redis.from_url(url)
    log_dir = log_dir_for(names, args.log_dir)
    env = agent_env(
        names,
        url,
        kafka,
        {
            "DATABASE_URL": db_url,
            "GH_AGENT_INTERVALS": INTERVALS,
            "GH_CONSUMER_GROUP": f"{names.tag}-manager",
            "GH_TOPIC_REFRESH_MS": "500",
            "DJANGO_SETTINGS_MODULE": "globalhub.settings",
        },
    )
    run = Run(env, log_dir)
    report = Report("manager_ingest")
    f = report.figures
    db_created = False
    producer: ConfirmedProducer | None = None
    try:
        progress(f"hub {names.hub}, database {db_name}, Redis {url}, logs in {log_dir}")
        admin_execute(base_url, f'CREATE DATABASE "{db_name}"')
        db_created = True
        started = time.monotonic()
        subprocess.run(
            python_argv("manage.py", "migrate", "--noinput", "-v", "0"), cwd=REPO, env=env, check=True, timeout=600
        )
        f["migrate_seconds"] = r3(time.monotonic() - started)
        f["tree"] = tree_state()
        setup_django(db_url, names)
        tables = Tables(names.hub)

        progress(f"populating {args.clusters} clusters, {args.policies} policies x {args.clusters_per_policy}")
        filled = populate(
            RedisInventory(client, names.hub),
            names.hub,
            clusters=args.clusters,
            policies=args.policies,
            clusters_per_policy=args.clusters_per_policy,
        )
        expected = Expected(filled.clusters, filled.policies, filled.compliance_rows)
        f.update(
            {
                "hub": names.hub,
                "database": db_name,
                "clusters": expected.clusters,
                "policies": expected.policies,
                "compliance_rows": expected.compliance,
                "rows": expected.rows,
                "populate_seconds": r3(filled.seconds),
                "cpus": os.cpu_count(),
                "loadavg_start": [round(x, 2) for x in os.getloadavg()],
            }
        )

        # --- 3. end to end ---
        ensure_topics(KafkaSettings(bootstrap_servers=kafka), [names.spec_topic], SPEC_TOPIC_CONFIG, timeout=30)
        producer = ConfirmedProducer(KafkaSettings(bootstrap_servers=kafka))
        progress("starting consume_status and the agent's worker, beat and listener")
        run.start()
        queue = ResyncQueue(client, names.hub)

        def startup_ingested() -> bool:
            if not startup_done(client, names.hub) or queue.length():
                return False
            state = tables.bookkeeping()
            if any(state.progress.get(t.short, ("", ""))[1] != "completed" for t in HYBRID):
                return False
            if any(t.short not in state.versions for t in COMPLETE):
                return False
            if not tables.counts_ok(tables.counts(), expected):
                return False
            high = watermarks(kafka, names.status_topic)
            stored = tables.positions()
            return all(stored.get((names.status_topic, p), 0) >= h for p, h in high.items())

        startup = wait(
            startup_ingested,
            timeout=args.startup_timeout,
            what="the startup resyncs in the DB",
            check=run.check,
            interval=0.5,
        )
        f["startup_ingested_seconds"] = r3(startup)
        progress(f"startup resyncs ingested after {startup:.1f}s; making sure the spec listener is assigned")
        f["listener_ready_seconds"] = r3(make_listener_ready(producer, client, names, run, timeout=120))
        time.sleep(1.0)

        resyncs: list[Resync] = []
        for index in range(args.resyncs):
            progress(f"resync request {index + 1}/{args.resyncs} for {names.hub}")
            resyncs.append(measure_resync(tables, expected, producer, names, kafka, run, args))
            progress(f"DB consistent {resyncs[-1].consistent_seconds:.2f}s after the request")
            time.sleep(1.0)
        f["e2e_seconds"] = [r3(r.consistent_seconds) for r in resyncs]
        f["e2e_publish_seconds"] = [r3(r.publish_seconds) for r in resyncs]
        f["e2e_parts"] = [r.parts for r in resyncs]
        f["e2e_counts"] = resyncs[0].counts
        f["e2e_checks"] = [r.detected_by_checks for r in resyncs]
        codes = run.stop()
        progress(f"processes stopped: {codes}")
        f["exit_codes"] = codes

        # --- 4. ingest rate ---
        first = resyncs[0]
        records, others = read_records(kafka, names.status_topic, first.start_offsets, first.end_offsets)
        f["records"] = len(records)
        f["records_bytes"] = sum(len(r.value or b"") for r in records)
        f["records_left_out"] = others
        f["records_by_type"] = dict(
            sorted(
                {
                    t: sum(1 for r in records if dict(r.headers).get("ce_type") == t.encode())
                    for t in (x.value for x in RESYNC_TYPES)
                }.items()
            )
        )
        f["records_by_type"] = {EventType(k).short: v for k, v in f["records_by_type"].items()}
        progress(f"read {len(records)} records ({f['records_bytes']} bytes) of the first resync; timing ingest_batch")

        ingest_empty: list[IngestPass] = []
        ingest_full: list[IngestPass] = []
        copy_empty: list[float] = []
        copy_by_table: list[dict[str, float]] = []
        upsert_full: list[float] = []
        dumps: list[TableDump] = []
        for round_ in range(args.repeat):
            ingest_empty.append(ingest_pass(records, names.status_prefix, tables, names.status_topic, empty=True))
            if round_ == 0:
                dumps = dump_rows(db_url, tables)  # exactly what the ingest wrote
            ingest_full.append(ingest_pass(records, names.status_prefix, tables, names.status_topic, empty=False))
            copy_seconds, copy_tables = copy_into_empty(db_url, tables, dumps)
            copy_empty.append(copy_seconds)
            copy_by_table.append(copy_tables)
            upsert_full.append(staged_upsert_into_full(db_url, tables, dumps))
            progress(
                f"round {round_ + 1}: ingest empty {ingest_empty[-1].seconds:.3f}s, "
                f"full {ingest_full[-1].seconds:.3f}s;"
                f" COPY {copy_empty[-1]:.3f}s, staged upsert {upsert_full[-1]:.3f}s"
            )
        rows = expected.rows
        f["dump_rows"] = {d.table: d.rows for d in dumps}
        f["dump_bytes"] = sum(len(d.data) for d in dumps)
        f["ingest_batches"] = ingest_empty[0].batches
        f["ingest_empty_seconds"] = [r3(p.seconds) for p in ingest_empty]
        f["ingest_full_seconds"] = [r3(p.seconds) for p in ingest_full]
        f["ingest_empty_rows_per_second"] = [round(rows / p.seconds) for p in ingest_empty]
        f["ingest_full_rows_per_second"] = [round(rows / p.seconds) for p in ingest_full]
        f["ingest_problems"] = [
            {"applied": p.applied, "dead_letters": p.dead_letters, "superseded": p.superseded, "counts": p.counts}
            for p in ingest_empty + ingest_full
            if p.dead_letters or p.superseded or not tables.counts_ok(p.counts, expected)
        ]
        f["copy_empty_seconds"] = [r3(s) for s in copy_empty]
        f["copy_empty_seconds_by_table"] = copy_by_table
        f["staged_upsert_full_seconds"] = [r3(s) for s in upsert_full]
        f["ratio_empty_ingest_to_copy"] = [
            round(a.seconds / b, 2) for a, b in zip(ingest_empty, copy_empty, strict=True)
        ]
        f["ratio_full_ingest_to_copy"] = [round(a.seconds / b, 2) for a, b in zip(ingest_full, copy_empty, strict=True)]
        f["ratio_full_ingest_to_staged_upsert"] = [
            round(a.seconds / b, 2) for a, b in zip(ingest_full, upsert_full, strict=True)
        ]
        f["noise_spread"] = {
            "ingest_empty": spread([p.seconds for p in ingest_empty]),
            "ingest_full": spread([p.seconds for p in ingest_full]),
            "copy_empty": spread(copy_empty),
            "staged_upsert_full": spread(upsert_full),
            "e2e": spread([r.consistent_seconds for r in resyncs]),
        }

        if args.profile:
            progress("profiling one more ingest pass (untimed)")
            f["profile"] = profile_pass(records, names.status_prefix, tables, names.status_topic)

        # --- 6. naive ---
        progress(f"naive update_or_create: {args.naive_clusters} clusters + {args.naive_compliance} compliance rows")
        sample = naive_sample(db_url, tables, args.naive_clusters, args.naive_compliance)
        naive: dict[str, Any] = {"clusters": len(sample.clusters), "compliance": len(sample.compliance)}
        for label, empty in (("empty", True), ("full", False)):
            for method, timed in (("orm", naive_pass), ("sql", per_row_sql_pass)):
                if not empty:
                    copy_into_empty(db_url, tables, dumps)  # every row back (untimed): the sample's calls update
                cluster_s, compliance_s = timed(sample, tables, empty=empty)
                key = label if method == "orm" else f"per_row_sql_{label}"
                naive[key] = naive_figures(cluster_s, compliance_s, sample, expected)
        f["naive"] = naive
        f["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
        render(report, f)
    finally:
        codes = run.stop()
        if codes:
            progress(f"stopped: {codes}")
        try:
            from django.db import connections

            connections.close_all()
        except Exception:  # Django never set up
            pass
        if not args.keep:
            if db_created:
                try:
                    admin_execute(base_url, f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
                    progress(f"dropped database {db_name}")
                except Exception as error:
                    progress(f"could not drop database {db_name}: {error}")
            deleted = cleanup_redis(client, names.hub) + cleanup_leftovers(client, names.hub)
            problems = delete_topics(kafka, [names.status_topic, names.spec_topic])
            progress(f"deleted {deleted} Redis keys; topics: {'; '.join(problems) or 'deleted'}")
        else:
            progress(f"kept database {db_name}, Redis db {args.redis_db} keys of {names.hub}, topics of {names.tag}")
        client.close()
    report.emit()
    return 0


def verdict(ok: bool) -> str:
    return "meets" if ok else "MISSES"


def render(report: Report, f: dict[str, Any]) -> None:
    say = report.say
    say(
        f"manager ingest, hub {f['hub']}: {f['clusters']} clusters + {f['policies']} policies + "
        f"{f['compliance_rows']} compliance rows = {f['rows']} rows (+ hub info); {f['cpus']} CPUs, "
        f"load {f['loadavg_start']} at start, {f['loadavg_end']} at end"
    )
    say(f"tree: {f['tree']}")
    say(
        f"setup: migrate {f['migrate_seconds']:.1f}s, populate {f['populate_seconds']:.1f}s, startup resyncs ingested "
        f"{f['startup_ingested_seconds']:.1f}s after the processes started"
    )
    e2e = f["e2e_seconds"]
    say(
        f"request -> DB consistent: {', '.join(f'{s:.2f}s' for s in e2e)} "
        f"(median {verdict(median(e2e) <= TARGET_E2E_SECONDS)} <= {TARGET_E2E_SECONDS:.0f} s)"
    )
    for i, parts in enumerate(f["e2e_parts"]):
        types = parts["types"]
        order = sorted(types.items(), key=lambda kv: kv[1].get("drain_started_at", 1e9))
        steps = "; ".join(
            f"{short} start {t.get('drain_started_at', '?')}s (queued {t.get('logged_queue_wait', '?')}s) "
            f"send {t.get('send_ms', '?')} ms, {t.get('messages', '?')} msgs"
            for short, t in order
        )
        say(f"  #{i + 1}: listener queued at {parts.get('listener_queued_at', '?')}s; {steps}")
        say(
            f"       agent: sends {parts.get('agent_send_seconds', '?')}s, idle between types "
            f"{parts.get('agent_gaps_between_types_seconds', '?')}s, "
            f"last sent at {parts.get('agent_last_sent_at', '?')}s,"
            f" then {parts.get('agent_tail_to_consistent_seconds', '?')}s to consistent; consumer: "
            f"{parts['consumer_batches']} batches, {parts['consumer_records']} records, ingest busy "
            f"{parts['consumer_ingest_seconds']}s (largest batch {parts.get('consumer_largest_batch_ms', '?')} ms)"
        )
        if parts["kafka_trouble_lines"]:
            say(f"       WARNING: {parts['kafka_trouble_lines']} log lines say Kafka was unreachable: run again")
    say(
        f"records of resync #1: {f['records']} ({f['records_bytes']} bytes) {f['records_by_type']}, "
        f"{f['records_left_out']} other messages left out; {f['ingest_batches']} batch(es) of <= {BATCH}"
    )
    rows = f["rows"]
    empty_rate = median(f["ingest_empty_rows_per_second"])
    full_rate = median(f["ingest_full_rows_per_second"])
    say(
        f"ingest_batch into empty tables: {f['ingest_empty_seconds']} s = {f['ingest_empty_rows_per_second']} rows/s "
        f"(median {empty_rate:.0f}: {verdict(empty_rate >= TARGET_ROWS_PER_SECOND)} >= {TARGET_ROWS_PER_SECOND})"
    )
    say(
        f"ingest_batch into full tables:  {f['ingest_full_seconds']} s = {f['ingest_full_rows_per_second']} rows/s "
        f"(median {full_rate:.0f}: {verdict(full_rate >= TARGET_ROWS_PER_SECOND)} >= {TARGET_ROWS_PER_SECOND})"
    )
    say(
        f"plain COPY into empty tables:   {f['copy_empty_seconds']} s "
        f"({rows / min(f['copy_empty_seconds']):.0f} rows/s);"
        f" staged COPY + upsert into full tables: {f['staged_upsert_full_seconds']} s"
    )
    ratio = median(f["ratio_empty_ingest_to_copy"])
    say(
        f"ratios: ingest(empty)/COPY {f['ratio_empty_ingest_to_copy']} "
        f"(median {ratio}: {verdict(ratio <= TARGET_COPY_RATIO)} <= {TARGET_COPY_RATIO:.0f}x); "
        f"ingest(full)/COPY {f['ratio_full_ingest_to_copy']}; ingest(full)/staged upsert "
        f"{f['ratio_full_ingest_to_staged_upsert']}"
    )
    say(f"noise (max-min)/min over repeats: {f['noise_spread']}")
    if f["ingest_problems"]:
        say(f"WARNING: ingest passes with dead letters, superseded records or wrong counts: {f['ingest_problems']}")
    n = f["naive"]
    for key, what in (
        ("empty", "Django update_or_create per row, autocommit, empty tables"),
        ("full", "Django update_or_create per row, autocommit, full tables"),
        ("per_row_sql_empty", "psycopg INSERT ... ON CONFLICT + commit per row, empty tables"),
        ("per_row_sql_full", "psycopg INSERT ... ON CONFLICT + commit per row, full tables"),
    ):
        x = n[key]
        say(
            f"naive: {what} ({n['clusters']} clusters + {n['compliance']} compliance): {x['rows_per_second']} rows/s "
            f"(clusters {x['cluster_rows_per_second']}/s, compliance {x['compliance_rows_per_second']}/s) -> all "
            f"{rows} rows in ~{x['extrapolated_seconds_all_rows']} s"
        )
    say(f"COPY seconds by table: {f['copy_empty_seconds_by_table']}")
    if "profile" in f:
        prof = f["profile"]
        say(f"profiled ingest pass into empty tables ({prof['seconds_with_profiler']} s with the profiler on):")
        say("   SQL statements through Django's cursor, by kind (calls, seconds):")
        for row in prof["statements"]:
            say(f"   {row['calls']:6d} {row['seconds']:8.3f}  {row['statement']}")
        say("   functions (cumulative):")
        for line in prof["functions"]:
            say("   " + line)


if __name__ == "__main__":
    sys.exit(main())
