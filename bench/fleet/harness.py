"""What the fleet benchmarks share: a run's names, scratch database, fleet, manager processes, readings, clean-up.

``fleet_broadcast.py``, ``fleet_delta.py`` and ``fleet_discovery.py`` each run the manager's real processes
(``manage.py consume_status`` x N, the manager's Celery worker) against the fleet emulator (``python -m
bench.fleet``), on names of their own:

* a scratch database ``gh_bench_<tag>``, migrated (:func:`create_database`), dropped at the end;
* status topics ``<tag>-gh-status.<hub>`` and a spec topic ``<tag>-gh-spec``, deleted at the end;
* a Redis database of the run's choosing for the manager's Celery queue (``--redis-db``).

Everything is read from the database (:class:`FleetDB`, plain SQL: no Django in the benchmark's process), the
consumers' metrics endpoints (:func:`scrape`) and /proc (peak RSS). No log lines are read.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import (
    admin_execute,
    base_database_url,
    default_kafka,
    default_redis_url,
    delete_topics,
    drop_database,
    redis_url_with_db,
    status_kb,
    with_database,
)
from tests.helpers import REPO, Process, celery_argv, python_argv

# --- names and environment --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Names:
    """One run's database, topics and hub names: nothing another run uses."""

    tag: str

    @classmethod
    def fresh(cls, kind: str) -> Names:
        """``<kind><6 hex digits>``: ``kind`` says whose run it is (e.g. ``fleet``, ``delta``, ``disc``)."""
        return cls(f"{kind}{uuid.uuid4().hex[:6]}")

    @property
    def prefix(self) -> str:
        return f"{self.tag}-gh-status."

    @property
    def spec_topic(self) -> str:
        return f"{self.tag}-gh-spec"

    @property
    def database(self) -> str:
        return f"gh_bench_{self.tag}"

    @property
    def hub_prefix(self) -> str:
        """The fleet's hub names: ``<tag>-00000``…"""
        return f"{self.tag}-"

    def hub_names(self, hubs: int, hub_prefix: str | None = None) -> list[str]:
        """The names ``python -m bench.fleet --hubs <hubs> --hub-prefix <hub_prefix>`` gives its hubs."""
        width = max(5, len(str(hubs - 1)))
        prefix = self.hub_prefix if hub_prefix is None else hub_prefix
        return [f"{prefix}{index:0{width}d}" for index in range(hubs)]

    def topics(self, hubs: int, hub_prefix: str | None = None) -> list[str]:
        return [self.prefix + hub for hub in self.hub_names(hubs, hub_prefix)]


def manager_env(names: Names, db_url: str, redis_db: int, kafka: str, **extra: str) -> dict[str, str]:
    """The manager's processes' environment on the run's database, topics and Redis database."""
    return {
        **os.environ,
        "DATABASE_URL": db_url,
        "REDIS_URL": redis_url_with_db(default_redis_url(), redis_db),
        "KAFKA_BOOTSTRAP_SERVERS": kafka,
        "GH_STATUS_TOPIC_PREFIX": names.prefix,
        "GH_SPEC_TOPIC": names.spec_topic,
        "LOG_LEVEL": "INFO",
        # A manager start within the probe interval of the last one sends no new broadcast (many processes start at
        # once); the restart phase comes sooner than the default 2 min. No beat runs: no probe is scheduled.
        "GH_PROBE_INTERVAL": "5s",
        # As in production: DEBUG's cursor wrapper keeps every statement (CPU and memory in a long-lived consumer).
        "DJANGO_DEBUG": "false",
        "DJANGO_SECRET_KEY": uuid.uuid4().hex * 2,
        **extra,
    }


@dataclass
class Scratch:
    """A run's scratch database (created and migrated by :meth:`create`) and topics; :meth:`clean` removes both."""

    names: Names
    kafka: str
    base_url: str
    created: bool = False

    @classmethod
    def for_names(cls, names: Names) -> Scratch:
        return cls(names, default_kafka(), base_database_url())

    @property
    def db_url(self) -> str:
        return with_database(self.base_url, self.names.database)

    def create(self, env: dict[str, str]) -> None:
        """``CREATE DATABASE`` and ``manage.py migrate`` (with ``env``, which must name this database)."""
        admin_execute(self.base_url, f'CREATE DATABASE "{self.names.database}"')
        self.created = True
        subprocess.run(python_argv("manage.py", "migrate", "--noinput", "-v", "0"), cwd=REPO, env=env, check=True)

    def clean(self, topics: Sequence[str]) -> list[str]:
        """Drop the database and delete ``topics`` and the spec topic; the topics that could not be deleted."""
        drop_database(self.base_url, self.names.database)
        return delete_topics(self.kafka, [*topics, self.names.spec_topic])


# --- waiting and small readings -----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(check: Callable[[], bool], timeout: float, what: str, every: float = 0.5) -> float:
    """Poll ``check`` until true; the wall time it became true. Fails loudly after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return time.time()
        time.sleep(every)
    raise TimeoutError(f"{what}: not within {timeout:.0f} s")


def scrape(port: int) -> dict[str, float]:
    """A consumer endpoint's samples by name (labels dropped: these families have none of interest)."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if not sample.labels or (set(sample.labels) == {"le"} and sample.labels["le"] == "+Inf"):
                samples[sample.name] = samples.get(sample.name, 0.0) + sample.value
    return samples


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def r3(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


# --- the fleet and the manager's processes ------------------------------------------------------------------------


def fleet_process(
    names: Names,
    env: dict[str, str],
    log_dir: Path,
    *,
    hubs: int,
    shape: tuple[int, int, int],
    processes: int,
    options: Sequence[str] = (),
    name: str = "fleet",
    hub_prefix: str | None = None,
) -> Process:
    """``python -m bench.fleet`` on the run's topics, started (not waited for: see :func:`start_fleet`).

    ``shape`` is (clusters, policies, compliance rows) per hub; ``options`` go on the command line as they are.
    Each of its processes writes ``<log_dir>/<name>-ready.<index>`` once it listens for requests.
    """
    clusters, policies, compliance = shape
    return Process(
        name,
        python_argv(
            "-m",
            "bench.fleet",
            *("--hubs", str(hubs), "--clusters", str(clusters), "--policies", str(policies)),
            *("--compliance", str(compliance), "--processes", str(processes)),
            *("--prefix", names.prefix, "--spec-topic", names.spec_topic),
            *("--hub-prefix", names.hub_prefix if hub_prefix is None else hub_prefix),
            *options,
            *("--ready-file", str(log_dir / f"{name}-ready")),
        ),
        env,
        log_dir,
    )


def start_fleet(
    names: Names,
    env: dict[str, str],
    log_dir: Path,
    *,
    hubs: int,
    shape: tuple[int, int, int],
    processes: int,
    options: Sequence[str] = (),
    timeout: float = 600.0,
    name: str = "fleet",
    hub_prefix: str | None = None,
) -> Process:
    """:func:`fleet_process`, returned once every one of its processes listens for requests (stopped if it fails)."""
    ready = log_dir / f"{name}-ready"
    fleet = fleet_process(
        names,
        env,
        log_dir,
        hubs=hubs,
        shape=shape,
        processes=processes,
        options=options,
        name=name,
        hub_prefix=hub_prefix,
    )
    try:
        wait_for(
            lambda: (
                all(ready.with_name(f"{ready.name}.{i}").exists() for i in range(processes)) or not fleet.is_running()
            ),
            timeout,
            f"the fleet ({name}) to listen",
        )
        if not fleet.is_running():
            raise RuntimeError(f"the fleet ({name}) stopped:\n{fleet.log_text()[-3000:]}")
    except BaseException:
        fleet.stop()
        raise
    return fleet


def start_manager(env: dict[str, str], ports: list[int], log_dir: Path, phase: str) -> list[Process]:
    """The manager's Celery worker (it sends the requests) and the consumers, each serving its metrics."""
    worker = Process(f"{phase}-worker", celery_argv("-A", "globalhub", "worker", "-l", "info", "-c", "2"), env, log_dir)
    consumers = [
        Process(
            f"{phase}-consumer-{index}",
            python_argv("manage.py", "consume_status"),
            {**env, "GH_CONSUMER_METRICS_ADDR": f"127.0.0.1:{port}"},
            log_dir,
        )
        for index, port in enumerate(ports)
    ]
    return [worker, *consumers]


@dataclass
class RunningManager:
    """The manager's processes of a fleet benchmark, once every hub is consistent and no resync is owed."""

    ports: list[int]  # the consumers' metrics ports
    processes: list[Process]
    db: FleetDB
    consistent_seconds: float


def manager_until_consistent(
    env: dict[str, str], consumers: int, log_dir: Path, db: FleetDB, timeout: float, running: list[Process]
) -> RunningManager:
    """Start the worker and ``consumers`` consumers (added to ``running`` at once, for the caller to stop); return
    once every hub is consistent and every resync request is answered (the start's broadcast, first-seen ones)."""
    ports = [free_port() for _ in range(consumers)]
    processes = start_manager(env, ports, log_dir, "manager")
    running.extend(processes)
    began = time.time()
    wait_for(lambda: db.consistent_hubs() >= db.hubs, timeout, "every hub consistent")
    consistent = time.time() - began
    wait_for(lambda: db.open_requests() == 0, timeout, "no resync owed")
    return RunningManager(ports, processes, db, consistent)


def consumer_figures(ports: list[int], started: list[Process]) -> list[dict[str, Any]]:
    """Each consumer's batches and time spent ingesting (its metrics endpoint) and peak RSS (/proc).

    ``started`` is what :func:`start_manager` returned (the worker first).
    """
    figures = []
    for port, process in zip(ports, started[1:], strict=True):
        samples = scrape(port)
        figures.append(
            {
                "batches": samples.get("globalhub_ingest_batch_duration_seconds_count"),
                "ingest_seconds": r3(samples.get("globalhub_ingest_batch_duration_seconds_sum")),
                "records": samples.get("globalhub_consumer_records_read_total"),
                "peak_rss_mib": r3((status_kb(process.popen.pid, "VmHWM") or 0) / 1024),
            }
        )
    return figures


def stop_all(processes: list[Process]) -> None:
    """Stop the processes, the last started first."""
    for process in reversed(processes):
        process.stop()


# --- the manager's tables -----------------------------------------------------------------------------------------


_CONSISTENT = """
    WITH c AS (SELECT leaf_hub_name h, count(*) n FROM manager_managedcluster
               WHERE deleted_at IS NULL GROUP BY 1),
         p AS (SELECT leaf_hub_name h, count(*) n FROM manager_localpolicy
               WHERE deleted_at IS NULL GROUP BY 1),
         s AS (SELECT leaf_hub_name h, count(*) n FROM manager_localcompliance GROUP BY 1)
    SELECT {what} FROM manager_hub hub
    LEFT JOIN c ON c.h = hub.name LEFT JOIN p ON p.h = hub.name LEFT JOIN s ON s.h = hub.name
    WHERE coalesce(c.n, 0) = {clusters} AND coalesce(p.n, 0) = {policies}
      AND coalesce(s.n, 0) = {compliance}
"""


class FleetDB:
    """The manager's tables of the scratch database, read with plain SQL (no Django in this process).

    ``expected`` is what every hub holds: (clusters, policies, compliance rows).
    """

    def __init__(self, url: str, hubs: int, expected: tuple[int, int, int]) -> None:
        import psycopg

        self._conn = psycopg.connect(url, autocommit=True)
        self.hubs = hubs
        self.expected = expected

    def _one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        row = self._conn.execute(sql, params).fetchone()
        return None if row is None else row[0]

    def _consistent_sql(self, what: str) -> str:
        clusters, policies, compliance = self.expected
        return _CONSISTENT.format(what=what, clusters=clusters, policies=policies, compliance=compliance)

    def consistent_hubs(self) -> int:
        """Hubs whose live clusters, live policies and compliance rows are exactly the fleet's."""
        return int(self._one(self._consistent_sql("count(*)")) or 0)

    def consistent_names(self) -> set[str]:
        """The names of the hubs :meth:`consistent_hubs` counts."""
        return {row[0] for row in self._conn.execute(self._consistent_sql("hub.name")).fetchall()}

    def hub_known(self, name: str) -> bool:
        return bool(self._one("SELECT EXISTS (SELECT 1 FROM manager_hub WHERE name = %s)", [name]))

    def hub_created_at(self, name: str) -> float | None:
        """The hub row's ``created_at`` (epoch seconds): set in the transaction that created it, before its commit."""
        value = self._one("SELECT extract(epoch FROM created_at)::float8 FROM manager_hub WHERE name = %s", [name])
        return None if value is None else float(value)

    def hub_consistent(self, name: str) -> bool:
        """One hub's rows are exactly the fleet's (the same test as :meth:`consistent_hubs`, for one hub)."""
        clusters, policies, compliance = self.expected
        row = self._conn.execute(
            "SELECT (SELECT count(*) FROM manager_managedcluster WHERE leaf_hub_name = %s AND deleted_at IS NULL), "
            "(SELECT count(*) FROM manager_localpolicy WHERE leaf_hub_name = %s AND deleted_at IS NULL), "
            "(SELECT count(*) FROM manager_localcompliance WHERE leaf_hub_name = %s)",
            [name, name, name],
        ).fetchone()
        return row is not None and tuple(row) == (clusters, policies, compliance)

    def open_requests(self) -> int:
        """Resync requests whose answer is not complete yet (a hub still owes a full state)."""
        return int(self._one("SELECT count(*) FROM manager_resynctarget WHERE completed_at IS NULL") or 0)

    def rows(self) -> int:
        return int(
            self._one(
                "SELECT (SELECT count(*) FROM manager_managedcluster) + (SELECT count(*) FROM manager_localpolicy) "
                "+ (SELECT count(*) FROM manager_localcompliance)"
            )
        )

    def dead_letters(self) -> int:
        return int(self._one("SELECT count(*) FROM manager_deadletter"))

    def close(self) -> None:
        self._conn.close()
