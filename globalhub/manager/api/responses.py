"""The API's error answers: always JSON ``{"error": "..."}``, never Django's HTML pages, so scripts can read them."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import Resolver404, resolve


def error(status: int, message: str) -> JsonResponse:
    return JsonResponse({"error": message}, status=status)


def method_not_allowed(method: str, allowed: tuple[str, ...]) -> JsonResponse:
    response = error(405, f"method {method} not allowed here (allowed: {', '.join(allowed)})")
    response["Allow"] = ", ".join(allowed)
    return response


def not_found(request: HttpRequest, *args: object, **kwargs: object) -> HttpResponse:
    """The last route under ``/api/``: an unknown path answers a JSON 404, naming the slash when that is all it
    lacks (the catch-all keeps Django's APPEND_SLASH redirect from happening under ``/api/``)."""
    message = f"no API endpoint at {request.path}"
    if not request.path.endswith("/") and _is_endpoint(request.path + "/"):
        message += f" (did you mean {request.path}/ ?)"
    return error(404, message)


def _is_endpoint(path: str) -> bool:
    try:
        return resolve(path).func is not not_found
    except Resolver404:
        return False
