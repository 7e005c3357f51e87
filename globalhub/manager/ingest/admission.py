"""Version admission: which status bundles may change the manager's copy. The one place that decides it.

Rules follow upstream's conflation elements (reference section 4.3):

* Generation 0 means the agent restarted: the slot is reset and the bundle admitted.
* complete and delta types admit a bundle whose version is component-wise >= the last processed one;
* hybrid types compare the Generation only (>=).
"""

from __future__ import annotations

from enum import StrEnum

from globalhub.protocol.events import EventType
from globalhub.protocol.version import Version


class Mode(StrEnum):
    COMPLETE = "complete"
    DELTA = "delta"
    HYBRID = "hybrid"


MODES: dict[EventType, Mode] = {
    EventType.HEARTBEAT: Mode.COMPLETE,
    EventType.HUB_INFO: Mode.COMPLETE,
    EventType.MANAGED_CLUSTER: Mode.HYBRID,
    EventType.MANAGED_CLUSTER_EVENT: Mode.DELTA,
    EventType.LOCAL_POLICY_SPEC: Mode.HYBRID,
    EventType.LOCAL_COMPLIANCE: Mode.COMPLETE,
    EventType.LOCAL_COMPLETE_COMPLIANCE: Mode.COMPLETE,
    EventType.LOCAL_ROOT_POLICY_EVENT: Mode.DELTA,
    EventType.LOCAL_REPLICATED_POLICY_EVENT: Mode.DELTA,
}


def admits(mode: Mode, incoming: Version, last: Version | None) -> bool:
    """True when a bundle with version ``incoming`` may be applied after ``last`` (None: nothing processed)."""
    if incoming.init_gen() or last is None:
        return True
    if mode is Mode.HYBRID:
        return incoming.generation >= last.generation
    return incoming.newer_than_or_equal(last)
