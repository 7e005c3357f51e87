"""Probe time for 1,000 hubs: how long one pass of the hub probe takes (target: ≤ 100 ms for a quiet fleet).

    .venv/bin/python bench/manager_probe.py [--hubs 1000] [--stale 10] [--clusters-per-hub 100] [--runs 20]

Creates a scratch database (dropped at the end unless ``--keep``), migrates it, writes the hubs (with
``--clusters-per-hub`` clusters each), then times in this process:

* a quiet pass: every hub heard recently, nothing changes (median and max of ``--runs`` passes);
* a pass in which ``--stale`` hubs went silent: each is made inactive and its rows soft-deleted;
* a pass in which those hubs are heard again: each is reactivated with its resync request written.
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
from datetime import timedelta
from pathlib import Path
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
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()

    print(json.dumps(in_scratch_database(run, args, keep=args.keep)))


def in_scratch_database(
    run: Callable[[argparse.Namespace], dict[str, float | int]], args: argparse.Namespace, *, keep: bool = False
) -> dict[str, float | int]:
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


def run(args: argparse.Namespace) -> dict[str, float | int]:
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection
    from django.utils import timezone

    from globalhub.manager import lifecycle
    from globalhub.manager.lifecycle import Timing
    from globalhub.manager.models import Hub, ManagedCluster

    call_command("migrate", verbosity=0)
    now = timezone.now()
    timing = Timing(timeout=timedelta(minutes=5), startup_grace=timedelta(0))
    Hub.objects.bulk_create([Hub(name=f"hub-{i:05d}", last_heartbeat=now) for i in range(args.hubs)])
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

    quiet = []
    for _ in range(args.runs):
        started = time.perf_counter()
        result = lifecycle.probe(now=now + timedelta(minutes=1), timing=timing, ends=read_to_the_end)
        quiet.append((time.perf_counter() - started) * 1000)
        assert not result.inactivated and not result.reactivated

    stale = [f"hub-{i:05d}" for i in range(args.stale)]
    Hub.objects.filter(name__in=stale).update(last_heartbeat=now - timedelta(minutes=10))
    started = time.perf_counter()
    result = lifecycle.probe(now=now, timing=timing, ends=read_to_the_end)
    inactivating = (time.perf_counter() - started) * 1000
    assert sorted(result.inactivated) == stale, result

    Hub.objects.filter(name__in=stale).update(last_heartbeat=now)
    started = time.perf_counter()
    result = lifecycle.probe(now=now, timing=timing)
    reactivating = (time.perf_counter() - started) * 1000
    assert sorted(result.reactivated) == stale, result

    figures: dict[str, float | int] = {
        "hubs": args.hubs,
        "clusters": len(clusters),
        "quiet_probe_ms_median": round(statistics.median(quiet), 2),
        "quiet_probe_ms_max": round(max(quiet), 2),
        "probe_with_inactivations_ms": round(inactivating, 1),
        "inactivated": args.stale,
        "probe_with_reactivations_ms": round(reactivating, 1),
    }
    print(
        f"{args.hubs} hubs, {len(clusters)} clusters: quiet probe median {figures['quiet_probe_ms_median']} ms "
        f"(max {figures['quiet_probe_ms_max']} ms over {args.runs}); with {args.stale} hubs going inactive "
        f"{figures['probe_with_inactivations_ms']} ms; "
        f"with them coming back {figures['probe_with_reactivations_ms']} ms"
    )
    return figures


if __name__ == "__main__":
    main()
