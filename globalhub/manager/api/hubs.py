"""Hubs, their state per type, and resync requests: read them, and ask hubs for full state."""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone

from globalhub.manager.api.auth import endpoint
from globalhub.manager.api.pages import Query, paginate
from globalhub.manager.api.responses import error
from globalhub.manager.models import Hub, HubTypeStatus, ResyncRequest
from globalhub.manager.resync_requests import request_resyncs, status_of, with_status
from globalhub.protocol.events import short_name


def _hub_json(hub: Hub) -> dict[str, Any]:
    now = timezone.now()
    return {
        "name": hub.name,
        "state": hub.state,
        "state_changed_at": hub.state_changed_at,
        "last_heartbeat": hub.last_heartbeat,
        "heartbeat_age_seconds": None if hub.last_heartbeat is None else (now - hub.last_heartbeat).total_seconds(),
        "last_heartbeat_sent_at": hub.last_heartbeat_sent_at,
        "clock_skew_seconds": hub.clock_skew_seconds,
        "skewed_heartbeats": hub.skewed_heartbeats,
        "status_topic": hub.status_topic or None,  # None: its own topic; else the shared topic it speaks on
    }


def _requests(rows: QuerySet[ResyncRequest]) -> QuerySet[ResyncRequest]:
    """Requests loaded with their status and targets: two queries however many there are."""
    return with_status(rows, timezone.now(), settings.GLOBALHUB.resync_overdue).prefetch_related("targets")


def _request_json(request: ResyncRequest) -> dict[str, Any]:
    targets = list(request.targets.all())
    return {
        "progress": status_of(request, timezone.now(), settings.GLOBALHUB.resync_overdue).value,
        "id": request.pk,
        "subject": request.subject,
        "types": [short_name(t) for t in request.types],
        "reason": request.reason,
        "requested_by": request.requested_by,
        "requested_at": request.requested_at,
        "sent_at": request.sent_at,
        "completed_at": request.completed_at,
        "targets": {t.hub_id: t.completed_at for t in targets},
        "answered": {t.hub_id: [short_name(a) for a in t.answered_types] for t in targets},
    }


def _type_name(event_type: str) -> str:
    return short_name(event_type)


@endpoint("GET", permission="manager.view_hub", doing="reading hubs")
def hubs(request: HttpRequest) -> HttpResponse:
    """``?state=active|inactive&search=<part of the name>``, paged by name."""
    query = Query(request, ["state", "search"])
    rows = Hub.objects.all()
    state = query.choice("state", Hub.State.values)
    if state is not None:
        rows = rows.filter(state=state)
    search = query.one("search")
    if search:
        rows = rows.filter(name__icontains=search)
    page = paginate(request, query, rows, "name", parse_key=str)
    return JsonResponse(page.body("hubs", _hub_json))


@endpoint("GET", permission="manager.view_hub", doing="reading hubs")
def hub_detail(request: HttpRequest, name: str) -> HttpResponse:
    """One hub with its state per type; its recent resync requests too for a user who may read those."""
    hub = None if "\x00" in name else Hub.objects.filter(name=name).first()  # PostgreSQL text holds no NUL
    if hub is None:
        return error(404, f"no hub {name!r}")
    body = _hub_json(hub)
    body["types"] = {
        _type_name(s.event_type): {
            "last_full_state_at": s.last_full_state_at,
            "last_full_state_objects": s.last_full_state_objects,
            "last_delta_at": s.last_delta_at,
            "version": s.version,
            "refused_in_a_row": s.refused,
            "last_refusal": s.last_refusal,
            "stalled_since": s.stalled_since,
            "stalls": s.stalls,
        }
        for s in HubTypeStatus.objects.filter(hub=hub)
    }
    if request.user.has_perm("manager.view_resyncrequest"):
        recent = _requests(ResyncRequest.objects.filter(targets__hub=hub))[:10]
        body["resync_requests"] = [_request_json(r) for r in recent]
    return JsonResponse(body)


@endpoint("POST", permission="manager.add_resyncrequest", doing="asking for a resync")
def resync(request: HttpRequest) -> HttpResponse:
    """``{"hubs": ["hub1", ...] | "all", "types": ["managedcluster", ...]}``: recorded all or nothing (202)."""
    try:
        targets, types = _resync_body(request.body)
        by = f"api:{request.user.get_username()}"
        created = request_resyncs(targets, types, ResyncRequest.Reason.OPERATOR, by)
    except ValueError as problem:
        return error(400, str(problem))
    answered = _requests(ResyncRequest.objects.filter(pk__in=[r.pk for r in created]).order_by("pk"))
    return JsonResponse({"requests": [_request_json(r) for r in answered]}, status=202)


def _resync_body(raw: bytes) -> tuple[list[str] | None, list[str] | None]:
    """(hubs, types) from a resync request body; ``None`` means every hub. ValueError says what is wrong."""
    try:
        body = json.loads(raw or b"{}")
    except ValueError:
        raise ValueError("the body must be JSON") from None
    if not isinstance(body, dict):
        raise ValueError('the body must be a JSON object: {"hubs": [...] | "all", "types": [...]}')
    hubs_value = body.get("hubs")
    types = body.get("types")
    if types is not None and not _names(types):
        raise ValueError('"types" must be a list of type names')
    if hubs_value == "all":
        return None, types
    if _names(hubs_value) and hubs_value:
        return hubs_value, types
    raise ValueError('"hubs" must be "all" or a non-empty list of hub names')


def _names(value: object) -> bool:
    """A list of strings PostgreSQL can compare (its text holds no NUL)."""
    return isinstance(value, list) and all(isinstance(v, str) and "\x00" not in v for v in value)


@endpoint("GET", permission="manager.view_resyncrequest", doing="reading resync requests")
def resync_request_detail(request: HttpRequest, pk: int) -> HttpResponse:
    found = _requests(ResyncRequest.objects.filter(pk=pk)).first()
    if found is None:
        return error(404, f"no resync request {pk}")
    return JsonResponse(_request_json(found))
