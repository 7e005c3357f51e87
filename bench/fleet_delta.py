"""Issue 14, benchmark 3: delta latency. A fleet changes objects at a steady rate; each change, hub → row in the DB.

    .venv/bin/python bench/fleet_delta.py --hubs 100 --changes-per-second 500 --delta-interval 1s --duration 300
    .venv/bin/python bench/fleet_delta.py --hubs 20 --changes-per-second 100 --duration 30      # a short try

1. A scratch database ``gh_bench_<tag>``, topics ``<tag>-gh-status.<hub>`` and a Redis database of this run only
   (``bench/fleet/harness.py``; the tag starts with ``delta``).
2. The fleet (``python -m bench.fleet``: startup resync, ``--changes-per-second`` spread over the hubs, a delta sync
   every ``--delta-interval``, every change written to a change log), then ``consume_status`` (x ``--consumers``)
   and the manager's Celery worker. The run waits until every hub is consistent and no resync is owed (the
   start's broadcast and each hub's first-seen request answered), then ``--settle`` seconds more.
3. **The window**: ``--duration`` seconds. Every change the fleet makes in it is measured; then ``--drain`` seconds
   more for the last ones to arrive (changes made after the window are not measured).

**What is measured, per change: the time its row became visible in the database - the time the hub made it.**

* *Made*: the fleet's clock when the change was applied to the hub's inventory (``bench.fleet.changes``): the
  annotation ``bench.globalhub.io/changed-at`` that the cluster or policy carries in its ``payload``, and the change
  log (``--change-log``) for every change (compliance rows have no payload).
* *Visible*: committed, as a reader of the database sees it. The row's ``updated_at`` cannot say it: it is the
  consumer's ``timezone.now()`` at the start of the write (``bulk.py`` and ``complete.py`` write the batch's or the
  savepoint's ``now``), before the rest of the batch and the commit. So this process reads the changed rows
  itself, every ``--poll`` seconds (0.1 s), each read in a REPEATABLE READ transaction whose first statement gives
  the snapshot's time: ``clock_timestamp()`` (after the snapshot was taken: a row it shows committed before it) and
  ``statement_timestamp()`` (before the snapshot). Only row versions the previous snapshot could not see are read:
  ``xmin`` not older than the previous snapshot's ``xmin`` (``age()``, wraparound-safe), which every version
  committed since has, so nothing is missed and no table is read whole. No trigger, no product change.
* A change's latency is ``seen - made``, where ``seen`` is the ``clock_timestamp()`` of the first read that shows a
  row reflecting it: an upper bound. The commit was after ``max(previous read's statement_timestamp(), the row's
  updated_at)``: the lower bound. **Error bound**: the true latency lies in [lower, upper]; the report gives both
  and the largest gap (one poll interval plus a read, about 0.1 to 0.15 s). The hub's and the database's clocks are
  the same machine's.
* *Reflecting*: a cluster or policy row reflects a change when its ``changed-at`` is the change's or later (the hub
  changed the object again before its delta went out: *superseded*, still counted, with the later row's time).
  A compliance row reflects a change of (hub, policy, cluster) when it was written after the change
  (``updated_at``) and holds the status that change or one of the next two set (compliance flips cycle through
  four statuses, so the third next one would be the status before it). Every change of the window is matched by
  its id and time; the ones never seen are counted (``unmatched``), not dropped.

**Consumer lag** every ``--lag-every`` seconds: the sum over the hubs' topics of Kafka's end offset (``list_offsets``)
minus the stored position (``manager_consumedposition.next_offset``: the database is the consumer's only offset
authority). *Flat*: the largest lag of the window's last minute is not above the largest of its first minute
(a third of the window each, for windows under 3 minutes), or not above one second of the records produced
(what is in flight in a healthy pipeline: a delta tick's worth); the least-squares slope is given too.

The last stdout line is the JSON of every figure.
"""

from __future__ import annotations

import argparse
import bisect
import csv
import sys
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import Report, progress, stop_on_sigterm  # noqa: E402
from bench.fleet.__main__ import seconds  # noqa: E402
from bench.fleet.changes import Shape  # noqa: E402
from bench.fleet.harness import (  # noqa: E402
    FleetDB,
    Names,
    Scratch,
    consumer_figures,
    manager_env,
    manager_until_consistent,
    percentile,
    r3,
    start_fleet,
    stop_all,
)
from tests.helpers import Process  # noqa: E402

CLUSTER, POLICY, COMPLIANCE = "managedcluster", "policy.localspec", "policy.localcompliance"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hubs", type=int, default=100)
    p.add_argument("--clusters", type=int, default=100)
    p.add_argument("--policies", type=int, default=10)
    p.add_argument("--compliance", type=int, default=50, help="compliance rows per hub")
    p.add_argument("--changes-per-second", type=float, default=500.0, help="object changes per second, all hubs")
    p.add_argument("--delta-interval", type=seconds, default=1.0, help="the hubs' delta sync interval")
    p.add_argument("--heartbeat", type=seconds, default=60.0, help="the hubs' heartbeat interval")
    p.add_argument("--duration", type=seconds, default=300.0, help="the measured window")
    p.add_argument("--settle", type=seconds, default=10.0, help="wait after every hub is consistent")
    p.add_argument("--drain", type=seconds, default=15.0, help="keep reading after the window")
    p.add_argument("--poll", type=seconds, default=0.1, help="how often the changed rows are read")
    p.add_argument("--lag-every", type=seconds, default=5.0, help="how often the consumer lag is sampled")
    p.add_argument("--consumers", type=int, default=1, help="consume_status processes in one group")
    p.add_argument("--fleet-processes", type=int, default=2)
    p.add_argument("--timeout", type=float, default=600.0, help="give up waiting for consistency after this long")
    p.add_argument("--redis-db", type=int, default=14, help="the manager's Celery broker database")
    p.add_argument("--log-dir", type=Path)
    p.add_argument("--keep", action="store_true", help="keep the database and the topics")
    return p.parse_args(argv)


# --- reading the changed rows ----------------------------------------------------------------------------------

_ANNOTATION = "payload->'metadata'->'annotations'->>'bench.globalhub.io/changed-at'"
_CHANGED_ROWS = f"""
    SELECT 'c', leaf_hub_name, cluster_id::text, {_ANNOTATION}, extract(epoch FROM updated_at)::float8
      FROM manager_managedcluster WHERE age(xmin) <= age(%(since)s::text::xid)
    UNION ALL
    SELECT 'p', leaf_hub_name, policy_id::text, {_ANNOTATION}, extract(epoch FROM updated_at)::float8
      FROM manager_localpolicy WHERE age(xmin) <= age(%(since)s::text::xid)
    UNION ALL
    SELECT 's', leaf_hub_name, policy_id::text || '/' || cluster_name || '/' || compliance,
           NULL, extract(epoch FROM updated_at)::float8
      FROM manager_localcompliance WHERE age(xmin) <= age(%(since)s::text::xid)
"""
_KIND = {"c": CLUSTER, "p": POLICY, "s": COMPLIANCE}


@dataclass(frozen=True, slots=True)
class Sighting:
    """A row version first read at ``seen`` (it committed in (``after``, ``seen``]), written at ``updated_at``."""

    seen: float
    after: float
    updated_at: float
    value: str  # clusters and policies: the changed-at annotation; compliance: the status


class RowWatcher(threading.Thread):
    """Reads every row version committed since its last read, every ``poll`` seconds (see the module docstring)."""

    def __init__(self, url: str, poll: float) -> None:
        super().__init__(name="row-watcher", daemon=True)
        import psycopg

        self._conn = psycopg.connect(url, autocommit=True)
        self._poll = poll
        self._stopping = threading.Event()
        self.sightings: dict[tuple[str, str, str], list[Sighting]] = defaultdict(list)
        self._firsts: set[tuple[str, str, str, str]] = set()
        self.reads = 0
        self.read_seconds: list[float] = []
        self.gaps: list[float] = []  # seen - after of each read: the bound on a commit time's error
        self.error: BaseException | None = None
        self._since, self._after = self._snapshot_only()

    def _snapshot_only(self) -> tuple[int, float]:
        row = self._conn.execute(
            "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint, "
            "extract(epoch FROM statement_timestamp())::float8"
        ).fetchone()
        assert row is not None
        return int(row[0]) % 2**32, float(row[1])

    def run(self) -> None:
        try:
            while not self._stopping.is_set():
                started = time.monotonic()
                self.read_once()
                self.read_seconds.append(time.monotonic() - started)
                self._stopping.wait(max(0.0, self._poll - (time.monotonic() - started)))
        except BaseException as error:  # reported by the main thread
            self.error = error

    def read_once(self) -> None:
        with self._conn.transaction():
            self._conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            head = self._conn.execute(
                "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint, "
                "extract(epoch FROM statement_timestamp())::float8, extract(epoch FROM clock_timestamp())::float8"
            ).fetchone()
            assert head is not None
            rows = self._conn.execute(_CHANGED_ROWS, {"since": str(self._since)}).fetchall()
        xmin, started, seen = int(head[0]) % 2**32, float(head[1]), float(head[2])
        for kind, hub, text, changed_at, updated_at in rows:
            if kind == "s":
                key, _, value = text.rpartition("/")
            else:
                key, value = text, changed_at or ""
            first = (kind, hub, key, value if kind != "s" else f"{value}@{updated_at}")
            if first in self._firsts:
                continue  # already seen (the same version, or a restamp of it)
            self._firsts.add(first)
            self.sightings[(_KIND[kind], hub, key)].append(Sighting(seen, self._after, float(updated_at), value))
        self.reads += 1
        self.gaps.append(seen - self._after)
        self._since, self._after = xmin, started

    def stop(self) -> None:
        self._stopping.set()
        self.join(timeout=30)
        self._conn.close()


# --- consumer lag ------------------------------------------------------------------------------------------------


class LagSampler(threading.Thread):
    """Every ``every`` seconds: Kafka's end offsets of the topics minus the stored positions."""

    def __init__(self, url: str, kafka: str, topics: list[str], every: float) -> None:
        super().__init__(name="lag-sampler", daemon=True)
        import psycopg
        from confluent_kafka.admin import AdminClient

        from globalhub.protocol.kafka import KafkaSettings

        self._conn = psycopg.connect(url, autocommit=True)
        self._admin = AdminClient(KafkaSettings(bootstrap_servers=kafka).client_config())
        self._topics = topics
        self._every = every
        self._stopping = threading.Event()
        self.samples: list[tuple[float, int, int, int]] = []  # time, total lag, largest topic's lag, end offsets
        self.error: BaseException | None = None

    def sample(self) -> tuple[float, int, int, int]:
        from confluent_kafka import TopicPartition
        from confluent_kafka.admin import OffsetSpec  # type: ignore[attr-defined]

        at = time.time()
        latest = OffsetSpec.latest()  # type: ignore[no-untyped-call]
        futures = self._admin.list_offsets(
            {TopicPartition(topic, 0): latest for topic in self._topics}, request_timeout=10
        )
        ends = {tp.topic: future.result().offset for tp, future in futures.items()}
        stored: dict[str, int] = dict(
            self._conn.execute(
                "SELECT topic, next_offset FROM manager_consumedposition WHERE topic = ANY(%s) AND partition = 0",
                [self._topics],
            ).fetchall()
        )
        lags = [max(0, end - int(stored.get(topic, 0))) for topic, end in ends.items()]
        return at, sum(lags), max(lags, default=0), sum(ends.values())

    def run(self) -> None:
        try:
            while not self._stopping.is_set():
                started = time.monotonic()
                self.samples.append(self.sample())
                self._stopping.wait(max(0.0, self._every - (time.monotonic() - started)))
        except BaseException as error:
            self.error = error

    def stop(self) -> None:
        self._stopping.set()
        self.join(timeout=30)
        self._conn.close()


def lag_figures(samples: list[tuple[float, int, int, int]], start: float, end: float) -> dict[str, Any]:
    """The window's lag: first and last period's largest, flat or not, least-squares slope (records/s)."""
    window = [s for s in samples if start <= s[0] <= end]
    if len(window) < 3:
        return {"samples": len(window)}
    period = min(60.0, (end - start) / 3)
    first = [s[1] for s in window if s[0] < start + period]
    last = [s[1] for s in window if s[0] > end - period]
    xs = [s[0] - start for s in window]
    ys = [float(s[1]) for s in window]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var if var else 0.0
    produced = (window[-1][3] - window[0][3]) / max(window[-1][0] - window[0][0], 1e-9)
    return {
        "samples": len(window),
        "period_seconds": round(period, 1),
        "first_period_max": max(first, default=0),
        "last_period_max": max(last, default=0),
        "max": max(s[1] for s in window),
        "mean": round(my, 1),
        "max_one_topic": max(s[2] for s in window),
        "slope_records_per_second": round(slope, 3),
        "flat": max(last, default=0) <= max(max(first, default=0), produced),
        "records_produced_per_second": round(produced, 1),
        "series": [(round(s[0] - start, 1), s[1]) for s in window],
    }


# --- matching changes with rows ----------------------------------------------------------------------------------


@dataclass
class Matched:
    upper: list[float] = field(default_factory=list)  # seen - made
    lower: list[float] = field(default_factory=list)  # max(after, updated_at) - made
    superseded: int = 0
    unmatched: list[tuple[str, ...]] = field(default_factory=list)

    def add(self, made: float, sighting: Sighting, superseded: bool) -> None:
        self.upper.append(sighting.seen - made)
        self.lower.append(max(sighting.after, sighting.updated_at) - made)
        self.superseded += superseded

    def figures(self) -> dict[str, Any]:
        gaps = [u - low for u, low in zip(self.upper, self.lower, strict=True)]
        return {
            "measured": len(self.upper),
            "superseded": self.superseded,
            "unmatched": len(self.unmatched),
            "p50": r3(percentile(self.upper, 0.5)),
            "p99": r3(percentile(self.upper, 0.99)),
            "max": r3(max(self.upper, default=None) if self.upper else None),
            "lower_p50": r3(percentile(self.lower, 0.5)),
            "lower_p99": r3(percentile(self.lower, 0.99)),
            "lower_max": r3(max(self.lower) if self.lower else None),
            "bound_max": r3(max(gaps) if gaps else None),
        }


def read_change_log(paths: list[Path]) -> list[tuple[float, str, str, str, str, str]]:
    """Every logged change, sorted by time."""
    changes = []
    for path in paths:
        with path.open(newline="", encoding="utf-8") as file:
            for row in csv.DictReader(file):
                made = float(row["changed_at"])
                changes.append((made, row["hub"], row["type"], row["object_id"], row["cluster"], row["status"]))
    changes.sort()
    return changes


def match(
    changes: list[tuple[float, str, str, str, str, str]],
    sightings: dict[tuple[str, str, str], list[Sighting]],
    start: float,
    end: float,
) -> dict[str, Matched]:
    """Each change of the window with the first row version that reflects it (see the module docstring)."""
    by_type: dict[str, Matched] = defaultdict(Matched)
    pairs: dict[tuple[str, str, str], list[tuple[float, str]]] = defaultdict(list)  # compliance changes, per pair
    for made, hub, kind, object_id, cluster, status in changes:
        if kind == COMPLIANCE:
            pairs[(kind, hub, f"{object_id}/{cluster}")].append((made, status))
    for made, hub, kind, object_id, cluster, status in changes:
        if not start <= made <= end:
            continue
        if kind == COMPLIANCE:
            key = (kind, hub, f"{object_id}/{cluster}")
            found = _compliance_row(made, status, pairs[key], sightings.get(key, []))
        else:
            found = _object_row(made, sightings.get((kind, hub, object_id), []))
        if found is None:
            by_type[kind].unmatched.append((f"{made:.6f}", hub, kind, object_id, cluster, status))
        else:
            by_type[kind].add(made, *found)
    return by_type


def _object_row(made: float, seen: list[Sighting]) -> tuple[Sighting, bool] | None:
    """The first version whose changed-at is ``made`` or later (later: superseded)."""
    for sighting in seen:
        try:
            stamped = float(sighting.value)
        except ValueError:
            continue
        if stamped >= made:
            return sighting, stamped > made
    return None


def _compliance_row(
    made: float, status: str, pair: list[tuple[float, str]], seen: list[Sighting]
) -> tuple[Sighting, bool] | None:
    """The first version written after the change that holds its status or one of the next two changes'."""
    index = bisect.bisect_left(pair, (made, status))
    for sighting in seen:
        if sighting.updated_at < made:
            continue
        statuses = {s: i for i, (t, s) in enumerate(pair[index : index + 3]) if t <= sighting.updated_at}
        if sighting.value in statuses:
            return sighting, statuses[sighting.value] > 0
    return None


def total(by_type: dict[str, Matched]) -> Matched:
    every = Matched()
    for matched in by_type.values():
        every.upper += matched.upper
        every.lower += matched.lower
        every.superseded += matched.superseded
        every.unmatched += matched.unmatched
    return every


# --- the run -----------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:  # noqa: PLR0915 - one run, told in order
    args = parse_args(argv)
    stop_on_sigterm()
    names = Names.fresh("delta")
    log_dir = args.log_dir or Path("/tmp") / names.tag
    log_dir.mkdir(parents=True, exist_ok=True)
    scratch = Scratch.for_names(names)
    env = manager_env(names, scratch.db_url, args.redis_db, scratch.kafka)
    shape = Shape(args.clusters, args.policies, args.compliance)
    expected = (shape.clusters, shape.policies, shape.policies * shape.clusters_per_policy)
    change_log = log_dir / "changes.csv"
    f: dict[str, Any] = {
        "hubs": args.hubs,
        "per_hub": {"clusters": args.clusters, "policies": args.policies, "compliance": args.compliance},
        "changes_per_second": args.changes_per_second,
        "delta_interval": args.delta_interval,
        "heartbeat": args.heartbeat,
        "duration": args.duration,
        "poll": args.poll,
        "consumers": args.consumers,
        "fleet_processes": args.fleet_processes,
        "loadavg_before": Path("/proc/loadavg").read_text().split()[:3],
    }
    processes: list[Process] = []
    db: FleetDB | None = None
    watcher: RowWatcher | None = None
    sampler: LagSampler | None = None
    topics = names.topics(args.hubs)
    try:
        progress(f"scratch database {names.database}")
        scratch.create(env)
        progress(
            f"fleet: {args.hubs} hubs, {args.changes_per_second:g} changes/s, deltas every {args.delta_interval:g} s"
        )
        fleet = start_fleet(
            names,
            env,
            log_dir,
            hubs=args.hubs,
            shape=(args.clusters, args.policies, args.compliance),
            processes=args.fleet_processes,
            options=(
                *("--changes-per-second", str(args.changes_per_second), "--delta-interval", f"{args.delta_interval}s"),
                *("--heartbeat", f"{args.heartbeat}s", "--change-log", str(change_log)),
            ),
            timeout=args.timeout,
        )
        processes.append(fleet)
        db = FleetDB(scratch.db_url, args.hubs, expected)
        manager = manager_until_consistent(env, args.consumers, log_dir, db, args.timeout, processes)
        ports, started = manager.ports, manager.processes
        f["consistent_seconds"] = r3(manager.consistent_seconds)
        progress(f"every hub consistent after {f['consistent_seconds']} s; settling {args.settle:g} s")
        time.sleep(args.settle)

        sampler = LagSampler(scratch.db_url, scratch.kafka, topics, args.lag_every)
        watcher = RowWatcher(scratch.db_url, args.poll)
        before = consumer_figures(ports, started)
        start = time.time()
        watcher.start()
        sampler.start()
        progress(f"window: {args.duration:g} s")
        while time.time() < start + args.duration:
            time.sleep(1)
            for thread in (watcher, sampler):
                if thread.error is not None:
                    raise RuntimeError(f"{thread.name} failed") from thread.error
            if not all(process.is_running() for process in processes):
                raise RuntimeError("a process stopped: " + ", ".join(p.name for p in processes if not p.is_running()))
        end = start + args.duration
        after = consumer_figures(ports, started)
        progress(f"window over; reading for {args.drain:g} s more")
        time.sleep(args.drain)
        sampler.stop()
        watcher.stop()
        for process in [*started, fleet]:
            process.stop()  # the fleet closes its change logs
        processes.clear()
        logs = sorted(log_dir.glob("changes*.csv"))
        changes = read_change_log(logs)
        by_type = match(changes, watcher.sightings, start, end)
        every = total(by_type)
        made = sum(1 for change in changes if start <= change[0] <= end)
        f["changes_in_window"] = made
        f["latency"] = every.figures()
        f["latency_by_type"] = {kind: matched.figures() for kind, matched in sorted(by_type.items())}
        f["unmatched_examples"] = every.unmatched[:10]
        f["reads"] = {
            "count": watcher.reads,
            "p50_seconds": r3(percentile(watcher.read_seconds, 0.5)),
            "max_seconds": r3(max(watcher.read_seconds, default=0.0)),
            "max_gap_seconds": r3(max(watcher.gaps, default=0.0)),
        }
        f["lag"] = lag_figures(sampler.samples, start, end)
        f["consumer"] = [
            {
                "ingest_share_of_window": r3((a["ingest_seconds"] - b["ingest_seconds"]) / args.duration),
                "batches_in_window": (a["batches"] or 0) - (b["batches"] or 0),
                "records_in_window": (a["records"] or 0) - (b["records"] or 0),
                "peak_rss_mib": a["peak_rss_mib"],
            }
            for a, b in zip(after, before, strict=True)
        ]
        f["dead_letters"] = db.dead_letters()
        f["loadavg_after"] = Path("/proc/loadavg").read_text().split()[:3]
    finally:
        if watcher is not None and watcher.is_alive():
            watcher.stop()
        if sampler is not None and sampler.is_alive():
            sampler.stop()
        stop_all(processes)
        if db is not None:
            db.close()
        if not args.keep:
            scratch.clean(topics)
    say(args, f)
    return 0


def say(args: argparse.Namespace, f: dict[str, Any]) -> None:
    """The lines for a person, then the JSON line."""
    report = Report("fleet_delta", figures=f)
    latency = f["latency"]
    report.say(
        f"{args.hubs} hubs, {args.changes_per_second:g} changes/s, deltas every {args.delta_interval:g} s, "
        f"{args.duration:g} s window: {f['changes_in_window']} changes, {latency['measured']} measured "
        f"({latency['superseded']} superseded by a later change before their delta), {latency['unmatched']} unmatched"
    )
    report.say(
        f"change → row: p50 {latency['p50']} s, p99 {latency['p99']} s (target ≤ 1.5 s), max {latency['max']} s; "
        f"lower bounds {latency['lower_p50']} / {latency['lower_p99']} / {latency['lower_max']} s "
        f"(reads every {args.poll:g} s, largest gap {f['reads']['max_gap_seconds']} s)"
    )
    for kind, figures in f["latency_by_type"].items():
        report.say(
            f"  {kind}: {figures['measured']} changes, p50 {figures['p50']} p99 {figures['p99']} max {figures['max']}"
        )
    lag = f["lag"]
    if "max" in lag:
        report.say(
            f"consumer lag (records): first {lag['period_seconds']} s max {lag['first_period_max']}, last max "
            f"{lag['last_period_max']}, overall max {lag['max']}, mean {lag['mean']}, slope "
            f"{lag['slope_records_per_second']}/s: {'flat' if lag['flat'] else 'NOT flat'}; "
            f"{lag['records_produced_per_second']} records/s produced"
        )
    for index, consumer in enumerate(f["consumer"]):
        report.say(
            f"  consumer {index}: ingesting {consumer['ingest_share_of_window']:.0%} of the window, "
            f"{consumer['batches_in_window']} batches, {consumer['records_in_window']} records, "
            f"peak RSS {consumer['peak_rss_mib']} MiB"
        )
    report.say(
        f"dead letters: {f['dead_letters']}; load {' '.join(f['loadavg_before'])} → {' '.join(f['loadavg_after'])}"
    )
    report.emit()


if __name__ == "__main__":
    sys.exit(main())
