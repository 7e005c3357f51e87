"""What hubs reported, as lists: managed clusters, local policies and local compliance.

Each list is filtered by query parameters (an unknown one is a 400), paged by ``id`` (see ``pages.py``) and read in
one query per page, whatever the page size: the hub is its name (no join), and a compliance row's policy name comes
from a correlated subquery on the (hub, policy id) unique index.
"""

from __future__ import annotations

from typing import Any

from django.db.models import OuterRef, QuerySet, Subquery
from django.http import HttpRequest, HttpResponse, JsonResponse

from globalhub.manager.api.auth import endpoint
from globalhub.manager.api.pages import BadParameter, Query, paginate
from globalhub.manager.models import Compliance, LocalCompliance, LocalPolicy, ManagedCluster

ROW_STATES = ("live", "deleted", "all")  # soft-deleted rows are left out unless asked for


def _labels(payload: Any) -> dict[str, Any]:
    metadata = payload.get("metadata") if isinstance(payload, dict) else None
    labels = metadata.get("labels") if isinstance(metadata, dict) else None
    return labels if isinstance(labels, dict) else {}


def _cluster_json(row: ManagedCluster) -> dict[str, Any]:
    return {
        "id": row.pk,
        "hub": row.hub_id,
        "cluster_id": row.cluster_id,
        "name": row.cluster_name,
        "labels": _labels(row.payload),
        "created_at": row.created_at,
        "updated_at": row.updated_at,
        "deleted_at": row.deleted_at,
        "payload": row.payload,
    }


def _policy_json(row: LocalPolicy) -> dict[str, Any]:
    return {
        "id": row.pk,
        "hub": row.hub_id,
        "policy_id": row.policy_id,
        "name": row.policy_name,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
        "deleted_at": row.deleted_at,
        "payload": row.payload,
    }


def _compliance_json(row: Any) -> dict[str, Any]:
    return {
        "id": row.pk,
        "hub": row.hub_id,
        "policy_id": row.policy_id,
        "policy_name": row.policy_name,  # annotated; None when the hub has not reported the policy
        "cluster_name": row.cluster_name,
        "compliance": row.compliance,
        "error": row.error,
        "updated_at": row.updated_at,
    }


def _by_hub_and_state(query: Query, rows: QuerySet[Any], name_field: str) -> QuerySet[Any]:
    """The filters clusters and policies share: ``hub``, ``search`` (part of the name), ``state``."""
    hub = query.one("hub")
    if hub is not None:
        rows = rows.filter(hub_id=hub)
    search = query.one("search")
    if search:
        rows = rows.filter(**{f"{name_field}__icontains": search})
    state = query.choice("state", ROW_STATES, default="live")
    if state == "live":
        rows = rows.filter(deleted_at__isnull=True)
    elif state == "deleted":
        rows = rows.filter(deleted_at__isnull=False)
    return rows


def _label_filter(rows: QuerySet[ManagedCluster], label: str) -> QuerySet[ManagedCluster]:
    """``key=value``: the label has that value; ``key``: the cluster has the label.

    Both test ``payload #> '{metadata,labels}'``, the expression the GIN index ``managed_cluster_labels`` holds."""
    key, has_value, value = label.partition("=")
    if not key:
        raise BadParameter(f"label={label!r}: use label=key=value or label=key")
    if has_value:
        return rows.filter(payload__metadata__labels__contains={key: value})
    return rows.filter(payload__metadata__labels__has_key=key)


@endpoint("GET", permission="manager.view_managedcluster", doing="reading clusters")
def clusters(request: HttpRequest) -> HttpResponse:
    """``?hub=&search=&state=live|deleted|all&label=key=value`` (label repeatable: all must hold)."""
    query = Query(request, ["hub", "search", "state", "label"])
    rows = _by_hub_and_state(query, ManagedCluster.objects.all(), "cluster_name")
    for label in query.every("label"):
        rows = _label_filter(rows, label)
    return JsonResponse(paginate(request, query, rows, "id").body("clusters", _cluster_json))


@endpoint("GET", permission="manager.view_localpolicy", doing="reading policies")
def policies(request: HttpRequest) -> HttpResponse:
    """``?hub=&search=&state=live|deleted|all&policy_id=``."""
    query = Query(request, ["hub", "search", "state", "policy_id"])
    rows = _by_hub_and_state(query, LocalPolicy.objects.all(), "policy_name")
    policy_id = query.uuid("policy_id")
    if policy_id is not None:
        rows = rows.filter(policy_id=policy_id)
    return JsonResponse(paginate(request, query, rows, "id").body("policies", _policy_json))


@endpoint("GET", permission="manager.view_localcompliance", doing="reading compliance")
def compliance(request: HttpRequest) -> HttpResponse:
    """``?hub=&search=<part of the cluster name>&cluster=&compliance=&policy_id=``."""
    query = Query(request, ["hub", "search", "cluster", "compliance", "policy_id"])
    policy_name = LocalPolicy.objects.filter(hub_id=OuterRef("hub_id"), policy_id=OuterRef("policy_id"))
    rows = LocalCompliance.objects.annotate(policy_name=Subquery(policy_name.values("policy_name")[:1]))
    hub = query.one("hub")
    if hub is not None:
        rows = rows.filter(hub_id=hub)
    search = query.one("search")
    if search:
        rows = rows.filter(cluster_name__icontains=search)
    cluster = query.one("cluster")
    if cluster is not None:
        rows = rows.filter(cluster_name=cluster)
    state = query.choice("compliance", Compliance.values)
    if state is not None:
        rows = rows.filter(compliance=state)
    policy_id = query.uuid("policy_id")
    if policy_id is not None:
        rows = rows.filter(policy_id=policy_id)
    return JsonResponse(paginate(request, query, rows, "id").body("compliance", _compliance_json))
