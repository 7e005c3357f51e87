"""A simulated upstream-like agent: every status type upstream's Go agent emits, in its payload shapes (reference
§2.3) and its version habits (one ``G.V`` per emitter: Value up on each change, Generation up after each send),
on its per-hub topic or on a shared status topic.

It is a load generator for the manager's ingest of upstream agents, not an agent: its hub is an in-memory model,
and it checks nothing itself (``expected_*`` say what the manager must hold). Used by
``tests/test_upstream_feed_e2e.py`` (seconds) and ``bench/upstream_feed.py`` (minutes).
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from globalhub.protocol.codec import OutgoingMessage
from globalhub.protocol.events import EXT_DEPENDENCY_VERSION, EXT_SEND_MODE, EventType
from tests.helpers import status_message

CLAIM = "id.k8s.io"
MANAGED_BY = "global-hub.open-cluster-management.io/managed-by"


@dataclass
class Emitter:
    """One emitter's version, as upstream's: ``incr`` on each change, ``next`` after each send."""

    generation: int = 0
    value: int = 0

    def incr(self) -> None:
        self.value += 1

    def sent(self) -> str:
        version = f"{self.generation}.{self.value}"
        self.generation += 1
        return version


@dataclass
class UpstreamLikeHub:
    hub: str
    seed: int = 1
    clusters: dict[str, dict[str, Any]] = field(default_factory=dict)  # claim -> cluster
    policies: dict[str, dict[str, Any]] = field(default_factory=dict)  # uid -> policy
    compliance: dict[str, dict[str, list[str]]] = field(default_factory=dict)  # policy uid -> lists
    events: dict[EventType, int] = field(default_factory=dict)  # events sent per stream
    emitters: dict[EventType, Emitter] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        for index in range(20):
            self._add_cluster(index)
        for index in range(5):
            self._add_policy(f"policy-{index}", "ns-a" if index % 2 else "ns-b")
        self._add_policy("same-name", "ns-a")
        self._add_policy("same-name", "ns-b")

    # --- the hub's model ---------------------------------------------------------------------------------------

    def _add_cluster(self, index: int) -> None:
        claim = str(uuid.UUID(int=self.rng.getrandbits(128)))
        self.clusters[claim] = {
            "apiVersion": "cluster.open-cluster-management.io/v1",
            "kind": "ManagedCluster",
            "metadata": {"name": f"{self.hub}-c{index}", "labels": {"n": "0"}, "annotations": {MANAGED_BY: self.hub}},
            "status": {"clusterClaims": [{"name": CLAIM, "value": claim}]},
        }

    def _add_policy(self, name: str, namespace: str) -> None:
        uid = str(uuid.UUID(int=self.rng.getrandbits(128)))
        self.policies[uid] = {
            "apiVersion": "policy.open-cluster-management.io/v1",
            "kind": "Policy",
            "metadata": {"name": name, "namespace": namespace, "uid": uid},
            "spec": {"remediationAction": "inform", "disabled": False},
            "status": {},
        }
        names = [c["metadata"]["name"] for c in self.clusters.values()][:4]
        self.compliance[uid] = {
            "compliantClusters": names[:2],
            "nonCompliantClusters": names[2:],
            "pendingComplianceClusters": [],
        }

    def _emitter(self, event_type: EventType) -> Emitter:
        return self.emitters.setdefault(event_type, Emitter())

    def _message(self, event_type: EventType, payload: Any, **extensions: str) -> OutgoingMessage:
        return status_message(self.hub, event_type, payload, self._emitter(event_type).sent(), extensions)

    # --- what it sends -----------------------------------------------------------------------------------------

    def start(self) -> list[OutgoingMessage]:
        """An agent start: hub info, and every type's full state (objects, then the listing)."""
        listing = [{"id": claim, "name": c["metadata"]["name"]} for claim, c in self.clusters.items()]
        spec_listing = [
            {"id": uid, "ns": p["metadata"]["namespace"], "name": p["metadata"]["name"]}
            for uid, p in self.policies.items()
        ]
        info = {"consoleURL": f"https://console.{self.hub}", "grafanaURL": "", "mchVersion": "2.14.0"}
        info["clusterId"] = str(uuid.UUID(int=self.rng.getrandbits(128)))
        return [
            self._message(EventType.HUB_INFO, info),
            self._message(EventType.MANAGED_CLUSTER, {"resync": list(self.clusters.values())}),
            self._message(EventType.MANAGED_CLUSTER, {"resync_metadata": listing}),
            self._message(EventType.LOCAL_POLICY_SPEC, {"resync": list(self.policies.values())}),
            self._message(EventType.LOCAL_POLICY_SPEC, {"resync_metadata": spec_listing}),
            *self.compliance_states(),
        ]

    def tick(self, now: datetime | None = None) -> list[OutgoingMessage]:
        """One delta interval: some changes, their bundles, the heartbeat, and events of every stream."""
        at = (now or datetime.now(UTC)).isoformat()
        messages = [self._message(EventType.HEARTBEAT, [])]
        messages += self._cluster_changes()
        messages += self._policy_changes()
        messages += self.compliance_states()
        messages += self._events(at)
        return messages

    def _cluster_changes(self) -> list[OutgoingMessage]:
        emitter = self._emitter(EventType.MANAGED_CLUSTER)
        changed = self.rng.sample(sorted(self.clusters), 2)
        for claim in changed:
            labels = self.clusters[claim]["metadata"]["labels"]
            labels["n"] = str(int(labels["n"]) + 1)
            emitter.incr()
        gone = self.rng.choice(sorted(set(self.clusters) - set(changed)))
        gone_cluster = self.clusters.pop(gone)
        self._add_cluster(self.rng.randrange(10**6))
        emitter.incr()
        new = list(self.clusters)[-1]  # the one just added
        update = [self.clusters[c] for c in [*changed, new]]
        delete = [{"id": gone, "name": gone_cluster["metadata"]["name"]}]
        return [self._message(EventType.MANAGED_CLUSTER, {"update": update, "delete": delete})]

    def _policy_changes(self) -> list[OutgoingMessage]:
        """An update, and now and then an id-less delete (a policy without a finalizer) and its re-creation."""
        emitter = self._emitter(EventType.LOCAL_POLICY_SPEC)
        uid = self.rng.choice(sorted(self.policies))
        self.policies[uid]["spec"]["disabled"] = not self.policies[uid]["spec"]["disabled"]
        emitter.incr()
        bundle: dict[str, Any] = {"update": [self.policies[uid]]}
        if self.rng.random() < 0.3:
            gone_uid = next(u for u, p in self.policies.items() if p["metadata"]["name"] == "same-name" and u != uid)
            gone = self.policies.pop(gone_uid)
            self.compliance.pop(gone_uid, None)
            bundle["delete"] = [{"ns": gone["metadata"]["namespace"], "name": "same-name"}]
            self._add_policy("same-name", gone["metadata"]["namespace"])  # created again, with a new uid
            bundle["update"].append(list(self.policies.values())[-1])
            emitter.incr()
        return [self._message(EventType.LOCAL_POLICY_SPEC, bundle)]

    def compliance_states(self) -> list[OutgoingMessage]:
        """Local compliance (complete) and, depending on it, upstream's complete compliance."""
        compliance_emitter = self._emitter(EventType.LOCAL_COMPLIANCE)
        compliance_emitter.incr()
        dependency = f"{compliance_emitter.generation}.{compliance_emitter.value}"
        states = [{"policyId": uid, **lists, "unknownComplianceClusters": []} for uid, lists in self.compliance.items()]
        complete = [
            {"policyId": uid, "nonCompliantClusters": lists["nonCompliantClusters"], "unknownComplianceClusters": []}
            for uid, lists in self.compliance.items()
            if lists["nonCompliantClusters"]
        ]
        return [
            self._message(EventType.LOCAL_COMPLIANCE, states),
            self._message(EventType.LOCAL_COMPLETE_COMPLIANCE, complete, **{EXT_DEPENDENCY_VERSION: dependency}),
        ]

    def _events(self, at: str) -> list[OutgoingMessage]:
        sequence = sum(self.events.values())
        cluster = next(iter(self.clusters.values()))["metadata"]["name"]
        uid = next(iter(self.policies))
        common = {"eventNamespace": "ns-a", "message": "status changed", "createdAt": at}
        cluster_events = [
            {
                **common,
                "eventName": f"{cluster}.{sequence}.{i}",
                "clusterName": cluster,
                "reason": "Available",
                "type": "Normal",
            }
            for i in range(3)
        ]
        root = {
            **common,
            "eventName": f"root.{sequence}",
            "policyId": uid,
            "count": 1,
            "reason": "PolicyStatusSync",
            "compliance": "NonCompliant",
            "source": {"component": "sync"},
        }
        replicated = {**root, "eventName": f"repl.{sequence}", "clusterName": cluster}
        upgrade = {**common, "eventName": f"cgu.{sequence}", "reason": "UpgradeStarted"}
        sent = [
            self._message(EventType.MANAGED_CLUSTER_EVENT, cluster_events),
            self._message(EventType.LOCAL_ROOT_POLICY_EVENT, root, **{EXT_SEND_MODE: "single"}),
            self._message(EventType.LOCAL_REPLICATED_POLICY_EVENT, [replicated]),
            self._message(EventType.CLUSTER_GROUP_UPGRADE_EVENT, [upgrade]),
        ]
        for event_type, count in (
            (EventType.MANAGED_CLUSTER_EVENT, 3),
            (EventType.LOCAL_ROOT_POLICY_EVENT, 1),
            (EventType.LOCAL_REPLICATED_POLICY_EVENT, 1),
            (EventType.CLUSTER_GROUP_UPGRADE_EVENT, 1),
        ):
            self.events[event_type] = self.events.get(event_type, 0) + count
        return sent

    # --- what the manager must hold ------------------------------------------------------------------------------

    def expected_clusters(self) -> set[str]:
        return set(self.clusters)

    def expected_compliance(self) -> set[tuple[str, str, str]]:
        statuses = {"compliantClusters": "compliant", "nonCompliantClusters": "non_compliant"}
        statuses["pendingComplianceClusters"] = "pending"
        return {
            (uid, cluster, statuses[key])
            for uid, lists in self.compliance.items()
            for key, clusters in lists.items()
            for cluster in clusters
        }

    def expected_policies(self) -> set[tuple[str, str, str]]:
        return {(uid, p["metadata"]["namespace"], p["metadata"]["name"]) for uid, p in self.policies.items()}


def stored(hub: UpstreamLikeHub) -> dict[str, Any]:
    """What the manager holds for the hub, in the terms of the ``expected_*`` methods and the events sent."""
    from globalhub.manager.models import (
        HubInfo,
        LocalCompliance,
        LocalPolicy,
        LocalPolicyEvent,
        LocalRootPolicyEvent,
        ManagedCluster,
        ManagedClusterEvent,
    )

    clusters = ManagedCluster.objects.filter(hub_id=hub.hub, deleted_at=None).values_list("cluster_id", flat=True)
    compliance = LocalCompliance.objects.filter(hub_id=hub.hub).values_list("policy_id", "cluster_name", "compliance")
    policies = LocalPolicy.objects.filter(hub_id=hub.hub, deleted_at=None).values_list("policy_id", "payload")
    return {
        "clusters": {str(c) for c in clusters},
        "policies": {(str(u), p["metadata"]["namespace"], p["metadata"]["name"]) for u, p in policies},
        "compliance": {(str(u), cluster, status) for u, cluster, status in compliance},
        "hub_info": HubInfo.objects.filter(hub_id=hub.hub, deleted_at=None).exists(),
        "events": {
            EventType.MANAGED_CLUSTER_EVENT: ManagedClusterEvent.objects.filter(hub_id=hub.hub).count(),
            EventType.LOCAL_ROOT_POLICY_EVENT: LocalRootPolicyEvent.objects.filter(hub_id=hub.hub).count(),
            EventType.LOCAL_REPLICATED_POLICY_EVENT: LocalPolicyEvent.objects.filter(hub_id=hub.hub).count(),
        },
    }


def holds_everything(hub: UpstreamLikeHub) -> bool:
    """Whether the manager's copy is the hub's model and every stored stream has every event sent."""
    now = stored(hub)
    events_sent = {t: n for t, n in hub.events.items() if t is not EventType.CLUSTER_GROUP_UPGRADE_EVENT}
    return bool(
        now["clusters"] == hub.expected_clusters()
        and now["policies"] == hub.expected_policies()
        and now["compliance"] == hub.expected_compliance()
        and now["hub_info"]
        and now["events"] == events_sent
    )
