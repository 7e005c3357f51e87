"""The simulator's hub written into a Kubernetes API server (``simulate --target kube``), instead of Redis.

:class:`KubeTarget` takes the same writes as :class:`~agent_tasks.inventory.RedisInventory` (per inventory type,
upserts and deletes keyed by inventory id) and turns them into API calls, so that the agent's inventory watcher
(``python -m agent_tasks.watch_kube``) has a real, churning hub to follow:

* ``managedcluster``: ManagedClusters, created then given their ``status`` (a subresource); later upserts patch
  labels, annotations, spec and status; deletes delete;
* ``policy.localspec``: root Policies in their namespaces (the API server gives them its own UID);
* ``policy.localcompliance``: the Policy's ``status`` (``status.status[]`` per cluster and the aggregate), which is
  where a real hub keeps compliance;
* ``managedhub.info``: ClusterClaims ``id.k8s.io``, ``consoleurl.cluster.open-cluster-management.io`` and
  ``version.open-cluster-management.io`` (a hub has no claim for the Grafana URL: the watcher's
  ``GH_HUB_GRAFANA_URL`` setting gives it).

Every object it creates carries the label ``globalhub.io/simulated-hub: <hub>``, and only those are removed by
``--reset``; ManagedClusters and Policies also carry their inventory id (``globalhub.io/simulated-id``), so a later
run without ``--reset`` finds them again. ClusterClaims are hub-wide: simulate one hub per API server.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final

from agent_tasks.inventory import Change
from agent_tasks.kube.api import Conflict, KubeApi, NotFound
from agent_tasks.kube.resources import CLUSTER_CLAIMS, MANAGED_CLUSTERS, POLICIES, Resource
from agent_tasks.kube.views import CONSOLE_URL_CLAIM, MCH_VERSION_CLAIM
from agent_tasks.simulate import CLUSTER, COMPLIANCE, HUB_INFO, POLICY, Compliance, policy_status
from globalhub.protocol import jsonutil
from globalhub.protocol.objects import CLUSTER_ID_CLAIM

log = logging.getLogger(__name__)

SIMULATED_LABEL: Final = "globalhub.io/simulated-hub"
SIMULATED_ID: Final = "globalhub.io/simulated-id"  # annotation: the simulator's id of the object
_SERVER_FIELDS: Final = ("uid", "resourceVersion", "creationTimestamp", "managedFields", "generation")
WORKERS: Final = 4  # requests in flight: the API server and this process overlap


class KubeTarget:
    """Writes the simulator's changes as API calls. Ids are the inventory's: claim ids and the simulator's UIDs."""

    def __init__(self, api: KubeApi, hub: str) -> None:
        self._api = api
        self._hub = hub
        self._pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="kube-target")
        # What an earlier run created: claim id -> ManagedCluster name; the simulator's policy uid -> (namespace, name)
        self._clusters: dict[str, str] = {
            sid: obj["metadata"]["name"] for obj in self._list(MANAGED_CLUSTERS) if (sid := _simulated_id(obj))
        }
        self._policies: dict[str, tuple[str, str]] = {
            sid: (obj["metadata"]["namespace"], obj["metadata"]["name"])
            for obj in self._list(POLICIES)
            if (sid := _simulated_id(obj))
        }

    def close(self) -> None:
        self._pool.shutdown()
        self._api.close()

    # --- the inventory's write and read calls ----------------------------------------------------------------------

    def apply(self, short_type: str, changes: Iterable[Change], *, chunk: int = 500) -> int:
        """Write the changes of one inventory type; returns how many were applied."""
        write = {
            CLUSTER: self._write_cluster,
            POLICY: self._write_policy,
            COMPLIANCE: self._write_compliance,
            HUB_INFO: self._write_hub_info,
        }[short_type]
        return sum(1 for _ in self._pool.map(write, list(changes)))

    def get_encoded(self, short_type: str, ids: list[str]) -> list[bytes | None]:
        """The current objects (clusters by claim id, policies by the simulator's uid), None when gone."""
        return list(self._pool.map(lambda object_id: self._get(short_type, object_id), ids))

    def count(self, short_type: str) -> int:
        if short_type == CLUSTER:
            return len(self._list(MANAGED_CLUSTERS))
        if short_type in (POLICY, COMPLIANCE):
            return len(self._list(POLICIES))
        return 1 if any(claim["metadata"]["name"] == CLUSTER_ID_CLAIM for claim in self._list(CLUSTER_CLAIMS)) else 0

    def clear(self, short_type: str) -> None:
        """Delete what this simulator created for an inventory type (compliance goes with its policies)."""
        resource = {CLUSTER: MANAGED_CLUSTERS, POLICY: POLICIES, HUB_INFO: CLUSTER_CLAIMS}.get(short_type)
        if resource is None:
            return
        for obj in self._list(resource):
            metadata = obj["metadata"]
            self._delete(resource, metadata["name"], metadata.get("namespace"))
        if short_type == CLUSTER:
            self._clusters.clear()
        elif short_type == POLICY:
            self._policies.clear()

    # --- per type ----------------------------------------------------------------------------------------------------

    def _write_cluster(self, change: Change) -> None:
        if change.obj is None:
            name = self._clusters.pop(change.object_id, None)
            if name is not None:
                self._delete(MANAGED_CLUSTERS, name, None)
            return
        name = change.obj["metadata"]["name"]
        self._upsert(MANAGED_CLUSTERS, change.obj, change.object_id, known=change.object_id in self._clusters)
        self._clusters[change.object_id] = name

    def _write_policy(self, change: Change) -> None:
        if change.obj is None:
            where = self._policies.pop(change.object_id, None)
            if where is not None:
                self._delete(POLICIES, where[1], where[0])
            return
        metadata = change.obj["metadata"]
        self._upsert(POLICIES, change.obj, change.object_id, known=change.object_id in self._policies)
        self._policies[change.object_id] = (metadata["namespace"], metadata["name"])

    def _write_compliance(self, change: Change) -> None:
        where = self._policies.get(change.object_id)
        if where is None or change.obj is None:
            return  # a policy's compliance lives and dies with the policy
        clusters = {name: state for state in Compliance for name in change.obj.get(state.value, [])}
        status = policy_status({"metadata": {"name": where[1]}}, clusters)
        self._patch_status(POLICIES, where[1], where[0], status)

    def _write_hub_info(self, change: Change) -> None:
        info = change.obj or {}
        claims = {
            CLUSTER_ID_CLAIM: info.get("clusterId"),
            CONSOLE_URL_CLAIM: info.get("consoleURL"),
            MCH_VERSION_CLAIM: info.get("mchVersion"),
        }
        for name, value in claims.items():
            if value:
                claim = {
                    "apiVersion": CLUSTER_CLAIMS.api_version,
                    "kind": CLUSTER_CLAIMS.kind,
                    "metadata": {"name": name},
                    "spec": {"value": value},
                }
                self._upsert(CLUSTER_CLAIMS, claim, None, known=False)
            else:
                self._delete(CLUSTER_CLAIMS, name, None)

    # --- API calls ---------------------------------------------------------------------------------------------------

    def _upsert(self, resource: Resource, obj: dict[str, Any], object_id: str | None, *, known: bool) -> None:
        """Create (or patch labels, annotations and spec of what exists), then set the status if there is one."""
        metadata = {k: v for k, v in obj["metadata"].items() if k not in _SERVER_FIELDS}
        metadata["labels"] = {**(metadata.get("labels") or {}), SIMULATED_LABEL: self._hub}
        if object_id is not None:
            metadata["annotations"] = {**(metadata.get("annotations") or {}), SIMULATED_ID: object_id}
        body = {k: v for k, v in obj.items() if k != "status"}
        body["metadata"] = metadata
        name, namespace = metadata["name"], metadata.get("namespace")
        exists = known
        if not known:
            try:
                self._api.create(resource, body, namespace)
            except Conflict:
                exists = True  # left by an earlier run
        if exists:
            patch = {"metadata": {"labels": metadata["labels"], "annotations": metadata.get("annotations")}}
            if "spec" in body:
                patch["spec"] = body["spec"]
            self._api.patch(resource, name, patch, namespace)
        if obj.get("status"):
            self._patch_status(resource, name, namespace, obj["status"])

    def _patch_status(self, resource: Resource, name: str, namespace: str | None, status: dict[str, Any]) -> None:
        # A merge patch replaces lists whole: the per-cluster status list is exactly the new one.
        self._api.patch(resource, name, {"status": status}, namespace, status=True)

    def _delete(self, resource: Resource, name: str, namespace: str | None) -> None:
        self._api.delete(resource, name, namespace)

    def _get(self, short_type: str, object_id: str) -> bytes | None:
        if short_type == CLUSTER:
            name, namespace, resource = self._clusters.get(object_id), None, MANAGED_CLUSTERS
        else:
            namespace, name = self._policies.get(object_id, (None, None))
            resource = POLICIES
        if name is None:
            return None
        try:
            return jsonutil.dumps(self._api.get(resource, name, namespace))
        except NotFound:
            return None

    def _list(self, resource: Resource) -> list[dict[str, Any]]:
        return self._api.list_all(resource, label_selector=f"{SIMULATED_LABEL}={self._hub}")


def _simulated_id(obj: dict[str, Any]) -> str | None:
    annotations = obj["metadata"].get("annotations") or {}
    value = annotations.get(SIMULATED_ID)
    return value if isinstance(value, str) else None
