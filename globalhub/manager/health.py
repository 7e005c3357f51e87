"""``/healthz``: is this web process able to serve, i.e. can it reach its database? For load balancers and
container healthchecks; unauthenticated, and it says nothing but "ok" or what is wrong."""

from __future__ import annotations

from django.db import DatabaseError, connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except DatabaseError as error:
        return JsonResponse({"status": "unavailable", "database": str(error).splitlines()[0][:200]}, status=503)
    return JsonResponse({"status": "ok"})
