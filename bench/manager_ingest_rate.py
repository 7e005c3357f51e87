"""Manager ingest rate: ``ingest_batch`` over a big hub's full resync, against COPY and naive baselines.

    .venv/bin/python bench/manager_ingest_rate.py                # 10,000 clusters, 1,000 policies x 50 clusters
    .venv/bin/python bench/manager_ingest_rate.py --clusters 2000 --policies 200 --repeat 3 --profile

1. A scratch database, hub, topics and Redis database of this run only (``bench/manager_run.py``); the simulator's
   ``populate`` fills the hub's inventory.
2. **The records**: the agent's worker and beat run until their startup resyncs of the four types are sent (the
   agent's Redis says so: queue empty, no drain, every type at version >= 1.0; ``manager_ingest.py`` uses the
   records of its first measured resync instead). They are read back from Kafka as ``Record``s.
3. **Ingest rate**: the records go through ``ingest_batch`` in batches of 500 (as the consumer does), in this
   process, against the scratch database: into empty tables (the hub's rows and bookkeeping removed), then again
   into full tables (the rows aged, so the same data overwrites them as a newer resync would).
4. **COPY baseline**: the same rows (read back from the tables in COPY text format, every column the models give
   them, so pre-built in memory) are COPYed into the emptied tables (timed: COPY + commit), and, into full tables,
   staged (COPY into a temp table) and upserted on the tables' unique keys, an unchanged compliance row left as
   it is (as the ingest does); ratios ingest / baseline.
5. **Naive baseline**: Django ``update_or_create`` per row in autocommit (a transaction per row) for a sample
   (``--naive-clusters`` clusters, ``--naive-compliance`` compliance rows), into empty then full tables,
   extrapolated to all rows; the same sample with one plain ``INSERT ... ON CONFLICT`` + commit per row.
6. A short report and one JSON line (the last line of stdout). No assertion on timings; the verdicts against the
   targets use the median of the repeats.

Timings 3 and 4 run ``--repeat`` times (default 2) so the run's noise shows. ``--profile`` adds one untimed,
cProfiled ingest pass into empty tables and prints where its time goes. Processes are stopped, the database
dropped, the hub's Redis keys and the run's topics deleted, unless ``--keep``.
Targets (DESIGN "Performance targets"): ingest >= 25,000 rows/s; <= 3x COPY.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import cProfile
import io
import os
import pstats
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from statistics import median
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from bench.common import Report, progress, startup_done, stop_on_sigterm, topic_ends, wait_until
from bench.manager_run import (
    BATCH,
    TARGET_COPY_RATIO,
    TARGET_ROWS_PER_SECOND,
    Expected,
    ScratchHub,
    Tables,
    TableShape,
    add_hub_arguments,
    r3,
    read_records,
    record_figures,
    render_setup,
    spread,
    verdict,
)
from globalhub.manager.ingest.records import Record
from tests.helpers import start_agent


def add_ingest_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--repeat", type=int, default=2, help="runs of each ingest / COPY timing (default 2)")
    p.add_argument("--naive-clusters", type=int, default=2_000)
    p.add_argument("--naive-compliance", type=int, default=5_000)
    p.add_argument("--profile", action="store_true", help="one extra cProfiled ingest pass into empty tables")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_hub_arguments(p)
    add_ingest_arguments(p)
    return p.parse_args(argv)


# --- the records of the agent's startup resyncs -----------------------------------------------------------------


def startup_records(scratch: ScratchHub, args: argparse.Namespace, f: dict[str, Any]) -> tuple[list[Record], int]:
    """Run the agent's worker and beat until the startup resyncs are sent; their records, read back from Kafka."""
    names = scratch.names
    progress("starting the agent's worker and beat for their startup resyncs")
    scratch.processes.add(start_agent(scratch.env, scratch.log_dir, listener=False))
    f["startup_sent_seconds"] = r3(
        wait_until(
            lambda: startup_done(scratch.client, names.hub),
            timeout=args.startup_timeout,
            what="the agent's startup resyncs",
            check=scratch.processes.check,
            interval=0.5,
        )
    )
    end = topic_ends(scratch.kafka, names.status_topic)
    f["exit_codes"] = scratch.processes.stop()
    return read_records(scratch.kafka, names.status_topic, {}, end)


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

    shape: TableShape
    data: bytes
    rows: int

    @property
    def table(self) -> str:
        return self.shape.table


def dump_rows(db_url: str, tables: Tables) -> list[TableDump]:
    """What the ingest wrote, read back in COPY text format (so the baseline's data is pre-built in memory)."""
    dumps = []
    with psycopg.connect(db_url) as conn, conn.cursor() as cursor:
        for shape in tables.shapes.values():
            chunks = []
            query = sql.SQL("COPY (SELECT {} FROM {} WHERE leaf_hub_name = {}) TO STDOUT").format(
                sql.SQL(shape.column_list),
                sql.Identifier(shape.table),
                sql.Literal(tables.hub),
            )
            with cursor.copy(query) as copy:
                for chunk in copy:
                    chunks.append(bytes(chunk))
            data = b"".join(chunks)
            dumps.append(TableDump(shape, data, data.count(b"\n")))
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
                with cursor.copy(f"COPY {dump.table} ({dump.shape.column_list}) FROM STDIN") as copy:
                    for i in range(0, len(dump.data), COPY_CHUNK):
                        copy.write(dump.data[i : i + COPY_CHUNK])
                per_table[dump.table] = r3(time.perf_counter() - table_started)
        conn.commit()
        return time.perf_counter() - started, per_table


def upsert_statement(shape: TableShape, stage: str, tables: Tables) -> str:
    """``INSERT ... ON CONFLICT`` on the table's unique key, every other column but ``created_at`` overwritten;
    as the ingest, an unchanged compliance row is not rewritten."""
    updated = [c for c in shape.columns if c not in shape.key and c != "created_at"]
    assignments = ", ".join(f"{c} = EXCLUDED.{c}" for c in updated)
    unchanged = " WHERE t.compliance IS DISTINCT FROM EXCLUDED.compliance" if shape.table == tables.compliance else ""
    return (
        f"INSERT INTO {shape.table} AS t ({shape.column_list}) SELECT {shape.column_list} FROM {stage} "
        f"ON CONFLICT ({', '.join(shape.key)}) DO UPDATE SET {assignments}{unchanged}"
    )


def staged_upsert_into_full(db_url: str, tables: Tables, dumps: list[TableDump]) -> float:
    """Tables full (untimed VACUUM), then per table COPY into a temp table and one INSERT ... ON CONFLICT (timed)."""
    tables.vacuum()
    with psycopg.connect(db_url) as conn:
        with conn.cursor() as cursor:
            started = time.perf_counter()
            for index, dump in enumerate(dumps):
                stage = f"_bench_stage_{index}"
                columns = dump.shape.column_list
                cursor.execute(f"CREATE TEMP TABLE {stage} AS SELECT {columns} FROM {dump.table} WITH NO DATA")
                with cursor.copy(f"COPY {stage} ({columns}) FROM STDIN") as copy:
                    for i in range(0, len(dump.data), COPY_CHUNK):
                        copy.write(dump.data[i : i + COPY_CHUNK])
                cursor.execute(upsert_statement(dump.shape, stage, tables))
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
                f"INSERT INTO {tables.cluster} AS t (leaf_hub_name, cluster_id, cluster_name, payload, payload_digest, "
                "error, created_at, updated_at, deleted_at, resync_mark) "
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
                f"INSERT INTO {tables.compliance} AS t (leaf_hub_name, policy_id, cluster_name, compliance, error, "
                "updated_at) VALUES (%s, %s, %s, %s, 'none', now()) "
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


def run_ingest_rate(
    scratch: ScratchHub,
    tables: Tables,
    records: list[Record],
    others: int,
    args: argparse.Namespace,
    f: dict[str, Any],
) -> None:
    """Every in-process timing over ``records`` (a full resync of the four types); the figures go into ``f``."""
    names, db_url, expected = scratch.names, scratch.db_url, scratch.expected
    f.update(record_figures(records, others))
    progress(f"{len(records)} records ({f['records_bytes']} bytes) of a full resync; timing ingest_batch")
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
    f["dump_columns"] = {d.table: list(d.shape.columns) for d in dumps}
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
    f["ratio_empty_ingest_to_copy"] = [round(a.seconds / b, 2) for a, b in zip(ingest_empty, copy_empty, strict=True)]
    f["ratio_full_ingest_to_copy"] = [round(a.seconds / b, 2) for a, b in zip(ingest_full, copy_empty, strict=True)]
    f["ratio_full_ingest_to_staged_upsert"] = [
        round(a.seconds / b, 2) for a, b in zip(ingest_full, upsert_full, strict=True)
    ]
    f.setdefault("noise_spread", {}).update(
        {
            "ingest_empty": spread([p.seconds for p in ingest_empty]),
            "ingest_full": spread([p.seconds for p in ingest_full]),
            "copy_empty": spread(copy_empty),
            "staged_upsert_full": spread(upsert_full),
        }
    )

    if args.profile:
        progress("profiling one more ingest pass (untimed)")
        f["profile"] = profile_pass(records, names.status_prefix, tables, names.status_topic)

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


def render_ingest(report: Report, f: dict[str, Any], source: str) -> None:
    say = report.say
    say(
        f"records of {source}: {f['records']} ({f['records_bytes']} bytes) {f['records_by_type']}, "
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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stop_on_sigterm()
    scratch = ScratchHub(args)
    report = Report("manager_ingest_rate")
    f = report.figures
    try:
        tables = scratch.create(f)
        records, others = startup_records(scratch, args, f)
        run_ingest_rate(scratch, tables, records, others, args, f)
        f["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
        render_setup(report, f, "manager ingest rate")
        render_ingest(report, f, "the agent's startup resyncs")
    finally:
        scratch.close()
    report.emit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
