"""Probe time for a fleet: how long one pass of the hub probe takes (targets: ≤ 100 ms for 1,000 quiet hubs,
≤ 50 ms for 10,000).

    .venv/bin/python bench/manager_probe.py [--hubs 1000] [--stale 10] [--clusters-per-hub 100] [--runs 20]
        [--ends stub|positions|kafka] [--kafka-topics N]
    .venv/bin/python bench/manager_probe.py --hubs 10000 --stale 100 --clusters-per-hub 0 --ends positions

Creates a scratch database (dropped at the end unless ``--keep``), migrates it, writes the hubs (with
``--clusters-per-hub`` clusters each), then times in this process:

* a quiet pass: every hub heard recently, nothing changes (median and max of ``--runs`` passes);
* a pass in which ``--stale`` hubs went silent: each is made inactive and its rows soft-deleted;
* a pass in which those hubs are heard again: each is reactivated with its resync request written;
* one refresh of every hub topic's end (``lifecycle.refresh_topic_ends``, the consumer lag of ``/metrics``), which
  runs as its own task, apart from the probe.

Where the topics' ends come from (``--ends``):

* ``stub`` (the default, as the first figures): every topic is empty and has no stored position, so only the
  database's side is timed and no position is updated;
* ``positions``: every hub topic has a stored position (one partition) and the broker's answer is the stored
  position (read to the end): the database's side of a fleet whose consumer keeps up, with the lag refresh's one
  ``UPDATE`` of every position;
* ``kafka``: the running broker (``KAFKA_BOOTSTRAP_SERVERS``) is asked. ``--kafka-topics`` (default: every hub)
  topics ``<run>-gh-status.hub-NNNNN`` are created first (and deleted at the end), each with a stored position;
  the real ``topic_ends`` call is also timed alone for them. A single-node broker keeps an open file per partition,
  so mind its file limit before asking for 10,000.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def scratch_database(base_url: str) -> tuple[str, str, str]:
    parts = urlsplit(base_url)
    name = f"gh_bench_probe_{uuid.uuid4().hex[:8]}"
    admin = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return admin, name, urlunsplit(parts._replace(path=f"/{name}"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hubs", type=int, default=1000)
    parser.add_argument("--stale", type=int, default=10)
    parser.add_argument("--clusters-per-hub", type=int, default=100)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--ends", choices=["stub", "positions", "kafka"], default="stub")
    parser.add_argument("--kafka-topics", type=int, default=None, help="--ends kafka: topics to create (all hubs)")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()

    print(json.dumps(in_scratch_database(run, args, keep=args.keep)))


def in_scratch_database(
    run: Callable[[argparse.Namespace], dict[str, Any]], args: argparse.Namespace, *, keep: bool = False
) -> dict[str, Any]:
    """``run(args)`` with Django on a new database (dropped afterwards unless ``keep``); its figures."""
    base = os.environ.get("DATABASE_URL", "postgres://globalhub:globalhub@127.0.0.1:55432/globalhub")
    admin, name, url = scratch_database(base)
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "globalhub.settings")
    try:
        return run(args)
    finally:
        if not keep:
            from django.db import connections

            connections.close_all()
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def read_to_the_end(topics: Sequence[str]) -> Mapping[str, Mapping[int, int]]:
    """The broker's answer for topics with nothing in them: the database's side of the probe alone is timed (asking
    Kafka, one metadata request per pass and one ListOffsets request for the quiet hubs' topics, comes on top)."""
    return {topic: {} for topic in topics}


def topics_ready(topics: Sequence[str], within: float = 120.0) -> list[float]:
    """Wait until the broker reports every partition's end of these new topics; then time ``topic_ends`` for them
    three times with a new admin client each (ms), as the probe did before it kept one."""
    from globalhub.protocol.kafka import KafkaSettings, topic_ends

    kafka = KafkaSettings.from_env()
    deadline = time.monotonic() + within
    while True:
        ends = topic_ends(kafka, topics)
        if all(ends.get(topic) for topic in topics):
            break
        if time.monotonic() > deadline:
            raise SystemExit(f"{sum(1 for t in topics if not ends.get(t))} topics have no known end after {within} s")
        time.sleep(1)
    timings = []
    for _ in range(3):
        started = time.perf_counter()
        topic_ends(kafka, topics)
        timings.append((time.perf_counter() - started) * 1000)
    return timings


class Timed:
    """An ends function that notes how long each call took (ms)."""

    def __init__(self, ends: Callable[[Sequence[str]], Mapping[str, Mapping[int, int]]]) -> None:
        self.ends = ends
        self.calls: list[tuple[int, float]] = []  # (topics asked, ms)

    def __call__(self, topics: Sequence[str]) -> Mapping[str, Mapping[int, int]]:
        started = time.perf_counter()
        try:
            return self.ends(topics)
        finally:
            self.calls.append((len(topics), (time.perf_counter() - started) * 1000))


def stored_positions(topics: Sequence[str]) -> Mapping[str, Mapping[int, int]]:
    """The broker's answer when the consumer has read every topic to its end: the stored positions."""
    from globalhub.manager.models import ConsumedPosition

    ends: dict[str, dict[int, int]] = {topic: {} for topic in topics}
    for topic, partition, offset in ConsumedPosition.objects.filter(topic__in=topics).values_list(
        "topic", "partition", "next_offset"
    ):
        ends[topic][partition] = offset
    return ends


def run(args: argparse.Namespace) -> dict[str, Any]:
    import django

    django.setup()
    from django.core.management import call_command
    from django.utils import timezone

    from globalhub.manager import lifecycle
    from globalhub.manager.lifecycle import Timing
    from globalhub.manager.models import ConsumedPosition, Hub

    call_command("migrate", verbosity=0)
    now = timezone.now()
    prefix = "gh-status."
    created: list[str] = []
    kafka = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:59092")
    if args.ends == "kafka":
        prefix = f"probe{uuid.uuid4().hex[:6]}-gh-status."
    timing = Timing(timeout=timedelta(minutes=5), startup_grace=timedelta(0), topic_prefix=prefix)
    Hub.objects.bulk_create([Hub(name=f"hub-{i:05d}", last_heartbeat=now) for i in range(args.hubs)])
    ends: Callable[[Sequence[str]], Mapping[str, Mapping[int, int]]] = read_to_the_end
    if args.ends != "stub":
        ConsumedPosition.objects.bulk_create(
            [
                ConsumedPosition(
                    topic=f"{prefix}hub-{i:05d}", partition=0, next_offset=0 if args.ends == "kafka" else 1000
                )
                for i in range(args.hubs)
            ],
            batch_size=5000,
        )
        ends = stored_positions
    try:
        if args.ends == "kafka":
            from globalhub.protocol.kafka import STATUS_TOPIC_CONFIG, KafkaSettings, ensure_topics

            count = args.hubs if args.kafka_topics is None else args.kafka_topics
            created = [f"{prefix}hub-{i:05d}" for i in range(count)]
            started = time.perf_counter()
            for first in range(0, len(created), 500):
                ensure_topics(KafkaSettings(bootstrap_servers=kafka), created[first : first + 500], STATUS_TOPIC_CONFIG)
            print(f"created {len(created)} topics in {time.perf_counter() - started:.1f} s", file=sys.stderr)
            ends = lifecycle.broker_topic_ends
            fresh = topics_ready(created)
        figures = measure(args, now, timing, ends, created)
        if created:
            figures["topic_ends_new_client_ms_median"] = round(statistics.median(fresh), 1)
            print(
                f"topic_ends for {len(created)} topics with a new admin client each time: median "
                f"{figures['topic_ends_new_client_ms_median']} ms (of {len(fresh)})"
            )
        return figures
    finally:
        if created and not args.keep:
            from bench.common import delete_topics

            problems = delete_topics(kafka, created)
            print(f"deleted {len(created)} topics ({len(problems)} problems)", file=sys.stderr)


def measure(
    args: argparse.Namespace,
    now: datetime,
    timing: Any,
    source: Callable[[Sequence[str]], Mapping[str, Mapping[int, int]]],
    created: Sequence[str],
) -> dict[str, Any]:
    from django.db import connection

    from globalhub.manager import lifecycle
    from globalhub.manager.models import Hub, ManagedCluster

    clusters = [
        ManagedCluster(
            hub_id=f"hub-{i:05d}",
            cluster_id=uuid.uuid4(),
            cluster_name=f"c{j}",
            payload={"n": j},
            created_at=now,
            updated_at=now,
        )
        for i in range(args.hubs)
        for j in range(args.clusters_per_hub)
    ]
    ManagedCluster.objects.bulk_create(clusters, batch_size=5000)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")

    ends = Timed(source)
    quiet = []
    for _ in range(args.runs):
        started = time.perf_counter()
        result = lifecycle.probe(now=now + timedelta(minutes=1), timing=timing, ends=ends)
        quiet.append((time.perf_counter() - started) * 1000)
        assert not result.inactivated and not result.reactivated and not result.not_judged, result
    quiet_asked = [ms for _, ms in ends.calls]

    stale = [f"hub-{i:05d}" for i in range(args.stale)]
    Hub.objects.filter(name__in=stale).update(last_heartbeat=now - timedelta(minutes=10))
    ends.calls.clear()
    started = time.perf_counter()
    result = lifecycle.probe(now=now, timing=timing, ends=ends)
    inactivating = (time.perf_counter() - started) * 1000
    assert sorted(result.inactivated) == stale, result
    inactivating_asked = ends.calls[0][1] if ends.calls else 0.0

    Hub.objects.filter(name__in=stale).update(last_heartbeat=now)
    started = time.perf_counter()
    result = lifecycle.probe(now=now, timing=timing, ends=ends)
    reactivating = (time.perf_counter() - started) * 1000
    assert sorted(result.reactivated) == stale, result

    # The consumer lag's refresh (its own task): every hub topic's end asked, and stored with the positions.
    refreshes, refresh_asked, updated = [], [], 0
    for _ in range(max(1, args.runs // 4)):
        ends.calls.clear()
        started = time.perf_counter()
        updated = lifecycle.refresh_topic_ends(now=now, timing=timing, ends=ends)
        refreshes.append((time.perf_counter() - started) * 1000)
        refresh_asked.append(ends.calls[0][1])

    figures: dict[str, Any] = {
        "hubs": args.hubs,
        "clusters": len(clusters),
        "ends": args.ends,
        "quiet_probe_ms_median": round(statistics.median(quiet), 2),
        "quiet_probe_ms_max": round(max(quiet), 2),
        "quiet_probe_ends_ms_median": round(statistics.median(quiet_asked), 2) if quiet_asked else 0.0,
        "probe_with_inactivations_ms": round(inactivating, 1),
        "probe_with_inactivations_ends_ms": round(inactivating_asked, 1),
        "inactivated": args.stale,
        "probe_with_reactivations_ms": round(reactivating, 1),
        "topic_ends_refresh_ms_median": round(statistics.median(refreshes), 1) if refreshes else 0.0,
        "topic_ends_refresh_ms_max": round(max(refreshes), 1) if refreshes else 0.0,
        "topic_ends_refresh_asking_ms_median": round(statistics.median(refresh_asked), 1) if refreshes else 0.0,
        "topic_ends_positions_updated": updated,
        "kafka_topics": len(created),
    }
    print(
        f"{args.hubs} hubs, {len(clusters)} clusters, ends {args.ends}: quiet probe median "
        f"{figures['quiet_probe_ms_median']} ms (max {figures['quiet_probe_ms_max']} ms over {args.runs}; asking for "
        f"the ends {figures['quiet_probe_ends_ms_median']} ms of it); with {args.stale} hubs going inactive "
        f"{figures['probe_with_inactivations_ms']} ms; "
        f"with them coming back {figures['probe_with_reactivations_ms']} ms; refreshing every topic's end "
        f"{figures['topic_ends_refresh_ms_median']} ms (asking {figures['topic_ends_refresh_asking_ms_median']} ms; "
        f"{updated} positions updated)"
    )
    return figures


if __name__ == "__main__":
    main()
