"""How Kubernetes objects become inventory entries, as upstream's agent reads them (pure functions, no API server)."""

from __future__ import annotations

import copy
import random
from typing import Any

from agent_tasks.kube.views import (
    CLUSTER,
    COMPLIANCE,
    CONSOLE_URL_CLAIM,
    DEPLOY_MODE_LABEL,
    HUB_INFO,
    MCH_VERSION_CLAIM,
    MIGRATING_ANNOTATION,
    POLICY,
    ROOT_POLICY_LABEL,
    ClusterView,
    HubInfoSettings,
    HubInfoView,
    PolicyView,
    compliance_entry,
)
from agent_tasks.kube.writer import content_digest
from agent_tasks.simulate import make_cluster, make_policy
from agent_tasks.types import HUB_INFO_KEY
from globalhub.protocol.objects import CLUSTER_ID_CLAIM, cluster_claim_id

UID = "0b7c5c8e-4a3a-4c61-9d5e-1f2a3b4c5d6e"


def cluster(index: int = 0) -> dict[str, Any]:
    return make_cluster("hub1", index, random.Random(index))


def policy(statuses: dict[str, str | None] | None = None, labels: dict[str, str] | None = None) -> dict[str, Any]:
    obj = make_policy(1, random.Random(1))
    obj["metadata"]["uid"] = UID
    obj["metadata"]["labels"] = labels or {}
    if statuses is not None:
        obj["status"] = {
            "compliant": "NonCompliant",
            "status": [
                {"clustername": name, "clusternamespace": name, **({"compliant": state} if state else {})}
                for name, state in statuses.items()
            ],
        }
    return obj


def test_a_cluster_is_reported_under_its_id_claim_without_the_metadata_upstream_strips() -> None:
    obj = cluster()
    obj["metadata"].update({"finalizers": ["f"], "ownerReferences": [{"name": "o"}], "selfLink": "/x"})
    original = copy.deepcopy(obj)
    [(short, object_id, value)] = ClusterView().observe(obj)
    assert (short, object_id) == (CLUSTER, cluster_claim_id(obj))
    assert value is not None
    assert not {"managedFields", "finalizers", "ownerReferences", "selfLink"} & set(value["metadata"])
    assert value["status"] == obj["status"] and value["spec"] == obj["spec"]
    assert obj == original  # the listed object is not changed


def test_a_cluster_without_an_id_claim_is_not_reported_until_it_gets_one() -> None:
    view = ClusterView()
    obj = cluster()
    claims = obj["status"]["clusterClaims"]
    obj["status"]["clusterClaims"] = [c for c in claims if c["name"] != CLUSTER_ID_CLAIM]
    assert view.observe(obj) == []
    obj["status"]["clusterClaims"] = claims
    assert [entry[:2] for entry in view.observe(obj)] == [(CLUSTER, cluster_claim_id(obj))]


def test_a_changed_id_claim_removes_the_old_entry_and_adds_the_new_one() -> None:
    view = ClusterView()
    obj = cluster()
    old = cluster_claim_id(obj)
    view.observe(obj)
    new = "5e3f7a52-7c53-4f0e-8a4e-000000000001"
    for claim in obj["status"]["clusterClaims"]:
        if claim["name"] == CLUSTER_ID_CLAIM:
            claim["value"] = new
    changes = view.observe(obj)
    assert [(short, object_id, value is None) for short, object_id, value in changes] == [
        (CLUSTER, old, True),
        (CLUSTER, new, False),
    ]


def test_managed_hubs_migrating_and_deleting_clusters_leave_the_inventory() -> None:
    for field, key, value in (
        ("labels", DEPLOY_MODE_LABEL, "default"),
        ("annotations", MIGRATING_ANNOTATION, "hub2"),
        (None, "deletionTimestamp", "2026-12-01T00:00:00Z"),
    ):
        view = ClusterView()
        obj = cluster()
        view.observe(obj)
        metadata = obj["metadata"]
        (metadata.setdefault(field, {}) if field else metadata)[key] = value
        assert view.observe(obj) == [(CLUSTER, cluster_claim_id(obj), None)]
        assert view.objects == 0


def test_a_deleted_cluster_is_removed_by_name_even_without_its_claims() -> None:
    view = ClusterView()
    obj = cluster()
    view.observe(obj)
    assert view.forget({"metadata": {"name": obj["metadata"]["name"]}}) == [(CLUSTER, cluster_claim_id(obj), None)]
    assert view.forget(obj) == []


def test_of_two_clusters_with_one_id_claim_the_first_is_reported_and_the_other_takes_over_when_it_goes() -> None:
    view = ClusterView()
    first, second = cluster(1), cluster(2)
    second["status"]["clusterClaims"] = copy.deepcopy(first["status"]["clusterClaims"])
    claim = cluster_claim_id(first)
    view.observe(first)
    assert view.observe(second) == []
    changes = view.forget(first)
    assert [(short, object_id, value is None) for short, object_id, value in changes] == [
        (CLUSTER, claim, True),
        (CLUSTER, claim, False),
    ]
    assert changes[-1][2] is not None and changes[-1][2]["metadata"]["name"] == second["metadata"]["name"]
    assert view.forget(second) == [(CLUSTER, claim, None)]


def test_a_waiting_cluster_that_goes_first_is_forgotten() -> None:
    view = ClusterView()
    first, second = cluster(1), cluster(2)
    second["status"]["clusterClaims"] = copy.deepcopy(first["status"]["clusterClaims"])
    view.observe(first)
    view.observe(second)
    assert view.forget(second) == []
    assert view.forget(first) == [(CLUSTER, cluster_claim_id(first), None)]


def test_a_root_policy_gives_its_spec_with_an_empty_status_and_its_compliance() -> None:
    obj = policy({"c1": "Compliant", "c2": "NonCompliant", "c3": "Pending", "c4": None, "c5": "Terminating"})
    changes = {short: value for short, _, value in PolicyView().observe(obj)}
    spec = changes[POLICY]
    assert spec is not None and spec["status"] == {}
    assert spec["spec"] == obj["spec"]
    assert changes[COMPLIANCE] == {
        "policyId": UID,
        "compliantClusters": ["c1"],
        "nonCompliantClusters": ["c2"],
        "unknownComplianceClusters": ["c4", "c5"],
        "pendingComplianceClusters": ["c3"],
    }


def test_a_policy_without_cluster_status_has_no_compliance_entry() -> None:
    assert compliance_entry(UID, policy()) is None
    assert compliance_entry(UID, policy({})) is None
    changes = {short: value for short, _, value in PolicyView().observe(policy())}
    assert changes[COMPLIANCE] is None and changes[POLICY] is not None


def test_replicated_policies_are_not_local_policies() -> None:
    view = PolicyView()
    assert view.observe(policy({"c1": "Compliant"}, labels={ROOT_POLICY_LABEL: "ns.root"})) == []
    assert view.objects == 0


def test_a_deleted_policy_removes_its_spec_and_its_compliance() -> None:
    view = PolicyView()
    obj = policy({"c1": "Compliant"})
    view.observe(obj)
    assert sorted(view.forget(obj)) == [(COMPLIANCE, UID, None), (POLICY, UID, None)]


def test_a_status_only_policy_update_leaves_its_spec_entry_unchanged() -> None:
    view = PolicyView()
    before = {short: value for short, _, value in view.observe(policy({"c1": "Compliant"}))}
    changed = policy({"c1": "NonCompliant"})
    changed["metadata"]["resourceVersion"] = "999999999"
    after = {short: value for short, _, value in view.observe(changed)}
    assert content_digest(before[POLICY]) == content_digest(after[POLICY])
    assert content_digest(before[COMPLIANCE]) != content_digest(after[COMPLIANCE])


def test_hub_info_comes_from_cluster_claims_and_settings_fill_the_gaps() -> None:
    view = HubInfoView(HubInfoSettings(console_url="https://set", grafana_url="https://grafana", mch_version="2.1"))
    claim = {"metadata": {"name": CLUSTER_ID_CLAIM}, "spec": {"value": UID}}
    assert view.observe({"metadata": {"name": MCH_VERSION_CLAIM}, "spec": {"value": "2.13.0"}}) == [
        (HUB_INFO, HUB_INFO_KEY, None)  # no cluster id yet: nothing to send, as upstream
    ]
    [(_, _, info)] = view.observe(claim)
    assert info == {
        "consoleURL": "https://set",
        "grafanaURL": "https://grafana",
        "mchVersion": "2.13.0",
        "clusterId": UID,
    }
    [(_, _, info)] = view.observe({"metadata": {"name": CONSOLE_URL_CLAIM}, "spec": {"value": "https://claimed"}})
    assert info is not None and info["consoleURL"] == "https://claimed"
    assert view.forget(claim) == [(HUB_INFO, HUB_INFO_KEY, None)]


def test_a_cluster_id_setting_stands_in_for_a_missing_claim() -> None:
    view = HubInfoView(HubInfoSettings(cluster_id=UID))
    assert view.settled() == [
        (HUB_INFO, HUB_INFO_KEY, {"consoleURL": "", "grafanaURL": "", "mchVersion": "", "clusterId": UID})
    ]


def test_the_content_digest_ignores_only_the_resource_version() -> None:
    obj = cluster()
    moved = copy.deepcopy(obj)
    moved["metadata"]["resourceVersion"] = "1"
    assert content_digest(obj) == content_digest(moved)
    moved["metadata"]["labels"]["environment"] = "elsewhere"
    assert content_digest(obj) != content_digest(moved)
    assert content_digest({"big": 2**70}) != content_digest({"big": 2**70 + 1})
