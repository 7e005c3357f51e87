"""The operator's view of the manager's copy: hubs, their clusters, and the ingestion bookkeeping."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest

from globalhub.manager.models import (
    ConsumedPosition,
    DeadLetter,
    Hub,
    HubInfo,
    LocalCompliance,
    LocalPolicy,
    ManagedCluster,
    ResyncProgress,
    TypeVersion,
)


class ReadOnlyAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Bookkeeping written by the consumer: visible, never edited by hand."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Hub)
class HubAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ["name", "last_heartbeat", "live_clusters", "deleted_clusters", "created_at"]
    search_fields = ["name"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Hub]:
        queryset: QuerySet[Hub] = super().get_queryset(request)
        return queryset.annotate(
            _live=Count("clusters", filter=Q(clusters__deleted_at__isnull=True)),
            _deleted=Count("clusters", filter=Q(clusters__deleted_at__isnull=False)),
        )

    @admin.display(description="live clusters", ordering="_live")
    def live_clusters(self, hub: Any) -> int:
        return int(hub._live)

    @admin.display(description="soft-deleted clusters", ordering="_deleted")
    def deleted_clusters(self, hub: Any) -> int:
        return int(hub._deleted)


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
