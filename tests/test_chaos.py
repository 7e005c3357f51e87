"""Chaos on real processes (issue 11): each scenario breaks something, then waits for its documented bound and checks
every hub's inventory against the manager's rows with a checker that shares nothing with the ingest.

The checker reads the hub's inventory straight from Redis and turns each object into what the wire carries (the
agent's tweak and JSON encoding, SHA-256); it reads the manager's rows with plain SQL. Same ids, same payload digests,
same compliance rows, no duplicates.

The fleet: the manager's status consumer, Celery worker and beat (outbox every second, probe every 2 s), and one
hub's agent (worker, beat, spec listener) with a 2 s heartbeat (so digests every 2 s). Scenarios here:

* the agent's worker killed with -9 (main and pool) in the middle of a resync, then started again;
* the agent's pool processes alone killed with -9 in the middle of a resync;
* the agent's queue list deleted while types wait;
* an inventory object changed behind the change stream, and a manager row edited by SQL;
* the status consumer killed with -9 ten times during a 20,000-cluster resync;
* Kafka down for longer than a shortened hub timeout, then back;
* PostgreSQL restarted while the hub changes;
* a hub offline past the timeout (made inactive), then back;
* a poisoned version (999.1) carrying a ghost cluster;
* the hub's wall clock stepped six minutes back (tests/clockshift), then its agent restarted under it.

Bounds are generous (they must hold at a third of normal speed): the lease is 10 s, a digest rides every heartbeat.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import redis
from django.db import InterfaceError, OperationalError, connection
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from agent_tasks.inventory import Change, RedisInventory
from agent_tasks.resync_queue import ResyncQueue
from agent_tasks.simulate import cluster_changes, populate
from agent_tasks.types import tweak_cluster, tweak_policy
from globalhub.manager.models import DeadLetter, Divergence, Hub
from globalhub.protocol.events import EventType
from globalhub.protocol.kafka import ConfirmedProducer, KafkaSettings
from tests.helpers import REPO, Process, start_agent, start_consumer, start_manager_celery, status_message, wait_for

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
    consumer: Process
    agent: list[Process]
    processes: list[Process]
    agent_env: dict[str, str]

    @property
    def worker(self) -> Process:
        return self.agent[0]

    def wait_converged(self, timeout: float, what: str) -> float:
        started = time.monotonic()
        try:
            wait_for(lambda: _converged_tolerating_outages(self), timeout=timeout, what=what)
        except AssertionError as error:
            raise AssertionError(f"{error}; differences: {differences(self.redis, self.hub)}") from None
        return time.monotonic() - started

    def restart_agent(self, prefix: str) -> None:
        self.agent = start_agent(self.agent_env, self.log_dir, prefix=prefix)
        self.processes.extend(self.agent)

    def stop_agent(self) -> None:
        for process in self.agent:
            process.stop()

    def restart_consumer(self, name: str) -> Process:
        self.consumer = start_consumer(self.env, self.log_dir, name=name)
        self.processes.append(self.consumer)
        return self.consumer

    def hub_row(self) -> Hub:
        return Hub.objects.get(name=self.hub)


def _converged_tolerating_outages(fleet: Fleet) -> bool:
    try:
        return converged(fleet.redis, fleet.hub)
    except (OperationalError, InterfaceError):
        connection.close()  # our own connection died with a restarted server; the next poll reconnects
        return False


def _every_second(task: str, name: str, every: int = 1) -> None:
    interval, _ = IntervalSchedule.objects.get_or_create(every=every, period="seconds")
    PeriodicTask.objects.update_or_create(
        name=name, defaults={"task": task, "interval": interval, "expire_seconds": every + 1}
    )


StartFleet = Callable[..., Fleet]


@pytest.fixture
def start_fleet(
    process_env: dict[str, str], hub_name: str, redis_url: str, tmp_path: Path, processes: list[Process]
) -> Iterator[StartFleet]:
    """Starts the fleet: ``env`` for every process, ``agent_env`` for the agent's alone, ``clusters`` on the hub."""
    clients: list[redis.Redis] = []

    def start(
        *, env: dict[str, str] | None = None, agent_env: dict[str, str] | None = None, clusters: int = 3000
    ) -> Fleet:
        manager_env = dict(process_env)
        manager_env["GH_AGENT_INTERVALS"] = "managedhub.heartbeat=2s,managedcluster=1s,policy.localspec=1s"
        manager_env.update(env or {})
        _every_second("manager.send_resync_requests", "send resync requests")
        _every_second("manager.probe_hubs", "probe hubs", every=2)
        client = redis.Redis.from_url(redis_url)
        clients.append(client)
        inventory = RedisInventory(client, hub_name)
        populate(inventory, hub_name, clusters=clusters, policies=20, clusters_per_policy=50, seed=12)
        consumer = start_consumer(manager_env, tmp_path)
        processes.append(consumer)
        processes.extend(start_manager_celery(manager_env, tmp_path, concurrency=1))
        agent_only = {**manager_env, **(agent_env or {})}
        agent = start_agent(agent_only, tmp_path, prefix="agent-1")
        processes.extend(agent)
        fleet = Fleet(hub_name, manager_env, tmp_path, client, inventory, consumer, agent, processes, agent_only)
        fleet.wait_converged(180 + clusters / 200, "the first full copy")
        return fleet

    yield start
    for client in clients:
        client.close()


@pytest.fixture
def fleet(start_fleet: StartFleet) -> Fleet:
    return start_fleet()


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


# --- the manager's side broken -------------------------------------------------------------------------------------


def stack(*args: str) -> None:
    subprocess.run([str(REPO / "bin" / "stack"), *args], check=True, capture_output=True, timeout=300)


def test_the_consumer_killed_ten_times_during_a_20000_cluster_resync_loses_and_repeats_nothing(
    start_fleet: StartFleet,
) -> None:
    # Small batches, so the resync's ~80 messages take many commits; static membership, so each restart gets the
    # partitions back at once rather than after the session timeout.
    fleet = start_fleet(
        env={"GH_CONSUMER_BATCH_SIZE": "3", "GH_CONSUMER_INSTANCE_ID": f"chaos-{fleet_id()}"}, clusters=20_000
    )
    rng = random.Random(fleet.hub)
    before = fleet.worker.log_text().count(f"resync of {CLUSTER} starts")
    request_cluster_resync(fleet)
    fleet.inventory.apply(CLUSTER, cluster_changes(fleet.hub, 30, seed=14, start=40_000))  # deltas meanwhile
    wait_for(lambda: resync_started(fleet, before + 1), timeout=60, what="the resync to start")
    for kill in range(10):
        if kill:
            fleet.restart_consumer(f"consumer-k{kill}")
        wait_for(partial(_has_ingested, fleet.consumer), timeout=60, what=f"consumer {kill} to ingest")
        time.sleep(rng.uniform(0.0, 0.6))
        fleet.consumer.kill()  # SIGKILL, whatever it was doing
    fleet.restart_consumer("consumer-final")

    took = fleet.wait_converged(120, "the copy after ten kills (the lag itself)")
    print(f"consumer killed 10 times: converged {took:.1f}s after the last start")
    assert fleet.hub_row().state == Hub.State.ACTIVE
    assert not DeadLetter.objects.filter(hub_name=fleet.hub).exists()


def _has_ingested(consumer: Process) -> bool:
    return "ingested" in consumer.log_text()


def fleet_id() -> str:
    return f"{os.getpid()}-{time.monotonic_ns()}"


def test_kafka_down_longer_than_the_hub_timeout_makes_no_live_hub_inactive_and_loses_nothing(
    start_fleet: StartFleet,
) -> None:
    fleet = start_fleet(env={"GH_HUB_TIMEOUT": "8s"})
    changed_at = fleet.hub_row().state_changed_at
    wait_for(lambda: "probe" in _worker_log(fleet), timeout=30, what="the probe to run")
    stack("down", "kafka")
    try:
        # The hub changes while Kafka is down: 20 clusters join, 5 leave, one policy goes.
        fleet.inventory.apply(CLUSTER, cluster_changes(fleet.hub, 20, seed=15, start=50_000))
        gone = sorted(fleet.inventory.ids(CLUSTER))[:5]
        fleet.inventory.apply(CLUSTER, [Change(object_id, None) for object_id in gone])
        fleet.inventory.apply(POLICY, [Change(sorted(fleet.inventory.ids(POLICY))[0], None)])
        time.sleep(12)  # longer than the hub timeout: no heartbeat can be read
    finally:
        stack("up", "kafka")

    took = fleet.wait_converged(180, "the copy after Kafka came back (the outage + the lag)")
    print(f"Kafka down 12 s (timeout 8 s): converged {took:.1f}s after it was back")
    hub = fleet.hub_row()
    assert hub.state == Hub.State.ACTIVE and hub.state_changed_at == changed_at, "a live hub was made inactive"


def _worker_log(fleet: Fleet) -> str:
    return next(p for p in fleet.processes if p.name == "manager-worker").log_text()


def test_postgresql_restarted_while_the_hub_changes_loses_nothing(start_fleet: StartFleet) -> None:
    fleet = start_fleet()
    connection.close()
    stack("down", "postgres")
    try:
        fleet.inventory.apply(CLUSTER, cluster_changes(fleet.hub, 20, seed=16, start=60_000))
        wait_for(lambda: "database error" in fleet.consumer.log_text(), timeout=60, what="the consumer to notice")
        fleet.inventory.apply(POLICY, [Change(sorted(fleet.inventory.ids(POLICY))[0], None)])
        time.sleep(3)
    finally:
        stack("up", "postgres")

    took = fleet.wait_converged(120, "the copy after PostgreSQL came back")
    print(f"PostgreSQL restarted: converged {took:.1f}s after it was back")
    for process in fleet.processes:
        assert process.is_running(), f"{process.name} died:\n{process.log_text()[-3000:]}"


def test_a_hub_offline_past_the_timeout_is_made_inactive_and_comes_back_whole(start_fleet: StartFleet) -> None:
    fleet = start_fleet(env={"GH_HUB_TIMEOUT": "8s", "GH_STARTUP_GRACE": "0s"})
    fleet.stop_agent()
    # Offline, the hub changes: 10 clusters join, 10 leave, a compliance entry is dropped.
    fleet.inventory.apply(CLUSTER, cluster_changes(fleet.hub, 10, seed=17, start=70_000), log_changes=False)
    gone = sorted(fleet.inventory.ids(CLUSTER))[:10]
    fleet.inventory.apply(CLUSTER, [Change(object_id, None) for object_id in gone], log_changes=False)
    wait_for(
        lambda: fleet.hub_row().state == Hub.State.INACTIVE,
        timeout=60,
        what="the hub made inactive (timeout 8 s + probe 2 s)",
    )
    assert differences(fleet.redis, fleet.hub), "an inactive hub's clusters and policies leave the copy"

    fleet.restart_agent("agent-2")
    took = fleet.wait_converged(90, "the copy once the hub is back (heartbeat + lag + one round trip)")
    print(f"hub back after being inactive: converged {took:.1f}s after its agent started")
    assert fleet.hub_row().state == Hub.State.ACTIVE


def test_a_poisoned_version_with_a_ghost_cluster_is_healed_within_a_digest_round(
    start_fleet: StartFleet, kafka_settings: KafkaSettings
) -> None:
    fleet = start_fleet()
    victim = sorted(fleet.inventory.ids(CLUSTER))[0]
    real = fleet.inventory.get(CLUSTER, victim)
    assert real is not None
    poisoned = tweak_cluster(json.loads(json.dumps(real)), fleet.hub)
    poisoned["metadata"]["labels"] = {"poisoned": "yes"}
    ghost = tweak_cluster(cluster_changes(fleet.hub, 1, seed=18, start=80_000)[0].obj or {}, fleet.hub)
    message = status_message(fleet.hub, EventType.MANAGED_CLUSTER, {"update": [poisoned, ghost]}, version="999.1")
    producer = ConfirmedProducer(kafka_settings)
    try:
        producer.send(fleet.env["GH_STATUS_TOPIC_PREFIX"] + fleet.hub, [message])
    finally:
        producer.close()
    wait_for(lambda: not converged(fleet.redis, fleet.hub), timeout=30, what="the poisoned bundle to be ingested")
    # The hub's own change to the poisoned cluster is refused row by row (its stamp is older) until the heal.
    changed = json.loads(json.dumps(real))
    changed["metadata"]["labels"] = {**changed["metadata"].get("labels", {}), "after": "poison"}
    fleet.inventory.apply(CLUSTER, [Change(victim, changed)])

    took = fleet.wait_converged(60, "the heal (the next heartbeat's digest + one round trip)")
    print(f"poisoned version healed in {took:.1f}s")
    assert Divergence.objects.filter(hub_id=fleet.hub, event_type=EventType.MANAGED_CLUSTER.value).exists()
    changed["metadata"]["labels"]["again"] = "after the heal"
    fleet.inventory.apply(CLUSTER, [Change(victim, changed)])
    fleet.wait_converged(30, "the hub's next delta, admitted again")


# --- a hub clock stepped back --------------------------------------------------------------------------------------

CLOCK_SHIFT = REPO / "tests" / "clockshift"  # a sitecustomize that steps the wall clock (see its docstring)


def test_a_hub_clock_stepped_six_minutes_back_keeps_the_hub_live_and_its_changes_flowing(
    start_fleet: StartFleet, tmp_path: Path
) -> None:
    offset = tmp_path / "clock-shift"
    offset.write_text("0\n")
    fleet = start_fleet(
        env={"GH_HUB_TIMEOUT": "15s", "GH_STARTUP_GRACE": "0s"},
        agent_env={
            "PYTHONPATH": os.pathsep.join(filter(None, [str(CLOCK_SHIFT), os.environ.get("PYTHONPATH")])),
            "GH_TEST_CLOCK_SHIFT_FILE": str(offset),
        },
    )
    changed_at = fleet.hub_row().state_changed_at
    offset.write_text("-360\n")  # the agent's clock (all its processes) goes six minutes back, as NTP may step it
    stepped_at = timezone.now()
    wait_for(
        lambda: (fleet.hub_row().clock_skew_seconds or 0) < -300, timeout=60, what="the skew measured by the manager"
    )
    fleet.inventory.apply(CLUSTER, cluster_changes(fleet.hub, 10, seed=19, start=90_000))
    took = fleet.wait_converged(60, "changes made after the step (a digest round: the bundles look like stragglers)")
    print(f"clock stepped back: changes reached the manager in {took:.1f}s")
    wait_for(
        lambda: (fleet.hub_row().last_heartbeat or stepped_at) > stepped_at + timedelta(seconds=20),
        timeout=90,
        what="heartbeats read for longer than the hub timeout after the step",
    )
    hub = fleet.hub_row()
    assert hub.state == Hub.State.ACTIVE and hub.state_changed_at == changed_at, "a live hub was made inactive"

    fleet.stop_agent()  # restarted with its clock behind the run it replaces: its bundles must not be stragglers
    fleet.inventory.apply(CLUSTER, cluster_changes(fleet.hub, 10, seed=20, start=91_000), log_changes=False)
    fleet.restart_agent("agent-2")
    took = fleet.wait_converged(60, "the copy after the restart under the slow clock (startup resyncs)")
    print(f"restart under the slow clock: converged in {took:.1f}s")
    fleet.inventory.apply(CLUSTER, cluster_changes(fleet.hub, 10, seed=21, start=92_000))
    fleet.wait_converged(60, "the restarted agent's deltas")
    assert fleet.hub_row().state == Hub.State.ACTIVE
