"""Hub simulator: writes a realistic inventory into the hub's Redis, and optionally keeps changing it.

    python -m agent_tasks.simulate --clusters 1000 --policies 20 --reset   # replace this hub's (HUB_NAME) inventory
    python -m agent_tasks.simulate --clusters 1000                         # upsert over what is there
    python -m agent_tasks.simulate --reset --churn                         # then keep changing it until SIGTERM/Ctrl-C
    python -m agent_tasks.simulate --clusters 10000 --policies 1000 --clusters-per-policy 50 --reset  # benchmark hub
    python -m agent_tasks.simulate --target kube --reset --churn   # a hub in a Kubernetes API server (KUBECONFIG)

Four inventory types, in upstream's shapes (so bundles built from them are upstream-shaped):

* ``managedcluster``: ManagedClusters keyed by their ``id.k8s.io`` claim;
* ``policy.localspec``: root Policies (no root-policy label) keyed by ``metadata.uid``;
* ``policy.localcompliance``: per policy uid, ``{policyId, compliantClusters, nonCompliantClusters,
  unknownComplianceClusters, pendingComplianceClusters}``; every (policy, cluster it applies to) pair is in exactly
  one list, and only live clusters are named. Each policy applies to ``--clusters-per-policy`` clusters;
* ``managedhub.info``: one field, ``hub``, with ``{consoleURL, grafanaURL, mchVersion, clusterId}``.

Every write goes through the target's ``apply``: :meth:`RedisInventory.apply` by default, so the change streams
the agent's delta sync reads move with the hashes; with ``--target kube``,
:class:`agent_tasks.simulate_kube.KubeTarget`, which turns the same writes into ManagedClusters, Policies (with
their compliance in ``status``) and ClusterClaims in the API server of ``KUBECONFIG`` (or ``GH_KUBECONFIG``), for
the agent's inventory watcher to follow.

With ``--churn``, clusters join (and get ``pending`` compliance on the policies that select them) and leave (and
disappear from every compliance entry), cluster labels change, and (policy, cluster) pairs flip between compliance
lists, at the configured rates; each step writes one ``apply`` per type. Same seed, same run.
"""

from __future__ import annotations

import argparse
import base64
import json
import random
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Final, Protocol

import redis

from agent_tasks.config import AgentConfig
from agent_tasks.inventory import Change, RedisInventory
from agent_tasks.types import HUB_INFO_KEY
from globalhub.protocol.events import EventType
from globalhub.protocol.objects import CLUSTER_ID_CLAIM
from globalhub.stopping import call_on_signals

CLUSTER: Final = EventType.MANAGED_CLUSTER.short
POLICY: Final = EventType.LOCAL_POLICY_SPEC.short
COMPLIANCE: Final = EventType.LOCAL_COMPLIANCE.short
HUB_INFO: Final = EventType.HUB_INFO.short
INVENTORY_TYPES: Final = (HUB_INFO, CLUSTER, POLICY, COMPLIANCE)

DEFAULT_CLUSTERS_PER_POLICY: Final = 50
MCH_VERSION: Final = "2.13.0"
WRITE_CHUNK: Final = 1000
ROOT_POLICY_LABEL: Final = "policy.open-cluster-management.io/root-policy"

_CLOUDS = [
    ("Amazon", "AWS", ["us-east-1", "us-west-2", "eu-west-1"]),
    ("Azure", "Azure", ["eastus", "westeurope"]),
    ("Google", "GCP", ["us-central1", "europe-west4"]),
    ("BareMetal", "BareMetal", ["dc1", "dc2"]),
]
_VERSIONS = ["4.14.12", "4.15.3", "4.16.8", "4.17.2"]
_ENVIRONMENTS = ["prod", "staging", "dev"]


class Target(Protocol):
    """Where the simulated hub lives: the agent's Redis inventory, or a Kubernetes API server."""

    def apply(self, short_type: str, changes: Iterable[Change], *, chunk: int = ...) -> int: ...

    def get_encoded(self, short_type: str, ids: list[str]) -> list[bytes | None]: ...

    def count(self, short_type: str) -> int: ...

    def clear(self, short_type: str) -> None: ...


# --- managed clusters -------------------------------------------------------------------------------------------


def make_cluster(hub: str, index: int, rng: random.Random) -> dict[str, Any]:
    """One ManagedCluster as a hub's API server would return it."""
    name = cluster_name(hub, index)
    cluster_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    cloud, platform, regions = rng.choice(_CLOUDS)
    region = rng.choice(regions)
    ocp = rng.choice(_VERSIONS)
    created = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=rng.randrange(500_000))
    stamp = created.strftime("%Y-%m-%dT%H:%M:%SZ")
    ca_bundle = base64.b64encode(rng.randbytes(900)).decode()
    return {
        "apiVersion": "cluster.open-cluster-management.io/v1",
        "kind": "ManagedCluster",
        "metadata": {
            "name": name,
            "uid": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "resourceVersion": str(rng.randrange(10_000, 9_999_999)),
            "generation": 1,
            "creationTimestamp": stamp,
            "labels": {
                "cloud": cloud,
                "vendor": "OpenShift",
                "name": name,
                "openshiftVersion": ocp,
                "openshiftVersion-major": ocp.rsplit(".", 2)[0],
                "region": region,
                "environment": rng.choice(_ENVIRONMENTS),
                "cluster.open-cluster-management.io/clusterset": "default",
                "feature.open-cluster-management.io/addon-work-manager": "available",
            },
            "annotations": {"open-cluster-management/created-via": "other"},
            "managedFields": [{"manager": "registration", "operation": "Update", "time": stamp}],
        },
        "spec": {
            "hubAcceptsClient": True,
            "leaseDurationSeconds": 60,
            "managedClusterClientConfigs": [{"url": f"https://api.{name}.example.com:6443", "caBundle": ca_bundle}],
        },
        "status": {
            "allocatable": {"cpu": str(rng.choice([16, 24, 48])), "memory": f"{rng.choice([64, 96, 192])}Gi"},
            "capacity": {"cpu": str(rng.choice([16, 24, 48])), "memory": f"{rng.choice([64, 96, 192])}Gi"},
            "clusterClaims": [
                {"name": CLUSTER_ID_CLAIM, "value": cluster_id},
                {"name": "platform.open-cluster-management.io", "value": platform},
                {"name": "region.open-cluster-management.io", "value": region},
                {"name": "version.openshift.io", "value": ocp},
            ],
            "conditions": [
                {"type": t, "status": "True", "reason": r, "lastTransitionTime": stamp, "message": m}
                for t, r, m in (
                    ("HubAcceptedManagedCluster", "HubClusterAdminAccepted", "Accepted by hub cluster admin"),
                    ("ManagedClusterJoined", "ManagedClusterJoined", "Managed cluster joined"),
                    ("ManagedClusterConditionAvailable", "ManagedClusterAvailable", "Managed cluster is available"),
                )
            ],
            "version": {"kubernetes": "v1.29.7"},
        },
    }


def cluster_name(hub: str, index: int) -> str:
    return f"{hub}-cluster-{index:05d}"


def _claim_id(cluster: dict[str, Any]) -> str:
    return next(str(c["value"]) for c in cluster["status"]["clusterClaims"] if c["name"] == CLUSTER_ID_CLAIM)


def iter_clusters(hub: str, count: int, seed: int, start: int = 0) -> Iterator[Change]:
    """The clusters ``start .. start+count-1`` as upserts keyed by claim id, generated lazily."""
    rng = random.Random(f"{seed}:{hub}:{start}")
    for index in range(start, start + count):
        cluster = make_cluster(hub, index, rng)
        yield Change(_claim_id(cluster), cluster)


def cluster_changes(hub: str, count: int, seed: int, start: int = 0) -> list[Change]:
    return list(iter_clusters(hub, count, seed, start))


# --- policies and compliance -------------------------------------------------------------------------------------


class Compliance(StrEnum):
    """The four lists of a ``policy.localcompliance`` entry, by their upstream field names."""

    COMPLIANT = "compliantClusters"
    NON_COMPLIANT = "nonCompliantClusters"
    UNKNOWN = "unknownComplianceClusters"
    PENDING = "pendingComplianceClusters"


# What a per-cluster ``status.status[].compliant`` says for each (unknown: no value).
_STATUS_VALUE: Final = {
    Compliance.COMPLIANT: "Compliant",
    Compliance.NON_COMPLIANT: "NonCompliant",
    Compliance.PENDING: "Pending",
    Compliance.UNKNOWN: None,
}
# A realistic hub: mostly compliant.
_INITIAL_MIX: Final = ((Compliance.COMPLIANT, 0.80), (Compliance.NON_COMPLIANT, 0.12), (Compliance.PENDING, 0.04))
# A flip away from compliant goes to one of these; a flip from anything else goes back to compliant mostly.
_BREAKS: Final = ((Compliance.NON_COMPLIANT, 0.70), (Compliance.PENDING, 0.15), (Compliance.UNKNOWN, 0.15))
_RECOVERY: Final = 0.80

# (name, standards, categories, controls, ConfigurationPolicy object template)
_POLICY_KINDS: Final[list[tuple[str, str, str, str, dict[str, Any]]]] = [
    (
        "policy-namespace",
        "NIST SP 800-53",
        "CM Configuration Management",
        "CM-2 Baseline Configuration",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "prod"}},
    ),
    (
        "policy-limitrange",
        "NIST SP 800-53",
        "SC System and Communications Protection",
        "SC-6 Resource Availability",
        {
            "apiVersion": "v1",
            "kind": "LimitRange",
            "metadata": {"name": "mem-limit-range"},
            "spec": {"limits": [{"default": {"memory": "512Mi"}, "defaultRequest": {"memory": "256Mi"}}]},
        },
    ),
    (
        "policy-pod-security",
        "NIST SP 800-53",
        "AC Access Control",
        "AC-6 Least Privilege",
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": "default", "labels": {"pod-security.kubernetes.io/enforce": "restricted"}},
        },
    ),
    (
        "policy-etcd-encryption",
        "NIST SP 800-53",
        "CM Configuration Management",
        "CM-2 Baseline Configuration",
        {"apiVersion": "config.openshift.io/v1", "kind": "APIServer", "metadata": {"name": "cluster"}},
    ),
    (
        "policy-role",
        "NIST SP 800-53",
        "AC Access Control",
        "AC-3 Access Enforcement",
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "deployments-role", "namespace": "default"},
            "rules": [{"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "list", "watch"]}],
        },
    ),
]
_POLICY_NAMESPACES: Final = ["local-policies", "security-policies", "rhacm-policies"]


def make_policy(index: int, rng: random.Random) -> dict[str, Any]:
    """One root Policy (no status yet) as a hub's API server would return it."""
    kind, standards, categories, controls, object_definition = _POLICY_KINDS[index % len(_POLICY_KINDS)]
    name = f"{kind}-{index:04d}"
    uid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    remediation = "enforce" if rng.random() < 0.2 else "inform"
    stamp = (datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=rng.randrange(500_000))).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )
    return {
        "apiVersion": "policy.open-cluster-management.io/v1",
        "kind": "Policy",
        "metadata": {
            "name": name,
            "namespace": _POLICY_NAMESPACES[index % len(_POLICY_NAMESPACES)],
            "uid": uid,
            "resourceVersion": str(rng.randrange(10_000, 9_999_999)),
            "generation": 1,
            "creationTimestamp": stamp,
            "annotations": {
                "policy.open-cluster-management.io/standards": standards,
                "policy.open-cluster-management.io/categories": categories,
                "policy.open-cluster-management.io/controls": controls,
            },
            "managedFields": [{"manager": "kubectl-client-side-apply", "operation": "Update", "time": stamp}],
        },
        "spec": {
            "remediationAction": remediation,
            "disabled": False,
            "policy-templates": [
                {
                    "objectDefinition": {
                        "apiVersion": "policy.open-cluster-management.io/v1",
                        "kind": "ConfigurationPolicy",
                        "metadata": {"name": name},
                        "spec": {
                            "remediationAction": remediation,
                            "severity": rng.choice(["low", "medium", "high"]),
                            "namespaceSelector": {"include": ["default"], "exclude": ["kube-*"]},
                            "object-templates": [{"complianceType": "musthave", "objectDefinition": object_definition}],
                        },
                    }
                }
            ],
        },
        "status": {},
    }


def policy_status(policy: dict[str, Any], clusters: dict[str, Compliance]) -> dict[str, Any]:
    """A root policy's ``status`` for the given per-cluster compliance (as the policy propagator writes it)."""
    name = policy["metadata"]["name"]
    entries: list[dict[str, Any]] = []
    for cluster, state in clusters.items():
        entry: dict[str, Any] = {"clustername": cluster, "clusternamespace": cluster}
        value = _STATUS_VALUE[state]
        if value is not None:
            entry["compliant"] = value
        entries.append(entry)
    states = set(clusters.values())
    status: dict[str, Any] = {
        "placement": [{"placement": f"{name}-placement", "placementBinding": f"{name}-binding"}],
        "status": entries,
    }
    if Compliance.NON_COMPLIANT in states:
        status["compliant"] = "NonCompliant"
    elif Compliance.PENDING in states:
        status["compliant"] = "Pending"
    elif states == {Compliance.COMPLIANT}:
        status["compliant"] = "Compliant"
    return status


def compliance_entry(policy_id: str, clusters: dict[str, Compliance]) -> dict[str, Any]:
    """Upstream's ``policy.localcompliance`` entry for one policy."""
    entry: dict[str, Any] = {"policyId": policy_id}
    entry.update({state.value: [] for state in Compliance})
    for cluster, state in clusters.items():
        entry[state.value].append(cluster)
    return entry


def hub_info(hub: str, seed: int) -> dict[str, Any]:
    rng = random.Random(f"{seed}:{hub}:hubinfo")
    return {
        "consoleURL": f"https://console-openshift-console.apps.{hub}.example.com",
        "grafanaURL": f"https://grafana-open-cluster-management-observability.apps.{hub}.example.com",
        "mchVersion": MCH_VERSION,
        "clusterId": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
    }


def _weighted(rng: random.Random, choices: Iterable[tuple[Compliance, float]], rest: Compliance) -> Compliance:
    draw = rng.random()
    for state, weight in choices:
        if draw < weight:
            return state
        draw -= weight
    return rest


# --- state and population ----------------------------------------------------------------------------------------


class _Pool:
    """A set with O(1) add, remove and uniform random choice (deterministic for a given history)."""

    def __init__(self) -> None:
        self._items: list[str] = []
        self._where: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, item: object) -> bool:
        return item in self._where

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def add(self, item: str) -> None:
        if item not in self._where:
            self._where[item] = len(self._items)
            self._items.append(item)

    def remove(self, item: str) -> None:
        where = self._where.pop(item)
        last = self._items.pop()
        if where < len(self._items):
            self._items[where] = last
            self._where[last] = where

    def choice(self, rng: random.Random) -> str:
        return self._items[rng.randrange(len(self._items))]


@dataclass
class HubState:
    """What the simulator wrote: enough to change it consistently without reading it back."""

    hub: str
    seed: int
    coverage: float  # chance that a policy selects a joining cluster (clusters per policy / clusters)
    next_index: int  # the index of the next joining cluster
    cluster_ids: dict[str, str] = field(default_factory=dict)  # name -> claim id
    live: _Pool = field(default_factory=_Pool)  # cluster names
    compliance: dict[str, dict[str, Compliance]] = field(default_factory=dict)  # policy uid -> cluster -> state
    placements: dict[str, set[str]] = field(default_factory=dict)  # cluster name -> uids of policies selecting it

    @property
    def rows(self) -> int:
        return sum(len(clusters) for clusters in self.compliance.values())


@dataclass(frozen=True)
class PopulateResult:
    state: HubState
    clusters: int
    policies: int
    compliance_rows: int
    seconds: float


def populate(
    inventory: Target,
    hub: str,
    *,
    clusters: int = 100,
    policies: int = 10,
    clusters_per_policy: int | None = None,
    seed: int = 1,
    chunk: int = WRITE_CHUNK,
) -> PopulateResult:
    """Write ``clusters`` clusters, ``policies`` root policies, each applying to ``clusters_per_policy`` of them
    (default ``min(clusters, 50)``) with a mostly compliant mix, their compliance entries and the hub info.

    Upserts: what else is in the inventory stays (``RedisInventory.clear`` the four types first to replace it).
    """
    started = time.perf_counter()
    per_policy = min(clusters, DEFAULT_CLUSTERS_PER_POLICY if clusters_per_policy is None else clusters_per_policy)
    if per_policy < 0 or clusters < 0 or policies < 0:
        raise ValueError("counts must not be negative")
    state = HubState(hub=hub, seed=seed, coverage=per_policy / clusters if clusters else 1.0, next_index=clusters)
    names: list[str] = []

    def recorded(changes: Iterator[Change]) -> Iterator[Change]:
        for change in changes:
            assert change.obj is not None
            name = change.obj["metadata"]["name"]
            state.cluster_ids[name] = change.object_id
            state.live.add(name)
            names.append(name)
            yield change

    inventory.apply(CLUSTER, recorded(iter_clusters(hub, clusters, seed)), chunk=chunk)

    rng = random.Random(f"{seed}:{hub}:policies")
    policy_changes: list[Change] = []
    compliance_changes: list[Change] = []
    for index in range(policies):
        policy = make_policy(index, rng)
        uid = policy["metadata"]["uid"]
        selected = names if per_policy == len(names) else rng.sample(names, per_policy)
        states = {name: _weighted(rng, _INITIAL_MIX, Compliance.UNKNOWN) for name in selected}
        state.compliance[uid] = states
        for name in selected:
            state.placements.setdefault(name, set()).add(uid)
        policy["status"] = policy_status(policy, states)
        policy_changes.append(Change(uid, policy))
        compliance_changes.append(Change(uid, compliance_entry(uid, states)))
    # Smaller chunks for policies: each carries its status list.
    inventory.apply(POLICY, policy_changes, chunk=max(1, chunk // 4))
    inventory.apply(COMPLIANCE, compliance_changes, chunk=max(1, chunk // 4))
    inventory.apply(HUB_INFO, [Change(HUB_INFO_KEY, hub_info(hub, seed))])
    return PopulateResult(state, clusters, policies, state.rows, time.perf_counter() - started)


def reset(inventory: Target) -> None:
    """Remove the four inventory types (hashes and change streams)."""
    for short_type in INVENTORY_TYPES:
        inventory.clear(short_type)


# --- churn ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rates:
    joins_per_min: float = 2.0
    leaves_per_min: float = 2.0
    label_changes_per_min: float = 6.0
    flips_per_sec: float = 1.0

    def per_second(self) -> dict[str, float]:
        return {
            "joins": self.joins_per_min / 60,
            "leaves": self.leaves_per_min / 60,
            "label_changes": self.label_changes_per_min / 60,
            "flips": self.flips_per_sec,
        }


@dataclass
class StepResult:
    """What one step did, and how many objects it wrote per inventory type (one change-stream entry each)."""

    joins: int = 0
    leaves: int = 0
    label_changes: int = 0
    flips: int = 0
    written: dict[str, int] = field(default_factory=dict)

    def add(self, other: StepResult) -> None:
        self.joins += other.joins
        self.leaves += other.leaves
        self.label_changes += other.label_changes
        self.flips += other.flips
        for short_type, count in other.written.items():
            self.written[short_type] = self.written.get(short_type, 0) + count


class Simulator:
    """A hub whose inventory changes over time. Tests drive it with ``populate()`` and ``step(seconds)``.

    ``step`` turns elapsed time into a number of each change with fractional accumulators (so 2 joins per minute
    stepped every second still gives 2 joins per minute), applies them to its state, and writes each type's changes
    with one ``apply`` call. With ``policy_status=True`` the root policies' ``status`` follows compliance (a
    status-only update: new resourceVersion, same generation); off by default, as upstream's agent ignores
    status-only Policy updates for ``policy.localspec`` and the compliance entries carry the same information.
    """

    def __init__(
        self,
        inventory: Target,
        hub: str,
        *,
        clusters: int = 100,
        policies: int = 10,
        clusters_per_policy: int | None = None,
        seed: int = 1,
        rates: Rates | None = None,
        policy_status: bool = False,
    ) -> None:
        self.inventory = inventory
        self.hub = hub
        self.clusters = clusters
        self.policies = policies
        self.clusters_per_policy = clusters_per_policy
        self.seed = seed
        self.rates = rates or Rates()
        self.policy_status = policy_status
        self.state: HubState | None = None
        self.totals = StepResult()
        self._rng = random.Random(f"{seed}:{hub}:churn")
        self._pending = dict.fromkeys(self.rates.per_second(), 0.0)
        self._resource_version = 10_000_000

    def populate(self) -> PopulateResult:
        result = populate(
            self.inventory,
            self.hub,
            clusters=self.clusters,
            policies=self.policies,
            clusters_per_policy=self.clusters_per_policy,
            seed=self.seed,
        )
        self.state = result.state
        return result

    def due(self, elapsed_seconds: float) -> dict[str, int]:
        """How many of each change are due after ``elapsed_seconds`` more (consumes the accumulators)."""
        due: dict[str, int] = {}
        for kind, rate in self.rates.per_second().items():
            self._pending[kind] += max(0.0, rate * elapsed_seconds)
            count = int(self._pending[kind] + 1e-9)
            self._pending[kind] = max(0.0, self._pending[kind] - count)
            due[kind] = count
        return due

    def step(self, elapsed_seconds: float) -> StepResult:
        """Apply the changes due after ``elapsed_seconds``: leaves, joins, label changes, then flips."""
        if self.state is None:
            raise RuntimeError("populate() first")
        due = self.due(elapsed_seconds)
        result = StepResult()
        clusters: dict[str, Change] = {}  # claim id -> change (the last one wins within a step)
        touched: set[str] = set()  # policy uids whose compliance changed
        result.leaves = self._leave(due["leaves"], clusters, touched)
        result.joins = self._join(due["joins"], clusters, touched)
        result.label_changes = self._relabel_some(due["label_changes"], clusters)
        result.flips = self._flip_some(due["flips"], touched)

        ordered = sorted(touched)
        if clusters:
            result.written[CLUSTER] = self.inventory.apply(CLUSTER, clusters.values(), chunk=WRITE_CHUNK)
        if ordered and self.policy_status:
            result.written[POLICY] = self.inventory.apply(POLICY, self._policy_updates(ordered), chunk=WRITE_CHUNK)
        if ordered:
            compliance = self.state.compliance
            entries = (Change(uid, compliance_entry(uid, compliance[uid])) for uid in ordered)
            result.written[COMPLIANCE] = self.inventory.apply(COMPLIANCE, entries, chunk=WRITE_CHUNK)
        self.totals.add(result)
        return result

    def _leave(self, count: int, clusters: dict[str, Change], touched: set[str]) -> int:
        """Remove random live clusters, and take them out of every compliance entry."""
        assert self.state is not None
        state = self.state
        count = min(count, len(state.live))
        for _ in range(count):
            name = state.live.choice(self._rng)
            state.live.remove(name)
            claim = state.cluster_ids.pop(name)
            clusters[claim] = Change(claim, None)
            for uid in state.placements.pop(name, set()):
                del state.compliance[uid][name]
                touched.add(uid)
        return count

    def _join(self, count: int, clusters: dict[str, Change], touched: set[str]) -> int:
        """New clusters; each policy selects one with the populated coverage, and reports it pending."""
        assert self.state is not None
        state = self.state
        for _ in range(count):
            change = next(iter_clusters(self.hub, 1, self.seed, start=state.next_index))
            state.next_index += 1
            assert change.obj is not None
            name = change.obj["metadata"]["name"]
            state.cluster_ids[name] = change.object_id
            state.live.add(name)
            clusters[change.object_id] = change
            selecting = {uid for uid in state.compliance if self._rng.random() < state.coverage}
            for uid in selecting:
                state.compliance[uid][name] = Compliance.PENDING
            if selecting:
                state.placements[name] = selecting
            touched |= selecting
        return count

    def _relabel_some(self, count: int, clusters: dict[str, Change]) -> int:
        """Change the labels of random live clusters (``environment``, and a ``churn`` counter)."""
        assert self.state is not None
        state = self.state
        claims = [state.cluster_ids[state.live.choice(self._rng)] for _ in range(min(count, len(state.live)))]
        unread = sorted({claim for claim in claims if claim not in clusters})
        read = dict(zip(unread, self.inventory.get_encoded(CLUSTER, unread), strict=True))
        changed = 0
        for claim in claims:
            if claim not in clusters:
                raw = read[claim]
                if raw is None:  # removed behind our back
                    continue
                clusters[claim] = Change(claim, json.loads(raw))
            cluster = clusters[claim].obj
            assert cluster is not None
            self._relabel(cluster)
            changed += 1
        return changed

    def _flip_some(self, count: int, touched: set[str]) -> int:
        """Move random (policy, cluster) pairs to another compliance list."""
        assert self.state is not None
        compliance = self.state.compliance
        candidates = [uid for uid, members in compliance.items() if members]
        if not candidates:
            return 0
        for _ in range(count):
            uid = candidates[self._rng.randrange(len(candidates))]
            members = compliance[uid]
            name = list(members)[self._rng.randrange(len(members))]
            members[name] = self._flip(members[name])
            touched.add(uid)
        return count

    def run(self, stop: threading.Event, *, interval: float = 1.0, duration: float | None = None) -> StepResult:
        """Step every ``interval`` seconds of wall time until ``stop`` is set or ``duration`` has passed."""
        started = last = time.monotonic()
        while True:
            deadline = None if duration is None else started + duration
            wait = interval if deadline is None else max(0.0, min(interval, deadline - time.monotonic()))
            stopped = stop.wait(wait)
            now = time.monotonic()
            self.step(now - last)
            last = now
            if stopped or (deadline is not None and now >= deadline):
                return self.totals

    def _next_resource_version(self) -> str:
        self._resource_version += 1
        return str(self._resource_version)

    def _relabel(self, cluster: dict[str, Any]) -> None:
        metadata = cluster.setdefault("metadata", {})
        labels = metadata.setdefault("labels", {})
        labels["environment"] = self._rng.choice([e for e in _ENVIRONMENTS if e != labels.get("environment")])
        labels["churn"] = str(int(labels.get("churn", "0")) + 1)
        metadata["resourceVersion"] = self._next_resource_version()

    def _flip(self, current: Compliance) -> Compliance:
        if current is Compliance.COMPLIANT:
            return _weighted(self._rng, _BREAKS, Compliance.UNKNOWN)
        if self._rng.random() < _RECOVERY:
            return Compliance.COMPLIANT
        return self._rng.choice([c for c in Compliance if c not in (current, Compliance.COMPLIANT)])

    def _policy_updates(self, uids: list[str]) -> Iterator[Change]:
        assert self.state is not None
        for uid, raw in zip(uids, self.inventory.get_encoded(POLICY, uids), strict=True):
            if raw is None:
                continue
            policy = json.loads(raw)
            policy["status"] = policy_status(policy, self.state.compliance[uid])
            policy["metadata"]["resourceVersion"] = self._next_resource_version()
            yield Change(uid, policy)


# --- command line -----------------------------------------------------------------------------------------------


def _non_negative_int(value: str) -> int:
    number = int(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative")
    return number


def _non_negative_float(value: str) -> float:
    number = float(value)
    if not number >= 0:
        raise argparse.ArgumentTypeError(f"{value} is not a non-negative number")
    return number


def parser() -> argparse.ArgumentParser:
    rates = Rates()
    p = argparse.ArgumentParser(
        prog="python -m agent_tasks.simulate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--clusters", type=_non_negative_int, default=100, help="ManagedClusters to write (default 100)")
    p.add_argument("--policies", type=_non_negative_int, default=10, help="root Policies to write (default 10)")
    p.add_argument(
        "--clusters-per-policy",
        type=_non_negative_int,
        default=None,
        help=f"clusters each policy applies to (default min(clusters, {DEFAULT_CLUSTERS_PER_POLICY}))",
    )
    p.add_argument("--seed", type=int, default=1, help="random seed (same seed, same objects and churn)")
    p.add_argument("--reset", action="store_true", help="remove this hub's four inventory types first")
    p.add_argument("--churn", action="store_true", help="then keep changing the inventory until SIGTERM/SIGINT")
    p.add_argument("--joins-per-min", type=_non_negative_float, default=rates.joins_per_min)
    p.add_argument("--leaves-per-min", type=_non_negative_float, default=rates.leaves_per_min)
    p.add_argument("--label-changes-per-min", type=_non_negative_float, default=rates.label_changes_per_min)
    p.add_argument("--flips-per-sec", type=_non_negative_float, default=rates.flips_per_sec)
    p.add_argument("--interval", type=float, default=1.0, help="seconds between churn steps (default 1)")
    p.add_argument("--duration", type=_non_negative_float, default=None, help="stop churning after this many seconds")
    p.add_argument(
        "--policy-status", action="store_true", help="churn also rewrites the policies' status (policy.localspec)"
    )
    p.add_argument(
        "--target",
        choices=("redis", "kube"),
        default="redis",
        help="where the hub lives: the agent's Redis inventory (default), or the Kubernetes API server of"
        " KUBECONFIG / GH_KUBECONFIG, for the agent's inventory watcher to follow",
    )
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    if args.interval <= 0:
        raise SystemExit("--interval must be positive")
    config = AgentConfig.from_env()
    hub = config.hub_name
    inventory, close = open_target(args.target, config)
    try:
        if args.reset:
            reset(inventory)
        rates = Rates(args.joins_per_min, args.leaves_per_min, args.label_changes_per_min, args.flips_per_sec)
        simulator = Simulator(
            inventory,
            hub,
            clusters=args.clusters,
            policies=args.policies,
            clusters_per_policy=args.clusters_per_policy,
            seed=args.seed,
            rates=rates,
            policy_status=args.policy_status,
        )
        done = simulator.populate()
        print(
            f"hub {hub}: wrote {done.clusters} clusters, {done.policies} policies, {done.compliance_rows} compliance"
            f" rows and the hub info in {done.seconds:.2f}s; inventory holds {inventory.count(CLUSTER)} clusters,"
            f" {inventory.count(POLICY)} policies",
            flush=True,
        )
        if not args.churn:
            return
        stop = threading.Event()
        restore = call_on_signals(stop.set)
        try:
            started = time.monotonic()
            totals = simulator.run(stop, interval=args.interval, duration=args.duration)
        finally:
            restore()
        assert simulator.state is not None
        print(
            f"hub {hub}: churned {time.monotonic() - started:.1f}s: {totals.joins} joins, {totals.leaves} leaves,"
            f" {totals.label_changes} label changes, {totals.flips} compliance flips;"
            f" {len(simulator.state.live)} live clusters",
            flush=True,
        )
    finally:
        close()


def open_target(name: str, config: AgentConfig) -> tuple[Target, Callable[[], None]]:
    """The hub's home, and how to let go of it."""
    if name == "kube":
        from agent_tasks.kube.api import Connector, Credentials
        from agent_tasks.simulate_kube import KubeTarget

        target = KubeTarget(Connector(Credentials.from_env()).open(), config.hub_name)
        return target, target.close
    client = redis.Redis.from_url(config.redis_url)
    return RedisInventory(client, config.hub_name), client.close


if __name__ == "__main__":
    main(sys.argv[1:])
