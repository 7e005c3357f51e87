"""Anti-entropy on the manager: a hub's digest of a type compared with the rows; a mismatch asks for that type.

The one place that decides what a digest check does. The ingest calls :func:`check_digests` at the end of a batch,
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
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from globalhub.manager.digests import hub_digests
from globalhub.manager.models import Divergence, HubTypeStatus, ResyncRequest
from globalhub.manager.resync_requests import create_request
from globalhub.protocol.digest import Digest
from globalhub.protocol.events import EventType

log = logging.getLogger(__name__)

BACKOFF_FIRST = timedelta(minutes=1)
BACKOFF_MAX = timedelta(hours=6)


@dataclass(frozen=True)
class Claim:
    """A hub's digest of one type, as its heartbeat sent it, to compare with the rows."""

    hub: str
    event_type: EventType
    digest: Digest
    request_open: bool  # a resync request for the type is open: a difference asks for nothing new


def check_digest(hub: str, event_type: EventType, claimed: Digest, now: datetime, *, request_open: bool) -> bool:
    """One :func:`check_digests`: whether the rows agreed."""
    return check_digests([Claim(hub, event_type, claimed, request_open)], now)[0]


def check_digests(claims: Sequence[Claim], now: datetime) -> list[bool]:
    """Compare each hub's digest with the rows; record the outcome, and on a difference ask for a resync of the
    type unless one is open or the backoff says wait. Returns whether each agreed.

    The agreeing ones (nearly all) cost a fixed number of statements however many hubs the batch holds: the rows'
    digests in one aggregate per type, the statuses read and written in bulk."""
    if not claims:
        return []
    found = hub_digests((claim.hub, claim.event_type) for claim in claims)
    statuses = _statuses({(claim.hub, claim.event_type.value) for claim in claims})
    outcomes = [found[(claim.hub, claim.event_type)] == claim.digest for claim in claims]
    diverging = [claim for claim, agreed in zip(claims, outcomes, strict=True) if not agreed]
    differing = {statuses[(claim.hub, claim.event_type.value)].pk for claim in diverging}
    agreeing = {statuses[(claim.hub, claim.event_type.value)].pk for claim in claims} - differing
    # The agreeing ones all get the same values: one UPDATE. Then the few differences, one by one.
    HubTypeStatus.objects.filter(pk__in=agreeing).update(digest_checked_at=now, digest_agreed=True, diverged_in_a_row=0)
    for claim in diverging:
        status = statuses[(claim.hub, claim.event_type.value)]
        status.digest_checked_at = now
        _diverged(status, claim, found[(claim.hub, claim.event_type)], now)
    return outcomes


def _statuses(keys: set[tuple[str, str]]) -> dict[tuple[str, str], HubTypeStatus]:
    """The status rows of the (hub, type) pairs, created where missing."""
    hubs = {hub for hub, _ in keys}
    kinds = {kind for _, kind in keys}

    def load() -> dict[tuple[str, str], HubTypeStatus]:
        rows = HubTypeStatus.objects.filter(hub_id__in=hubs, event_type__in=kinds)
        return {(row.hub_id, row.event_type): row for row in rows if (row.hub_id, row.event_type) in keys}

    statuses = load()
    missing = keys - statuses.keys()
    if missing:
        HubTypeStatus.objects.bulk_create(
            [HubTypeStatus(hub_id=hub, event_type=kind) for hub, kind in sorted(missing)], ignore_conflicts=True
        )
        statuses = load()
    return statuses


def _diverged(status: HubTypeStatus, claim: Claim, found: Digest, now: datetime) -> None:
    hub, event_type, claimed = claim.hub, claim.event_type, claim.digest
    status.digest_agreed = False
    if not claim.request_open:  # counted once per answer: the differences seen while a request is open are one
        status.diverged_in_a_row += 1
    request = None
    if not claim.request_open and _backoff_over(status, now):
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


def _backoff_over(status: HubTypeStatus, now: datetime) -> bool:
    """The first divergence asks at once; one that outlived the resync it asked for waits 1 min, 2, 4, … 6 h."""
    if status.diverged_in_a_row <= 1 or status.divergence_requested_at is None:
        return True
    wait = min(BACKOFF_FIRST * 2 ** (status.diverged_in_a_row - 2), BACKOFF_MAX)
    return bool(now - status.divergence_requested_at >= wait)
