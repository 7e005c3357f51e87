"""Issue 14: the manager's ingest of a fleet's full states, in this process, with no Kafka and no agents.

    .venv/bin/python bench/fleet_ingest.py --hubs 1000 --clusters 100 --policies 10 --compliance 50

What the status consumer does during a broadcast, less the consuming: every hub's startup resync (built by the
fleet emulator, so by the agent's own ``Emitter``) becomes records of ``gh-status.<hub>``, interleaved as the
hubs' one-type-per-second drains interleave them (each type of every hub, then the next type), cut into the
consumer's batches (``--batch``, 500 records by default) and given to ``ingest_batch``. Two passes:

1. **first start**: the hubs are unknown and their tables empty (what a new manager sees);
2. **restart**: every hub sends its full state again (versions 0.0: an agent start), into full tables, mostly
   unchanged rows (what a manager restart's broadcast brings).

For each pass: wall time, rows per second, statements per hub and by kind (the first words of each SQL
statement, counted by Django's ``execute_wrapper``). A scratch database ``gh_bench_fleetingest_<time>`` is created
and dropped (``--keep`` keeps it). The last stdout line is the JSON of the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import drop_database
from bench.fleet.changes import Shape, seed_hub
from bench.fleet.hub import FleetHub
from globalhub.protocol.codec import OutgoingMessage
from globalhub.protocol.kafka import ConfirmedProducer

PREFIX = "gh-status."


class Collect(ConfirmedProducer):
    """Keeps what the hubs send, per topic, instead of sending it."""

    def __init__(self) -> None:  # no librdkafka client
        self.sent: dict[str, list[OutgoingMessage]] = {}

    def send(self, topic: str, messages: Iterable[OutgoingMessage], *, timeout: float | None = None) -> int:
        batch = list(messages)
        self.sent.setdefault(topic, []).extend(batch)
        return len(batch)


def build_fleet(hubs: int, shape: Shape, seed: int) -> tuple[list[FleetHub], Collect]:
    producer = Collect()
    fleet = []
    for index in range(hubs):
        name = f"fleet-{index:05d}"
        hub = FleetHub(name, PREFIX + name, producer)
        seed_hub(hub.inventory, name, shape, seed)
        fleet.append(hub)
    return fleet, producer


def startup_records(fleet: list[FleetHub], producer: Collect, offsets: dict[str, int]) -> list[Any]:
    """Every hub's startup resync, one type of every hub at a time (as their drains interleave)."""
    from globalhub.manager.ingest.records import Record

    for hub in fleet:
        hub.start()
    records: list[Record] = []
    while True:
        producer.sent.clear()
        for hub in fleet:
            hub.drain_one()
        if not producer.sent:
            return records
        for hub in fleet:
            for message in producer.sent.get(hub.topic, []):
                offset = offsets.get(hub.topic, 0)
                offsets[hub.topic] = offset + 1
                records.append(Record(hub.topic, 0, offset, message.key, message.value, tuple(message.headers)))


def statement_kind(sql: str) -> str:
    words = sql.split()
    head = " ".join(words[:3])[:60]
    for word in words[1:16]:
        if word.startswith(("manager_", "_stage")) and word not in head:
            return f"{head} … {word}"
    return head


def ingest_pass(records: list[Any], batch: int, counter: Counter[str], spent: dict[str, float]) -> float:
    from django.db import connection

    from globalhub.manager.ingest.pipeline import ingest_batch

    def count(execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any) -> Any:
        kind = statement_kind(sql)
        counter[kind] += 1
        began = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            spent[kind] = spent.get(kind, 0.0) + time.perf_counter() - began

    started = time.perf_counter()
    with connection.execute_wrapper(count):
        for at in range(0, len(records), batch):
            ingest_batch(records[at : at + batch], topic_prefix=PREFIX)
    return time.perf_counter() - started


def rows_now() -> dict[str, int]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT (SELECT count(*) FROM manager_managedcluster WHERE deleted_at IS NULL), "
            "(SELECT count(*) FROM manager_localpolicy WHERE deleted_at IS NULL), "
            "(SELECT count(*) FROM manager_localcompliance)"
        )
        clusters, policies, compliance = cursor.fetchone()
    return {"clusters": clusters, "policies": policies, "compliance": compliance}


@contextmanager
def scratch_database(name: str, *, keep: bool) -> Iterator[None]:
    """A new database, migrated, for this process's Django; dropped at the end unless ``keep``."""
    base = os.environ.get("DATABASE_URL", "postgres://globalhub:globalhub@127.0.0.1:55432/globalhub")
    parts = urlsplit(base)
    admin = urlunsplit((parts.scheme, parts.netloc, "/postgres", parts.query, parts.fragment))
    database = f"gh_bench_{name}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{database}"')
    os.environ["DATABASE_URL"] = urlunsplit((parts.scheme, parts.netloc, f"/{database}", parts.query, parts.fragment))
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    import django
    from django.core.management import call_command
    from django.db import connection

    django.setup()
    call_command("migrate", verbosity=0)
    try:
        yield
    finally:
        connection.close()
        if not keep:
            drop_database(base, database)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hubs", type=int, default=1000)
    parser.add_argument("--clusters", type=int, default=100)
    parser.add_argument("--policies", type=int, default=10)
    parser.add_argument("--compliance", type=int, default=50)
    parser.add_argument("--batch", type=int, default=500, help="records per ingest batch (the consumer's default)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--top", type=int, default=25, help="statement kinds shown per pass")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args(argv)

    shape = Shape(args.clusters, args.policies, args.compliance)
    with scratch_database(f"fleetingest_{int(time.time())}", keep=args.keep):
        fleet, producer = build_fleet(args.hubs, shape, args.seed)
        offsets: dict[str, int] = {}
        figures: dict[str, Any] = {"hubs": args.hubs, "shape": vars(args), "passes": {}}
        for name in ("first start", "restart"):
            records = startup_records(fleet, producer, offsets)
            counter: Counter[str] = Counter()
            spent: dict[str, float] = {}
            seconds = ingest_pass(records, args.batch, counter, spent)
            rows = rows_now()
            total_rows = sum(rows.values())
            statements = sum(counter.values())
            figures["passes"][name] = {
                "records": len(records),
                "seconds": round(seconds, 3),
                "rows": rows,
                "rows_per_s": round(total_rows / seconds),
                "statements": statements,
                "statements_per_hub": round(statements / args.hubs, 1),
                "statement_seconds": round(sum(spent.values()), 3),
                "by_kind": {kind: [n, round(spent[kind], 3)] for kind, n in counter.most_common()},
            }
            print(
                f"{name}: {len(records)} records, {total_rows} rows in {seconds:.2f} s "
                f"({total_rows / seconds:,.0f} rows/s), {statements / args.hubs:.1f} statements per hub, "
                f"{sum(spent.values()):.2f} s in statements",
                file=sys.stderr,
            )
            for kind, seconds_in in sorted(spent.items(), key=lambda item: -item[1])[: args.top]:
                print(f"  {counter[kind] / args.hubs:7.2f}/hub {seconds_in:6.3f} s  {kind}", file=sys.stderr)
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "globalhub.settings")
    raise SystemExit(main())
