"""The operator's view of the manager's copy: hubs, their clusters, and the ingestion bookkeeping."""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.utils import timezone

from globalhub.manager.lifecycle import MAX_CLOCK_SKEW
from globalhub.manager.models import (
    ConsumedPosition,
    DeadLetter,
    Divergence,
    Hub,
    HubInfo,
    HubTypeStatus,
    LocalCompliance,
    LocalPolicy,
    LocalPolicyEvent,
    LocalRootPolicyEvent,
    ManagedCluster,
    ManagedClusterEvent,
    ResyncProgress,
    ResyncRequest,
    ResyncTarget,
    TypeVersion,
)
from globalhub.manager.resync_requests import request_resyncs
from globalhub.protocol.events import RESYNC_TYPES, EventType


class ReadOnlyAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Bookkeeping written by the consumer: visible, never edited by hand."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class ReadOnlyInline(admin.TabularInline):  # type: ignore[type-arg]
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


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


class DeletedFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("live", "live"), ("deleted", "soft-deleted")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() == "live":
            return queryset.filter(deleted_at__isnull=True)
        if self.value() == "deleted":
            return queryset.filter(deleted_at__isnull=False)
        return queryset


@admin.register(ManagedCluster)
class ManagedClusterAdmin(ReadOnlyAdmin):
    list_display = ["cluster_name", "hub", "cluster_id", "updated_at", "deleted_at"]
    list_filter = [DeletedFilter, "hub"]
    search_fields = ["cluster_name", "cluster_id"]
    list_select_related = ["hub"]


@admin.register(HubInfo)
class HubInfoAdmin(ReadOnlyAdmin):
    list_display = ["hub", "cluster_id", "console_url", "updated_at", "deleted_at"]
    list_filter = [DeletedFilter]


@admin.register(LocalPolicy)
class LocalPolicyAdmin(ReadOnlyAdmin):
    list_display = ["policy_name", "hub", "policy_id", "updated_at", "deleted_at"]
    list_filter = [DeletedFilter, "hub"]
    search_fields = ["policy_name", "policy_id"]
    list_select_related = ["hub"]


@admin.register(LocalCompliance)
class LocalComplianceAdmin(ReadOnlyAdmin):
    list_display = ["hub", "policy_id", "cluster_name", "compliance", "updated_at"]
    list_filter = ["compliance", "hub"]
    search_fields = ["cluster_name", "policy_id"]


class EventAdmin(ReadOnlyAdmin):
    """An event stream: newest first, by day, with the hub."""

    date_hierarchy = "created_at"
    ordering = ["-created_at"]
    list_select_related = ["hub"]


@admin.register(ManagedClusterEvent)
class ManagedClusterEventAdmin(EventAdmin):
    list_display = ["created_at", "hub", "cluster_name", "event_type", "reason", "message"]
    list_filter = ["event_type", "reason", "hub"]
    search_fields = ["cluster_name", "event_name", "message"]


@admin.register(LocalRootPolicyEvent)
class LocalRootPolicyEventAdmin(EventAdmin):
    list_display = ["created_at", "hub", "event_namespace", "event_name", "compliance", "reason", "count"]
    list_filter = ["compliance", "reason", "hub"]
    search_fields = ["event_name", "event_namespace", "policy_id", "message"]


@admin.register(LocalPolicyEvent)
class LocalPolicyEventAdmin(EventAdmin):
    list_display = ["created_at", "hub", "cluster_name", "event_name", "compliance", "reason"]
    list_filter = ["compliance", "reason", "hub"]
    search_fields = ["event_name", "cluster_name", "policy_id", "message"]


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
