"""Manager end to end: a full resync of one big hub, from the request to the manager's database consistent.

    .venv/bin/python bench/manager_e2e.py                       # 10,000 clusters, 1,000 policies x 50 clusters
    .venv/bin/python bench/manager_e2e.py --clusters 2000 --policies 200 --resyncs 3

1. A scratch database, hub, topics and Redis database of this run only (``bench/manager_run.py``); the simulator's
   ``populate`` fills the hub's inventory.
2. The manager's ``consume_status`` (serving its metrics on a free port) and the agent's worker, beat and spec
   listener run as real processes (``GH_AGENT_INTERVALS`` keeps delta sync of the big types out of the way). Once the
   agent's startup resyncs are ingested (counts right, resync queue empty, consumer caught up) and the listener is
   known to be assigned (a request for another hub is counted as ``ignored``), the run records a ``ResyncRequest`` of
   the four types for the hub (with its ``ResyncTarget``) and sends it to the spec topic with its id, as the
   manager's outbox does. The clock runs until the DB is consistent *with that resync*: ``ResyncProgress`` completed
   with a new resync id for ``managedcluster`` and ``policy.localspec``, ``TypeVersion`` of hub info and compliance
   past their values before the request, and the counts right. ``--resyncs N`` repeats the request.
3. The parts of that time, read while it runs (a thread samples every ``--poll`` seconds) and after it:

   * from the agent's Redis: when the listener queued the types (the queue's ``since`` of each type), when the
     drain started each one (its in-flight entry, or ``gh:<hub>:agent:drain_started``), when its send was
     confirmed (``<type>.last_sent`` of ``gh:<hub>:agent:state``), the messages (``<type>.sent_messages``) and
     bytes (the ``bundle_bytes`` histogram's sum) it took, the agent's error counters;
   * from the manager's database: each type's objects, version and the start of the batch that took its full state
     (``HubTypeStatus``), the request's answer complete (``ResyncTarget.completed_at``), each batch the consumer
     committed (``ConsumedPosition``: the end and the records; the transaction's start in ``pg_stat_activity``;
     ``IngestTotal``: the bundles applied by type);
   * from the consumer's metrics endpoint, before the request and once consistent: batches and the time spent
     ingesting them (``globalhub_ingest_batch_duration_seconds``), Kafka errors.

4. A short report and one JSON line (the last line of stdout). No assertion on timings.

Processes are stopped (SIGTERM to their process groups), the database dropped, the hub's Redis keys and the run's
topics deleted, unless ``--keep``. Target (DESIGN "Performance targets"): request -> DB consistent <= 5 s.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import itertools
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from statistics import median
from typing import Any

import psycopg
import redis

from agent_tasks.resync_queue import ResyncQueue
from agent_tasks.state import StateStore
from agent_tasks.telemetry import BUNDLE_BYTES, read_errors, read_histogram
from bench.common import (
    Report,
    free_port,
    progress,
    scrape_metrics,
    startup_done,
    stop_on_sigterm,
    topic_ends,
    wait_until,
)
from bench.manager_run import (
    COMPLETE,
    HYBRID,
    TARGET_E2E_SECONDS,
    DbState,
    ScratchHub,
    Tables,
    add_hub_arguments,
    r3,
    render_setup,
    spread,
    verdict,
)
from globalhub.protocol.events import RESYNC_TYPES, EventType
from globalhub.protocol.kafka import SPEC_TOPIC_CONFIG, ConfirmedProducer, KafkaSettings, ensure_topics
from globalhub.protocol.requests import resync_request
from tests.helpers import start_agent, start_consumer

FOUR_SHORT = tuple(t.short for t in RESYNC_TYPES)
BATCH_COUNT = "globalhub_ingest_batch_duration_seconds_count"
BATCH_SECONDS = "globalhub_ingest_batch_duration_seconds_sum"
KAFKA_ERRORS = 'globalhub_consumer_errors_total{kind="kafka"}'


def add_e2e_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--resyncs", type=int, default=1, help="measured resync requests, one after the other")
    p.add_argument("--resync-timeout", type=float, default=300.0)
    p.add_argument("--poll", type=float, default=0.02, help="polling interval while waiting (default 0.02 s)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_hub_arguments(p)
    add_e2e_arguments(p)
    return p.parse_args(argv)


# --- sampling while a resync runs -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """What the consumer had stored and where the agent's drain was, at one moment (epoch seconds throughout)."""

    at: float
    offsets: int  # the stored next offsets of the hub's status topic, summed over its partitions
    position_at: float | None  # when the consumer last stored them (``ConsumedPosition.updated_at``)
    transactions: tuple[float, ...]  # the start of each open transaction of another session on the database
    totals: dict[str, int]  # ``IngestTotal`` bundles by "<type> <outcome>"
    drain_started: float | None  # the agent's last drain start
    queued: dict[str, float]  # type -> when it was queued (waiting, or in flight)
    in_flight: dict[str, float]  # type -> when the drain started it


class Watch:
    """Takes a :class:`Sample` every ``interval`` seconds in a thread, on connections of its own."""

    def __init__(
        self, db_url: str, tables: Tables, topic: str, redis_url: str, hub: str, ours: Sequence[int], interval: float
    ) -> None:
        self._db_url = db_url
        self._topic = topic
        self._redis_url = redis_url
        self._hub = hub
        self._ours = list(ours)
        self._interval = interval
        self._sql = f"""SELECT
            (SELECT coalesce(sum(next_offset), 0) FROM {tables.position} WHERE topic = %(topic)s),
            (SELECT extract(epoch FROM max(updated_at))::float8 FROM {tables.position} WHERE topic = %(topic)s),
            (SELECT coalesce(array_agg(extract(epoch FROM xact_start)::float8), '{{}}') FROM pg_stat_activity
              WHERE datname = current_database() AND backend_type = 'client backend' AND xact_start IS NOT NULL
                AND pid <> pg_backend_pid() AND NOT (pid = ANY(%(ours)s))),
            (SELECT coalesce(json_object_agg(event_type || ' ' || outcome, bundles), '{{}}') FROM {tables.totals})
        """
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="resync-watch", daemon=True)
        self.samples: list[Sample] = []
        self.error: BaseException | None = None

    def __enter__(self) -> Watch:
        self._conn = psycopg.connect(self._db_url, autocommit=True)
        self._client = redis.Redis.from_url(self._redis_url)
        self._queue = ResyncQueue(self._client, self._hub)
        self.samples.append(self._sample())  # before the request: the baseline
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._conn.close()
        self._client.close()

    def _run(self) -> None:
        try:
            while not self._stop.wait(self._interval):
                self.samples.append(self._sample())
        except BaseException as error:  # reported by the caller; the measurement goes on without samples
            self.error = error

    def _sample(self) -> Sample:
        at = time.time()
        row = self._conn.execute(self._sql, {"topic": self._topic, "ours": self._ours}).fetchone()
        assert row is not None
        raw = self._client.get(f"gh:{self._hub}:agent:drain_started")
        waiting = self._queue.items()
        in_flight = self._queue.in_flight()
        queued = {w.type: w.enqueued_at for w in waiting}
        queued.update({f.type: f.enqueued_at for f in in_flight})
        return Sample(
            at=at,
            offsets=int(row[0]),
            position_at=row[1],
            transactions=tuple(row[2]),
            totals={str(k): int(v) for k, v in row[3].items()},
            drain_started=float(raw) if raw is not None else None,
            queued=queued,
            in_flight={f.type: f.started_at for f in in_flight},
        )


# --- reading the timeline back ----------------------------------------------------------------------------------


@dataclass
class AgentCounters:
    """The agent's per-type counters in its Redis (``gh:<hub>:agent:state``, ``gh:<hub>:agent:metrics:*``)."""

    last_sent: dict[str, float]
    messages: dict[str, int]
    bytes: dict[str, float]
    errors: dict[str, int]


def agent_counters(client: redis.Redis, hub: str) -> AgentCounters:
    states = StateStore(client, hub).all()
    return AgentCounters(
        last_sent={name: s.last_sent for name, s in states.items() if s.last_sent is not None},
        messages={name: s.sent_messages for name, s in states.items()},
        bytes={series.labels[0]: series.sum for series in read_histogram(client, hub, BUNDLE_BYTES)},
        errors=read_errors(client, hub),
    )


def consumer_commits(samples: Sequence[Sample], t0: float) -> list[dict[str, Any]]:
    """The consumer's batches as their commits show in the samples (times relative to ``t0``).

    A commit is a change of the stored positions: ``at`` is when they were written (the batch's end, before its
    commit), ``records`` how far they moved, ``ms`` from the start of the last transaction seen open before it (None
    when the batch was shorter than the sampling interval), ``applied`` and ``by_type`` the bundles it counted. Two
    commits within one interval show as one.
    """
    commits: list[dict[str, Any]] = []
    if not samples:
        return commits
    previous = samples[0]
    last_end = previous.position_at or 0.0
    open_starts: set[float] = set()
    for sample in samples[1:]:
        open_starts.update(sample.transactions)
        if sample.position_at is None or (
            sample.offsets == previous.offsets and sample.position_at == previous.position_at
        ):
            continue
        end = sample.position_at
        start = max((s for s in open_starts if last_end < s <= end), default=None)
        by_type: dict[str, int] = {}
        applied = 0
        for key, bundles in sample.totals.items():
            short, _, outcome = key.partition(" ")
            added = bundles - previous.totals.get(key, 0)
            if added and outcome in ("stored", "not_stored"):
                by_type[short] = by_type.get(short, 0) + added
            if outcome == "stored":
                applied += added
        commits.append(
            {
                "at": r3(end - t0),
                "records": sample.offsets - previous.offsets,
                "ms": round((end - start) * 1000) if start is not None else None,
                "applied": applied,
                "by_type": by_type,
            }
        )
        open_starts = {s for s in open_starts if s > end}
        last_end = end
        previous = sample
    return commits


def agent_types(
    samples: Sequence[Sample], t0: float, before: AgentCounters, after: AgentCounters
) -> tuple[float | None, dict[str, dict[str, Any]]]:
    """When the listener queued the types (relative to ``t0``), and each type's drain start, queue wait, send and
    size, from the agent's Redis.

    The drain runs one type at a time, so a type's start is its in-flight entry's, or else the last drain start
    before its send was confirmed. The listener queues the requested types together: one ``since`` for all.
    """
    enqueued: dict[str, float] = {}
    started: dict[str, float] = {}
    starts: set[float] = set()
    for sample in samples:
        if sample.drain_started is not None and sample.drain_started >= t0:
            starts.add(sample.drain_started)
        for short, at in sample.queued.items():
            if at >= t0:
                enqueued.setdefault(short, at)
        for short, at in sample.in_flight.items():
            if at >= t0:
                started.setdefault(short, at)
    queued_at = min(enqueued.values(), default=None)
    types: dict[str, dict[str, Any]] = {}
    for short in FOUR_SHORT:
        sent = after.last_sent.get(short)
        if sent is None or sent < t0:
            continue
        entry: dict[str, Any] = {
            "sent_at": r3(sent - t0),
            "messages": after.messages.get(short, 0) - before.messages.get(short, 0),
            "bytes": round(after.bytes.get(short, 0.0) - before.bytes.get(short, 0.0)),
        }
        start = started.get(short) or max((s for s in starts if s <= sent), default=None)
        if start is not None:
            entry["drain_started_at"] = r3(start - t0)
            entry["send_ms"] = round((sent - start) * 1000)
            queued = enqueued.get(short, queued_at)
            if queued is not None:
                entry["queue_wait"] = r3(start - queued)
        types[short] = entry
    return (r3(queued_at - t0) if queued_at is not None else None), types


def manager_types(tables: Tables, t0: float) -> dict[str, dict[str, Any]]:
    """Each type's last full state as the manager took it (``HubTypeStatus``): objects, version, the batch's start."""
    found = {}
    for event_type, at, objects, version in tables.rows(
        f"SELECT event_type, extract(epoch FROM last_full_state_at)::float8, last_full_state_objects, version "
        f"FROM {tables.type_status} WHERE hub_id = %s",
        [tables.hub],
    ):
        short = EventType(event_type).short
        if short in FOUR_SHORT:
            found[short] = {
                "objects": objects,
                "version": version,
                "manager_full_state_at": r3(at - t0) if at is not None else None,
            }
    return found


def timeline(
    t0: float,
    consistent: float,
    samples: Sequence[Sample],
    agent: tuple[AgentCounters, AgentCounters],
    manager: dict[str, dict[str, Any]],
    metrics: tuple[dict[str, float], dict[str, float]],
) -> dict[str, Any]:
    """The resync's parts (times relative to the request), from the samples and the counters before and after."""
    before, after = agent
    queued_at, types = agent_types(samples, t0, before, after)
    for short, seen in manager.items():
        types.setdefault(short, {}).update(seen)
    parts: dict[str, Any] = {"types": types}
    if queued_at is not None:
        parts["listener_queued_at"] = queued_at
    sent = [t for t in types.values() if "sent_at" in t and "drain_started_at" in t]
    if sent:
        ordered = sorted(sent, key=lambda t: t["drain_started_at"])
        parts["agent_first_start_at"] = ordered[0]["drain_started_at"]
        parts["agent_last_sent_at"] = max(t["sent_at"] for t in sent)
        parts["agent_send_seconds"] = round(sum(t["send_ms"] for t in sent) / 1000, 3)
        gaps = [b["drain_started_at"] - a["sent_at"] for a, b in itertools.pairwise(ordered)]
        parts["agent_gaps_between_types_seconds"] = round(sum(gaps), 3)
        parts["agent_tail_to_consistent_seconds"] = round(consistent - parts["agent_last_sent_at"], 3)
    batches = [c for c in consumer_commits(samples, t0) if c["at"] <= consistent + 0.05]
    parts["batches"] = batches
    start, end = metrics
    if BATCH_COUNT in end:
        parts["consumer_batches"] = int(end[BATCH_COUNT] - start.get(BATCH_COUNT, 0.0))
        parts["consumer_ingest_seconds"] = r3(end[BATCH_SECONDS] - start.get(BATCH_SECONDS, 0.0))
    else:  # the consumer's metrics were not served: the commits seen
        parts["consumer_batches"] = len(batches)
        parts["consumer_ingest_seconds"] = r3(sum(b["ms"] or 0 for b in batches) / 1000)
    parts["consumer_commits_seen"] = len(batches)
    parts["consumer_records"] = sum(b["records"] for b in batches)
    if batches:
        parts["consumer_first_batch_end_at"] = batches[0]["at"]
        parts["consumer_last_batch_end_at"] = batches[-1]["at"]
        timed = [b["ms"] for b in batches if b["ms"] is not None]
        if timed:
            parts["consumer_largest_batch_ms"] = max(timed)
    parts["kafka_errors"] = {
        "consumer": int(end.get(KAFKA_ERRORS, 0.0) - start.get(KAFKA_ERRORS, 0.0)),
        **{f"agent_{kind}": after.errors.get(kind, 0) - before.errors.get(kind, 0) for kind in after.errors},
    }
    return parts


# --- the end-to-end resync --------------------------------------------------------------------------------------


def listener_ignored(client: redis.Redis, hub: str) -> int:
    return int(client.hget(f"gh:{hub}:agent:listener", "ignored") or 0)


def make_listener_ready(producer: ConfirmedProducer, scratch: ScratchHub, timeout: float) -> float:
    """The listener's new group starts at the newest message: send requests for another hub until one is seen."""
    names, client = scratch.names, scratch.client
    started = time.monotonic()
    other = f"{names.tag}-nobody"
    while listener_ignored(client, names.hub) == 0:
        scratch.processes.check()
        if time.monotonic() - started > timeout:
            raise TimeoutError("the spec listener never saw a request (not assigned?)")
        producer.send(names.spec_topic, [resync_request(other, RESYNC_TYPES)])
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline and listener_ignored(client, names.hub) == 0:
            time.sleep(0.05)
    return time.monotonic() - started


def record_request(hub: str) -> int:
    """A manager request of the four types for ``hub`` and its target, as ``resync_requests`` writes them (not
    through its service: that would queue the outbox's dispatch, which sends every pending request)."""
    from django.utils import timezone

    from globalhub.manager.models import ResyncRequest, ResyncTarget
    from globalhub.manager.resync_requests import full_types

    request = ResyncRequest.objects.create(
        subject=hub,
        types=full_types(None),
        reason=ResyncRequest.Reason.OPERATOR,
        requested_by="bench",
        requested_at=timezone.now(),
    )
    ResyncTarget.objects.create(request=request, hub_id=hub)
    return int(request.pk)


def request_figures(tables: Tables, request_id: int, t0: float) -> dict[str, Any]:
    """When the request was stamped sent and when the hub's answer was complete (``ResyncTarget``)."""
    from globalhub.manager.models import ResyncRequest, ResyncTarget

    sent_at = ResyncRequest.objects.values_list("sent_at", flat=True).get(pk=request_id)
    target = ResyncTarget.objects.get(request_id=request_id, hub_id=tables.hub)
    return {
        "request_id": request_id,
        "request_sent_at": r3(sent_at.timestamp() - t0) if sent_at else None,
        "answer_complete_at": r3(target.completed_at.timestamp() - t0) if target.completed_at else None,
        "answered_types": sorted(EventType(t).short for t in target.answered_types),
    }


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


def scrape_or_nothing(port: int) -> dict[str, float]:
    try:
        return scrape_metrics(port)
    except OSError as error:  # the port was taken meanwhile: the consumer went on without serving
        progress(f"consumer metrics not readable on port {port}: {error}")
        return {}


@dataclass
class Resync:
    """One measured request -> DB consistent."""

    requested_at: float  # epoch seconds, just before the send
    publish_seconds: float
    consistent_seconds: float
    detected_by_checks: int
    start_offsets: dict[int, int]
    end_offsets: dict[int, int]
    counts: dict[str, int]
    parts: dict[str, Any] = field(default_factory=dict)


def measure_resync(
    scratch: ScratchHub, tables: Tables, producer: ConfirmedProducer, port: int, args: argparse.Namespace
) -> Resync:
    from django.db import connection
    from django.utils import timezone

    from globalhub.manager.models import ResyncRequest

    names, client = scratch.names, scratch.client
    before = tables.bookkeeping()
    start_offsets = topic_ends(scratch.kafka, names.status_topic)
    request_id = record_request(names.hub)
    (own_pid,) = tables.rows("SELECT pg_backend_pid()")[0]
    agent_before = agent_counters(client, names.hub)
    metrics_before = scrape_or_nothing(port)
    watch = Watch(scratch.db_url, tables, names.status_topic, scratch.redis_url, names.hub, [own_pid], args.poll)
    with watch:
        message = resync_request(names.hub, RESYNC_TYPES, request_id=str(request_id))
        requested_at = time.time()
        t0 = time.monotonic()
        producer.send(names.spec_topic, [message])
        publish = time.monotonic() - t0
        ResyncRequest.objects.filter(pk=request_id).update(sent_at=timezone.now(), send_attempts=1)
        checks = 0
        state = before
        while True:
            checks += 1
            state = tables.bookkeeping()
            if resync_done(state, before):
                counts = tables.counts()
                if tables.counts_ok(counts, scratch.expected):
                    break
            if time.monotonic() - t0 > args.resync_timeout:
                raise TimeoutError(f"DB not consistent {args.resync_timeout:.0f}s after the request (last {state})")
            scratch.processes.check()
            time.sleep(args.poll)
        consistent = time.monotonic() - t0
        metrics_after = scrape_or_nothing(port)
        time.sleep(3 * args.poll + 0.05)  # the watch's sample of the last commit
    if watch.error is not None:
        progress(f"WARNING: sampling stopped early: {watch.error!r}")
    connection.ensure_connection()
    end_offsets = topic_ends(scratch.kafka, names.status_topic)
    result = Resync(requested_at, publish, consistent, checks, start_offsets, end_offsets, counts)
    result.parts = timeline(
        requested_at,
        consistent,
        watch.samples,
        (agent_before, agent_counters(client, names.hub)),
        manager_types(tables, requested_at),
        (metrics_before, metrics_after),
    )
    result.parts.update(request_figures(tables, request_id, requested_at))
    result.parts["samples"] = len(watch.samples)
    return result


def run_e2e(scratch: ScratchHub, tables: Tables, args: argparse.Namespace, f: dict[str, Any]) -> list[Resync]:
    """Start the consumer and the agent, wait for the startup resyncs in the DB, measure ``--resyncs`` requests,
    stop the processes; the figures go into ``f``."""
    names, client, kafka, expected = scratch.names, scratch.client, scratch.kafka, scratch.expected
    ensure_topics(KafkaSettings(bootstrap_servers=kafka), [names.spec_topic], SPEC_TOPIC_CONFIG, timeout=30)
    producer = ConfirmedProducer(KafkaSettings(bootstrap_servers=kafka))
    port = free_port()
    progress(f"starting consume_status (metrics on port {port}) and the agent's worker, beat and listener")
    scratch.processes.add(
        [start_consumer({**scratch.env, "GH_CONSUMER_METRICS_ADDR": f"127.0.0.1:{port}"}, scratch.log_dir)]
    )
    scratch.processes.add(start_agent(scratch.env, scratch.log_dir, listener=True))
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
        high = topic_ends(kafka, names.status_topic)
        stored = tables.positions()
        return all(stored.get((names.status_topic, p), 0) >= h for p, h in high.items())

    startup = wait_until(
        startup_ingested,
        timeout=args.startup_timeout,
        what="the startup resyncs in the DB",
        check=scratch.processes.check,
        interval=0.5,
    )
    f["startup_ingested_seconds"] = r3(startup)
    progress(f"startup resyncs ingested after {startup:.1f}s; making sure the spec listener is assigned")
    f["listener_ready_seconds"] = r3(make_listener_ready(producer, scratch, timeout=120))
    time.sleep(1.0)

    resyncs: list[Resync] = []
    for index in range(args.resyncs):
        progress(f"resync request {index + 1}/{args.resyncs} for {names.hub}")
        resyncs.append(measure_resync(scratch, tables, producer, port, args))
        progress(f"DB consistent {resyncs[-1].consistent_seconds:.2f}s after the request")
        time.sleep(1.0)
    f["e2e_seconds"] = [r3(r.consistent_seconds) for r in resyncs]
    f["e2e_publish_seconds"] = [r3(r.publish_seconds) for r in resyncs]
    f["e2e_parts"] = [r.parts for r in resyncs]
    f["e2e_counts"] = resyncs[0].counts
    f["e2e_checks"] = [r.detected_by_checks for r in resyncs]
    f.setdefault("noise_spread", {})["e2e"] = spread([r.consistent_seconds for r in resyncs])
    codes = scratch.processes.stop()
    progress(f"processes stopped: {codes}")
    f["exit_codes"] = codes
    return resyncs


def render_e2e(report: Report, f: dict[str, Any]) -> None:
    say = report.say
    e2e = f["e2e_seconds"]
    say(
        f"request -> DB consistent: {', '.join(f'{s:.2f}s' for s in e2e)} "
        f"(median {verdict(median(e2e) <= TARGET_E2E_SECONDS)} <= {TARGET_E2E_SECONDS:.0f} s)"
    )
    for i, parts in enumerate(f["e2e_parts"]):
        types = parts["types"]
        order = sorted(types.items(), key=lambda kv: kv[1].get("drain_started_at", 1e9))
        steps = "; ".join(
            f"{short} start {t.get('drain_started_at', '?')}s (queued {t.get('queue_wait', '?')}s) "
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
            f"{parts['consumer_ingest_seconds']}s (largest batch {parts.get('consumer_largest_batch_ms', '?')} ms, "
            f"last batch end at {parts.get('consumer_last_batch_end_at', '?')}s); "
            f"answer complete at {parts.get('answer_complete_at', '?')}s"
        )
        if any(parts["kafka_errors"].values()):
            say(f"       WARNING: Kafka errors counted {parts['kafka_errors']}: run again")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stop_on_sigterm()
    scratch = ScratchHub(args)
    report = Report("manager_e2e")
    f = report.figures
    try:
        tables = scratch.create(f)
        run_e2e(scratch, tables, args, f)
        f["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
        render_setup(report, f, "manager end to end")
        render_e2e(report, f)
    finally:
        scratch.close()
    report.emit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
