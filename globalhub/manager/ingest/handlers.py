"""The registry of status types the manager ingests. Add a type here (see README "How to add an event type").

* hybrid types: a :class:`HybridType` (table, id and name of an object), applied record by record, in order;
* complete types: a :class:`CompleteKind` (parse, apply), conflated per batch (``complete.py``).
"""

from __future__ import annotations

from globalhub.manager.ingest import bulk
from globalhub.manager.ingest.complete import COMPLETE_KINDS, CompleteKind
from globalhub.manager.ingest.hybrid import HybridType
from globalhub.manager.models import LocalPolicy, ManagedCluster
from globalhub.protocol.events import EventType
from globalhub.protocol.objects import cluster_claim_id, object_name, object_uid

MANAGED_CLUSTERS = HybridType(
    table=bulk.ObjectTable(table=ManagedCluster._meta.db_table, id_column="cluster_id", name_column="cluster_name"),
    id_of=cluster_claim_id,
    name_of=object_name,
)
LOCAL_POLICIES = HybridType(
    table=bulk.ObjectTable(table=LocalPolicy._meta.db_table, id_column="policy_id", name_column="policy_name"),
    id_of=object_uid,
    name_of=object_name,
)

HYBRID_TYPES: dict[EventType, HybridType] = {
    EventType.MANAGED_CLUSTER: MANAGED_CLUSTERS,
    EventType.LOCAL_POLICY_SPEC: LOCAL_POLICIES,
}
COMPLETE_TYPES: dict[EventType, CompleteKind] = dict(COMPLETE_KINDS)
