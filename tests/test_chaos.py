"""Chaos on real processes (issue 11): each scenario breaks something, then waits for its documented bound and checks
every hub's inventory against the manager's rows with a checker that shares nothing with the ingest.

The checker reads the hub's inventory straight from Redis and turns each object into what the wire carries (the
agent's tweak and JSON encoding, SHA-256); it reads the manager's rows with plain SQL. Same ids, same payload digests,
same compliance rows, no duplicates.

The fleet: the manager's status consumer, Celery worker and beat (probe and outbox every second), and one hub's agent
(worker, beat, spec listener) with a 2 s heartbeat (so digests every 2 s). Scenarios here:

* the agent's worker killed with -9 (main and pool) in the middle of a resync, then started again;
* the agent's pool processes alone killed with -9 in the middle of a resync;
* the agent's queue list deleted while types wait;
* an inventory object changed behind the change stream, and a manager row edited by SQL.

Bounds are generous (they must hold at a third of normal speed): the lease is 10 s, a digest rides every heartbeat.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from django.db import connection
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from agent_tasks.inventory import Change, RedisInventory
from agent_tasks.resync_queue import ResyncQueue
from agent_tasks.simulate import cluster_changes, populate
from agent_tasks.types import tweak_cluster, tweak_policy
from tests.helpers import Process, celery_argv, start_agent, start_consumer, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

CLUSTER = "managedcluster"
POLICY = "policy.localspec"
COMPLIANCE = "policy.localcompliance"
STATUSES = {
    "compliantClusters": "compliant",
    "nonCompliantClusters": "non_compliant",
    "unknownComplianceClusters": "unknown",
    "pendingComplianceClusters": "pending",
}


# --- the independent checker ---------------------------------------------------------------------------------------


def _wire_digest(obj: dict[str, Any]) -> str:
    encoded = json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()
    return hashlib.sha256(encoded).hexdigest()[:32]


def _hub_objects(client: redis.Redis, hub: str, short: str, tweak: Any, id_of: Any) -> dict[str, str]:
    objects = {}
    for _, raw in client.hgetall(f"gh:{hub}:inv:{short}").items():
        obj = tweak(json.loads(raw), hub)
        objects[id_of(obj)] = _wire_digest(obj)
    return objects


def _claim_id(obj: dict[str, Any]) -> str:
    claims = obj.get("status", {}).get("clusterClaims", [])
    return str(next(c["value"] for c in claims if c["name"] == "id.k8s.io"))


def _manager_objects(hub: str, table: str, id_column: str) -> tuple[dict[str, str], list[str]]:
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {id_column}::text, encode(payload_digest, 'hex') FROM {table} "
            "WHERE leaf_hub_name = %s AND deleted_at IS NULL",
            [hub],
        )
        rows = cursor.fetchall()
        cursor.execute(
            f"SELECT {id_column}::text FROM {table} WHERE leaf_hub_name = %s GROUP BY 1 HAVING count(*) > 1", [hub]
        )
        duplicates = [row[0] for row in cursor.fetchall()]
    return dict(rows), duplicates


def differences(client: redis.Redis, hub: str) -> list[str]:
    """What differs between the hub's inventory and the manager's rows (empty: the copy is the hub's)."""
    found = []
    for short, table, id_column, tweak, id_of in (
        (CLUSTER, "manager_managedcluster", "cluster_id", tweak_cluster, _claim_id),
        (POLICY, "manager_localpolicy", "policy_id", tweak_policy, lambda obj: obj["metadata"]["uid"]),
    ):
        hub_has = _hub_objects(client, hub, short, tweak, id_of)
        manager_has, duplicates = _manager_objects(hub, table, id_column)
        missing = hub_has.keys() - manager_has.keys()
        extra = manager_has.keys() - hub_has.keys()
        different = [i for i in hub_has.keys() & manager_has.keys() if hub_has[i] != manager_has[i]]
        if missing or extra or different or duplicates:
            found.append(
                f"{short}: {len(missing)} missing, {len(extra)} extra, {len(different)} different, "
                f"{len(duplicates)} duplicated (e.g. {sorted(missing | extra)[:2] or different[:2] or duplicates[:2]})"
            )
    expected: set[tuple[str, str, str]] = set()
    for _, raw in client.hgetall(f"gh:{hub}:inv:{COMPLIANCE}").items():
        entry = json.loads(raw)
        for field, status in STATUSES.items():
            expected.update((entry["policyId"], cluster, status) for cluster in entry.get(field) or ())
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT policy_id::text, cluster_name, compliance FROM manager_localcompliance WHERE leaf_hub_name = %s",
            [hub],
        )
        rows = cursor.fetchall()
    if set(rows) != expected or len(rows) != len(set(rows)):
        found.append(f"compliance: {len(expected - set(rows))} missing, {len(set(rows) - expected)} extra")
    return found


def converged(client: redis.Redis, hub: str) -> bool:
    return not differences(client, hub)


# --- the fleet -----------------------------------------------------------------------------------------------------


@dataclass
class Fleet:
    hub: str
    env: dict[str, str]
    log_dir: Path
    redis: redis.Redis
    inventory: RedisInventory
    agent: list[Process]
    processes: list[Process]

    @property
    def worker(self) -> Process:
        return self.agent[0]

    def wait_converged(self, timeout: float, what: str) -> float:
        started = time.monotonic()
        try:
            wait_for(lambda: converged(self.redis, self.hub), timeout=timeout, what=what)
        except AssertionError as error:
            raise AssertionError(f"{error}; differences: {differences(self.redis, self.hub)}") from None
        return time.monotonic() - started

    def restart_agent(self, prefix: str) -> None:
        self.agent = start_agent(self.env, self.log_dir, prefix=prefix)
        self.processes.extend(self.agent)


@pytest.fixture
def fleet(
    process_env: dict[str, str], hub_name: str, redis_url: str, tmp_path: Path, processes: list[Process]
) -> Iterator[Fleet]:
    env = dict(process_env)
    env["GH_AGENT_INTERVALS"] = "managedhub.heartbeat=2s,managedcluster=1s,policy.localspec=1s"
    every_second, _ = IntervalSchedule.objects.get_or_create(every=1, period="seconds")
    PeriodicTask.objects.update_or_create(
        name="send resync requests",
        defaults={"task": "manager.send_resync_requests", "interval": every_second, "expire_seconds": 2},
    )
    client = redis.Redis.from_url(redis_url)
    inventory = RedisInventory(client, hub_name)
    populate(inventory, hub_name, clusters=3000, policies=20, clusters_per_policy=50, seed=12)
    processes.append(start_consumer(env, tmp_path))
    for name, argv in (
        ("manager-worker", ("-A", "globalhub", "worker", "-l", "info", "--concurrency", "1", "--without-gossip")),
        (
            "manager-beat",
            ("-A", "globalhub", "beat", "-l", "info", "--scheduler", "django_celery_beat.schedulers:DatabaseScheduler"),
        ),
    ):
        processes.append(Process(name, celery_argv(*argv), env, tmp_path))
    agent = start_agent(env, tmp_path, prefix="agent-1")
    processes.extend(agent)
    state = Fleet(hub_name, env, tmp_path, client, inventory, agent, processes)
    state.wait_converged(180, "the first full copy")
    yield state
    client.close()


def resync_started(fleet: Fleet, count: int) -> bool:
    return fleet.worker.log_text().count(f"resync of {CLUSTER} starts") >= count


def request_cluster_resync(fleet: Fleet) -> None:
    ResyncQueue(fleet.redis, fleet.hub).push([CLUSTER])


def pool_pids(worker: Process) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(worker.popen.pid)], check=False, capture_output=True, text=True).stdout
    return [int(pid) for pid in out.split()]


# --- scenarios -----------------------------------------------------------------------------------------------------


def test_the_agent_worker_killed_mid_resync_and_started_again_recovers_within_seconds(fleet: Fleet) -> None:
    before = fleet.worker.log_text().count(f"resync of {CLUSTER} starts")
    changes = cluster_changes(fleet.hub, 40, seed=12, start=10_000)
    request_cluster_resync(fleet)
    wait_for(lambda: resync_started(fleet, before + 1), timeout=60, what="the resync to start")
    for process in fleet.agent:
        process.kill()  # main and pool, SIGKILL: its leases and its popped type stay in Redis
    fleet.inventory.apply(CLUSTER, changes)  # the hub changes while its agent is down
    fleet.restart_agent("agent-2")

    took = fleet.wait_converged(60, "the copy after the restart (leases lapse within 10 s)")
    print(f"worker killed mid-resync: converged {took:.1f}s after the restart")


def test_the_pool_processes_alone_killed_mid_resync_lose_no_request(fleet: Fleet) -> None:
    fleet.inventory.apply(CLUSTER, cluster_changes(fleet.hub, 20_000, seed=13, start=20_000))  # a resync of seconds
    fleet.wait_converged(120, "23,000 clusters")
    before = fleet.worker.log_text().count(f"resync of {CLUSTER} starts")
    gone = sorted(fleet.inventory.ids(CLUSTER))[:5]
    fleet.inventory.apply(CLUSTER, [Change(object_id, None) for object_id in gone])
    request_cluster_resync(fleet)
    wait_for(lambda: resync_started(fleet, before + 1), timeout=60, what="the resync to start")
    for pid in pool_pids(fleet.worker):
        os.kill(pid, signal.SIGKILL)  # Celery's main process replaces them; the drain they ran is gone

    fleet.wait_converged(90, "the copy after the pool died")
    wait_for(lambda: resync_started(fleet, before + 2), timeout=60, what="the interrupted resync to run again")
    assert "was interrupted" in fleet.worker.log_text()  # put back at the head by a tick, once its lease lapsed
    assert fleet.worker.is_running()
    wait_for(lambda: not ResyncQueue(fleet.redis, fleet.hub).in_flight(), timeout=60, what="nothing left in flight")


def test_the_agents_queue_list_deleted_costs_a_tick(fleet: Fleet) -> None:
    queue = ResyncQueue(fleet.redis, fleet.hub)
    fleet.redis.set(f"gh:{fleet.hub}:agent:lock:drain", "a stuck drain", px=8000)  # hold the drain: types wait
    queue.push([CLUSTER, POLICY])
    fleet.redis.delete(f"gh:{fleet.hub}:resync:queue")  # lost; its index still says they wait
    gone = sorted(fleet.inventory.ids(CLUSTER))[:3]
    fleet.inventory.apply(CLUSTER, [Change(object_id, None) for object_id in gone], log_changes=False)

    wait_for(lambda: queue.repairs() > 0, timeout=30, what="the queue to repair itself")
    fleet.wait_converged(60, "the copy after the queue was lost")


def test_a_change_behind_the_stream_and_a_row_edited_by_sql_are_healed_within_a_digest_round(fleet: Fleet) -> None:
    victim = sorted(fleet.inventory.ids(CLUSTER))[0]
    obj = fleet.inventory.get(CLUSTER, victim)
    assert obj is not None
    obj["metadata"]["labels"] = {**obj["metadata"].get("labels", {}), "edited": "behind-the-stream"}
    fleet.inventory.apply(CLUSTER, [Change(victim, obj)], log_changes=False)
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE manager_localcompliance SET compliance = 'pending' WHERE leaf_hub_name = %s AND id = "
            "(SELECT min(id) FROM manager_localcompliance WHERE leaf_hub_name = %s AND compliance <> 'pending')",
            [fleet.hub, fleet.hub],
        )
        cursor.execute(
            "DELETE FROM manager_localpolicy WHERE id = (SELECT min(id) FROM manager_localpolicy "
            "WHERE leaf_hub_name = %s)",
            [fleet.hub],
        )
    assert not converged(fleet.redis, fleet.hub)

    took = fleet.wait_converged(60, "the copy after the hidden change and the SQL edits")
    print(f"hidden change and SQL edits healed in {took:.1f}s")


def test_the_checker_sees_what_it_must(fleet: Fleet) -> None:
    """The checker is not a test that cannot fail: each kind of difference shows."""
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE manager_managedcluster SET payload_digest = '\\x00' WHERE id = (SELECT min(id) FROM "
            "manager_managedcluster WHERE leaf_hub_name = %s)",
            [fleet.hub],
        )
    assert any("1 different" in line for line in differences(fleet.redis, fleet.hub))
    fleet.inventory.apply(CLUSTER, cluster_changes(fleet.hub, 1, seed=1, start=90_000), log_changes=False)
    assert any("1 missing" in line for line in differences(fleet.redis, fleet.hub))
