"""Shared pieces of the admin: read-only pages, the live/soft-deleted filter, and payloads shown as they came."""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html
from django.utils.safestring import SafeString


class ReadOnlyAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Bookkeeping written by the consumer, and what the hubs reported: visible, never added, edited or deleted by
    hand (a deleted row would come back, or worse, not, with the next bundle). The page of a row is view-only: no
    Save, no Delete, and no "delete selected" action."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class ReadOnlyInline(admin.TabularInline):  # type: ignore[type-arg]
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class DeletedFilter(admin.SimpleListFilter):
    """Live rows by default; soft-deleted ones (``deleted_at`` set) or all of them on request."""

    title = "state"
    parameter_name = "state"
    LIVE, DELETED, ALL = "live", "deleted", "all"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(self.LIVE, "live"), (self.DELETED, "soft-deleted"), (self.ALL, "all")]

    def choices(self, changelist: Any) -> Any:
        """The three choices, "live" selected when none is asked for (there is no "All" link of Django's own)."""
        current = self.value() or self.LIVE
        for value, label in self.lookup_choices:
            yield {
                "selected": current == value,
                "query_string": changelist.get_query_string({self.parameter_name: value}),
                "display": label,
            }

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value() or self.LIVE
        if value == self.LIVE:
            return queryset.filter(deleted_at__isnull=True)
        if value == self.DELETED:
            return queryset.filter(deleted_at__isnull=False)
        return queryset


def pretty_json(value: Any, *, summary: str, element_id: str = "gh-payload") -> SafeString:
    """A JSON value indented and sorted, in a collapsible block (closed: a cluster's payload is a few KiB)."""
    text = json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)
    return format_html(
        '<details id="{}"><summary>{} ({} bytes)</summary><pre style="white-space: pre-wrap">{}</pre></details>',
        element_id,
        summary,
        f"{len(text.encode('utf-8')):,}",
        text,
    )
