"""The hub simulator writes an upstream-shaped, self-consistent inventory into real Redis and churns it at set rates."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from agent_tasks.inventory import RedisInventory
from agent_tasks.simulate import (
    CLUSTER,
    COMPLIANCE,
    HUB_INFO,
    INVENTORY_TYPES,
    POLICY,
    ROOT_POLICY_LABEL,
    Compliance,
    Rates,
    Simulator,
    cluster_changes,
    main,
    populate,
    reset,
)
from globalhub.protocol.objects import cluster_claim_id

REPO = Path(__file__).resolve().parent.parent
LISTS = [state.value for state in Compliance]
NO_CHURN = Rates(joins_per_min=0, leaves_per_min=0, label_changes_per_min=0, flips_per_sec=0)


def read(inventory: RedisInventory, short_type: str) -> dict[str, Any]:
    return {object_id: json.loads(raw) for object_id, raw in inventory.list_encoded(short_type)}


def xlen(client: redis.Redis, inventory: RedisInventory, short_type: str) -> int:
    return int(client.xlen(inventory.changes_key(short_type)))


def snapshot(inventory: RedisInventory) -> dict[str, dict[str, Any]]:
    return {short_type: read(inventory, short_type) for short_type in INVENTORY_TYPES}


def live_names(inventory: RedisInventory) -> set[str]:
    return {cluster["metadata"]["name"] for cluster in read(inventory, CLUSTER).values()}


def assert_compliance_consistent(inventory: RedisInventory) -> dict[str, set[str]]:
    """Each entry is upstream-shaped, names each of its clusters once, and only live ones; returns uid -> clusters."""
    live = live_names(inventory)
    covered: dict[str, set[str]] = {}
    policies = read(inventory, POLICY)
    for uid, entry in read(inventory, COMPLIANCE).items():
        assert set(entry) == {"policyId", *LISTS}
        assert entry["policyId"] == uid
        assert uid in policies
        names = [name for field in LISTS for name in entry[field]]
        assert len(names) == len(set(names)), f"a cluster is in two lists of {uid}"
        assert set(names) <= live, f"{uid} names clusters that do not exist: {set(names) - live}"
        covered[uid] = set(names)
    assert set(covered) == set(policies)
    return covered


def test_cluster_changes_are_unchanged_by_the_rewrite() -> None:
    """Other tests and tools rely on ``cluster_changes``/``make_cluster`` giving the same objects for a seed."""
    changes = cluster_changes("hub1", 50, 7, start=3)
    assert [c.object_id for c in changes[:2]] == [
        "3da6e271-7c69-464e-9355-21ec075911c3",
        "161d1185-5c78-4e0e-a91f-6088864f0623",
    ]
    digest = hashlib.sha256(json.dumps([(c.object_id, c.obj) for c in changes], sort_keys=True).encode()).hexdigest()
    assert digest == "e8bfaf39bf8297df7b0e553f7ca570145647f4dc49276c998423dbc84004c2f5"
    assert all(c.obj is not None and cluster_claim_id(c.obj) == c.object_id for c in changes)


def test_populate_writes_four_upstream_shaped_types(
    inventory: RedisInventory, redis_client: redis.Redis, hub_name: str
) -> None:
    result = populate(inventory, hub_name, clusters=40, policies=6, clusters_per_policy=15, seed=3)
    assert (result.clusters, result.policies, result.compliance_rows) == (40, 6, 90)

    clusters = read(inventory, CLUSTER)
    assert len(clusters) == 40
    for claim, cluster in clusters.items():
        assert cluster["kind"] == "ManagedCluster"
        assert cluster_claim_id(cluster) == claim
    names = {cluster["metadata"]["name"] for cluster in clusters.values()}
    assert len(names) == 40

    policies = read(inventory, POLICY)
    assert len(policies) == 6
    for uid, policy in policies.items():
        assert policy["apiVersion"] == "policy.open-cluster-management.io/v1"
        assert policy["kind"] == "Policy"
        metadata = policy["metadata"]
        assert metadata["uid"] == uid
        assert metadata["name"] and metadata["namespace"] and metadata["resourceVersion"]
        assert metadata["generation"] == 1
        assert ROOT_POLICY_LABEL not in metadata.get("labels", {})
        assert {
            "policy.open-cluster-management.io/standards",
            "policy.open-cluster-management.io/categories",
            "policy.open-cluster-management.io/controls",
        } <= set(metadata["annotations"])
        spec = policy["spec"]
        assert spec["remediationAction"] in {"inform", "enforce"}
        assert spec["disabled"] is False
        template = spec["policy-templates"][0]["objectDefinition"]
        assert template["kind"] == "ConfigurationPolicy"
        assert template["spec"]["object-templates"]
    assert len({(p["metadata"]["namespace"], p["metadata"]["name"]) for p in policies.values()}) == 6

    covered = assert_compliance_consistent(inventory)
    assert all(len(clusters) == 15 for clusters in covered.values())
    entries = read(inventory, COMPLIANCE)
    counts = {field: sum(len(entry[field]) for entry in entries.values()) for field in LISTS}
    assert counts[Compliance.COMPLIANT.value] > 90 / 2, f"not mostly compliant: {counts}"
    # The policy's own status says the same as its compliance entry.
    for uid, policy in policies.items():
        by_state = {s["clustername"]: s.get("compliant") for s in policy["status"]["status"]}
        assert set(by_state) == covered[uid]
        assert {n for n, value in by_state.items() if value == "Compliant"} == set(
            entries[uid][Compliance.COMPLIANT.value]
        )
        assert {n for n, value in by_state.items() if value is None} == set(entries[uid][Compliance.UNKNOWN.value])
        # The root policy's aggregate, as the propagator computes it: absent while some cluster is unknown.
        values = set(by_state.values())
        aggregate = (
            "NonCompliant"
            if "NonCompliant" in values
            else "Pending"
            if "Pending" in values
            else "Compliant"
            if values == {"Compliant"}
            else None
        )
        assert policy["status"].get("compliant") == aggregate

    assert redis_client.hkeys(inventory.objects_key(HUB_INFO)) == [b"hub"]
    info = read(inventory, HUB_INFO)["hub"]
    assert info["consoleURL"] == f"https://console-openshift-console.apps.{hub_name}.example.com"
    assert info["grafanaURL"] == f"https://grafana-open-cluster-management-observability.apps.{hub_name}.example.com"
    assert info["mchVersion"] == "2.13.0"
    assert len(info["clusterId"]) == 36

    # Every write went through apply: one change-stream entry per object.
    for short_type, expected in ((CLUSTER, 40), (POLICY, 6), (COMPLIANCE, 6), (HUB_INFO, 1)):
        assert xlen(redis_client, inventory, short_type) == expected


def test_each_policy_applies_to_every_cluster_up_to_fifty_by_default(inventory: RedisInventory, hub_name: str) -> None:
    populate(inventory, hub_name, clusters=5, policies=2)
    assert list(assert_compliance_consistent(inventory).values()) == [live_names(inventory)] * 2
    reset(inventory)
    assert all(inventory.count(short_type) == 0 for short_type in INVENTORY_TYPES)
    result = populate(inventory, hub_name, clusters=80, policies=3)
    assert result.compliance_rows == 150
    assert all(len(clusters) == 50 for clusters in assert_compliance_consistent(inventory).values())


def test_same_seed_same_inventory_and_churn(inventory: RedisInventory, hub_name: str) -> None:
    rates = Rates(joins_per_min=30, leaves_per_min=30, label_changes_per_min=60, flips_per_sec=5)

    def run(seed: int) -> dict[str, dict[str, Any]]:
        reset(inventory)
        simulator = Simulator(
            inventory, hub_name, clusters=30, policies=4, clusters_per_policy=10, seed=seed, rates=rates
        )
        simulator.populate()
        for _ in range(5):
            simulator.step(3.0)
        return snapshot(inventory)

    first = run(seed=11)
    assert first == run(seed=11)
    other = run(seed=12)
    assert set(other[CLUSTER]).isdisjoint(first[CLUSTER])
    assert set(other[POLICY]).isdisjoint(first[POLICY])


def test_step_produces_changes_at_the_configured_rates(
    inventory: RedisInventory, redis_client: redis.Redis, hub_name: str
) -> None:
    simulator = Simulator(inventory, hub_name, clusters=60, policies=5, clusters_per_policy=20, seed=5, rates=Rates())
    simulator.populate()
    before = {t: xlen(redis_client, inventory, t) for t in INVENTORY_TYPES}

    # Defaults: 2 joins/min, 2 leaves/min, 6 label changes/min, 1 flip/s.
    result = simulator.step(60.0)
    assert (result.joins, result.leaves, result.label_changes, result.flips) == (2, 2, 6, 60)
    # Stepping every second gives the same rates: the fractions accumulate.
    totals = [simulator.step(1.0) for _ in range(120)]
    assert sum(r.joins for r in totals) == 4
    assert sum(r.leaves for r in totals) == 4
    assert sum(r.label_changes for r in totals) == 12
    assert sum(r.flips for r in totals) == 120
    assert sum(1 for r in totals if r.joins) == 4, "joins spread over the steps, one at a time"

    assert inventory.count(CLUSTER) == 60 + 6 - 6
    everything = [result, *totals]
    written = {t: sum(r.written.get(t, 0) for r in everything) for t in INVENTORY_TYPES}
    for short_type in INVENTORY_TYPES:
        assert xlen(redis_client, inventory, short_type) - before[short_type] == written[short_type]
    # Distinct clusters per step: every join and leave, plus at most one write per label change.
    for r in everything:
        assert r.joins + r.leaves <= r.written.get(CLUSTER, 0) <= r.joins + r.leaves + r.label_changes
    assert written[CLUSTER] >= 12
    assert written[COMPLIANCE] >= 120 / 5  # flips touch at least one policy entry per step with a flip
    assert written[POLICY] == 0 and written[HUB_INFO] == 0  # policy status follows only with policy_status=True
    assert simulator.totals.flips == 180
    assert_compliance_consistent(inventory)


def test_joins_and_leaves_keep_compliance_consistent_with_the_live_clusters(
    inventory: RedisInventory, hub_name: str
) -> None:
    rates = Rates(joins_per_min=20, leaves_per_min=15, label_changes_per_min=0, flips_per_sec=0)
    simulator = Simulator(inventory, hub_name, clusters=30, policies=4, seed=9, rates=rates)  # 30 per policy: all
    simulator.populate()
    original = live_names(inventory)
    for _ in range(3):
        result = simulator.step(60.0)
        assert (result.joins, result.leaves) == (20, 15)
        live = live_names(inventory)
        # Every policy applies to every cluster here: each entry lists exactly the live clusters.
        assert all(clusters == live for clusters in assert_compliance_consistent(inventory).values())
    assert len(live) == 30 + 60 - 45
    joined = live - original
    assert joined
    for entry in read(inventory, COMPLIANCE).values():
        assert joined <= set(entry[Compliance.PENDING.value]), "joined clusters are reported pending"
    assert simulator.state is not None
    assert set(simulator.state.placements) == live


def test_joins_with_partial_coverage_go_to_some_policies(inventory: RedisInventory, hub_name: str) -> None:
    rates = Rates(joins_per_min=200, leaves_per_min=0, label_changes_per_min=0, flips_per_sec=0)
    simulator = Simulator(inventory, hub_name, clusters=100, policies=50, clusters_per_policy=10, seed=2, rates=rates)
    simulator.populate()
    simulator.step(60.0)
    covered = assert_compliance_consistent(inventory)
    rows = sum(len(clusters) for clusters in covered.values())
    added = rows - 500
    # Each of 200 joins is selected by each of 50 policies with chance 10/100: about 1,000 rows.
    assert 800 < added < 1200
    assert all(len(clusters) >= 10 for clusters in covered.values())


def test_label_changes_rewrite_the_cluster(inventory: RedisInventory, hub_name: str) -> None:
    rates = Rates(joins_per_min=0, leaves_per_min=0, label_changes_per_min=3, flips_per_sec=0)
    simulator = Simulator(inventory, hub_name, clusters=200, policies=1, seed=4, rates=rates)
    simulator.populate()
    before = read(inventory, CLUSTER)
    assert simulator.step(60.0).written == {CLUSTER: 3}
    after = read(inventory, CLUSTER)
    changed = {claim for claim in before if before[claim] != after[claim]}
    assert len(changed) == 3
    for claim in changed:
        old, new = before[claim]["metadata"], after[claim]["metadata"]
        assert new["labels"]["churn"] == "1"
        assert new["labels"]["environment"] != old["labels"]["environment"]
        assert new["resourceVersion"] != old["resourceVersion"]
        assert new["generation"] == old["generation"]
        assert cluster_claim_id(after[claim]) == claim


def test_flips_move_pairs_between_lists(inventory: RedisInventory, redis_client: redis.Redis, hub_name: str) -> None:
    rates = Rates(joins_per_min=0, leaves_per_min=0, label_changes_per_min=0, flips_per_sec=1)
    simulator = Simulator(inventory, hub_name, clusters=20, policies=3, seed=8, rates=rates, policy_status=True)
    simulator.populate()
    before = read(inventory, COMPLIANCE)
    policies_before = read(inventory, POLICY)
    streams = {t: xlen(redis_client, inventory, t) for t in (COMPLIANCE, POLICY)}

    result = simulator.step(40.0)
    assert result.flips == 40
    after = read(inventory, COMPLIANCE)
    moved = 0
    for uid, entry in after.items():
        state_before = {n: field for field in LISTS for n in before[uid][field]}
        state_after = {n: field for field in LISTS for n in entry[field]}
        assert set(state_before) == set(state_after)
        moved += sum(1 for n in state_after if state_after[n] != state_before[n])
    assert moved > 0
    assert_compliance_consistent(inventory)
    assert (
        xlen(redis_client, inventory, COMPLIANCE) - streams[COMPLIANCE]
        == result.written[COMPLIANCE]
        == len([uid for uid in after if after[uid] != before[uid]])
    )
    # With policy_status=True the touched policies' status follows (status-only update: same generation).
    assert xlen(redis_client, inventory, POLICY) - streams[POLICY] == result.written[POLICY]
    for uid, policy in read(inventory, POLICY).items():
        compliant = {s["clustername"] for s in policy["status"]["status"] if s.get("compliant") == "Compliant"}
        assert compliant == set(after[uid][Compliance.COMPLIANT.value])
        assert policy["metadata"]["generation"] == policies_before[uid]["metadata"]["generation"]


def test_step_on_an_empty_hub_does_nothing_harmful(inventory: RedisInventory, hub_name: str) -> None:
    simulator = Simulator(inventory, hub_name, clusters=0, policies=0, seed=1, rates=Rates(leaves_per_min=60))
    simulator.populate()
    result = simulator.step(10.0)
    assert (result.leaves, result.flips, result.label_changes) == (0, 0, 0)
    assert inventory.count(CLUSTER) == result.joins == 0
    with pytest.raises(RuntimeError):
        Simulator(inventory, hub_name, rates=NO_CHURN).step(1.0)


def test_main_writes_a_small_hub(
    inventory: RedisInventory,
    redis_url: str,
    hub_name: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("HUB_NAME", hub_name)
    monkeypatch.setenv("REDIS_URL", redis_url)
    main(["--clusters", "5", "--policies", "2", "--reset"])
    main(["--clusters", "5", "--policies", "2", "--reset"])
    output = capsys.readouterr().out.splitlines()
    assert len(output) == 2
    assert output[-1].startswith(f"hub {hub_name}: wrote 5 clusters, 2 policies, 10 compliance rows")
    assert [inventory.count(t) for t in (CLUSTER, POLICY, COMPLIANCE, HUB_INFO)] == [5, 2, 2, 1]
    assert_compliance_consistent(inventory)

    main(["--clusters", "5", "--policies", "2", "--reset", "--churn", "--duration", "0.3", "--interval", "0.05"])
    main_lines = capsys.readouterr().out.splitlines()
    assert len(main_lines) == 2
    assert "churned" in main_lines[1]
    assert "compliance flips" in main_lines[1]


def test_churn_runs_until_sigterm(inventory: RedisInventory, redis_url: str, hub_name: str) -> None:
    env = {**os.environ, "HUB_NAME": hub_name, "REDIS_URL": redis_url, "PYTHONUNBUFFERED": "1"}
    argv = [sys.executable, "-m", "agent_tasks.simulate", "--clusters", "20", "--policies", "3", "--reset", "--churn"]
    argv += ["--flips-per-sec", "50", "--interval", "0.1"]
    process = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        assert "wrote 20 clusters" in first, process.stderr.read() if process.stderr else ""
        populated = inventory.count(COMPLIANCE)
        logged = 0
        deadline = time.monotonic() + 10
        while logged <= populated and time.monotonic() < deadline:  # churn shows in the compliance change stream
            time.sleep(0.1)
            logged = inventory.log_position(COMPLIANCE).added
        assert logged > populated
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    assert "churned" in out
    assert_compliance_consistent(inventory)
