"""Test helpers: polling with a deadline, real subprocesses with captured logs, building status records."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from globalhub.manager.ingest.records import Record
from globalhub.protocol.bundles import Frame, dumps
from globalhub.protocol.codec import OutgoingMessage, encode
from globalhub.protocol.events import EXT_VERSION, EventType

REPO = Path(__file__).resolve().parent.parent
T = TypeVar("T")


def wait_for(condition: Callable[[], T | None], *, timeout: float, interval: float = 0.1, what: str = "condition") -> T:
    """Poll until ``condition()`` is truthy and return it; fail the test with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last = condition()
    while not last:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last value: {last!r})")
        time.sleep(interval)
        last = condition()
    return last


class Process:
    """A real globalhub process, its output in a log file, stopped with SIGTERM (then SIGKILL)."""

    def __init__(self, name: str, argv: list[str], env: Mapping[str, str], log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.popen = subprocess.Popen(
            argv, cwd=REPO, env=dict(env), stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def log_text(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def is_running(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 20.0) -> int:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(10)
        self._log.close()
        return int(self.popen.returncode)

    def kill(self) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(10)
        self._log.close()


def python_argv(*args: str) -> list[str]:
    return [sys.executable, *args]


def celery_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "celery", *args]


def database_url() -> str:
    """The URL of the database the tests use (pytest-django's test database), for processes the tests start."""
    from django.conf import settings

    db = settings.DATABASES["default"]
    return f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


def start_consumer(env: Mapping[str, str], log_dir: Path, name: str = "consumer") -> Process:
    """A status consumer; its own metrics are not served unless ``env`` sets GH_CONSUMER_METRICS_ADDR (tests start
    many consumers at once, which would compete for one port)."""
    return Process(name, python_argv("manage.py", "consume_status"), {"GH_CONSUMER_METRICS_ADDR": "", **env}, log_dir)


def start_manager_celery(env: Mapping[str, str], log_dir: Path, *, concurrency: int = 2) -> list[Process]:
    """The manager's Celery worker and beat (beat with the database scheduler, as deployed)."""
    worker = ("-A", "globalhub", "worker", "-l", "info", "--concurrency", str(concurrency), "--without-gossip")
    beat = ("-A", "globalhub", "beat", "-l", "info", "--scheduler", "django_celery_beat.schedulers:DatabaseScheduler")
    return [
        Process("manager-worker", celery_argv(*worker, "--without-mingle"), env, log_dir),
        Process("manager-beat", celery_argv(*beat), env, log_dir),
    ]


def start_agent(
    env: Mapping[str, str], log_dir: Path, *, listener: bool = True, prefix: str = "agent"
) -> list[Process]:
    """The agent's processes for the hub in ``env``: worker, beat and (optionally) the spec listener."""
    started = [
        Process(
            f"{prefix}-worker",
            celery_argv(
                "-A",
                "agent_tasks",
                "worker",
                "--without-heartbeat",
                "--without-gossip",
                "--without-mingle",
                "-l",
                "info",
            ),
            env,
            log_dir,
        ),
        Process(f"{prefix}-beat", celery_argv("-A", "agent_tasks", "beat", "-l", "warning"), env, log_dir),
    ]
    if listener:
        started.append(Process(f"{prefix}-listener", python_argv("-m", "agent_tasks.listen_spec"), env, log_dir))
    return started


def record_of(message: OutgoingMessage, topic: str, offset: int, partition: int = 0) -> Record:
    return Record(
        topic=topic,
        partition=partition,
        offset=offset,
        key=message.key,
        value=message.value,
        headers=tuple(message.headers),
    )


def status_message(
    hub: str,
    event_type: EventType,
    payload: Any,
    version: str = "1.1",
    extensions: Mapping[str, str | int] | None = None,
) -> OutgoingMessage:
    data = payload if isinstance(payload, bytes) else dumps(payload)
    ext: dict[str, str | int] = {EXT_VERSION: version}
    ext.update(extensions or {})
    return encode(event_type=event_type, source=hub, data=data, extensions=ext)


def frame_message(hub: str, frame: Frame, version: str = "1.1") -> OutgoingMessage:
    return status_message(hub, EventType.MANAGED_CLUSTER, frame.payload, version, frame.extensions())
