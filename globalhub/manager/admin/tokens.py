"""API tokens: listed, revoked and deleted here; created only by ``manage.py create_api_token``.

A token is shown once, when it is made. Making one here would have to carry it to the next page through the
session's messages, where it would be stored; the command prints it and keeps nothing but its hash. The hash is
never shown: it is of no use to an operator, and showing it would invite copying it somewhere.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.utils import timezone

from globalhub.manager.models import ApiToken

DESCRIPTION = (
    "Bearer tokens for scripts calling /api/. Create one with "
    "`python manage.py create_api_token <username> --name NAME [--expires 30d]`: it prints the token once. "
    "Revoke a token here (it stops working at once) or delete it."
)


class ExpiredFilter(admin.SimpleListFilter):
    title = "expiry"
    parameter_name = "expiry"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("live", "not expired"), ("expired", "expired or revoked")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        now = timezone.now()
        if self.value() == "live":
            return queryset.exclude(expires_at__lte=now)
        if self.value() == "expired":
            return queryset.filter(expires_at__lte=now)
        return queryset


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ["name", "user", "key_prefix", "created_at", "last_used_at", "expires_at", "valid"]
    list_filter = [ExpiredFilter, "user"]
    list_select_related = ["user"]
    search_fields = ["name", "key_prefix", "user__username"]
    fields = ("name", "user", "key_prefix", "created_at", "last_used_at", "expires_at")  # never key_hash
    readonly_fields = fields
    ordering = ["-created_at"]
    actions = ["revoke"]

    @admin.display(boolean=True, description="valid")
    def valid(self, token: ApiToken) -> bool:
        """Accepted right now: not expired, and its user active (an inactive user's tokens are refused)."""
        return token.user.is_active and (token.expires_at is None or token.expires_at > timezone.now())

    @admin.action(permissions=["delete"], description="Revoke the selected tokens (they expire now)")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> None:
        now = timezone.now()
        revoked = queryset.exclude(expires_at__lte=now).update(expires_at=now)
        self.message_user(request, f"{revoked} token(s) revoked.", messages.SUCCESS)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        return super().changelist_view(request, {**(extra_context or {}), "subtitle": DESCRIPTION})
