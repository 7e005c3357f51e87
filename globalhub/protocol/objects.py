"""Facts about the Kubernetes objects the bundles carry (upstream shapes), used on both sides."""

from __future__ import annotations

import re
import uuid
from typing import Any, Final

CLUSTER_ID_CLAIM: Final = "id.k8s.io"
MANAGED_BY_ANNOTATION: Final = "global-hub.open-cluster-management.io/managed-by"


def cluster_claim_id(cluster: dict[str, Any]) -> str | None:
    """The value of a ManagedCluster's ``id.k8s.io`` claim, or None when it has none."""
    status = cluster.get("status")
    claims = status.get("clusterClaims") if isinstance(status, dict) else None
    if not isinstance(claims, list):
        return None
    for claim in claims:
        if isinstance(claim, dict) and claim.get("name") == CLUSTER_ID_CLAIM:
            value = claim.get("value")
            return value if isinstance(value, str) and value else None
    return None


def object_name(obj: dict[str, Any]) -> str | None:
    return _metadata_text(obj, "name")


def object_namespace(obj: dict[str, Any]) -> str | None:
    return _metadata_text(obj, "namespace")


def _metadata_text(obj: dict[str, Any], key: str) -> str | None:
    metadata = obj.get("metadata")
    value = metadata.get(key) if isinstance(metadata, dict) else None
    return value if isinstance(value, str) else None


def object_uid(obj: dict[str, Any]) -> str | None:
    metadata = obj.get("metadata")
    uid = metadata.get("uid") if isinstance(metadata, dict) else None
    return uid if isinstance(uid, str) and uid else None


_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def as_uuid(value: str | None) -> uuid.UUID | None:
    """Parse an id the database stores as a uuid; None when it is not one."""
    if not value:
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


def canonical_uuid(value: str | None) -> str | None:
    """``value`` as a canonical lower-case UUID string, or None when it is not a UUID.

    The fast path (already hyphenated) avoids building a :class:`uuid.UUID` for each of thousands of ids.
    """
    if not value:
        return None
    if len(value) == 36 and _UUID.fullmatch(value):
        return value.lower()
    parsed = as_uuid(value)
    return None if parsed is None else str(parsed)
