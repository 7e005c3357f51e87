"""The hubs: their state, what the manager last received per type, and resync requests to them."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.utils import timezone

from globalhub.manager.admin.base import DeletedFilter, ReadOnlyAdmin, ReadOnlyInline
from globalhub.manager.lifecycle import MAX_CLOCK_SKEW
from globalhub.manager.models import (
    Hub,
    HubInfo,
    HubTypeStatus,
    ResyncRequest,
    ResyncTarget,
)
from globalhub.manager.resync_requests import request_resyncs
from globalhub.protocol.events import RESYNC_TYPES, EventType


class HubTypeStatusInline(ReadOnlyInline):
    model = HubTypeStatus
    fields = (
        "event_type",
        "last_full_state_at",
        "last_full_state_objects",
        "last_delta_at",
        "version",
        "stalled_since",
        "stalls",
        "refused",
        "last_refusal",
        "digest_checked_at",
        "digest_agreed",
        "diverged_in_a_row",
    )
    readonly_fields = fields
    verbose_name_plural = (
        "what the manager last received, per type (refused: bundles refused in a row; digest: the hub's "
        "anti-entropy digest compared with the rows)"
    )


class ResyncTargetInline(ReadOnlyInline):
    model = ResyncTarget
    fields = ("request", "answered_types", "completed_at")
    readonly_fields = fields
    ordering = ["-request__requested_at"]
    verbose_name_plural = "resync requests to this hub"


class ResyncForm(forms.Form):
    types = forms.MultipleChoiceField(
        choices=[(t.value, t.short) for t in RESYNC_TYPES],
        initial=[t.value for t in RESYNC_TYPES],
        widget=forms.CheckboxSelectMultiple,
    )


@admin.register(Hub)
class HubAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = [
        "name",
        "state",
        "last_heartbeat",
        "heartbeat_age",
        "clock_skew",
        "stalled_types",
        "state_changed_at",
        "live_clusters",
    ]
    list_filter = ["state"]
    search_fields = ["name"]
    readonly_fields = (
        "name",
        "state",
        "state_changed_at",
        "last_heartbeat",
        "heartbeat_age",
        "last_heartbeat_sent_at",
        "clock_skew",
        "skewed_heartbeats",
        "stalled_types",
        "status_topic",
        "created_at",
    )
    fields = readonly_fields
    inlines = [HubTypeStatusInline, ResyncTargetInline]
    actions = ["request_resync"]

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # hubs appear by themselves, from their status topic

    def get_queryset(self, request: HttpRequest) -> QuerySet[Hub]:
        queryset: QuerySet[Hub] = super().get_queryset(request)
        stalled = Q(type_status__stalled_since__isnull=False)
        return queryset.annotate(
            _live=Count("clusters", filter=Q(clusters__deleted_at__isnull=True), distinct=True),
            _stalled=Count("type_status", filter=stalled, distinct=True),
        )

    @admin.display(description="clock skew")
    def clock_skew(self, hub: Hub) -> str:
        """The hub clock's offset from the broker's at its last heartbeat (shown, never used to judge it)."""
        if hub.clock_skew_seconds is None:
            return "unknown"
        flag = " (over 30 s)" if abs(hub.clock_skew_seconds) > MAX_CLOCK_SKEW.total_seconds() else ""
        return f"{hub.clock_skew_seconds:+.1f} s{flag}"

    @admin.display(description="stalled types", ordering="_stalled")
    def stalled_types(self, hub: Hub) -> str:
        if not getattr(hub, "_stalled", 0):
            return "none"
        stalled = HubTypeStatus.objects.filter(hub=hub, stalled_since__isnull=False).values_list(
            "event_type", flat=True
        )
        return ", ".join(EventType(t).short for t in stalled)

    @admin.display(description="live clusters", ordering="_live")
    def live_clusters(self, hub: Any) -> int:
        return int(getattr(hub, "_live", 0))

    @admin.display(description="heartbeat age")
    def heartbeat_age(self, hub: Hub) -> str:
        if hub.last_heartbeat is None:
            return "never"
        seconds = int((timezone.now() - hub.last_heartbeat).total_seconds())
        return f"{seconds // 60} min {seconds % 60} s" if seconds >= 60 else f"{seconds} s"

    @admin.action(description="Request a resync of the selected hubs", permissions=["resync"])
    def request_resync(self, request: HttpRequest, queryset: QuerySet[Hub]) -> TemplateResponse | None:
        form = ResyncForm(request.POST if "apply" in request.POST else None)
        if "apply" in request.POST and form.is_valid():
            by = f"admin:{request.user.get_username()}"
            names = list(queryset.order_by("name").values_list("name", flat=True))
            try:
                created = request_resyncs(names, form.cleaned_data["types"], ResyncRequest.Reason.OPERATOR, by)
            except ValueError as error:
                self.message_user(request, f"No resync request recorded: {error}", messages.ERROR)
                return None
            self.message_user(
                request, f"{len(created)} resync request(s) recorded: " + ", ".join(f"#{r.pk}" for r in created)
            )
            return None
        context = {
            **self.admin_site.each_context(request),
            "title": "Request a resync",
            "hubs": queryset,
            "form": form,
            "opts": self.model._meta,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(request, "admin/manager/hub/request_resync.html", context)

    def has_resync_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.has_perm("manager.add_resyncrequest"))


@admin.register(HubInfo)
class HubInfoAdmin(ReadOnlyAdmin):
    list_display = ["hub", "cluster_id", "console_url", "updated_at", "deleted_at"]
    list_filter = [DeletedFilter]
