"""What the agent knows about each status type it reports: how to turn an inventory object into a bundle entry."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from globalhub.protocol.bundles import ObjectMetadata
from globalhub.protocol.events import EventType
from globalhub.protocol.objects import MANAGED_BY_ANNOTATION, cluster_claim_id, object_name, object_uid


@dataclass(frozen=True)
class ObjectType:
    """A hybrid type: objects sent whole in ``update``/``resync``, listed by id in ``resync_metadata``."""

    event_type: EventType
    tweak: Callable[[dict[str, Any], str], dict[str, Any]]
    id_of: Callable[[dict[str, Any]], str | None]

    @property
    def short(self) -> str:
        return self.event_type.short

    def metadata(self, obj: dict[str, Any], object_id: str) -> ObjectMetadata:
        metadata = obj.get("metadata") or {}
        return ObjectMetadata(id=object_id, name=object_name(obj), namespace=metadata.get("namespace"))


def tweak_cluster(cluster: dict[str, Any], hub: str) -> dict[str, Any]:
    """As upstream: strip managedFields, add the managed-by annotation."""
    result = copy.deepcopy(cluster)
    metadata = result.setdefault("metadata", {})
    metadata.pop("managedFields", None)
    metadata.setdefault("annotations", {})[MANAGED_BY_ANNOTATION] = hub
    return result


def tweak_policy(policy: dict[str, Any], hub: str) -> dict[str, Any]:
    """As upstream: empty status, strip managedFields."""
    result = copy.deepcopy(policy)
    result.get("metadata", {}).pop("managedFields", None)
    result["status"] = {}
    return result


MANAGED_CLUSTERS = ObjectType(EventType.MANAGED_CLUSTER, tweak_cluster, cluster_claim_id)
LOCAL_POLICY_SPECS = ObjectType(EventType.LOCAL_POLICY_SPEC, tweak_policy, object_uid)

OBJECT_TYPES: dict[str, ObjectType] = {t.short: t for t in (MANAGED_CLUSTERS,)}
