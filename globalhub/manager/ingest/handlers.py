"""The registry of status types the manager ingests: event type -> handler. Add a type here (README)."""

from __future__ import annotations

from collections.abc import Callable

from globalhub.manager.ingest import bulk
from globalhub.manager.ingest.hybrid import HybridType, apply_hybrid
from globalhub.manager.ingest.records import StatusEvent
from globalhub.manager.models import ManagedCluster
from globalhub.protocol.events import EventType
from globalhub.protocol.objects import cluster_claim_id, object_name

# A handler applies one admitted event inside the caller's transaction and returns a reason when the event
# revealed a problem worth a dead letter (e.g. a truncated resync), or "" when all went well.
Handler = Callable[[StatusEvent], str]

MANAGED_CLUSTERS = HybridType(
    table=bulk.ObjectTable(table=ManagedCluster._meta.db_table, id_column="cluster_id", name_column="cluster_name"),
    id_of=cluster_claim_id,
    name_of=object_name,
)


def handle_managed_clusters(event: StatusEvent) -> str:
    return apply_hybrid(MANAGED_CLUSTERS, event).incomplete_reason


HANDLERS: dict[EventType, Handler] = {
    EventType.MANAGED_CLUSTER: handle_managed_clusters,
}
