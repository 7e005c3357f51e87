"""The status types an agent reports, and how each turns inventory objects into bundles. Add a type here.

Three kinds, as upstream's emitters:

* **hybrid** (managed clusters, local policy specs): deltas carry changed objects (``update``) and removals
  (``delete``); a full resync is framed ``resync`` objects plus the ``resync_metadata`` listing.
* **complete** (hub info, local compliance): every send is the whole state; a change makes the next tick send it.
* **heartbeat**: ``[]`` at every interval.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Any, Final

from globalhub.protocol import jsonutil
from globalhub.protocol.bundles import ObjectMetadata, dumps
from globalhub.protocol.digest import Digest, entry_digest_of_compliance, entry_digest_of_object
from globalhub.protocol.events import EVENT_TYPE_PREFIX, RESYNC_TYPES, EventType
from globalhub.protocol.objects import MANAGED_BY_ANNOTATION, cluster_claim_id, object_name, object_uid

HUB_INFO_KEY: Final = "hub"  # the one field of the hub-info inventory hash


class Kind(StrEnum):
    HYBRID = "hybrid"
    COMPLETE = "complete"
    HEARTBEAT = "heartbeat"


Tweak = Callable[[dict[str, Any], str], dict[str, Any]]


@dataclass(frozen=True)
class StatusType:
    event_type: EventType
    kind: Kind
    sync_interval: timedelta
    resync_interval: timedelta
    tweak: Tweak | None = None
    id_of: Callable[[dict[str, Any]], str | None] | None = None

    @property
    def short(self) -> str:
        return self.event_type.short

    @property
    def resyncable(self) -> bool:
        return self.kind is not Kind.HEARTBEAT

    def metadata(self, obj: dict[str, Any], object_id: str) -> ObjectMetadata:
        metadata = obj.get("metadata") or {}
        return ObjectMetadata(id=object_id, name=object_name(obj), namespace=metadata.get("namespace"))


# Tweaks change the object they are given (freshly parsed from the inventory, owned by the caller): copying it
# first cost a third of a big resync's CPU.


def tweak_cluster(cluster: dict[str, Any], hub: str) -> dict[str, Any]:
    """As upstream: strip managedFields, add the managed-by annotation."""
    metadata = cluster.setdefault("metadata", {})
    metadata.pop("managedFields", None)
    metadata["annotations"] = {**(metadata.get("annotations") or {}), MANAGED_BY_ANNOTATION: hub}
    return cluster


def tweak_policy(policy: dict[str, Any], hub: str) -> dict[str, Any]:
    """As upstream: empty status, strip managedFields."""
    policy.get("metadata", {}).pop("managedFields", None)
    policy["status"] = {}
    return policy


DELTA: Final = timedelta(seconds=5)
MINUTE: Final = timedelta(seconds=60)
SIX_HOURS: Final = timedelta(hours=6)

HEARTBEAT = StatusType(EventType.HEARTBEAT, Kind.HEARTBEAT, MINUTE, SIX_HOURS)
HUB_INFO = StatusType(EventType.HUB_INFO, Kind.COMPLETE, MINUTE, SIX_HOURS)
MANAGED_CLUSTERS = StatusType(
    EventType.MANAGED_CLUSTER, Kind.HYBRID, DELTA, SIX_HOURS, tweak=tweak_cluster, id_of=cluster_claim_id
)
LOCAL_POLICY_SPECS = StatusType(
    EventType.LOCAL_POLICY_SPEC, Kind.HYBRID, DELTA, SIX_HOURS, tweak=tweak_policy, id_of=object_uid
)
LOCAL_COMPLIANCE = StatusType(EventType.LOCAL_COMPLIANCE, Kind.COMPLETE, DELTA, SIX_HOURS)

STATUS_TYPES: dict[str, StatusType] = {
    t.short: t for t in (HEARTBEAT, HUB_INFO, MANAGED_CLUSTERS, LOCAL_POLICY_SPECS, LOCAL_COMPLIANCE)
}
# What an agent start queues, and what a resync request may ask for: the manager's four, in its order.
RESYNC_ORDER: tuple[str, ...] = tuple(t.short for t in RESYNC_TYPES)
assert all(STATUS_TYPES[name].resyncable for name in RESYNC_ORDER)


def status_type(name: str) -> StatusType:
    """Look a type up by short key or full CE type; ``KeyError`` with the known names otherwise."""
    short = name.removeprefix(EVENT_TYPE_PREFIX)
    try:
        return STATUS_TYPES[short]
    except KeyError:
        raise KeyError(f"unknown status type {name!r}; known: {', '.join(STATUS_TYPES)}") from None


def digest_of(short_type: str, encoded: bytes, hub: str, obj: Any = None) -> Digest | None:
    """What one inventory entry adds to its type's anti-entropy digest (``globalhub/protocol/digest.py``), or None
    for a type without one. A hybrid object counts as the manager will store it: tweaked and encoded as sent.

    ``obj``: the entry already decoded (``encoded`` is then not parsed again); it is not changed.
    """
    kind = STATUS_TYPES.get(short_type)
    if kind is None:
        return None
    value = jsonutil.loads(encoded) if obj is None else obj
    if not isinstance(value, dict):
        return Digest() if short_type in DIGEST_TYPES else None
    if kind.kind is Kind.HYBRID and kind.tweak is not None and kind.id_of is not None:
        # The tweaks change the object's top level and metadata only: copies of those leave ``value`` as it was.
        shallow = dict(value)
        if isinstance(shallow.get("metadata"), dict):
            shallow["metadata"] = dict(shallow["metadata"])
        tweaked = kind.tweak(shallow, hub)
        object_id = kind.id_of(tweaked)
        return Digest() if object_id is None else entry_digest_of_object(object_id, dumps(tweaked))
    if short_type == LOCAL_COMPLIANCE.short:
        return entry_digest_of_compliance(value)
    return None


DIGEST_TYPES: Final = tuple(
    name for name, kind in STATUS_TYPES.items() if kind.kind is Kind.HYBRID or name == LOCAL_COMPLIANCE.short
)
