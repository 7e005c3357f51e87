"""Anti-entropy on the manager: a hub's digest of a type compared with the rows; a mismatch asks for that type.

The one place that decides what a digest check does. The ingest calls :func:`check_digest` at the end of a batch,
for the last digest of each (hub, type) that no later record of that type followed in the batch: the hub's agent
sent it after everything of the type up to the digest's point (``agent_tasks/engine.py``), so the rows must equal it
now. Whatever the cause of a difference (a lost or refused message, a change that bypassed the agent's change
stream, a row edited by hand, a bug), the answer is a full resync of that type only (reason ``diverged``):

* not while a request for the type is open: its answer is on the way;
* a difference that outlives the resync it asked for (two in a row and more) asks again only after a backoff,
  1 minute doubling to 6 hours, so a disagreement a resync cannot cure (a bug) costs a resync now and then, not one
  per heartbeat. It stays visible meanwhile: ``HubTypeStatus.digest_agreed`` and the ``Divergence`` records.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from globalhub.manager.digests import hub_digest
from globalhub.manager.models import Divergence, HubTypeStatus, ResyncRequest
from globalhub.manager.resync_requests import create_request
from globalhub.protocol.digest import Digest
from globalhub.protocol.events import EventType

log = logging.getLogger(__name__)

BACKOFF_FIRST = timedelta(minutes=1)
BACKOFF_MAX = timedelta(hours=6)


def check_digest(hub: str, event_type: EventType, claimed: Digest, now: datetime, *, request_open: bool) -> bool:
    """Compare the hub's digest with the rows; record the outcome, and on a difference ask for a resync of the type
    unless one is open or the backoff says wait. Returns whether they agreed."""
    found = hub_digest(hub, event_type)
    status, _ = HubTypeStatus.objects.get_or_create(hub_id=hub, event_type=event_type.value)
    status.digest_checked_at = now
    if found == claimed:
        status.digest_agreed = True
        status.diverged_in_a_row = 0
        status.save(update_fields=["digest_checked_at", "digest_agreed", "diverged_in_a_row"])
        return True
    status.digest_agreed = False
    if not request_open:  # counted once per answer: the differences seen while a request is open are one
        status.diverged_in_a_row += 1
    request = None
    if not request_open and _backoff_over(status, now):
        request = create_request(hub, [event_type], ResyncRequest.Reason.DIVERGED, "digest check", now)
        status.divergence_requested_at = now
    Divergence.objects.create(
        hub_id=hub,
        event_type=event_type.value,
        seen_at=now,
        expected_count=claimed.count,
        found_count=found.count,
        expected_hash=claimed.hex,
        found_hash=found.hex,
        request=request,
    )
    status.save(update_fields=["digest_checked_at", "digest_agreed", "diverged_in_a_row", "divergence_requested_at"])
    log.warning(
        "hub=%s type=%s diverged (%d in a row): the hub has %d rows (%s), the manager %d (%s); %s",
        hub,
        event_type.short,
        status.diverged_in_a_row,
        claimed.count,
        claimed.hex,
        found.count,
        found.hex,
        f"resync request #{request.pk}" if request else "no new request (one is open, or backing off)",
    )
    return False


def _backoff_over(status: HubTypeStatus, now: datetime) -> bool:
    """The first divergence asks at once; one that outlived the resync it asked for waits 1 min, 2, 4, … 6 h."""
    if status.diverged_in_a_row <= 1 or status.divergence_requested_at is None:
        return True
    wait = min(BACKOFF_FIRST * 2 ** (status.diverged_in_a_row - 2), BACKOFF_MAX)
    return bool(now - status.divergence_requested_at >= wait)
