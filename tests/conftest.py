"""Shared fixtures. Services are real (see ``bin/stack``); a missing service fails the test, never skips it."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from confluent_kafka.admin import AdminClient

from agent_tasks.inventory import RedisInventory
from agent_tasks.kube.api import KubeApi
from globalhub.protocol.kafka import KafkaSettings
from tests.helpers import Process, database_url
from tests.kube import KubeStack, deployed_agent_rules


@pytest.fixture(scope="session")
def run_id() -> str:
    """Distinguishes this test run's topics, hubs and queues from any earlier run against the same services."""
    return uuid.uuid4().hex[:8]


@pytest.fixture(scope="session")
def kafka_settings() -> KafkaSettings:
    settings = KafkaSettings.from_env()
    admin = AdminClient(settings.client_config())
    try:
        admin.list_topics(timeout=15)
    except Exception as error:
        pytest.fail(f"Kafka at {settings.bootstrap_servers} is not reachable ({error}); start it with bin/stack up")
    return settings


@pytest.fixture(scope="session")
def redis_url() -> str:
    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:56379/0")
    try:
        redis.Redis.from_url(url, socket_connect_timeout=5).ping()
    except redis.RedisError as error:
        pytest.fail(f"Redis at {url} is not reachable ({error}); start it with bin/stack up")
    return url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def hub_name(run_id: str) -> str:
    """A hub name no other test (or earlier run) uses."""
    return f"hub-{run_id}-{uuid.uuid4().hex[:6]}"


@pytest.fixture
def inventory(redis_client: redis.Redis, hub_name: str) -> Iterator[RedisInventory]:
    """The test's hub's inventory in the real Redis; every key of the hub is deleted afterwards."""
    yield RedisInventory(redis_client, hub_name)
    keys = list(redis_client.scan_iter(match=f"gh:{hub_name}:*"))
    if keys:
        redis_client.delete(*keys)


@pytest.fixture
def status_prefix(run_id: str) -> str:
    """Status topics of this test only: ``t<run>-<test>-gh-status.<hub>``.

    Consumers subscribe to every topic with the prefix; other tests' topics would be read again (their stored
    positions go with the test database's flush), so no two tests share one.
    """
    return f"t{run_id}-{uuid.uuid4().hex[:6]}-gh-status."


@pytest.fixture
def process_env(
    hub_name: str, redis_url: str, status_prefix: str, kafka_settings: KafkaSettings, run_id: str
) -> dict[str, str]:
    """Environment for real manager and agent processes of one test: its hub, topics, group and database."""
    env = dict(os.environ)
    env.update(
        {
            "DATABASE_URL": database_url(),
            "HUB_NAME": hub_name,
            "REDIS_URL": redis_url,
            "KAFKA_BOOTSTRAP_SERVERS": kafka_settings.bootstrap_servers,
            "GH_STATUS_TOPIC_PREFIX": status_prefix,
            "GH_SPEC_TOPIC": f"t{run_id}-gh-spec-{hub_name}",
            "GH_CONSUMER_GROUP": f"test-{run_id}-{hub_name}",
            "GH_TOPIC_REFRESH_MS": "500",
            "GH_CONSUMER_METRICS_ADDR": "",  # many consumers at once: none serves its own metrics unless told
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[list[Process]]:
    """Processes a test starts; all are stopped after it, and the log of any that died early is printed."""
    started: list[Process] = []
    yield started
    failed = [p for p in started if not p.is_running()]
    for process in started:
        process.stop()
    for process in failed:
        print(f"--- {process.name} exited early; log:\n{process.log_text()[-5000:]}")


@pytest.fixture
def kube() -> Iterator[KubeStack]:
    """The local Kubernetes API server, running, empty, and granting the agent exactly its deployed ClusterRole.

    Left running and empty afterwards, for the next test (and the demo).
    """
    stack = KubeStack.from_env()
    stack.ensure_up()
    stack.grant_agent(deployed_agent_rules())
    stack.wipe()
    yield stack
    stack.ensure_up()
    stack.grant_agent(deployed_agent_rules())
    stack.wipe()


@pytest.fixture
def kube_api(kube: KubeStack) -> Iterator[KubeApi]:
    """A connection to the local API server with every right (the tests' own client)."""
    api = kube.admin()
    yield api
    api.close()
