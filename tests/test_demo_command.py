"""The README's main command, ``bin/demo``, brings up the manager and two simulated hubs whose data arrives."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from django.conf import settings

from tests.helpers import REPO

pytestmark = pytest.mark.e2e


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def scratch_database(run_id: str) -> Iterator[str]:
    """A database of its own, so the demo's migrations and data never mix with the tests' or a developer's."""
    db = settings.DATABASES["default"]
    server = f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST']}:{db['PORT']}"
    name = f"gh_demo_{run_id}"
    with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    yield f"{server}/{name}"
    with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def run_in_own_group(argv: list[str], env: dict[str, str], timeout: float) -> tuple[int, str]:
    """Run ``argv`` in a process group of its own; on a timeout the whole group is killed, so the demo's manager,
    workers and agents never outlive the test (``subprocess.run`` would kill only ``bin/demo`` itself)."""
    process = subprocess.Popen(
        argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"bin/demo --smoke did not finish in {timeout:.0f} s:\n{output[-5000:]}")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # anything the demo left behind
    return process.returncode, output


def test_the_demo_command_serves_the_admin_and_both_hubs_clusters_reach_the_manager(
    scratch_database: str, redis_url: str, run_id: str
) -> None:
    parts = urlsplit(redis_url)
    env = dict(os.environ)
    env.update(
        {
            "DATABASE_URL": scratch_database,
            "REDIS_URL": urlunsplit(parts._replace(path="/0")),
            "GH_WEB_PORT": str(free_port()),
            "GH_STATUS_TOPIC_PREFIX": f"t{run_id}-demo-gh-status.",
            "GH_DEMO_CLUSTERS": "50",
            "GH_DEMO_METRICS_BASE": "0",
            "GH_SPEC_TOPIC": f"t{run_id}-demo-gh-spec",
            "DJANGO_SUPERUSER_PASSWORD": "demo-test-password",
        }
    )
    returncode, output = run_in_own_group(["bin/demo", "--smoke"], env, timeout=300)
    assert returncode == 0, output[-5000:]
    assert (
        "demo smoke: 100 clusters from 2 hubs in the manager (hub1's read from the Kubernetes API server),"
        " admin login page answers 200"
    ) in output
    assert f"http://127.0.0.1:{env['GH_WEB_PORT']}/admin/" in output
    assert "password: demo-test-password" in output
