"""A small JSON API for authenticated users: hubs, their state, and resync requests.

    GET  /api/hubs/                      every hub with its state and heartbeat
    GET  /api/hubs/<name>/               one hub, with the last full state per type and recent requests
    POST /api/resync/                    {"hubs": ["hub1", ...] | "all", "types": ["managedcluster", ...]}
    GET  /api/resync-requests/<id>/      a request and its completion per hub

Authentication: the admin's session (with its CSRF token for POST) or HTTP Basic with a Django user. Asking for a
resync needs the ``manager.add_resyncrequest`` permission.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.conf import settings
from django.contrib.auth import authenticate
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from globalhub.manager.models import Hub, HubTypeStatus, ResyncRequest
from globalhub.manager.resync_requests import request_resyncs
from globalhub.protocol.events import EventType

View = Callable[..., HttpResponse]


def _basic_user(request: HttpRequest) -> Any:
    header = request.headers.get("Authorization", "")
    if not header.startswith("Basic "):
        return None
    try:
        username, _, password = base64.b64decode(header[6:]).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return authenticate(request, username=username, password=password)


def api_view(view: View) -> View:
    """Session or Basic authentication; CSRF is enforced for session-authenticated writes only."""

    @csrf_exempt
    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        user = _basic_user(request)
        if user is not None:
            request.user = user
        elif request.user.is_authenticated:
            if request.method not in ("GET", "HEAD", "OPTIONS"):
                failure = CsrfViewMiddleware(lambda r: HttpResponse()).process_view(request, view, args, kwargs)
                if failure is not None:
                    return _error(403, "CSRF check failed (send the csrftoken, or use Basic authentication)")
        else:
            response = _error(401, "authentication required")
            response["WWW-Authenticate"] = 'Basic realm="globalhub"'
            return response
        if not request.user.is_active:
            return _error(403, "inactive user")
        return view(request, *args, **kwargs)

    return wrapped


def _error(status: int, message: str) -> JsonResponse:
    return JsonResponse({"error": message}, status=status)


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


def _request_json(request: ResyncRequest) -> dict[str, Any]:
    return {
        "progress": request.progress(timezone.now(), settings.GLOBALHUB.resync_overdue),
        "id": request.pk,
        "subject": request.subject,
        "types": [EventType(t).short for t in request.types],
        "reason": request.reason,
        "requested_by": request.requested_by,
        "requested_at": request.requested_at,
        "sent_at": request.sent_at,
        "completed_at": request.completed_at,
        "targets": {t.hub_id: t.completed_at for t in request.targets.all()},
        "answered": {t.hub_id: [EventType(a).short for a in t.answered_types] for t in request.targets.all()},
    }


@require_GET
@api_view
def hubs(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"hubs": [_hub_json(hub) for hub in Hub.objects.all()]})


@require_GET
@api_view
def hub_detail(request: HttpRequest, name: str) -> HttpResponse:
    hub = Hub.objects.filter(name=name).first()
    if hub is None:
        return _error(404, f"no hub {name!r}")
    body = _hub_json(hub)
    body["types"] = {
        EventType(s.event_type).short if s.event_type.startswith("io.") else s.event_type: {
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
    recent = ResyncRequest.objects.filter(targets__hub=hub).prefetch_related("targets")[:10]
    body["resync_requests"] = [_request_json(r) for r in recent]
    return JsonResponse(body)


@require_POST
@api_view
def resync(request: HttpRequest) -> HttpResponse:
    if not request.user.has_perm("manager.add_resyncrequest"):
        return _error(403, "asking for a resync needs the manager.add_resyncrequest permission")
    try:
        targets, types = _resync_body(request.body)
        by = f"api:{request.user.get_username()}"
        created = request_resyncs(targets, types, ResyncRequest.Reason.OPERATOR, by)
    except ValueError as error:
        return _error(400, str(error))
    return JsonResponse({"requests": [_request_json(r) for r in created]}, status=202)


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
    if types is not None and (not isinstance(types, list) or not all(isinstance(t, str) for t in types)):
        raise ValueError('"types" must be a list of type names')
    if hubs_value == "all":
        return None, types
    if isinstance(hubs_value, list) and hubs_value and all(isinstance(h, str) for h in hubs_value):
        return hubs_value, types
    raise ValueError('"hubs" must be "all" or a non-empty list of hub names')


@require_GET
@api_view
def resync_request_detail(request: HttpRequest, pk: int) -> HttpResponse:
    found = ResyncRequest.objects.filter(pk=pk).prefetch_related("targets").first()
    if found is None:
        return _error(404, f"no resync request {pk}")
    return JsonResponse(_request_json(found))
