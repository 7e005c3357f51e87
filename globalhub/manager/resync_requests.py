"""Resync requests as records: created with whatever caused them, sent by an outbox, completed by the answers.

* :func:`request_resyncs` is the one service operators and schedules use (admin, command, API, Celery tasks): it
  checks every hub and the types first, then records one request per hub in one transaction, all or nothing (a
  schedule's list skips, with a warning, a hub deleted since it was written).
* :func:`create_request` writes one request (and one target per hub) in the caller's transaction, so a state change
  and the request it implies commit together or not at all.
* After the commit, the send task is queued by its name (:data:`SEND_TASK`), so this module never imports the tasks.
* :func:`dispatch_pending` sends unsent requests to ``gh-spec`` (confirmed by Kafka) and commits each one's
  ``sent_at`` as soon as it is confirmed. Rows are claimed with ``FOR UPDATE SKIP LOCKED``, so several workers never
  send one request twice; a send that fails stays pending and is retried by the next dispatch (beat runs one every
  few seconds).
* Each request carries its id to the agents (``ghrequests`` comes back on the full states that answer it); a target
  is complete once a full state answering *that* request was ingested whole for every requested type
  (``globalhub/manager/answers.py``). A request with no target (a broadcast while no hub is active) is complete
  when it is recorded.
* :func:`with_status` / :func:`status_of` tell where a request stands, one of :class:`Status`, with the rule in one
  place (:func:`status_conditions`) for the admin, the API and the metrics:

  - ``complete``: every target answered (or there was none);
  - ``failed``: it cannot complete as things are. Either nobody able to answer is left (every target still owing
    an answer is a hub now inactive, or the hubs it asked were deleted), or it was never sent, its last send
    failed and ``GH_RESYNC_OVERDUE`` has passed since it was requested. It is computed, not stored: a hub that
    speaks again is asked by its reactivation request, whose answer also completes the earlier requests sent to
    it (``answers.py``), and a Kafka back in time sends the request; it then reads sent, or complete;
  - ``overdue``: not complete ``GH_RESYNC_OVERDUE`` after it was requested, and not failed;
  - ``sent``: sent to Kafka, answers awaited;
  - ``pending``: recorded, not sent yet.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from enum import StrEnum

from django.db import transaction
from django.db.models import Case, CharField, Count, Exists, OuterRef, Q, QuerySet, Value, When
from django.utils import timezone

from globalhub.celery import app
from globalhub.manager.models import Hub, ResyncRequest, ResyncTarget
from globalhub.protocol.codec import OutgoingMessage
from globalhub.protocol.events import BROADCAST, RESYNC_TYPES, EventType
from globalhub.protocol.kafka import ConfirmedProducer, DeliveryFailed
from globalhub.protocol.requests import resync_request

log = logging.getLogger(__name__)

DEFAULT_TYPES: tuple[EventType, ...] = RESYNC_TYPES

SEND_TASK = "manager.send_resync_requests"
"""The Celery task that runs :func:`dispatch_pending`; queued by name after each commit that records requests."""


def full_types(types: Iterable[str | EventType] | None) -> list[str]:
    """Normalise requested types (short or full) to full type strings, in the manager's order; default: all four."""
    wanted = [EventType.from_any(str(t)) for t in (types or DEFAULT_TYPES)]
    unknown = [t for t in wanted if t not in RESYNC_TYPES]
    if unknown:
        raise ValueError(
            f"{', '.join(t.short for t in unknown)} cannot be resynced; choose from "
            f"{', '.join(t.short for t in RESYNC_TYPES)}"
        )
    return [t.value for t in RESYNC_TYPES if t in wanted]


def request_resyncs(
    hubs: Sequence[str] | None,
    types: Iterable[str | EventType] | None,
    reason: ResyncRequest.Reason,
    requested_by: str,
    now: datetime | None = None,
    *,
    skip_unknown: bool = False,
) -> list[ResyncRequest]:
    """Record resyncs of these hubs, one request per hub, all or nothing; ``hubs=None``: one broadcast to every hub.

    Every hub name is checked before anything is written: a ``ValueError`` names every unknown hub (or the types that
    cannot be resynced), and then nothing is recorded. Duplicate names count once; the requests follow the names'
    order. The requests commit in one transaction (the caller's, if one is open) and are sent after it commits.

    ``skip_unknown`` (a schedule's list of hubs, which may name a hub deleted since): unknown hubs are left out with
    a warning and the others are asked; nothing is recorded, without an error, when none is known.
    """
    if isinstance(hubs, str):
        raise TypeError(f"hubs must be a sequence of hub names, not the string {hubs!r}")
    moment = now or timezone.now()
    with transaction.atomic():
        if hubs is None:
            subjects: list[str | None] = [None]
        else:
            names = list(dict.fromkeys(hubs))
            if skip_unknown and names:
                names = _known_only(names, reason, requested_by)
                if not names:
                    full_types(types)  # a bad type is still an error
                    return []
            _check_known_hubs(names)
            subjects = list(names)
        requested = full_types(types)
        created = [_record(subject, requested, reason, requested_by, moment) for subject in subjects]
        transaction.on_commit(_ask_for_dispatch)
    return created


def create_request(
    hub: str | None,
    types: Iterable[str | EventType] | None,
    reason: ResyncRequest.Reason,
    requested_by: str,
    now: datetime | None = None,
) -> ResyncRequest:
    """Record a resync of one hub, or of every hub (``hub=None``: a broadcast whose targets are the active hubs).

    Runs in the caller's transaction; the request is sent after that commits.
    """
    moment = now or timezone.now()
    requested = full_types(types)
    with transaction.atomic():
        if hub is not None:
            _check_known_hubs([hub])
        request = _record(hub, requested, reason, requested_by, moment)
        transaction.on_commit(_ask_for_dispatch)
    return request


def _check_known_hubs(names: Sequence[str]) -> None:
    """ValueError naming every one of these hubs the manager does not know, or when no hub is named at all."""
    if not names:
        raise ValueError("no hub named: name at least one hub, or ask for every hub")
    known = set(Hub.objects.filter(name__in=names).values_list("name", flat=True))
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ValueError(f"unknown hub{'s' if len(unknown) > 1 else ''} {', '.join(repr(n) for n in unknown)}")


def _known_only(names: Sequence[str], reason: str, requested_by: str) -> list[str]:
    """The hubs of ``names`` the manager knows; each one it does not know is logged and left out."""
    known = set(Hub.objects.filter(name__in=names).values_list("name", flat=True))
    unknown = [name for name in names if name not in known]
    if unknown:
        log.warning(
            "%s resync (by %s): unknown hub%s %s left out",
            reason,
            requested_by,
            "s" if len(unknown) > 1 else "",
            ", ".join(repr(n) for n in unknown),
        )
    return [name for name in names if name in known]


def _record(
    hub: str | None, types: list[str], reason: ResyncRequest.Reason, requested_by: str, moment: datetime
) -> ResyncRequest:
    """Write one request and its targets: the hub, or for a broadcast (``None``) the hubs active right now."""
    if hub is None:
        subject = BROADCAST
        targets = list(Hub.objects.filter(state=Hub.State.ACTIVE).values_list("name", flat=True))
    else:
        subject, targets = hub, [hub]
    request = ResyncRequest.objects.create(
        subject=subject,
        types=types,
        reason=reason,
        requested_by=requested_by,
        requested_at=moment,
        completed_at=None if targets else moment,  # nobody to answer: nothing to wait for
    )
    ResyncTarget.objects.bulk_create([ResyncTarget(request=request, hub_id=name) for name in targets])
    log.info(
        "resync request #%s (%s, by %s) for %s: %s",
        request.pk,
        reason,
        requested_by,
        subject,
        ", ".join(EventType(t).short for t in types),
    )
    return request


def _ask_for_dispatch() -> None:
    """After the commit: ask a worker to send now (the periodic dispatch catches it anyway if this fails).

    The task is sent by name, so this module does not import the tasks (which import the lifecycle, which imports
    this module).
    """
    try:
        app.send_task(SEND_TASK)
    except Exception as error:  # the broker being down must not fail the caller; beat's dispatch will send it
        log.warning("could not queue the resync dispatch (%s); the periodic dispatch will send it", error)


def dispatch_pending(producer: ConfirmedProducer, spec_topic: str, limit: int = 100) -> int:
    """Send unsent requests in order; returns how many were sent. Stops at the first failure (order is kept).

    Each request is claimed, sent and stamped ``sent_at`` in its own transaction, so its ``sent_at`` is committed as
    soon as Kafka confirmed it: an answer ingested right after (an upstream agent's, judged by that time) is not
    missed because later sends of the same dispatch are still under way.
    """
    sent = 0
    while sent < limit:
        with transaction.atomic():
            request = (
                ResyncRequest.objects.select_for_update(skip_locked=True)
                .filter(sent_at__isnull=True)
                .order_by("id")
                .first()
            )
            if request is None:
                break
            message: OutgoingMessage = resync_request(request.subject, request.types, request_id=str(request.pk))
            try:
                producer.send(spec_topic, [message])
            except DeliveryFailed as error:
                request.send_attempts += 1
                request.last_send_error = str(error)[:1000]
                request.save(update_fields=["send_attempts", "last_send_error"])
                log.error("resync request #%s not sent (attempt %d): %s", request.pk, request.send_attempts, error)
                break
            request.sent_at = timezone.now()
            request.send_attempts += 1
            request.last_send_error = ""
            request.save(update_fields=["sent_at", "send_attempts", "last_send_error"])
        sent += 1
    return sent


class Status(StrEnum):
    """Where a resync request stands (see the module docstring); also the metric's label values."""

    PENDING = "pending"
    SENT = "sent"
    COMPLETE = "complete"
    OVERDUE = "overdue"
    FAILED = "failed"


def status_conditions(now: datetime, overdue_after: timedelta) -> dict[Status, Q]:
    """One condition per status on ``ResyncRequest`` rows; exactly one holds for any request, checked in this
    order: complete, failed, overdue, sent, pending."""
    late = Q(requested_at__lt=now - overdue_after)
    still_owed_by_a_live_hub = Exists(
        ResyncTarget.objects.filter(request=OuterRef("pk"), completed_at__isnull=True, hub__state=Hub.State.ACTIVE)
    )
    open_ = Q(completed_at__isnull=True)
    send_failed = Q(sent_at__isnull=True) & ~Q(last_send_error="") & late
    failed = open_ & (~still_owed_by_a_live_hub | send_failed)
    overdue = open_ & ~failed & late
    sent = open_ & ~failed & ~late & Q(sent_at__isnull=False)
    pending = open_ & ~failed & ~late & Q(sent_at__isnull=True)
    return {
        Status.COMPLETE: ~open_,
        Status.FAILED: failed,
        Status.OVERDUE: overdue,
        Status.SENT: sent,
        Status.PENDING: pending,
    }


def with_status(queryset: QuerySet[ResyncRequest], now: datetime, overdue_after: timedelta) -> QuerySet[ResyncRequest]:
    """The requests annotated with ``gh_status``, their :class:`Status` (one SQL expression: filterable, sortable)."""
    whens = [
        When(condition, then=Value(status.value)) for status, condition in status_conditions(now, overdue_after).items()
    ]
    return queryset.annotate(gh_status=Case(*whens, default=Value(Status.PENDING.value), output_field=CharField()))


def status_of(request: ResyncRequest, now: datetime, overdue_after: timedelta) -> Status:
    """The :class:`Status` of one request: its ``gh_status`` annotation when loaded with :func:`with_status`, else
    read from the database (one query)."""
    annotated = getattr(request, "gh_status", None)
    if annotated is None:
        loaded = with_status(ResyncRequest.objects.filter(pk=request.pk), now, overdue_after).first()
        annotated = getattr(loaded, "gh_status", None)
    return Status(annotated or Status.PENDING)


def count_by_status(now: datetime, overdue_after: timedelta) -> dict[Status, int]:
    """How many requests are in each status (every status present, zero or not): for the metrics. One query."""
    conditions = status_conditions(now, overdue_after)
    counts = ResyncRequest.objects.aggregate(**{s.value: Count("id", filter=q) for s, q in conditions.items()})
    return {status: int(counts[status.value]) for status in Status}
