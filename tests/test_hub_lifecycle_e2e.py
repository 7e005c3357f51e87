"""The hub lifecycle with real processes and shortened timeouts.

Manager (status consumer, Celery worker, Celery beat with its database schedules) and one hub's agent (worker,
beat, spec listener). The agent stops for longer than the timeout: the probe makes the hub inactive and its rows
are soft-deleted (compliance removed). The hub changes meanwhile. The agent comes back: its first fresh heartbeat
makes the hub active, a reactivation resync is requested, sent and completed, and the manager's copy equals the
hub's inventory again.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import redis
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from agent_tasks.inventory import Change, RedisInventory
from agent_tasks.simulate import cluster_changes, populate
from globalhub.manager.models import Hub, HubInfo, LocalCompliance, LocalPolicy, ManagedCluster, ResyncRequest
from tests.helpers import Process, start_agent, start_consumer, start_manager_celery, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def inventory_equals_copy(inventory: RedisInventory, hub: str) -> bool:
    clusters = set(
        ManagedCluster.objects.filter(hub_id=hub, deleted_at__isnull=True).values_list("cluster_id", flat=True)
    )
    if {str(c) for c in clusters} != inventory.ids("managedcluster"):
        return False
    policies = set(LocalPolicy.objects.filter(hub_id=hub, deleted_at__isnull=True).values_list("policy_id", flat=True))
    if {str(p) for p in policies} != inventory.ids("policy.localspec"):
        return False
    expected_rows: set[tuple[str, str]] = set()
    for _, raw in inventory.list_encoded("policy.localcompliance"):
        entry = json.loads(raw)
        for key in (
            "compliantClusters",
            "nonCompliantClusters",
            "unknownComplianceClusters",
            "pendingComplianceClusters",
        ):
            expected_rows.update((entry["policyId"], name) for name in entry.get(key, []))
    rows = {(str(p), c) for p, c in LocalCompliance.objects.filter(hub_id=hub).values_list("policy_id", "cluster_name")}
    return rows == expected_rows and HubInfo.objects.filter(hub_id=hub, deleted_at__isnull=True).exists()


def manager_processes(env: dict[str, str], log_dir: Path) -> list[Process]:
    return [start_consumer(env, log_dir), *start_manager_celery(env, log_dir)]


def test_a_hub_silent_beyond_the_timeout_is_cleaned_and_comes_back_whole(
    process_env: dict[str, str], hub_name: str, redis_url: str, tmp_path: Path, processes: list[Process]
) -> None:
    env = dict(process_env)
    env.update(
        {
            "GH_HUB_TIMEOUT": "8s",
            "GH_STARTUP_GRACE": "0s",
            "GH_AGENT_INTERVALS": "managedhub.heartbeat=2s",
        }
    )
    # The schedules migrate installs, with a 2-second probe. (Created here: transactional tests flush the tables.)
    two_seconds, _ = IntervalSchedule.objects.get_or_create(every=2, period="seconds")
    five_seconds, _ = IntervalSchedule.objects.get_or_create(every=5, period="seconds")
    PeriodicTask.objects.update_or_create(
        name="probe hubs", defaults={"task": "manager.probe_hubs", "interval": two_seconds, "expire_seconds": 2}
    )
    PeriodicTask.objects.update_or_create(
        name="send resync requests",
        defaults={"task": "manager.send_resync_requests", "interval": five_seconds, "expire_seconds": 4},
    )
    inventory = RedisInventory(redis.Redis.from_url(redis_url), hub_name)
    populate(inventory, hub_name, clusters=30, policies=5, clusters_per_policy=10, seed=3)

    processes.extend(manager_processes(env, tmp_path))
    agent = start_agent(env, tmp_path, prefix="agent-1")
    processes.extend(agent)
    wait_for(lambda: inventory_equals_copy(inventory, hub_name), timeout=90, what="the first full copy")
    assert Hub.objects.get(name=hub_name).state == "active"

    for process in agent:
        process.stop()
    stopped = time.monotonic()
    wait_for(lambda: Hub.objects.get(name=hub_name).state == "inactive", timeout=60, what="the hub to go inactive")
    went_inactive = time.monotonic() - stopped
    assert not ManagedCluster.objects.filter(hub_id=hub_name, deleted_at__isnull=True).exists()
    assert not LocalPolicy.objects.filter(hub_id=hub_name, deleted_at__isnull=True).exists()
    assert not LocalCompliance.objects.filter(hub_id=hub_name).exists()
    assert HubInfo.objects.get(hub_id=hub_name).deleted_at is not None

    # The hub keeps living while the manager cannot hear it: 4 clusters join, 3 leave.
    joined = cluster_changes(hub_name, 4, seed=3, start=500)
    gone = sorted(inventory.ids("managedcluster"))[:3]
    inventory.apply("managedcluster", [*joined, *(Change(cluster_id, None) for cluster_id in gone)])

    before = Hub.objects.get(name=hub_name).last_heartbeat
    processes.extend(start_agent(env, tmp_path, prefix="agent-2"))
    wait_for(lambda: Hub.objects.get(name=hub_name).last_heartbeat != before, timeout=60, what="a new heartbeat")
    returned = time.monotonic()
    wait_for(lambda: Hub.objects.get(name=hub_name).state == "active", timeout=30, what="the hub to be active")
    reactivation = wait_for(
        lambda: ResyncRequest.objects.filter(
            reason="reactivation", subject=hub_name, completed_at__isnull=False
        ).first(),
        timeout=60,
        what="the reactivation resync to be sent and answered",
    )
    wait_for(lambda: inventory_equals_copy(inventory, hub_name), timeout=60, what="the copy to equal the inventory")
    consistent = time.monotonic() - returned
    assert reactivation.sent_at is not None
    assert ResyncRequest.objects.filter(reason="reactivation", subject=hub_name).count() == 1
    print(
        f"inactive {went_inactive:.1f}s after the agent stopped (timeout 8s, probe every 2s); "
        f"first heartbeat seen -> data consistent in {consistent:.1f}s"
    )
    for process in processes:
        if process not in agent:  # the first agent was stopped on purpose
            assert process.is_running(), f"{process.name} died:\n{process.log_text()[-3000:]}"
