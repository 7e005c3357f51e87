"""The inventory watcher (``python -m agent_tasks.watch_kube``) against the real local API server and Redis.

The watcher runs as the agent's ServiceAccount user with exactly the deployed ClusterRole (a bearer token; the
API server asks the stack's stub for the token and for every permission):

* creates, updates and deletes through the API reach the inventory, only when content changed;
* a broken watch resumes from its resourceVersion, without relisting, and loses nothing;
* a compacted resourceVersion (objects deleted straight in etcd behind a stopped API server) relists and removes;
* wrong credentials, a missing permission and an unreachable server are clear errors, and the watcher recovers.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import redis

from agent_tasks.inventory import RedisInventory
from agent_tasks.kube.api import Connector, Credentials, KubeApi
from agent_tasks.kube.resources import MANAGED_CLUSTERS, POLICIES
from agent_tasks.kube.status import SourceStatus
from agent_tasks.kube.views import CLUSTER, COMPLIANCE, CONSOLE_URL_CLAIM, HUB_INFO, POLICY
from agent_tasks.metrics import AgentCollector
from agent_tasks.types import HUB_INFO_KEY
from globalhub.protocol.objects import CLUSTER_ID_CLAIM
from tests.helpers import Process, python_argv, wait_for
from tests.kube import (
    CuttableProxy,
    KubeStack,
    claim_of,
    create_claim,
    create_cluster,
    create_policy,
    delete,
    deployed_agent_rules,
    free_port,
    set_compliance,
    set_label,
)

pytestmark = pytest.mark.e2e
HUB_ID = "9d2c7a9e-3b1f-4c55-8f0e-5a6b7c8d9e0f"


@dataclass
class Case:
    """One test's hub: its API connection (admin), its watcher's environment, its inventory and processes."""

    kube: KubeStack
    api: KubeApi
    hub: str
    env: dict[str, str]
    inventory: RedisInventory
    redis: redis.Redis
    log_dir: Path
    processes: list[Process]

    def start_watcher(self) -> Process:
        process = Process("watcher", python_argv("-m", "agent_tasks.watch_kube"), self.env, self.log_dir)
        self.processes.append(process)
        return process

    def source(self) -> dict[str, Any]:
        return SourceStatus(self.redis, self.hub).read() or {"resources": {}, "types": {}, "running": False}

    def resource(self, name: str) -> dict[str, Any]:
        state: dict[str, Any] = self.source()["resources"].get(name, {})
        return state

    def all_connected(self) -> bool:
        resources = self.source()["resources"]
        return len(resources) == 3 and all(row.get("connected") for row in resources.values())

    def entries(self, short_type: str) -> dict[str, Any]:
        return {object_id: json.loads(raw) for object_id, raw in self.inventory.list_encoded(short_type)}

    def metric(self, name: str, **labels: str) -> float | None:
        for family in AgentCollector(self.redis, self.hub).collect():
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    return float(sample.value)
        return None


@pytest.fixture
def case(
    kube: KubeStack,
    kube_api: KubeApi,
    process_env: dict[str, str],
    hub_name: str,
    inventory: RedisInventory,
    redis_client: redis.Redis,
    tmp_path: Path,
    processes: list[Process],
) -> Case:
    env = dict(process_env)
    env.pop("KUBECONFIG", None)
    env.update({"GH_KUBECONFIG": str(kube.agent_kubeconfig), "GH_KUBE_RETRY_MAX": "2s"})
    return Case(kube, kube_api, hub_name, env, inventory, redis_client, tmp_path, processes)


def test_creates_updates_and_deletes_through_the_api_reach_the_inventory(case: Case) -> None:
    api = case.api
    clusters = [create_cluster(api, case.hub, index) for index in range(3)]
    names = [c["metadata"]["name"] for c in clusters]
    policy = create_policy(api, 0, {names[0]: "Compliant", names[1]: "NonCompliant", names[2]: "Pending"})
    uid = policy["metadata"]["uid"]
    create_claim(api, CLUSTER_ID_CLAIM, HUB_ID)
    create_claim(api, CONSOLE_URL_CLAIM, "https://console.hub.example.com")
    case.env["GH_HUB_GRAFANA_URL"] = "https://grafana.hub.example.com"
    case.start_watcher()

    wait_for(lambda: case.inventory.ids(CLUSTER) == {claim_of(c) for c in clusters}, timeout=60, what="the clusters")
    wait_for(lambda: case.inventory.ids(COMPLIANCE) == {uid}, timeout=30, what="the policy's compliance")
    assert case.inventory.ids(POLICY) == {uid}
    assert case.entries(COMPLIANCE)[uid] == {
        "policyId": uid,
        "compliantClusters": [names[0]],
        "nonCompliantClusters": [names[1]],
        "unknownComplianceClusters": [],
        "pendingComplianceClusters": [names[2]],
    }
    wait_for(lambda: case.inventory.ids(HUB_INFO) == {HUB_INFO_KEY}, timeout=30, what="the hub info")
    assert case.entries(HUB_INFO)[HUB_INFO_KEY] == {
        "consoleURL": "https://console.hub.example.com",
        "grafanaURL": "https://grafana.hub.example.com",
        "mchVersion": "",
        "clusterId": HUB_ID,
    }
    wait_for(case.all_connected, timeout=30, what="three open watches")
    spec_changes = case.inventory.log_position(POLICY).added

    # Changes through the API: a label, a compliance flip, a new cluster, a deleted cluster.
    set_label(api, names[0], "environment", "moved")
    set_compliance(api, policy["metadata"]["namespace"], policy["metadata"]["name"], {names[0]: "NonCompliant"})
    joined = create_cluster(api, case.hub, 10)
    delete(api, MANAGED_CLUSTERS, names[1])

    expected = {claim_of(clusters[0]), claim_of(clusters[2]), claim_of(joined)}
    wait_for(lambda: case.inventory.ids(CLUSTER) == expected, timeout=30, what="the join and the leave")
    wait_for(
        lambda: (
            (case.inventory.get(CLUSTER, claim_of(clusters[0])) or {})["metadata"]["labels"]["environment"] == "moved"
        ),
        timeout=30,
        what="the label change",
    )
    wait_for(
        lambda: case.entries(COMPLIANCE)[uid]["nonCompliantClusters"] == [names[0]],
        timeout=30,
        what="the compliance change",
    )
    assert case.inventory.log_position(POLICY).added == spec_changes, "a status-only update rewrote the policy's spec"

    delete(api, POLICIES, policy["metadata"]["name"], policy["metadata"]["namespace"])
    wait_for(
        lambda: not case.inventory.ids(POLICY) and not case.inventory.ids(COMPLIANCE),
        timeout=30,
        what="the policy's removal",
    )

    counts = {CLUSTER: 3, POLICY: 0, COMPLIANCE: 0, HUB_INFO: 1}
    wait_for(lambda: case.source()["types"] == counts, timeout=10, what="the published counts")
    state = case.source()
    assert state["running"]
    clusters_state = state["resources"]["managedclusters"]
    assert clusters_state["objects"] == 3 and clusters_state["relists"] == 1 and clusters_state["errors"] == 0
    assert clusters_state["last_event_age_seconds"] < 60


def test_a_broken_watch_resumes_from_its_resource_version_and_loses_nothing(case: Case) -> None:
    api = case.api
    clusters = [create_cluster(api, case.hub, index) for index in range(3)]
    host, port = case.kube.server.removeprefix("https://").split(":")
    proxy = CuttableProxy(host, int(port))
    try:
        case.env["GH_KUBECONFIG"] = str(case.kube.kubeconfig(case.log_dir / "proxied.kubeconfig", server=proxy.url))
        case.start_watcher()
        wait_for(lambda: case.inventory.ids(CLUSTER) == {claim_of(c) for c in clusters}, timeout=60, what="the list")
        wait_for(case.all_connected, timeout=30, what="three open watches")

        proxy.cut(hold=True)  # every watch breaks; reconnecting fails while the hub changes
        joined = create_cluster(api, case.hub, 20)
        delete(api, MANAGED_CLUSTERS, clusters[0]["metadata"]["name"])
        wait_for(
            lambda: case.resource("managedclusters").get("errors", 0) >= 1,
            timeout=30,
            what="the broken watch to be noticed",
        )
        assert case.inventory.ids(CLUSTER) == {claim_of(c) for c in clusters}
        proxy.resume()

        expected = {claim_of(clusters[1]), claim_of(clusters[2]), claim_of(joined)}
        wait_for(lambda: case.inventory.ids(CLUSTER) == expected, timeout=60, what="the changes made meanwhile")
        wait_for(case.all_connected, timeout=30, what="the watches to be open again")
        state = wait_for(
            lambda: (s := case.resource("managedclusters"))["watch_restarts"] >= 2 and s,
            timeout=10,
            what="the resumed watch in the published state",
        )
        assert state["relists"] == 1, "a broken watch must resume, not relist"
    finally:
        proxy.close()


def test_an_inventory_lost_from_redis_is_listed_again(case: Case) -> None:
    clusters = [create_cluster(case.api, case.hub, index) for index in range(5)]
    case.start_watcher()
    wait_for(lambda: case.inventory.ids(CLUSTER) == {claim_of(c) for c in clusters}, timeout=60, what="the list")
    wait_for(case.all_connected, timeout=30, what="three open watches")
    relists = case.resource("managedclusters")["relists"]

    # Redis restarts empty (here: every key of the hub deleted); the API server is quiet, no event comes.
    keys = list(case.redis.scan_iter(match=f"gh:{case.hub}:*"))
    case.redis.delete(*keys)

    wait_for(lambda: case.inventory.ids(CLUSTER) == {claim_of(c) for c in clusters}, timeout=60, what="the refill")
    wait_for(
        lambda: case.resource("managedclusters").get("relists", 0) > relists,
        timeout=30,
        what="the relist in the published state",
    )
    assert case.redis.xlen(case.inventory.changes_key(CLUSTER)) == 5, "each cluster is a change again, for a delta"
    assert not case.inventory.filling(CLUSTER)


def test_a_compacted_resource_version_relists_and_removes_what_was_deleted_behind_the_api_server(case: Case) -> None:
    api = case.api
    clusters = [create_cluster(api, case.hub, index) for index in range(4)]
    policy = create_policy(api, 0, {clusters[0]["metadata"]["name"]: "Compliant"})
    case.start_watcher()
    wait_for(lambda: case.inventory.ids(CLUSTER) == {claim_of(c) for c in clusters}, timeout=60, what="the list")
    wait_for(lambda: case.inventory.ids(POLICY) == {policy["metadata"]["uid"]}, timeout=30, what="the policy")

    case.kube.stop_apiserver()
    case.kube.etcd_delete(MANAGED_CLUSTERS, clusters[0]["metadata"]["name"])
    case.kube.etcd_delete(POLICIES, policy["metadata"]["name"], policy["metadata"]["namespace"])
    case.kube.compact()
    case.kube.start_apiserver()

    expected = {claim_of(c) for c in clusters[1:]}
    wait_for(lambda: case.inventory.ids(CLUSTER) == expected, timeout=90, what="the cluster deleted in etcd to leave")
    wait_for(
        lambda: not case.inventory.ids(POLICY) and not case.inventory.ids(COMPLIANCE),
        timeout=30,
        what="the policy's removal",
    )
    wait_for(
        lambda: case.resource("managedclusters")["relists"] == 2,
        timeout=10,
        what="the relist in the published state",
    )
    wait_for(
        lambda: case.metric("globalhub_agent_source_relists_total", resource="managedclusters") == 2.0,
        timeout=10,
        what="the relist in the metrics",
    )
    # The removals are in the change log, so they reach the manager as deletes with the next delta.
    log: list[tuple[bytes, dict[bytes, bytes]]] = case.redis.xrange(case.inventory.changes_key(CLUSTER))  # type: ignore[assignment]
    assert (b"op", b"delete") in [item for _, fields in log for item in fields.items()]


def test_wrong_credentials_are_a_clear_error_and_the_watcher_recovers_when_they_are_fixed(case: Case) -> None:
    cluster = create_cluster(case.api, case.hub, 0)
    kubeconfig = case.kube.kubeconfig(case.log_dir / "agent.kubeconfig", token="not-a-token")
    case.env["GH_KUBECONFIG"] = str(kubeconfig)
    watcher = case.start_watcher()

    error = wait_for(
        lambda: case.resource("managedclusters").get("last_error"),
        timeout=30,
        what="the error",
    )
    assert "401 Unauthorized" in error
    assert "401 Unauthorized" in watcher.log_text()
    assert not case.inventory.ids(CLUSTER)

    case.kube.kubeconfig(kubeconfig)  # the right token, in the same file
    wait_for(lambda: case.inventory.ids(CLUSTER) == {claim_of(cluster)}, timeout=60, what="recovery")
    wait_for(case.all_connected, timeout=30, what="three open watches")
    assert watcher.is_running()


def test_a_missing_permission_is_a_clear_403_and_the_watcher_recovers_when_it_is_granted(case: Case) -> None:
    cluster = create_cluster(case.api, case.hub, 0)
    rules = deployed_agent_rules()
    case.kube.grant_agent([{**rule, "verbs": ["get", "list"]} for rule in rules])  # no watch
    case.start_watcher()

    error = wait_for(
        lambda: case.resource("managedclusters").get("last_error"),
        timeout=30,
        what="the error",
    )
    assert "403 Forbidden" in error and "get, list and watch on managedclusters" in error
    assert case.inventory.ids(CLUSTER) == {claim_of(cluster)}  # it could list, not watch

    case.kube.grant_agent(rules)
    wait_for(case.all_connected, timeout=60, what="three open watches")
    joined = create_cluster(case.api, case.hub, 1)
    wait_for(lambda: claim_of(joined) in case.inventory.ids(CLUSTER), timeout=30, what="a change after the grant")


def test_an_unreachable_server_is_a_clear_error_and_the_watcher_connects_when_it_answers(case: Case) -> None:
    cluster = create_cluster(case.api, case.hub, 0)
    port = free_port()
    case.env["GH_KUBECONFIG"] = str(
        case.kube.kubeconfig(case.log_dir / "k.kubeconfig", server=f"https://127.0.0.1:{port}")
    )
    case.start_watcher()
    error = wait_for(
        lambda: case.resource("managedclusters").get("last_error"),
        timeout=30,
        what="the error",
    )
    assert "cannot reach the API server" in error

    host, target = case.kube.server.removeprefix("https://").split(":")
    proxy = CuttableProxy(host, int(target), port=port)  # the server "comes up" at that address
    try:
        wait_for(lambda: case.inventory.ids(CLUSTER) == {claim_of(cluster)}, timeout=60, what="the first list")
        wait_for(case.all_connected, timeout=30, what="three open watches")
    finally:
        proxy.close()


def test_watches_ask_for_bookmarks_and_the_server_sends_them(kube: KubeStack, kube_api: KubeApi, hub_name: str) -> None:
    api = Connector(Credentials(kubeconfig=str(kube.agent_kubeconfig))).open()
    try:
        page = api.list_page(MANAGED_CLUSTERS, limit=10)
        # The server sends a bookmark 2 s before a watch times out (and every minute), once its resourceVersion has
        # moved past the watcher's: a change first, then the end of a watch long enough for a slow machine.
        stream = api.watch(MANAGED_CLUSTERS, page.resource_version, timeout_seconds=12)
        create_cluster(kube_api, hub_name, 0)
        events = list(stream)
    finally:
        api.close()
    assert events and events[0].type == "ADDED"
    bookmarks = [event for event in events if event.type == "BOOKMARK"]
    assert bookmarks and int(bookmarks[-1].resource_version) >= int(events[0].resource_version)


def test_in_a_pod_the_service_account_token_is_used(kube: KubeStack, tmp_path: Path) -> None:
    # What the kubelet mounts into a pod, and the environment it sets.
    (tmp_path / "token").write_text(kube.agent_token())
    (tmp_path / "ca.crt").write_bytes(kube.ca_file.read_bytes())
    (tmp_path / "namespace").write_text("globalhub-agent")
    host, port = kube.server.removeprefix("https://").split(":")
    env = {"KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": port}
    credentials = Credentials.from_env(env)
    assert credentials.in_cluster and credentials.describe() == "the pod's service account"
    with mock.patch.dict("os.environ", env):
        api = Connector(dataclasses.replace(credentials, service_account=str(tmp_path))).open()
    try:
        assert api.list_page(MANAGED_CLUSTERS, limit=1).resource_version
    finally:
        api.close()
