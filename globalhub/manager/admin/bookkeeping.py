"""The ingestion bookkeeping: resync requests, divergences, dead letters, positions, versions (read-only)."""

from __future__ import annotations

from django.conf import settings
from django.contrib import admin
from django.utils import timezone

from globalhub.manager.admin.base import ReadOnlyAdmin, ReadOnlyInline
from globalhub.manager.models import (
    ConsumedPosition,
    DeadLetter,
    Divergence,
    ResyncProgress,
    ResyncRequest,
    ResyncTarget,
    TypeVersion,
)
from globalhub.protocol.events import EventType


class ResyncTargetOfRequestInline(ReadOnlyInline):
    model = ResyncTarget
    fields = ("hub", "answered_types", "completed_at")
    readonly_fields = fields


@admin.register(ResyncRequest)
class ResyncRequestAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "subject",
        "reason",
        "short_types",
        "requested_by",
        "requested_at",
        "sent_at",
        "completed_at",
        "progress",
    ]
    list_filter = ["reason", "subject"]
    inlines = [ResyncTargetOfRequestInline]

    @admin.display(description="progress")
    def progress(self, request: ResyncRequest) -> str:
        """Overdue once it is still not complete ``GH_RESYNC_OVERDUE`` after it was requested."""
        return request.progress(timezone.now(), settings.GLOBALHUB.resync_overdue)

    @admin.display(description="types")
    def short_types(self, request: ResyncRequest) -> str:
        return ", ".join(EventType(t).short for t in request.types)


@admin.register(Divergence)
class DivergenceAdmin(ReadOnlyAdmin):
    list_display = [
        "seen_at",
        "hub",
        "event_type",
        "expected_count",
        "found_count",
        "expected_hash",
        "found_hash",
        "request",
    ]
    list_filter = ["hub", "event_type"]


@admin.register(DeadLetter)
class DeadLetterAdmin(ReadOnlyAdmin):
    list_display = ["received_at", "topic", "partition", "offset", "hub_name", "reason"]
    list_filter = ["hub_name"]
    search_fields = ["reason", "topic"]


@admin.register(ConsumedPosition)
class ConsumedPositionAdmin(ReadOnlyAdmin):
    list_display = ["topic", "partition", "next_offset", "updated_at"]


@admin.register(TypeVersion)
class TypeVersionAdmin(ReadOnlyAdmin):
    list_display = ["hub", "event_type", "generation", "value", "updated_at"]
    list_filter = ["hub"]


@admin.register(ResyncProgress)
class ResyncProgressAdmin(ReadOnlyAdmin):
    list_display = ["hub", "event_type", "resync_id", "outcome", "listed", "deleted_count", "started_at", "finished_at"]
    list_filter = ["outcome", "hub"]
