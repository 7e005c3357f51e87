"""Hub lifecycle: the one place where a hub becomes inactive or active again.

* A hub silent for longer than the timeout (5 min) becomes **inactive**: its clusters, hub info and policies are
  soft-deleted and its compliance hard-deleted, in the transaction that changes its state (as upstream).
* An inactive hub whose heartbeat is fresh again becomes **active** and gets a targeted resync of the four types.
  This happens as soon as the status consumer applies that heartbeat (same transaction), and the probe repeats
  the check as a safety net; a heartbeat that was itself sent before the timeout does not count.
* Every change is a conditional ``UPDATE … WHERE state = <old> AND <heartbeat condition>``, and only the caller
  that changed exactly one row acts on it. The consumer, the probe and any number of workers can race: a state
  changes once and its resync request is written once, in the same transaction.
* After a manager start nobody is judged for ``startup_grace`` (default: the timeout), so hubs get a fair chance
  to report after a long manager outage. Heartbeat times are the hubs' send times, so an old backlog does not
  make dead hubs look alive either.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from globalhub.manager.models import (
    CompleteFrame,
    Hub,
    HubInfo,
    LocalCompliance,
    LocalPolicy,
    ManagedCluster,
    ResyncRequest,
)
from globalhub.manager.resync_requests import create_request

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Timing:
    timeout: timedelta
    startup_grace: timedelta

    @classmethod
    def from_settings(cls) -> Timing:
        conf = settings.GLOBALHUB
        return cls(conf.hub_timeout, conf.startup_grace)


@dataclass
class ProbeResult:
    inactivated: list[str] = field(default_factory=list)
    reactivated: list[str] = field(default_factory=list)
    in_startup_grace: bool = False


def _silent(cutoff: datetime) -> Q:
    """Hubs with no heartbeat since ``cutoff`` (a hub that never sent one counts from when it appeared)."""
    return Q(last_heartbeat__lt=cutoff) | Q(last_heartbeat__isnull=True, created_at__lt=cutoff)


def deactivate(hub: str, now: datetime, timing: Timing) -> bool:
    """Make ``hub`` inactive if it is active and silent; clean its data in the same transaction. True if it did."""
    cutoff = now - timing.timeout
    with transaction.atomic():
        changed = Hub.objects.filter(Q(name=hub, state=Hub.State.ACTIVE) & _silent(cutoff)).update(
            state=Hub.State.INACTIVE, state_changed_at=now
        )
        if changed != 1:
            return False
        clusters = ManagedCluster.objects.filter(hub_id=hub, deleted_at__isnull=True).update(
            deleted_at=now, updated_at=now
        )
        info = HubInfo.objects.filter(hub_id=hub, deleted_at__isnull=True).update(deleted_at=now, updated_at=now)
        policies = LocalPolicy.objects.filter(hub_id=hub, deleted_at__isnull=True).update(
            deleted_at=now, updated_at=now
        )
        compliance, _ = LocalCompliance.objects.filter(hub_id=hub).delete()
        CompleteFrame.objects.filter(hub_id=hub).delete()
    log.warning(
        "hub=%s inactive (silent since before %s): soft-deleted %d clusters, %d hub info, %d policies; "
        "deleted %d compliance rows",
        hub,
        cutoff.isoformat(timespec="seconds"),
        clusters,
        info,
        policies,
        compliance,
    )
    return True


def reactivate(hub: str, now: datetime, timing: Timing, by: str) -> ResyncRequest | None:
    """Make an inactive ``hub`` with a fresh heartbeat active again, with its targeted resync; None if not."""
    cutoff = now - timing.timeout
    with transaction.atomic():
        changed = Hub.objects.filter(name=hub, state=Hub.State.INACTIVE, last_heartbeat__gte=cutoff).update(
            state=Hub.State.ACTIVE, state_changed_at=now
        )
        if changed != 1:
            return None
        request = create_request(hub, None, ResyncRequest.Reason.REACTIVATION, by, now)
    log.warning("hub=%s active again: resync request #%s", hub, request.pk)
    return request


def heartbeat_applied(hub: str, sent_at: datetime, now: datetime, timing: Timing) -> ResyncRequest | None:
    """Called by the status consumer right after it applied a heartbeat (same transaction)."""
    if sent_at < now - timing.timeout:
        return None  # a heartbeat sent before the timeout says nothing about the hub being alive now
    return reactivate(hub, now, timing, by="heartbeat")


def last_manager_start() -> datetime | None:
    return (
        ResyncRequest.objects.filter(reason=ResyncRequest.Reason.STARTUP)
        .order_by("-requested_at")
        .values_list("requested_at", flat=True)
        .first()
    )


def probe(now: datetime | None = None, timing: Timing | None = None) -> ProbeResult:
    """Judge every hub: silent ones become inactive (unless in the startup grace), fresh inactive ones active."""
    moment = now or timezone.now()
    rules = timing or Timing.from_settings()
    cutoff = moment - rules.timeout
    result = ProbeResult()
    started = last_manager_start()
    result.in_startup_grace = started is not None and moment - started < rules.startup_grace
    if not result.in_startup_grace:
        stale = Hub.objects.filter(Q(state=Hub.State.ACTIVE) & _silent(cutoff)).values_list("name", flat=True)
        for hub in list(stale):
            if deactivate(hub, moment, rules):
                result.inactivated.append(hub)
    back = Hub.objects.filter(state=Hub.State.INACTIVE, last_heartbeat__gte=cutoff).values_list("name", flat=True)
    for hub in list(back):
        if reactivate(hub, moment, rules, by="probe"):
            result.reactivated.append(hub)
    return result


def manager_started(now: datetime | None = None, dedupe: timedelta | None = None) -> ResyncRequest | None:
    """One broadcast resync per manager start, however many processes start: the first within ``dedupe`` wins."""
    moment = now or timezone.now()
    window = dedupe or settings.GLOBALHUB.probe_interval
    with transaction.atomic():
        # Serialise concurrent starters; the lock ends with the transaction.
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(hashtext('globalhub-manager-start'))")
        recent = ResyncRequest.objects.filter(
            reason=ResyncRequest.Reason.STARTUP, requested_at__gte=moment - window
        ).exists()
        if recent:
            return None
        return create_request(None, None, ResyncRequest.Reason.STARTUP, "manager start", moment)
