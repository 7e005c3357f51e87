"""What the hubs reported: clusters, policies, compliance and event streams (read-only).

Clusters and policies show their live rows unless the state filter asks for soft-deleted ones; their payload is
shown as the hub sent it, indented. A cluster's availability, versions, cloud, vendor and labels are read from its
payload (the ManagedCluster's ``metadata.labels`` and ``status``). Compliance rows name their policy, found by hub
and policy id (there is no foreign key: upstream's tables have none), and each policy counts its compliance rows.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.admin.options import IncorrectLookupParameters
from django.db.models import Count, IntegerField, OuterRef, QuerySet, Subquery
from django.db.models.fields.json import KT
from django.db.models.functions import Coalesce
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.http import urlencode
from django.utils.safestring import SafeString

from globalhub.manager.admin.base import DeletedFilter, ReadOnlyAdmin, pretty_json
from globalhub.manager.models import (
    Compliance,
    LocalCompliance,
    LocalPolicy,
    LocalPolicyEvent,
    LocalRootPolicyEvent,
    ManagedCluster,
    ManagedClusterEvent,
)

AVAILABLE_CONDITION = "ManagedClusterConditionAvailable"
MAX_LABEL_FILTER = 500  # characters of the label filter's query parameter: it is untrusted input


class LabelFilter(admin.SimpleListFilter):
    """``?label=key=value`` (several: comma-separated, all must match; ``key`` alone: the label is set).

    Uses the JSON containment lookup on ``payload.metadata.labels``, which the GIN index ``managed_cluster_labels``
    (migration 0021) serves; a key alone (``has_key``) is not served by it, and reads every live cluster's payload.
    """

    title = "label"
    parameter_name = "label"
    template = "admin/manager/managedcluster/label_filter.html"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return []  # free text: the template has a field

    def has_output(self) -> bool:
        return True

    def choices(self, changelist: Any) -> Any:
        yield {
            "selected": self.value() is not None,
            "query_string": changelist.get_query_string(remove=[self.parameter_name]),
            "display": "any",
            "value": self.value() or "",
            "hidden": [
                (name, value)
                for name, values in changelist.filter_params.items()
                if name != self.parameter_name
                for value in values
            ],
        }

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = (self.value() or "").strip()
        if not value:
            return queryset
        wanted, present = parse_label_filter(value)
        if wanted:
            queryset = queryset.filter(payload__metadata__labels__contains=wanted)
        for key in present:
            queryset = queryset.filter(payload__metadata__labels__has_key=key)
        return queryset


def parse_label_filter(text: str) -> tuple[dict[str, str], list[str]]:
    """``"cloud=Amazon, vendor=OpenShift, region"`` -> ({"cloud": "Amazon", "vendor": "OpenShift"}, ["region"]).

    Raises ``IncorrectLookupParameters`` (the admin shows its "bad filter" page) for what cannot be a label filter.
    """
    if len(text) > MAX_LABEL_FILTER:
        raise IncorrectLookupParameters(f"a label filter has at most {MAX_LABEL_FILTER} characters")
    wanted: dict[str, str] = {}
    present: list[str] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        key, sep, label_value = part.partition("=")
        key = key.strip()
        if not key:
            raise IncorrectLookupParameters(f"label filter {part!r} names no label")
        if sep:
            wanted[key] = label_value.strip()
        else:
            present.append(key)
    return wanted, present


def labels_of(payload: Any) -> dict[str, str]:
    """A ManagedCluster's ``metadata.labels`` as strings; {} when the payload has none (it is the hub's JSON)."""
    metadata = payload.get("metadata") if isinstance(payload, dict) else None
    labels = metadata.get("labels") if isinstance(metadata, dict) else None
    return {str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {}


def availability_of(payload: Any) -> str:
    """The status of the ``ManagedClusterConditionAvailable`` condition: True, False, Unknown, or "" when absent."""
    status = payload.get("status") if isinstance(payload, dict) else None
    conditions = status.get("conditions") if isinstance(status, dict) else None
    for condition in conditions if isinstance(conditions, list) else []:
        if isinstance(condition, dict) and condition.get("type") == AVAILABLE_CONDITION:
            return str(condition.get("status", ""))
    return ""


def kubernetes_version_of(payload: Any) -> str:
    status = payload.get("status") if isinstance(payload, dict) else None
    version = status.get("version") if isinstance(status, dict) else None
    return str(version.get("kubernetes", "")) if isinstance(version, dict) else ""


def openshift_version_of(payload: Any) -> str:
    """The ``openshiftVersion`` label, else the ``version.openshift.io`` cluster claim."""
    labelled = labels_of(payload).get("openshiftVersion")
    if labelled:
        return labelled
    status = payload.get("status") if isinstance(payload, dict) else None
    claims = status.get("clusterClaims") if isinstance(status, dict) else None
    for claim in claims if isinstance(claims, list) else []:
        if isinstance(claim, dict) and claim.get("name") == "version.openshift.io":
            return str(claim.get("value", ""))
    return ""


@admin.register(ManagedCluster)
class ManagedClusterAdmin(ReadOnlyAdmin):
    list_display = [
        "cluster_name",
        "hub",
        "available",
        "kubernetes_version",
        "openshift_version",
        "cloud",
        "vendor",
        "label_list",
        "updated_at",
        "deleted_at",
    ]
    list_filter = [DeletedFilter, LabelFilter, "hub"]
    search_fields = ["cluster_name", "cluster_id__exact"]
    list_select_related = ["hub"]
    readonly_fields = (
        "hub",
        "cluster_name",
        "cluster_id",
        "available",
        "kubernetes_version",
        "openshift_version",
        "cloud",
        "vendor",
        "label_list",
        "created_at",
        "updated_at",
        "deleted_at",
        "error",
        "resync_mark",
        "pretty_payload",
    )
    fields = readonly_fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[ManagedCluster]:
        queryset: QuerySet[ManagedCluster] = super().get_queryset(request)
        return queryset.annotate(
            _cloud=KT("payload__metadata__labels__cloud"),
            _vendor=KT("payload__metadata__labels__vendor"),
            _openshift=KT("payload__metadata__labels__openshiftVersion"),
            _kubernetes=KT("payload__status__version__kubernetes"),
        )

    @admin.display(description="available")
    def available(self, cluster: ManagedCluster) -> str:
        return availability_of(cluster.payload) or "unknown"

    @admin.display(description="Kubernetes", ordering="_kubernetes")
    def kubernetes_version(self, cluster: ManagedCluster) -> str:
        return kubernetes_version_of(cluster.payload)

    @admin.display(description="OpenShift", ordering="_openshift")
    def openshift_version(self, cluster: ManagedCluster) -> str:
        return openshift_version_of(cluster.payload)

    @admin.display(description="cloud", ordering="_cloud")
    def cloud(self, cluster: ManagedCluster) -> str:
        return labels_of(cluster.payload).get("cloud", "")

    @admin.display(description="vendor", ordering="_vendor")
    def vendor(self, cluster: ManagedCluster) -> str:
        return labels_of(cluster.payload).get("vendor", "")

    @admin.display(description="labels")
    def label_list(self, cluster: ManagedCluster) -> SafeString:
        """Each label a link to the clusters that carry it too."""
        url = reverse("admin:manager_managedcluster_changelist")
        return format_html_join(
            ", ",
            '<a href="{}?{}">{}={}</a>',
            (
                (url, urlencode({"label": f"{key}={value}"}), key, value)
                for key, value in sorted(labels_of(cluster.payload).items())
            ),
        )

    @admin.display(description="payload")
    def pretty_payload(self, cluster: ManagedCluster) -> SafeString:
        return pretty_json(cluster.payload, summary="the ManagedCluster as the hub reported it")


def _compliance_count(status: str) -> Coalesce:
    """The policy's compliance rows of one status (a correlated count over the (hub, policy, cluster) index)."""
    rows = (
        LocalCompliance.objects.filter(hub_id=OuterRef("hub_id"), policy_id=OuterRef("policy_id"), compliance=status)
        .order_by()
        .values("policy_id")
        .annotate(n=Count("id"))
        .values("n")
    )
    return Coalesce(Subquery(rows, output_field=IntegerField()), 0)


@admin.register(LocalPolicy)
class LocalPolicyAdmin(ReadOnlyAdmin):
    """The policies, each with its compliance totals: the per-policy summary."""

    list_display = [
        "policy_name",
        "hub",
        "policy_id",
        "compliant",
        "non_compliant",
        "pending",
        "updated_at",
        "deleted_at",
    ]
    list_filter = [DeletedFilter, "hub"]
    search_fields = ["policy_name", "policy_id__exact"]
    list_select_related = ["hub"]
    readonly_fields = (
        "hub",
        "policy_name",
        "policy_id",
        "compliant",
        "non_compliant",
        "pending",
        "created_at",
        "updated_at",
        "deleted_at",
        "error",
        "resync_mark",
        "pretty_payload",
    )
    fields = readonly_fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[LocalPolicy]:
        queryset: QuerySet[LocalPolicy] = super().get_queryset(request)
        return queryset.annotate(
            _compliant=_compliance_count(Compliance.COMPLIANT),
            _non_compliant=_compliance_count(Compliance.NON_COMPLIANT),
            _pending=_compliance_count(Compliance.PENDING),
        )

    def _count_link(self, policy: LocalPolicy, status: str, count: int) -> SafeString:
        url = reverse("admin:manager_localcompliance_changelist")
        query = urlencode(
            {"hub__name__exact": policy.hub_id, "policy_id": str(policy.policy_id), "compliance__exact": status}
        )
        return format_html('<a href="{}?{}">{}</a>', url, query, count)

    @admin.display(description="compliant", ordering="_compliant")
    def compliant(self, policy: Any) -> SafeString:
        return self._count_link(policy, Compliance.COMPLIANT, policy._compliant)

    @admin.display(description="non-compliant", ordering="_non_compliant")
    def non_compliant(self, policy: Any) -> SafeString:
        return self._count_link(policy, Compliance.NON_COMPLIANT, policy._non_compliant)

    @admin.display(description="pending", ordering="_pending")
    def pending(self, policy: Any) -> SafeString:
        return self._count_link(policy, Compliance.PENDING, policy._pending)

    @admin.display(description="payload")
    def pretty_payload(self, policy: LocalPolicy) -> SafeString:
        return pretty_json(policy.payload, summary="the policy as the hub reported it")


@admin.register(LocalCompliance)
class LocalComplianceAdmin(ReadOnlyAdmin):
    """One row per (policy, cluster); the policy named and linked. ``?policy_id=<uuid>``: one policy's rows."""

    list_display = ["policy", "cluster_name", "compliance", "hub", "policy_id", "updated_at"]
    list_filter = ["compliance", "hub"]
    search_fields = ["cluster_name", "_policy_name", "policy_id__exact"]
    list_select_related = ["hub"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[LocalCompliance]:
        queryset: QuerySet[LocalCompliance] = super().get_queryset(request)
        policy = LocalPolicy.objects.filter(hub_id=OuterRef("hub_id"), policy_id=OuterRef("policy_id"))
        return queryset.annotate(
            _policy_name=Subquery(policy.values("policy_name")[:1]),
            _policy_pk=Subquery(policy.values("pk")[:1]),
        )

    def lookup_allowed(self, lookup: str, value: str, request: HttpRequest | None = None) -> bool:
        return lookup == "policy_id" or super().lookup_allowed(lookup, value, request)

    @admin.display(description="policy", ordering="_policy_name")
    def policy(self, row: Any) -> SafeString | str:
        if row._policy_pk is None:
            return "(not reported)"
        url = reverse("admin:manager_localpolicy_change", args=[row._policy_pk])
        return format_html('<a href="{}">{}</a>', url, row._policy_name or row.policy_id)


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
