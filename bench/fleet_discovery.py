"""Issue 14, benchmark 2: new hub discovery. A hub whose topic appears while the manager runs: first message → rows.

    .venv/bin/python bench/fleet_discovery.py --hubs 100 --new-hubs 5
    .venv/bin/python bench/fleet_discovery.py --hubs 100 --new-hubs 5 --topic-refresh-ms 1000    # the setting's effect

1. A scratch database ``gh_bench_<tag>``, topics ``<tag>-gh-status.<hub>`` and a Redis database of this run only
   (``bench/fleet/harness.py``; the tag starts with ``disc``).
2. A fleet of ``--hubs`` hubs, then ``consume_status`` and the manager's Celery worker; the run waits until every
   hub is consistent and no resync is owed.
3. ``--new-hubs`` times, one after the other, after a random pause of up to ``--pause`` seconds (so the new hubs
   fall at different points of the consumer's metadata refresh cycle): a new hub starts, alone in its own fleet
   process (``python -m bench.fleet --hubs 1``), as an agent does: it creates its topic, then queues its four types
   (startup resync) and sends one per second. Its topic is new to the running consumer, which subscribes by pattern
   (``^<prefix>[A-Za-z0-9._-]+$``) and notices new topics only when it refreshes its metadata.

Per new hub, from the **first message** (its broker time stamp: status topics use ``LogAppendTime``, offset 0 read
back from Kafka):

* **hub row**: the ``manager_hub`` row exists (the consumer ingested the topic's first batch: discovery, the group's
  rebalance, the batch);
* **consistent**: its clusters, policies and compliance rows are exactly the fleet's (target ≤ 10 s).

Both are read by polling the database every ``--poll`` seconds (0.1 s): each time is the end of the first read that
saw it, at most one poll interval plus one read late (the bound is reported). ``launched`` (the fleet process
started) and ``created_at`` of the hub row (set in the ingesting transaction, before its commit: a lower bound) are
given too. ``--topic-refresh-ms`` sets the consumer's ``GH_TOPIC_REFRESH_MS`` (librdkafka's
``topic.metadata.refresh.interval.ms``, 5 s by default); ``--consumer-env KEY=VALUE`` any other variable of the
manager's processes. The last stdout line is the JSON of every figure.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import Report, progress, stop_on_sigterm  # noqa: E402
from bench.fleet.changes import Shape  # noqa: E402
from bench.fleet.harness import (  # noqa: E402
    FleetDB,
    Names,
    Scratch,
    consumer_figures,
    fleet_process,
    manager_env,
    manager_until_consistent,
    r3,
    start_fleet,
    stop_all,
)
from tests.helpers import Process  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hubs", type=int, default=100, help="hubs running before the new ones")
    p.add_argument("--new-hubs", type=int, default=5, help="new hubs, started one after the other")
    p.add_argument("--clusters", type=int, default=100)
    p.add_argument("--policies", type=int, default=10)
    p.add_argument("--compliance", type=int, default=50, help="compliance rows per hub")
    p.add_argument("--changes-per-second", type=float, default=0.0, help="the running fleet's changes (load)")
    p.add_argument("--pause", type=float, default=6.0, help="up to this long (random) before each new hub")
    p.add_argument("--poll", type=float, default=0.1, help="how often the database is read for the new hub")
    p.add_argument("--wait", type=float, default=60.0, help="give up on a new hub after this long")
    p.add_argument("--topic-refresh-ms", type=int, help="GH_TOPIC_REFRESH_MS of the consumer (default: unset, 5 s)")
    p.add_argument("--consumer-env", action="append", default=[], help="KEY=VALUE for the manager's processes")
    p.add_argument("--consumers", type=int, default=1, help="consume_status processes in one group")
    p.add_argument("--fleet-processes", type=int, default=2)
    p.add_argument("--timeout", type=float, default=600.0, help="give up waiting for the running fleet")
    p.add_argument("--seed", type=int, default=1, help="of the pauses")
    p.add_argument("--redis-db", type=int, default=15, help="the manager's Celery broker database")
    p.add_argument("--log-dir", type=Path)
    p.add_argument("--keep", action="store_true", help="keep the database and the topics")
    return p.parse_args(argv)


def first_message_time(kafka: str, topic: str) -> float | None:
    """The broker time stamp (epoch seconds) of the topic's first message, read back from Kafka."""
    import uuid

    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    from globalhub.protocol.kafka import KafkaSettings

    config = KafkaSettings(bootstrap_servers=kafka).client_config()
    config.update({"group.id": f"disc-probe-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False})
    consumer = Consumer(config)
    try:
        consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                _, milliseconds = message.timestamp()
                return float(milliseconds) / 1000
        return None
    finally:
        consumer.close()


class NewHub:
    """One new hub: its fleet process, and what the database showed when."""

    def __init__(self, names: Names, index: int) -> None:
        self.index = index
        self.prefix = f"{names.tag}-new{index}-"
        self.name = names.hub_names(1, self.prefix)[0]
        self.topic = names.prefix + self.name
        self.launched = 0.0
        self.row_at: float | None = None
        self.consistent_at: float | None = None
        self.largest_gap = 0.0  # the longest a read took, plus the pause before it: the times' error bound

    def watch(self, db: FleetDB, poll: float, wait: float) -> None:
        """Read the database every ``poll`` seconds until the hub is consistent, or ``wait`` has passed."""
        last = time.time()
        while time.time() < self.launched + wait:
            if self.row_at is None and db.hub_known(self.name):
                self.row_at = time.time()
            if self.row_at is not None and db.hub_consistent(self.name):
                self.consistent_at = time.time()
            now = time.time()
            self.largest_gap = max(self.largest_gap, now - last)
            last = now
            if self.consistent_at is not None:
                return
            time.sleep(poll)


def main(argv: list[str] | None = None) -> int:  # noqa: PLR0915 - one run, told in order
    args = parse_args(argv)
    stop_on_sigterm()
    names = Names.fresh("disc")
    log_dir = args.log_dir or Path("/tmp") / names.tag
    log_dir.mkdir(parents=True, exist_ok=True)
    scratch = Scratch.for_names(names)
    extra = dict(item.split("=", 1) for item in args.consumer_env)
    if args.topic_refresh_ms is not None:
        extra["GH_TOPIC_REFRESH_MS"] = str(args.topic_refresh_ms)
    env = manager_env(names, scratch.db_url, args.redis_db, scratch.kafka, **extra)
    shape = Shape(args.clusters, args.policies, args.compliance)
    expected = (shape.clusters, shape.policies, shape.policies * shape.clusters_per_policy)
    rng = random.Random(args.seed)
    f: dict[str, Any] = {
        "hubs": args.hubs,
        "new_hubs": args.new_hubs,
        "per_hub": {"clusters": args.clusters, "policies": args.policies, "compliance": args.compliance},
        "changes_per_second": args.changes_per_second,
        "manager_env": extra,
        "loadavg_before": Path("/proc/loadavg").read_text().split()[:3],
    }
    shape_tuple = (args.clusters, args.policies, args.compliance)
    processes: list[Process] = []
    db: FleetDB | None = None
    new: list[NewHub] = []
    try:
        progress(f"scratch database {names.database}")
        scratch.create(env)
        progress(f"fleet: {args.hubs} hubs; then the manager")
        options = ["--changes-per-second", str(args.changes_per_second)] if args.changes_per_second else []
        processes.append(
            start_fleet(
                names,
                env,
                log_dir,
                hubs=args.hubs,
                shape=shape_tuple,
                processes=args.fleet_processes,
                options=options,
                timeout=args.timeout,
            )
        )
        db = FleetDB(scratch.db_url, args.hubs, expected)
        manager = manager_until_consistent(env, args.consumers, log_dir, db, args.timeout, processes)
        ports, started = manager.ports, manager.processes
        f["consistent_seconds"] = r3(manager.consistent_seconds)
        progress(f"{args.hubs} hubs consistent after {f['consistent_seconds']} s")
        for index in range(args.new_hubs):
            time.sleep(rng.uniform(0, args.pause))
            hub = NewHub(names, index)
            new.append(hub)
            hub.launched = time.time()
            process = fleet_process(
                names, env, log_dir, hubs=1, shape=shape_tuple, processes=1, name=f"new{index}", hub_prefix=hub.prefix
            )
            processes.append(process)  # stopped once it is measured
            hub.watch(db, args.poll, args.wait)
            progress(
                f"new hub {hub.name}: row after {r3(hub.row_at and hub.row_at - hub.launched)} s, consistent after "
                f"{r3(hub.consistent_at and hub.consistent_at - hub.launched)} s (from its process's start)"
            )
            process.stop()
            processes.remove(process)
        f["consumer"] = consumer_figures(ports, started)
        f["dead_letters"] = db.dead_letters()
        f["new"] = [figures(hub, db, scratch.kafka) for hub in new]
        f["loadavg_after"] = Path("/proc/loadavg").read_text().split()[:3]
    finally:
        stop_all(processes)
        if not args.keep:
            scratch.clean(names.topics(args.hubs) + [hub.topic for hub in new])
        if db is not None:
            db.close()
    say(args, f)
    return 0


def figures(hub: NewHub, db: FleetDB, kafka: str) -> dict[str, Any]:
    first = first_message_time(kafka, hub.topic)
    created = db.hub_created_at(hub.name)

    def since(at: float | None, origin: float | None) -> float | None:
        return None if at is None or origin is None else r3(at - origin)

    return {
        "hub": hub.name,
        "launched_to_first_message": since(first, hub.launched),
        "first_message_to_row": since(hub.row_at, first),
        "first_message_to_row_lower": since(created, first),
        "first_message_to_consistent": since(hub.consistent_at, first),
        "bound": r3(hub.largest_gap),
    }


def say(args: argparse.Namespace, f: dict[str, Any]) -> None:
    report = Report("fleet_discovery", figures=f)
    report.say(
        f"{args.hubs} hubs running, consistent; {args.new_hubs} new hubs one after the other "
        f"(manager env: {f['manager_env'] or 'defaults'})"
    )
    for hub in f["new"]:
        report.say(
            f"  {hub['hub']}: first message → hub row {hub['first_message_to_row']} s "
            f"(created_at {hub['first_message_to_row_lower']} s), → consistent {hub['first_message_to_consistent']} s; "
            f"process start → first message {hub['launched_to_first_message']} s; reads ≤ {hub['bound']} s apart"
        )
    rows = [hub["first_message_to_row"] for hub in f["new"] if hub["first_message_to_row"] is not None]
    done = [hub["first_message_to_consistent"] for hub in f["new"] if hub["first_message_to_consistent"] is not None]
    f["max_first_message_to_row"] = max(rows, default=None)
    f["max_first_message_to_consistent"] = max(done, default=None)
    report.say(
        f"max: first message → hub row {f['max_first_message_to_row']} s, → consistent "
        f"{f['max_first_message_to_consistent']} s (target ≤ 10 s); {len(done)} of {len(f['new'])} consistent"
    )
    report.say(
        f"dead letters: {f['dead_letters']}; load {' '.join(f['loadavg_before'])} → {' '.join(f['loadavg_after'])}"
    )
    report.emit()


if __name__ == "__main__":
    sys.exit(main())
