"""How the hub's Kubernetes objects become inventory entries, as upstream's agent reads them. Pure: no I/O.

A view follows one resource. It is told that an object exists as it is now (:meth:`View.observe`) or is gone
(:meth:`View.forget`), and answers with the inventory entries that changed: ``(type, id, object or None)``. The
writer then stores them, skipping what is unchanged. Views keep only names and ids, never whole objects, so a hub
of 10,000 clusters costs a few megabytes here.

* **managedcluster** (upstream ``managed_cluster_syncer.go``): a ManagedCluster keyed by its ``id.k8s.io`` claim.
  A cluster without that claim, being deleted, labelled as a managed hub (``deploy-mode``) or annotated as
  migrating is not in the inventory. Two clusters claiming one id: the first one seen holds it, and the other takes
  it over when the first goes.
* **policy.localspec** (upstream ``policy_syncer.go``): a root Policy (no ``root-policy`` label) keyed by its UID,
  with an empty ``status``. The Policy's ``status`` and ``resourceVersion`` are not part of its content, so a
  status-only update writes nothing, as upstream considers only generation changes; label and annotation changes
  do count.
* **policy.localcompliance** (upstream ``compliance_handler.go``): per root Policy, the clusters of
  ``status.status[]`` sorted into ``compliantClusters``, ``nonCompliantClusters``, ``pendingComplianceClusters`` and
  ``unknownComplianceClusters`` (anything else). A Policy that names no cluster has no entry.
* **managedhub.info**: ``clusterId`` from the ``id.k8s.io`` ClusterClaim, ``consoleURL`` from
  ``consoleurl.cluster.open-cluster-management.io``, ``mchVersion`` from ``version.open-cluster-management.io``;
  settings fill in what the hub has no claim for (``grafanaURL`` always comes from settings). No entry until a
  cluster id is known, as upstream.

Every stored object loses ``managedFields``, ``finalizers``, ``ownerReferences`` and ``selfLink``, as upstream's
object controller strips them.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from agent_tasks.kube.resources import CLUSTER_CLAIMS, MANAGED_CLUSTERS, POLICIES, Resource
from agent_tasks.types import HUB_INFO_KEY
from globalhub.protocol.events import EventType
from globalhub.protocol.objects import CLUSTER_ID_CLAIM, cluster_claim_id, object_uid

log = logging.getLogger(__name__)

CLUSTER: Final = EventType.MANAGED_CLUSTER.short
POLICY: Final = EventType.LOCAL_POLICY_SPEC.short
COMPLIANCE: Final = EventType.LOCAL_COMPLIANCE.short
HUB_INFO: Final = EventType.HUB_INFO.short

DEPLOY_MODE_LABEL: Final = "global-hub.open-cluster-management.io/deploy-mode"
MIGRATING_ANNOTATION: Final = "global-hub.open-cluster-management.io/migrating"
ROOT_POLICY_LABEL: Final = "policy.open-cluster-management.io/root-policy"
CONSOLE_URL_CLAIM: Final = "consoleurl.cluster.open-cluster-management.io"
MCH_VERSION_CLAIM: Final = "version.open-cluster-management.io"
_STRIPPED_METADATA: Final = ("managedFields", "finalizers", "ownerReferences", "selfLink")

Entry = tuple[str, str, dict[str, Any] | None]  # (inventory type, object id, the object or None when removed)


@dataclass(frozen=True)
class HubInfoSettings:
    """What settings say of the hub, for what its cluster claims do not."""

    cluster_id: str = ""
    console_url: str = ""
    grafana_url: str = ""
    mch_version: str = ""


def key_of(obj: Mapping[str, Any]) -> str:
    """``namespace/name`` (or ``name`` for a cluster-scoped object)."""
    metadata = obj.get("metadata") or {}
    namespace = metadata.get("namespace")
    name = str(metadata.get("name") or "")
    return f"{namespace}/{name}" if namespace else name


def stripped(obj: Mapping[str, Any]) -> dict[str, Any]:
    """A shallow copy without the metadata upstream strips (the given object is left as it is)."""
    copy = dict(obj)
    metadata = dict(copy.get("metadata") or {})
    for field in _STRIPPED_METADATA:
        metadata.pop(field, None)
    copy["metadata"] = metadata
    return copy


def _metadata_map(obj: Mapping[str, Any], field: str) -> Mapping[str, Any]:
    value = (obj.get("metadata") or {}).get(field)
    return value if isinstance(value, dict) else {}


def _being_deleted(obj: Mapping[str, Any]) -> bool:
    return bool((obj.get("metadata") or {}).get("deletionTimestamp"))


class View(ABC):
    """Follows one resource; see the module docstring."""

    resource: Resource
    types: tuple[str, ...]  # the inventory types this view alone writes

    @abstractmethod
    def reset(self) -> None:
        """Forget everything (a relist follows)."""

    @abstractmethod
    def observe(self, obj: Mapping[str, Any]) -> list[Entry]:
        """The object exists, as ``obj``."""

    @abstractmethod
    def forget(self, obj: Mapping[str, Any]) -> list[Entry]:
        """The object is gone (``obj`` is its last known state, or only its metadata)."""

    @property
    @abstractmethod
    def objects(self) -> int:
        """How many objects of the resource the view follows."""

    def settled(self) -> list[Entry]:
        """After a complete list: entries that do not come from one object (none, unless the view aggregates)."""
        return []


class _KeyedView(View):
    """A view where each object gives at most one entry per type, under an id that may differ from its name.

    Two objects claiming one id: the first one seen holds it, the other waits (its last state is kept, which is rare
    and small). When the holder goes, or moves to another id, a waiting object takes the id over.
    """

    def __init__(self) -> None:
        self._ids: dict[str, str] = {}  # object key -> id it is reported under
        self._holders: dict[str, str] = {}  # id -> object key that holds it
        self._waiting: dict[str, dict[str, Mapping[str, Any]]] = {}  # id -> {key: object} of those waiting for it
        self._waits_for: dict[str, str] = {}  # object key -> id it waits for

    def reset(self) -> None:
        self._ids.clear()
        self._holders.clear()
        self._waiting.clear()
        self._waits_for.clear()

    @property
    def objects(self) -> int:
        return len(self._ids)

    @abstractmethod
    def _entries(self, obj: Mapping[str, Any]) -> tuple[str, dict[str, dict[str, Any] | None]] | None:
        """The object's id and, per type, what it contributes (None: nothing); None when it is not reported."""

    def observe(self, obj: Mapping[str, Any]) -> list[Entry]:
        key = key_of(obj)
        self._stop_waiting(key)
        found = self._entries(obj)
        if found is None:
            return self._drop(key)
        object_id, values = found
        holder = self._holders.get(object_id)
        if holder is not None and holder != key:
            log.warning(
                "%s %s has the id %s of %s too; only %s is reported", self.resource.kind, key, object_id, holder, holder
            )
            changes = self._drop(key)
            self._waiting.setdefault(object_id, {})[key] = obj
            self._waits_for[key] = object_id
            return changes
        changes = self._drop(key) if self._ids.get(key) not in (None, object_id) else []
        self._ids[key] = object_id
        self._holders[object_id] = key
        changes.extend((short, object_id, value) for short, value in values.items())
        return changes

    def forget(self, obj: Mapping[str, Any]) -> list[Entry]:
        key = key_of(obj)
        self._stop_waiting(key)
        return self._drop(key)

    def _drop(self, key: str) -> list[Entry]:
        """The object no longer holds its id: remove its entries, or hand the id to an object waiting for it."""
        object_id = self._ids.pop(key, None)
        if object_id is None:
            return []
        del self._holders[object_id]
        changes: list[Entry] = [(short, object_id, None) for short in self.types]
        waiting = self._waiting.get(object_id)
        if waiting:
            successor = next(iter(waiting.values()))
            changes.extend(self.observe(successor))
        return changes

    def _stop_waiting(self, key: str) -> None:
        object_id = self._waits_for.pop(key, None)
        if object_id is not None:
            waiting = self._waiting[object_id]
            del waiting[key]
            if not waiting:
                del self._waiting[object_id]


class ClusterView(_KeyedView):
    resource = MANAGED_CLUSTERS
    types = (CLUSTER,)

    def _entries(self, obj: Mapping[str, Any]) -> tuple[str, dict[str, dict[str, Any] | None]] | None:
        if _being_deleted(obj) or DEPLOY_MODE_LABEL in _metadata_map(obj, "labels"):
            return None
        if MIGRATING_ANNOTATION in _metadata_map(obj, "annotations"):
            return None
        claim = cluster_claim_id(dict(obj))
        if claim is None:
            return None
        return claim, {CLUSTER: stripped(obj)}


class PolicyView(_KeyedView):
    resource = POLICIES
    types = (POLICY, COMPLIANCE)

    def _entries(self, obj: Mapping[str, Any]) -> tuple[str, dict[str, dict[str, Any] | None]] | None:
        if _being_deleted(obj) or ROOT_POLICY_LABEL in _metadata_map(obj, "labels"):
            return None
        uid = object_uid(dict(obj))
        if uid is None:
            return None
        spec = stripped(obj)
        spec["status"] = {}
        return uid, {POLICY: spec, COMPLIANCE: compliance_entry(uid, obj)}


_LISTS: Final = {
    "Compliant": "compliantClusters",
    "NonCompliant": "nonCompliantClusters",
    "Pending": "pendingComplianceClusters",
}
_UNKNOWN: Final = "unknownComplianceClusters"


def compliance_entry(uid: str, policy: Mapping[str, Any]) -> dict[str, Any] | None:
    """Upstream's ``policy.localcompliance`` entry of a root policy; None when its status names no cluster."""
    status = policy.get("status")
    per_cluster = status.get("status") if isinstance(status, dict) else None
    entry: dict[str, Any] = {
        "policyId": uid,
        "compliantClusters": [],
        "nonCompliantClusters": [],
        "unknownComplianceClusters": [],
        "pendingComplianceClusters": [],
    }
    seen: set[str] = set()
    for item in per_cluster if isinstance(per_cluster, list) else ():
        name = item.get("clustername") if isinstance(item, dict) else None
        if not isinstance(name, str) or not name or name in seen:
            continue
        seen.add(name)
        entry[_LISTS.get(str(item.get("compliant")), _UNKNOWN)].append(name)
    return entry if seen else None


class HubInfoView(View):
    """All ClusterClaims together make one hub-info entry."""

    resource = CLUSTER_CLAIMS
    types = (HUB_INFO,)

    def __init__(self, settings: HubInfoSettings) -> None:
        self._settings = settings
        self._claims: dict[str, str] = {}

    def reset(self) -> None:
        self._claims.clear()

    @property
    def objects(self) -> int:
        return len(self._claims)

    def observe(self, obj: Mapping[str, Any]) -> list[Entry]:
        spec = obj.get("spec")
        value = spec.get("value") if isinstance(spec, dict) else None
        if _being_deleted(obj) or not isinstance(value, str):
            self._claims.pop(key_of(obj), None)
        else:
            self._claims[key_of(obj)] = value
        return [(HUB_INFO, HUB_INFO_KEY, self.hub_info())]

    def forget(self, obj: Mapping[str, Any]) -> list[Entry]:
        self._claims.pop(key_of(obj), None)
        return [(HUB_INFO, HUB_INFO_KEY, self.hub_info())]

    def settled(self) -> list[Entry]:
        return [(HUB_INFO, HUB_INFO_KEY, self.hub_info())]

    def hub_info(self) -> dict[str, Any] | None:
        """Upstream's hub info object, or None while no cluster id is known."""
        settings = self._settings
        cluster_id = self._claims.get(CLUSTER_ID_CLAIM) or settings.cluster_id
        if not cluster_id:
            return None
        return {
            "consoleURL": self._claims.get(CONSOLE_URL_CLAIM) or settings.console_url,
            "grafanaURL": settings.grafana_url,
            "mchVersion": self._claims.get(MCH_VERSION_CLAIM) or settings.mch_version,
            "clusterId": cluster_id,
        }
