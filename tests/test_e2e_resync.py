"""End to end on real processes: agent worker -> Kafka -> ``consume_status`` -> PostgreSQL.

The simulator writes 1,000 clusters into a hub's inventory; a resync request reaches the agent's worker; the
manager's table then holds exactly those clusters. After 100 leave the inventory and another resync, exactly those
100 are soft-deleted.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery

from agent_tasks.inventory import Change, RedisInventory
from agent_tasks.resync_queue import ResyncQueue
from agent_tasks.types import tweak_cluster
from globalhub.manager.models import ManagedCluster, ResyncProgress
from globalhub.protocol.events import EventType
from tests.helpers import Process, start_agent, start_consumer, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

CLUSTER = EventType.MANAGED_CLUSTER.short


def request_resync(env: dict[str, str], short_type: str) -> None:
    """Ask the agent for a full resync through its Celery queue (the spec listener has its own tests)."""
    client = Celery(broker=env["REDIS_URL"])
    client.send_task("agent.resync", args=[short_type], queue=f"gh-agent.{env['HUB_NAME']}")
    client.close()


def expected_payloads(inventory: RedisInventory, hub: str) -> dict[str, dict[str, Any]]:
    import json

    return {object_id: tweak_cluster(json.loads(raw), hub) for object_id, raw in inventory.list_encoded(CLUSTER)}


def test_a_thousand_clusters_reach_the_manager_and_removed_ones_are_soft_deleted(
    process_env: dict[str, str], hub_name: str, redis_url: str, tmp_path: Path, processes: list[Process]
) -> None:
    from agent_tasks.simulate import cluster_changes

    # Only full resyncs in this test: delta sync would send the same changes another way.
    process_env["GH_AGENT_INTERVALS"] = "managedcluster=1h"
    inventory = RedisInventory(redis.Redis.from_url(redis_url), hub_name)
    processes.append(start_consumer(process_env, tmp_path))
    processes.extend(start_agent(process_env, tmp_path, listener=False))
    # The agent's start sends its (still empty) inventory: the manager then knows the hub, with no clusters.
    wait_for(
        lambda: ResyncProgress.objects.filter(hub_id=hub_name, outcome="completed").exists(),
        timeout=90,
        what="the startup resync of an empty inventory",
    )

    queue = ResyncQueue(redis.Redis.from_url(redis_url), hub_name)
    wait_for(lambda: queue.length() == 0, timeout=30, what="the startup resyncs to leave the queue")

    written = inventory.apply(CLUSTER, cluster_changes(hub_name, 1000, seed=7))
    assert written == 1000
    expected = expected_payloads(inventory, hub_name)
    requested = time.monotonic()
    request_resync(process_env, CLUSTER)

    def live_rows() -> dict[str, Any]:
        rows = ManagedCluster.objects.filter(hub_id=hub_name, deleted_at__isnull=True)
        return {str(cluster_id): payload for cluster_id, payload in rows.values_list("cluster_id", "payload")}

    wait_for(lambda: len(live_rows()) == 1000, timeout=60, what="1,000 live clusters in the manager")
    consistent = time.monotonic() - requested
    assert live_rows() == expected
    print(f"1,000-cluster resync: request -> DB consistent in {consistent * 1000:.0f} ms")

    removed = sorted(expected)[:100]
    inventory.apply(CLUSTER, [Change(object_id, None) for object_id in removed])
    request_resync(process_env, CLUSTER)
    wait_for(lambda: len(live_rows()) == 900, timeout=60, what="900 live clusters after removing 100")

    deleted = set(
        str(i)
        for i in ManagedCluster.objects.filter(hub_id=hub_name, deleted_at__isnull=False).values_list(
            "cluster_id", flat=True
        )
    )
    assert deleted == set(removed)
    assert live_rows() == {k: v for k, v in expected.items() if k not in set(removed)}
    for process in processes:
        assert process.is_running(), f"{process.name} died:\n{process.log_text()[-3000:]}"
