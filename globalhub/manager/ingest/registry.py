"""The ingest registry: how the manager ingests each status event type. The one place a type is declared.

Each type has one :class:`Rule`:

* ``mode``: how its versions are admitted (``admission.py``): ``complete``, ``delta``, ``hybrid`` or ``append``;
* ``handler``: what applies it:

  * a :class:`HybridType` (table, id and name of an object; the table knows where a namespace is): objects upserted,
    deleted and swept, record by record, in order (``hybrid.py``);
  * a :class:`CompleteKind` (parse, apply): a whole state, conflated per batch and applied at the batch's end, in
    the rules' order (``complete.py``);
  * an :class:`EventStream` (a table and how an event's keys fill its columns): append-only events, each stored
    once (``eventstreams.py``);
  * :data:`ACCEPTED`: taken and counted, nothing stored (what upstream's manager drops without complaint);

* ``liveness``: the heartbeat. It counts for the hub's liveness whatever its version says, carries the anti-entropy
  digests, is read while the hub is inactive, and a refusal of it is not counted towards a stall.

A type without a rule is a dead letter ("not ingested by this manager"). See README "How to add an event type".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from globalhub.manager.ingest import bulk
from globalhub.manager.ingest.admission import Mode
from globalhub.manager.ingest.complete import (
    CompleteKind,
    apply_complete_compliance,
    apply_compliance,
    apply_compliance_states,
    apply_heartbeat,
    apply_heartbeat_states,
    apply_hub_info,
    apply_hub_info_states,
    parse_complete_compliance,
    parse_compliance,
    parse_heartbeat,
    parse_hub_info,
)
from globalhub.manager.ingest.eventstreams import COMMON_COLUMNS, Column, EventStream, integer, json_value, uuid_or_none
from globalhub.manager.ingest.hybrid import HybridType
from globalhub.manager.models import (
    LocalPolicy,
    LocalPolicyEvent,
    LocalRootPolicyEvent,
    ManagedCluster,
    ManagedClusterEvent,
)
from globalhub.protocol.events import RESYNC_TYPES, EventType
from globalhub.protocol.objects import cluster_claim_id, object_name, object_uid


class Accepted:
    """The handler of a type that is taken and counted, and not stored."""

    def __repr__(self) -> str:
        return "ACCEPTED"


ACCEPTED: Final = Accepted()
Handler = HybridType | CompleteKind | EventStream | Accepted


@dataclass(frozen=True)
class Rule:
    mode: Mode
    handler: Handler
    liveness: bool = False

    @property
    def hybrid(self) -> HybridType | None:
        return self.handler if isinstance(self.handler, HybridType) else None

    @property
    def complete(self) -> CompleteKind | None:
        return self.handler if isinstance(self.handler, CompleteKind) else None

    @property
    def events(self) -> EventStream | None:
        return self.handler if isinstance(self.handler, EventStream) else None


MANAGED_CLUSTERS = HybridType(
    table=bulk.ObjectTable(table=ManagedCluster._meta.db_table, id_column="cluster_id", name_column="cluster_name"),
    id_of=cluster_claim_id,
    name_of=object_name,
)
LOCAL_POLICIES = HybridType(
    table=bulk.ObjectTable(
        table=LocalPolicy._meta.db_table,
        id_column="policy_id",
        name_column="policy_name",
        namespace_sql="payload -> 'metadata' ->> 'namespace'",
    ),
    id_of=object_uid,
    name_of=object_name,
)

_POLICY_EVENT_COLUMNS = (
    *COMMON_COLUMNS,
    Column("policy_id", "policyId", uuid_or_none),
    Column("count", "count", integer),
    Column("source", "source", json_value),
    Column("compliance", "compliance"),
)
MANAGED_CLUSTER_EVENTS = EventStream(
    ManagedClusterEvent,
    (
        *COMMON_COLUMNS,
        Column("cluster_name", "clusterName"),
        Column("cluster_id", "clusterId", uuid_or_none),
        Column("reporting_controller", "reportingController"),
        Column("reporting_instance", "reportingInstance"),
        Column("event_type", "type"),
    ),
)
LOCAL_ROOT_POLICY_EVENTS = EventStream(LocalRootPolicyEvent, _POLICY_EVENT_COLUMNS)
LOCAL_POLICY_EVENTS = EventStream(
    LocalPolicyEvent,
    (*_POLICY_EVENT_COLUMNS, Column("cluster_name", "clusterName"), Column("cluster_id", "clusterId", uuid_or_none)),
)

# Complete states are applied at the end of a batch in this order: complete compliance builds on the compliance
# whose version it names (``extdependencyversion``).
RULES: Final[dict[EventType, Rule]] = {
    EventType.HEARTBEAT: Rule(
        Mode.COMPLETE,
        CompleteKind(parse_heartbeat, apply_heartbeat, framed=False, apply_states=apply_heartbeat_states),
        liveness=True,
    ),
    EventType.HUB_INFO: Rule(
        Mode.COMPLETE, CompleteKind(parse_hub_info, apply_hub_info, framed=False, apply_states=apply_hub_info_states)
    ),
    EventType.MANAGED_CLUSTER: Rule(Mode.HYBRID, MANAGED_CLUSTERS),
    EventType.LOCAL_POLICY_SPEC: Rule(Mode.HYBRID, LOCAL_POLICIES),
    EventType.LOCAL_COMPLIANCE: Rule(
        Mode.COMPLETE,
        CompleteKind(parse_compliance, apply_compliance, framed=True, apply_states=apply_compliance_states),
    ),
    EventType.LOCAL_COMPLETE_COMPLIANCE: Rule(
        Mode.COMPLETE, CompleteKind(parse_complete_compliance, apply_complete_compliance, framed=True)
    ),
    EventType.MANAGED_CLUSTER_EVENT: Rule(Mode.APPEND, MANAGED_CLUSTER_EVENTS),
    EventType.LOCAL_ROOT_POLICY_EVENT: Rule(Mode.APPEND, LOCAL_ROOT_POLICY_EVENTS),
    EventType.LOCAL_REPLICATED_POLICY_EVENT: Rule(Mode.APPEND, LOCAL_POLICY_EVENTS),
    # Upstream's agent emits it; upstream's manager registers no handler and stores nothing.
    EventType.CLUSTER_GROUP_UPGRADE_EVENT: Rule(Mode.DELTA, ACCEPTED),
}

# Derived views, for the modules that need one aspect.
MODES: Final = {event_type: rule.mode for event_type, rule in RULES.items()}
HYBRID_TYPES: Final = {t: rule.handler for t, rule in RULES.items() if isinstance(rule.handler, HybridType)}
COMPLETE_TYPES: Final = {t: rule.handler for t, rule in RULES.items() if isinstance(rule.handler, CompleteKind)}
APPLY_ORDER: Final = tuple(COMPLETE_TYPES)
# Complete types no resync request can ask for (upstream's complete compliance): once stalled, the next complete
# state heals the stall itself, as the answer to a request would.
HEALED_BY_NEXT_STATE: Final = frozenset(t for t in COMPLETE_TYPES if t not in RESYNC_TYPES and not RULES[t].liveness)
