"""What the agent benchmarks share: unique names, the agent's real processes, /proc readings, clean-up.

Every run uses its own hub name, status-topic prefix and spec topic (``bench<random>``), a Redis database of its own
choosing, and the agent's real processes (``celery -A agent_tasks worker`` / ``beat``, ``python -m
agent_tasks.listen_spec``), each started in a new session so that its whole process group (the worker's pool
processes included) can be measured and stopped together. CPU time and memory come from ``/proc`` (no psutil).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis

from agent_tasks.resync_queue import ResyncQueue
from agent_tasks.types import RESYNC_ORDER
from agent_tasks.versions import VersionStore
from globalhub.protocol.kafka import KafkaSettings
from tests.helpers import Process, celery_argv, python_argv

CLK_TCK = os.sysconf("SC_CLK_TCK")
MAX_PAYLOAD = 800 * 1024  # DESIGN: no message over 800 KiB


# --- names and environment --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchNames:
    """One run's hub, topics and consumer groups: nothing another run or test uses."""

    tag: str
    hub: str

    @classmethod
    def fresh(cls, what: str) -> BenchNames:
        tag = f"bench{uuid.uuid4().hex[:6]}"
        return cls(tag, f"{tag}-{what}")

    @property
    def status_prefix(self) -> str:
        return f"{self.tag}-gh-status."

    @property
    def spec_topic(self) -> str:
        return f"{self.tag}-gh-spec"

    @property
    def status_topic(self) -> str:
        return self.status_prefix + self.hub


KAFKA_TROUBLE = re.compile(r"\|(FAIL|ERROR)\||Connection refused|DeliveryFailed|delivered; first problem")


def kafka_trouble(lines: list[str]) -> int:
    """Lines of a process log saying Kafka could not be reached (other sessions stop the shared broker at times)."""
    return sum(1 for line in lines if KAFKA_TROUBLE.search(line))


def redis_url_with_db(url: str, db: int) -> str:
    """The same Redis server, another database number."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, parts.fragment))


def agent_env(names: BenchNames, redis_url: str, kafka: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "HUB_NAME": names.hub,
            "REDIS_URL": redis_url,
            "KAFKA_BOOTSTRAP_SERVERS": kafka,
            "GH_STATUS_TOPIC_PREFIX": names.status_prefix,
            "GH_SPEC_TOPIC": names.spec_topic,
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra or {})
    return env


def default_redis_url() -> str:
    return os.environ.get("REDIS_URL", "redis://127.0.0.1:56379/0")


def default_kafka() -> str:
    return os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:59092")


# --- the agent's processes --------------------------------------------------------------------------------------

WORKER = "worker"
BEAT = "beat"
LISTENER = "listener"


def worker_argv(extra: list[str]) -> list[str]:
    return celery_argv("-A", "agent_tasks", "worker", "-l", "info", *extra)


def beat_argv() -> list[str]:
    return celery_argv("-A", "agent_tasks", "beat", "-l", "warning")


def listener_argv() -> list[str]:
    return python_argv("-m", "agent_tasks.listen_spec")


class AgentProcesses:
    """The agent's processes of one run, by kind; each the leader of its own process group."""

    def __init__(self, env: Mapping[str, str], log_dir: Path) -> None:
        self.env = dict(env)
        self.log_dir = log_dir
        self.processes: dict[str, Process] = {}

    def start(self, kind: str, argv: list[str]) -> Process:
        process = Process(kind, argv, self.env, self.log_dir)  # start_new_session=True: pid == process group id
        self.processes[kind] = process
        return process

    def pgid(self, kind: str) -> int:
        return self.processes[kind].popen.pid

    def check_running(self) -> None:
        dead = [p for p in self.processes.values() if not p.is_running()]
        if dead:
            tails = "\n".join(f"--- {p.name} exited ({p.popen.returncode}):\n{p.log_text()[-3000:]}" for p in dead)
            raise RuntimeError(f"agent process(es) exited early:\n{tails}")

    def stop_all(self) -> dict[str, int]:
        """SIGTERM to each process group (SIGKILL after 20 s); returns the exit codes."""
        return {kind: process.stop() for kind, process in self.processes.items()}


# --- /proc ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProcStat:
    pid: int
    comm: str
    ppid: int
    pgrp: int
    ticks: int  # utime + stime
    child_ticks: int  # cutime + cstime: children that exited and were waited for

    @property
    def total_ticks(self) -> int:
        return self.ticks + self.child_ticks


def read_stat(pid: int) -> ProcStat | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may contain spaces: split after the last ')'.
    head, _, rest = raw.rpartition(")")
    fields = rest.split()
    # fields[0] is field 3 (state): ppid=4, pgrp=5, utime=14, stime=15, cutime=16, cstime=17
    return ProcStat(
        pid=pid,
        comm=head.partition("(")[2],
        ppid=int(fields[1]),
        pgrp=int(fields[2]),
        ticks=int(fields[11]) + int(fields[12]),
        child_ticks=int(fields[13]) + int(fields[14]),
    )


def group_members(pgid: int) -> list[ProcStat]:
    """Every live process of a process group (the celery worker's pool processes share the leader's)."""
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = read_stat(int(entry))
            if stat is not None and stat.pgrp == pgid:
                members.append(stat)
    return sorted(members, key=lambda s: (s.pid != pgid, s.pid))


def status_kb(pid: int, name: str) -> int | None:
    """A ``kB`` field of /proc/<pid>/status (``VmRSS``, ``VmHWM``), None when the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(name + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def pss_kb(pid: int) -> int | None:
    """Proportional set size: pages shared with other processes (a forked pool) count in part; None when gone."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak_rss(pid: int) -> bool:
    """Set VmHWM back to the current RSS (``5 > clear_refs``, Linux >= 4.0; needs the right to write there)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def mib(kb: int | None) -> float | None:
    return None if kb is None else round(kb / 1024, 1)


class RssSampler:
    """Samples VmRSS of every process of some groups in a thread: each pid's maximum, and the largest sums of RSS
    and PSS over all the processes at one moment."""

    def __init__(self, pgids: list[int], interval: float = 0.1) -> None:
        self._pgids = pgids
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self.peak_kb: dict[int, int] = {}
        self.peak_total_rss_kb = 0
        self.peak_total_pss_kb = 0
        self.samples = 0

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            total_rss = total_pss = 0
            for pgid in self._pgids:
                for member in group_members(pgid):
                    rss = status_kb(member.pid, "VmRSS") or 0
                    total_rss += rss
                    total_pss += pss_kb(member.pid) or 0
                    self.peak_kb[member.pid] = max(rss, self.peak_kb.get(member.pid, 0))
            self.peak_total_rss_kb = max(self.peak_total_rss_kb, total_rss)
            self.peak_total_pss_kb = max(self.peak_total_pss_kb, total_pss)
            self.samples += 1
            self._stop.wait(self._interval)


# --- waiting for the agent --------------------------------------------------------------------------------------


def startup_done(client: redis.Redis, hub: str) -> bool:
    """The startup resyncs are over: nothing queued, no drain running, every resync type sent once (version >= 1.0)."""
    if ResyncQueue(client, hub).length() or client.exists(f"gh:{hub}:agent:lock:drain"):
        return False
    versions = VersionStore(client, hub).all()
    return all(name in versions and versions[name].generation >= 1 for name in RESYNC_ORDER)


def wait_until(
    condition: Callable[[], bool], *, timeout: float, what: str, check: Callable[[], None], interval: float = 0.2
) -> float:
    """Poll ``condition`` (and ``check``, which raises when something died); return the seconds it took."""
    started = time.monotonic()
    while not condition():
        check()
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)
    return time.monotonic() - started


class LogFollower:
    """Reads the lines a process appended to its log since the last call."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._partial = b""

    def skip_to_end(self) -> None:
        self._offset = self.path.stat().st_size if self.path.exists() else 0
        self._partial = b""

    def new_lines(self) -> list[str]:
        if not self.path.exists():
            return []
        with self.path.open("rb") as handle:
            handle.seek(self._offset)
            data = handle.read()
        self._offset += len(data)
        data = self._partial + data
        *complete, self._partial = data.split(b"\n")
        return [line.decode(errors="replace") for line in complete]


# --- Redis command sampling -------------------------------------------------------------------------------------

_MONITOR_LINE = re.compile(r'^[\d.]+ \[(\d+) [^\]]*\] "([^"]+)"')


def redis_commands(url: str, db: int, seconds: float) -> dict[str, int]:
    """Commands run on database ``db`` during ``seconds``, by name (Redis MONITOR; other databases ignored)."""
    counts: dict[str, int] = {}
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + seconds
    try:
        with client.monitor() as monitor:  # type: ignore[no-untyped-call]
            connection = monitor.connection
            assert connection is not None
            while time.monotonic() < deadline:
                if not connection.can_read(timeout=max(0.0, deadline - time.monotonic())):
                    continue
                raw = connection.read_response()
                line = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
                match = _MONITOR_LINE.match(line)
                if match and int(match.group(1)) == db:
                    name = match.group(2).upper()
                    counts[name] = counts.get(name, 0) + 1
    finally:
        client.close()
    return dict(sorted(counts.items(), key=lambda item: -item[1]))


# --- profiling --------------------------------------------------------------------------------------------------

PY_SPY_RATE = 100  # samples per second


class PySpy:
    """``py-spy record`` of a process and its children (collapsed stacks in a file); nothing without a binary.

    py-spy is not a project dependency: install it in a throwaway venv (``python -m venv /tmp/pyspy-venv &&
    /tmp/pyspy-venv/bin/pip install py-spy``) and pass its path. Idle threads are not sampled, so the samples are
    CPU time.
    """

    def __init__(self, binary: str | None, pid: int, out: Path) -> None:
        self.out = out
        self._popen: subprocess.Popen[bytes] | None = None
        if binary:
            argv = [binary, "record", "--pid", str(pid), "--subprocesses", "--format", "raw", "-o", str(out)]
            argv += ["--rate", str(PY_SPY_RATE), "--nonblocking"]
            self._popen = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> Path | None:
        if self._popen is None:
            return None
        self._popen.send_signal(signal.SIGINT)  # py-spy writes its output and exits
        try:
            self._popen.wait(60)
        except subprocess.TimeoutExpired:
            self._popen.kill()
            return None
        return self.out if self.out.exists() else None


def _short_frame(frame: str) -> str:
    return re.sub(r" \(/[^)]*/(site-packages/|python3\.\d+/|main/)?", " (", frame)


def _stacks(collapsed: Path) -> Iterator[tuple[list[str], int]]:
    for line in collapsed.read_text(errors="replace").splitlines():
        stack, _, samples = line.rpartition(" ")
        if stack and samples.isdigit():
            yield [_short_frame(frame) for frame in stack.split(";")], int(samples)


def top_frames(collapsed: Path, count: int = 15) -> tuple[int, list[tuple[str, float]]]:
    """Samples in all, and self time per function (line) as shares of them, from py-spy's collapsed stacks."""
    leaves: Counter[str] = Counter()
    for frames, samples in _stacks(collapsed):
        leaves[frames[-1]] += samples
    total = sum(leaves.values())
    return total, [(frame, round(100.0 * n / total, 1)) for frame, n in leaves.most_common(count)]


def project_functions(collapsed: Path, count: int = 12) -> list[tuple[str, float]]:
    """Inclusive time of the project's own functions (``agent_tasks``, ``globalhub``), as shares of all samples."""
    inclusive: Counter[str] = Counter()
    total = 0
    for frames, samples in _stacks(collapsed):
        total += samples
        names = {re.sub(r":\d+\)$", ")", f) for f in frames if "(agent_tasks/" in f or "(globalhub/" in f}
        for name in names:
            inclusive[name] += samples
    return [(name, round(100.0 * n / total, 1)) for name, n in inclusive.most_common(count)] if total else []


# --- clean-up ---------------------------------------------------------------------------------------------------

_KOMBU_SHARED = (
    "_kombu.binding.celeryev",
    "_kombu.binding.celery.pidbox",
    "_kombu.binding_deadlines",
    "unacked",
    "unacked_index",
    "unacked_mutex",
)


def cleanup_redis(client: redis.Redis, hub: str) -> int:
    """Delete the hub's keys (``gh:<hub>:*``) and its Celery queue; kombu's shared keys too if no other hub is here."""
    keys = list(client.scan_iter(match=f"gh:{hub}:*", count=1000))
    keys += list(client.scan_iter(match=f"gh-agent.{hub}*", count=1000))
    keys += list(client.scan_iter(match=f"_kombu.binding*.gh-agent.{hub}", count=1000))  # binding, binding_permanent
    deleted = 0
    for start in range(0, len(keys), 500):
        deleted += int(client.delete(*keys[start : start + 500]))
    others = any(True for _ in client.scan_iter(match="gh:*", count=1000))
    others = others or any(True for _ in client.scan_iter(match="_kombu.binding*.gh-agent.*", count=1000))
    if not others:
        deleted += int(client.delete(*_KOMBU_SHARED))
    return deleted


def delete_topics(kafka: str, topics: list[str]) -> list[str]:
    """Delete this run's topics; returns the ones that could not be deleted (with why)."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(KafkaSettings(bootstrap_servers=kafka).client_config())
    problems = []
    for name, future in admin.delete_topics(topics, operation_timeout=30).items():
        try:
            future.result(timeout=30)
        except Exception as error:
            if "UNKNOWN_TOPIC_OR_PART" not in str(error):  # never created (e.g. no listener ran)
                problems.append(f"{name}: {error}")
    return problems


# --- running and reporting --------------------------------------------------------------------------------------


def stop_on_sigterm() -> None:
    """SIGTERM ends the run through ``finally`` blocks (processes stopped, keys deleted), like Ctrl-C."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


@dataclass
class Report:
    """Lines for a person, then the figures as one JSON line (the last line of stdout)."""

    name: str
    lines: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)

    def say(self, line: str) -> None:
        print(line, flush=True)
        self.lines.append(line)

    def emit(self) -> None:
        """The JSON line, with the date and the machine's load (other sessions share its two cores)."""
        context: dict[str, Any] = {
            "bench": self.name,
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "loadavg": [round(value, 2) for value in os.getloadavg()],
        }
        print(json.dumps({**context, **self.figures}, sort_keys=True), flush=True)


def log_dir_for(names: BenchNames, given: str | None) -> Path:
    path = Path(given) if given else Path("/tmp") / names.tag
    path.mkdir(parents=True, exist_ok=True)
    return path


def progress(message: str) -> None:
    print(f"# {message}", file=sys.stderr, flush=True)


# --- the manager's side: a scratch database, Kafka's ends, a free port --------------------------------------------


def base_database_url() -> str:
    return os.environ.get("DATABASE_URL", "postgres://globalhub:globalhub@127.0.0.1:55432/globalhub")


def with_database(url: str, name: str) -> str:
    """The same PostgreSQL server, another database."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


def drop_database(base_url: str, name: str, *, wait: float = 30.0) -> None:
    """``DROP DATABASE IF EXISTS``, ending this user's sessions on it first.

    Not ``WITH (FORCE)``: that also terminates an autovacuum worker busy on the database, which only a superuser may
    do, so it fails now and then for a bench user. An autovacuum worker gives way to a plain drop within moments.
    """
    import psycopg

    deadline = time.monotonic() + wait
    with psycopg.connect(with_database(base_url, "postgres"), autocommit=True) as conn:
        while True:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND usename = current_user AND pid <> pg_backend_pid()",
                [name],
            )
            try:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
                return
            except psycopg.errors.ObjectInUse:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)


def admin_execute(base_url: str, statement: str) -> None:
    """One statement on the server's ``postgres`` database, outside a transaction (``CREATE``/``DROP DATABASE``)."""
    import psycopg

    with psycopg.connect(with_database(base_url, "postgres"), autocommit=True) as conn:
        conn.execute(statement)


def topic_ends(kafka: str, topic: str) -> dict[int, int]:
    """The high watermark (the offset the next message gets) of every partition of ``topic``."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {**KafkaSettings(bootstrap_servers=kafka).client_config(), "group.id": f"bench-wm-{uuid.uuid4().hex}"}
    )
    try:
        meta = consumer.list_topics(topic, timeout=10)
        partitions = sorted(meta.topics[topic].partitions) if topic in meta.topics else []
        return {p: int(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]) for p in partitions}
    finally:
        consumer.close()


def free_port() -> int:
    """A TCP port free on loopback right now (for a process's metrics endpoint)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def scrape_metrics(port: int) -> dict[str, float]:
    """A Prometheus endpoint's samples on loopback, by name and labels (``name{label="v"}``), values summed."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            name = f"{sample.name}{{{labels}}}" if labels else sample.name
            samples[name] = samples.get(name, 0.0) + sample.value
    return samples
