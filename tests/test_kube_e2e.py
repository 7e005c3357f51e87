"""A hub read from a real Kubernetes API server, end to end: API -> inventory watcher -> agent -> Kafka -> manager.

Real processes throughout: the manager's status consumer, the agent's worker, beat and spec listener, and its
inventory watcher running as the agent's ServiceAccount user with exactly the deployed ClusterRole.

* ManagedClusters and Policies (with status and compliance) created, updated and deleted through the API reach the
  manager as deltas; a requested resync lists exactly the API's objects (a row the API never had is swept);
* objects deleted straight in etcd behind a stopped API server, and created through a second client once it is
  back, reach the manager with no resync request; the relist shows in the agent's metrics;
* the agent restarted (every process) while objects change converges;
* wrong credentials, then an unreachable server: a clear error, heartbeats go on, and it recovers.
"""

from __future__ import annotations

import urllib.request
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import redis
from django.utils import timezone

from agent_tasks.kube.api import KubeApi
from agent_tasks.kube.resources import MANAGED_CLUSTERS, POLICIES
from agent_tasks.kube.status import SourceStatus
from globalhub.manager.models import Hub, HubInfo, LocalCompliance, LocalPolicy, ManagedCluster, ResyncProgress
from globalhub.protocol.events import EventType
from globalhub.protocol.kafka import SPEC_TOPIC_CONFIG, ConfirmedProducer, KafkaSettings, ensure_topics
from globalhub.protocol.objects import CLUSTER_ID_CLAIM
from globalhub.protocol.requests import resync_request
from tests.helpers import Process, python_argv, start_agent, start_consumer, wait_for
from tests.kube import (
    CuttableProxy,
    KubeStack,
    create_claim,
    create_cluster,
    create_policy,
    delete,
    free_port,
    list_all,
    set_compliance,
    set_label,
)

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

HUB_ID = "2a7d3c1e-9b8f-4e6d-a5c4-3b2a1f0e9d8c"
INTERVALS = ",".join(
    f"{name}=1s" for name in ("managedcluster", "policy.localspec", "policy.localcompliance", "managedhub.info")
)
_STATES = {"Compliant": "compliant", "NonCompliant": "non_compliant", "Pending": "pending"}


# --- the two sides, compared ---------------------------------------------------------------------------------------


def api_clusters(api: KubeApi) -> set[str]:
    claims = set()
    for cluster in list_all(api, MANAGED_CLUSTERS):
        for claim in (cluster.get("status") or {}).get("clusterClaims") or []:
            if claim["name"] == CLUSTER_ID_CLAIM:
                claims.add(claim["value"])
    return claims


def api_policies(api: KubeApi) -> set[str]:
    return {policy["metadata"]["uid"] for policy in list_all(api, POLICIES)}


def api_compliance(api: KubeApi) -> set[tuple[str, str, str]]:
    rows = set()
    for policy in list_all(api, POLICIES):
        for item in (policy.get("status") or {}).get("status") or []:
            state = _STATES.get(item.get("compliant", ""), "unknown")
            rows.add((policy["metadata"]["uid"], item["clustername"], state))
    return rows


def manager_clusters(hub: str) -> set[str]:
    rows = ManagedCluster.objects.filter(hub_id=hub, deleted_at__isnull=True).values_list("cluster_id", flat=True)
    return {str(row) for row in rows}


def manager_policies(hub: str) -> set[str]:
    rows = LocalPolicy.objects.filter(hub_id=hub, deleted_at__isnull=True).values_list("policy_id", flat=True)
    return {str(row) for row in rows}


def manager_compliance(hub: str) -> set[tuple[str, str, str]]:
    rows = LocalCompliance.objects.filter(hub_id=hub).values_list("policy_id", "cluster_name", "compliance")
    return {(str(policy), cluster, state) for policy, cluster, state in rows}


def converged(api: KubeApi, hub: str) -> bool:
    return (
        manager_clusters(hub) == api_clusters(api)
        and manager_policies(hub) == api_policies(api)
        and manager_compliance(hub) == api_compliance(api)
    )


def wait_converged(api: KubeApi, hub: str, timeout: float, what: str) -> None:
    def describe() -> bool | str:
        return converged(api, hub) or (
            f"clusters {len(manager_clusters(hub))}/{len(api_clusters(api))}, policies"
            f" {len(manager_policies(hub))}/{len(api_policies(api))}, compliance"
            f" {len(manager_compliance(hub))}/{len(api_compliance(api))}"
        )

    wait_for(lambda: describe() is True, timeout=timeout, what=f"{what} ({describe()})")


def completed_resyncs(hub: str, event_type: EventType) -> set[str]:
    rows = ResyncProgress.objects.filter(hub_id=hub, event_type=event_type, outcome="completed")
    return set(rows.values_list("resync_id", flat=True))


# --- processes -----------------------------------------------------------------------------------------------------


@pytest.fixture
def hub_env(process_env: dict[str, str], kube: KubeStack) -> dict[str, str]:
    env = dict(process_env)
    env.pop("KUBECONFIG", None)
    env.update(
        {
            "GH_KUBECONFIG": str(kube.agent_kubeconfig),
            "GH_KUBE_RETRY_MAX": "2s",
            "GH_AGENT_INTERVALS": f"{INTERVALS},managedhub.heartbeat=1s",
            "GH_HUB_GRAFANA_URL": "https://grafana.hub.example.com",
        }
    )
    return env


def start_hub(env: dict[str, str], log_dir: Path, processes: list[Process], prefix: str = "agent") -> None:
    """The agent's processes, the inventory watcher among them."""
    processes.extend(start_agent(env, log_dir, prefix=prefix))
    processes.append(Process(f"{prefix}-watcher", python_argv("-m", "agent_tasks.watch_kube"), env, log_dir))


def populate(api: KubeApi, hub: str, clusters: int) -> list[dict[str, Any]]:
    created = [create_cluster(api, hub, index) for index in range(clusters)]
    names = [c["metadata"]["name"] for c in created]
    states = ["Compliant", "NonCompliant", "Pending", ""]
    for index in range(3):
        create_policy(api, index, {name: states[(i + index) % 4] for i, name in enumerate(names[:6])})
    create_claim(api, CLUSTER_ID_CLAIM, HUB_ID)
    return created


def request_resync(kafka: KafkaSettings, env: dict[str, str], hub: str, event_type: EventType) -> None:
    producer = ConfirmedProducer(kafka)
    producer.send(env["GH_SPEC_TOPIC"], [resync_request(hub, [event_type])])
    producer.close()


# --- tests ---------------------------------------------------------------------------------------------------------


def test_api_changes_reach_the_manager_as_deltas_and_a_requested_resync_lists_exactly_the_apis_objects(
    kube: KubeStack,
    kube_api: KubeApi,
    hub_env: dict[str, str],
    hub_name: str,
    kafka_settings: KafkaSettings,
    redis_client: redis.Redis,
    tmp_path: Path,
    processes: list[Process],
) -> None:
    api = kube_api
    clusters = populate(api, hub_name, 8)
    ensure_topics(kafka_settings, [hub_env["GH_SPEC_TOPIC"]], SPEC_TOPIC_CONFIG)
    processes.append(start_consumer(hub_env, tmp_path))
    start_hub(hub_env, tmp_path, processes)
    wait_converged(api, hub_name, timeout=90, what="the startup resyncs")
    wait_for(
        lambda: HubInfo.objects.filter(hub_id=hub_name, cluster_id=HUB_ID, deleted_at__isnull=True).exists(),
        timeout=30,
        what="the hub info from the id.k8s.io claim",
    )
    info = HubInfo.objects.get(hub_id=hub_name)
    assert info.grafana_url == "https://grafana.hub.example.com"

    # Deltas: a label change, a join, a leave, a compliance change, a new policy, a deleted policy.
    resyncs_before = completed_resyncs(hub_name, EventType.MANAGED_CLUSTER)
    names = [c["metadata"]["name"] for c in clusters]
    set_label(api, names[0], "environment", "moved")
    create_cluster(api, hub_name, 100)
    delete(api, MANAGED_CLUSTERS, names[1])
    policies = list_all(api, POLICIES)
    first = policies[0]["metadata"]
    set_compliance(api, first["namespace"], first["name"], {names[0]: "NonCompliant", names[2]: "Compliant"})
    create_policy(api, 7, {names[3]: "Pending"})
    second = policies[1]["metadata"]
    delete(api, POLICIES, second["name"], second["namespace"])
    wait_converged(api, hub_name, timeout=60, what="the deltas")
    moved = ManagedCluster.objects.get(hub_id=hub_name, cluster_name=names[0], deleted_at__isnull=True)
    assert moved.payload["metadata"]["labels"]["environment"] == "moved"
    assert completed_resyncs(hub_name, EventType.MANAGED_CLUSTER) == resyncs_before, "deltas, not resyncs"

    # A row the API never had: a requested resync lists exactly the API's clusters, so it is swept.
    now = timezone.now()
    stray = ManagedCluster.objects.create(
        hub_id=hub_name, cluster_id=uuid.uuid4(), cluster_name="stray", payload={}, created_at=now, updated_at=now
    )
    wait_for(
        lambda: listener_ready(hub_env, redis_client, kafka_settings), timeout=60, what="the spec listener to listen"
    )
    request_resync(kafka_settings, hub_env, hub_name, EventType.MANAGED_CLUSTER)
    done = wait_for(
        lambda: completed_resyncs(hub_name, EventType.MANAGED_CLUSTER) - resyncs_before,
        timeout=60,
        what="the requested resync",
    )
    progress = ResyncProgress.objects.get(hub_id=hub_name, event_type=EventType.MANAGED_CLUSTER, resync_id=done.pop())
    assert progress.listed == len(api_clusters(api))
    stray.refresh_from_db()
    assert stray.deleted_at is not None
    assert converged(api, hub_name)


def listener_ready(env: dict[str, str], client: redis.Redis, kafka: KafkaSettings) -> bool:
    """A request for another hub, until the listener has seen one: its partition is assigned from then on."""
    request_resync(kafka, env, "some-other-hub", EventType.MANAGED_CLUSTER)
    return bool(client.hget(f"gh:{env['HUB_NAME']}:agent:listener", "ignored"))


def test_objects_changed_behind_a_stopped_api_server_reach_the_manager_without_a_resync_request(
    kube: KubeStack,
    kube_api: KubeApi,
    hub_env: dict[str, str],
    hub_name: str,
    redis_client: redis.Redis,
    tmp_path: Path,
    processes: list[Process],
) -> None:
    api = kube_api
    clusters = populate(api, hub_name, 6)
    metrics_port = free_port()
    hub_env["GH_AGENT_METRICS_PORT"] = str(metrics_port)
    processes.append(start_consumer(hub_env, tmp_path))
    start_hub(hub_env, tmp_path, processes)
    wait_converged(api, hub_name, timeout=90, what="the startup resyncs")
    resyncs_before = completed_resyncs(hub_name, EventType.MANAGED_CLUSTER)
    policy = list_all(api, POLICIES)[0]["metadata"]

    kube.stop_apiserver()
    kube.etcd_delete(MANAGED_CLUSTERS, clusters[0]["metadata"]["name"])
    kube.etcd_delete(MANAGED_CLUSTERS, clusters[1]["metadata"]["name"])
    kube.etcd_delete(POLICIES, policy["name"], policy["namespace"])
    kube.compact()
    kube.start_apiserver()
    create_cluster(api, hub_name, 50)  # through the API (a second client), once the server is back

    wait_converged(api, hub_name, timeout=120, what="the changes behind the stopped API server")
    assert completed_resyncs(hub_name, EventType.MANAGED_CLUSTER) == resyncs_before, "no resync was asked for"
    wait_for(lambda: relists_in_metrics(metrics_port) >= 2, timeout=30, what="the relist in the agent's metrics")


def relists_in_metrics(port: int) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    for line in text.splitlines():
        if line.startswith("globalhub_agent_source_relists_total{") and 'resource="managedclusters"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_the_agent_restarted_while_objects_change_converges(
    kube: KubeStack,
    kube_api: KubeApi,
    hub_env: dict[str, str],
    hub_name: str,
    tmp_path: Path,
    processes: list[Process],
) -> None:
    api = kube_api
    clusters = populate(api, hub_name, 6)
    processes.append(start_consumer(hub_env, tmp_path))
    start_hub(hub_env, tmp_path, processes)
    wait_converged(api, hub_name, timeout=90, what="the startup resyncs")

    for process in processes[1:]:
        process.stop()
    names = [c["metadata"]["name"] for c in clusters]
    delete(api, MANAGED_CLUSTERS, names[0])
    create_cluster(api, hub_name, 60)
    policy = list_all(api, POLICIES)[0]["metadata"]
    set_compliance(api, policy["namespace"], policy["name"], {names[2]: "NonCompliant"})
    start_hub(hub_env, tmp_path, processes, prefix="restarted")

    wait_converged(api, hub_name, timeout=90, what="the restarted agent")


def test_wrong_credentials_then_an_unreachable_server_keep_the_agent_running_and_it_recovers(
    kube: KubeStack,
    kube_api: KubeApi,
    hub_env: dict[str, str],
    hub_name: str,
    redis_client: redis.Redis,
    tmp_path: Path,
    processes: list[Process],
) -> None:
    api = kube_api
    populate(api, hub_name, 4)
    kubeconfig = kube.kubeconfig(tmp_path / "agent.kubeconfig", token="wrong")
    hub_env["GH_KUBECONFIG"] = str(kubeconfig)
    processes.append(start_consumer(hub_env, tmp_path))
    start_hub(hub_env, tmp_path, processes)
    status = SourceStatus(redis_client, hub_name)

    def last_error() -> str:
        report = status.read() or {"resources": {}}
        return str(report["resources"].get("managedclusters", {}).get("last_error", ""))

    wait_for(lambda: "401 Unauthorized" in last_error(), timeout=60, what="the 401 in the source's state")
    heartbeat = wait_for(lambda: heartbeat_of(hub_name), timeout=60, what="a heartbeat")
    wait_for(lambda: (heartbeat_of(hub_name) or heartbeat) > heartbeat, timeout=30, what="heartbeats to go on")
    assert not manager_clusters(hub_name)

    port = free_port()  # the right token, but a server that does not answer
    kube.kubeconfig(kubeconfig, server=f"https://127.0.0.1:{port}")
    wait_for(lambda: "cannot reach the API server" in last_error(), timeout=60, what="the unreachable server")
    heartbeat = heartbeat_of(hub_name) or heartbeat
    wait_for(lambda: (heartbeat_of(hub_name) or heartbeat) > heartbeat, timeout=30, what="heartbeats to go on")

    host, target = kube.server.removeprefix("https://").split(":")
    proxy = CuttableProxy(host, int(target), port=port)  # the server answers at that address now
    try:
        wait_converged(api, hub_name, timeout=90, what="recovery")
    finally:
        proxy.close()
    for process in processes:
        assert process.is_running(), f"{process.name} died:\n{process.log_text()[-3000:]}"


def heartbeat_of(hub: str) -> datetime | None:
    heartbeat: datetime | None = Hub.objects.filter(name=hub).values_list("last_heartbeat", flat=True).first()
    return heartbeat
