"""What the hubs reported: clusters, policies, compliance and event streams (read-only)."""

from __future__ import annotations

from django.contrib import admin

from globalhub.manager.admin.base import DeletedFilter, ReadOnlyAdmin
from globalhub.manager.models import (
    LocalCompliance,
    LocalPolicy,
    LocalPolicyEvent,
    LocalRootPolicyEvent,
    ManagedCluster,
    ManagedClusterEvent,
)


@admin.register(ManagedCluster)
class ManagedClusterAdmin(ReadOnlyAdmin):
    list_display = ["cluster_name", "hub", "cluster_id", "updated_at", "deleted_at"]
    list_filter = [DeletedFilter, "hub"]
    search_fields = ["cluster_name", "cluster_id"]
    list_select_related = ["hub"]


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
