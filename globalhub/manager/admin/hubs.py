"""The hubs: a list with their health at a glance, a page per hub, resync requests to them, and their history.

Nothing of a hub is edited by hand: its state changes in :mod:`globalhub.manager.lifecycle` only. The hub page is
an overview (no form, no Save); deleting a hub is its own action, with a confirmation page that says what goes and
what stays, and it goes through :func:`globalhub.manager.lifecycle.delete_hub` so the deletion is in its history.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.utils import quote, unquote
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseBase, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.views.decorators.http import require_POST

from globalhub.manager import lifecycle
from globalhub.manager.admin.base import DeletedFilter, ReadOnlyAdmin
from globalhub.manager.admin.overview import (
    HEALTHS,
    age,
    annotate_hub_list,
    full_state_field,
    gather_hub_page,
    safe_link,
    short_type,
    stamp,
)
from globalhub.manager.lifecycle import MAX_CLOCK_SKEW
from globalhub.manager.models import Hub, HubInfo, HubTransition, ResyncRequest
from globalhub.manager.resync_requests import request_resyncs
from globalhub.protocol.events import RESYNC_TYPES

WHAT_DELETING_DOES = (
    "The hub's row goes, with everything the manager stored from it: clusters, hub info, policies, compliance, "
    "events, versions, resync progress and per-type status. Its history of state transitions, its dead letters and "
    "the records of resync requests stay. If the hub speaks again, the manager sees it as new and resyncs it whole."
)


class ResyncForm(forms.Form):
    types = forms.MultipleChoiceField(
        choices=[(t.value, t.short) for t in RESYNC_TYPES],
        initial=[t.value for t in RESYNC_TYPES],
        widget=forms.CheckboxSelectMultiple,
    )


def badge(health: str) -> str:
    """A hub's health as a badge; the CSS classes are stable (browser tests and style sheets select them)."""
    return format_html('<span class="gh-badge gh-badge-{}">{}</span>', health, health)


class HealthFilter(admin.SimpleListFilter):
    """Filter on the health the list shows: overdue is an active hub silent for longer than the timeout."""

    title = "health"
    parameter_name = "health"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(health, health) for health in HEALTHS]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() in HEALTHS:
            return queryset.filter(_health=self.value())
        return queryset


class HubChangeList(ChangeList):
    """The hub list's sorting: a column computed by the admin sorts by its annotation.

    Django looks a column's name up as a model field first, and ``clusters`` and ``policies`` are also the names of
    the hub's reverse relations: sorting by them joined every cluster (or policy) to its hub, listing each hub once
    per row it has, in the order of the rows' ids.
    """

    def get_ordering_field(self, field_name: Any) -> Any:
        if isinstance(field_name, str):
            ordering = getattr(getattr(self.model_admin, field_name, None), "admin_order_field", None)
            if ordering is not None:
                return ordering
        return super().get_ordering_field(field_name)


@admin.register(Hub)
class HubAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = [
        "name",
        "health",
        "heartbeat_age",
        "last_heartbeat_at",
        "clock_skew",
        "clusters",
        "policies",
        "non_compliant",
        "version",
        "console",
        "last_full_states",
        "stalled_types",
        "dead_letters",
    ]
    list_filter = [HealthFilter, "state"]
    search_fields = ["name"]
    actions = ["request_resync", "delete_hubs"]
    list_per_page = 100

    class Media:
        css = {"all": ["manager/control-room.css"]}

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # hubs appear by themselves, from their status topic

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # nothing of a hub is edited by hand

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return HubChangeList

    def get_queryset(self, request: HttpRequest) -> QuerySet[Hub]:
        queryset: QuerySet[Hub] = super().get_queryset(request)
        return annotate_hub_list(queryset, timezone.now(), settings.GLOBALHUB.hub_timeout)

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # it would bypass the lifecycle: no transition recorded
        return actions

    # --- the list's columns (all annotated in get_queryset: no query per row) ---

    @admin.display(description="health", ordering="_health")
    def health(self, hub: Any) -> str:
        return badge(hub._health)

    @admin.display(description="heartbeat age", ordering="_heartbeat_age")
    def heartbeat_age(self, hub: Any) -> str:
        return age(hub._heartbeat_age)

    @admin.display(description="last heartbeat", ordering="last_heartbeat")
    def last_heartbeat_at(self, hub: Hub) -> str:
        return stamp(hub.last_heartbeat)

    @admin.display(description="clock skew")
    def clock_skew(self, hub: Hub) -> str:
        """The hub clock's offset from the broker's at its last heartbeat (shown, never used to judge it)."""
        if hub.clock_skew_seconds is None:
            return "unknown"
        flag = " (over 30 s)" if abs(hub.clock_skew_seconds) > MAX_CLOCK_SKEW.total_seconds() else ""
        return f"{hub.clock_skew_seconds:+.1f} s{flag}"

    @admin.display(description="clusters", ordering="_clusters")
    def clusters(self, hub: Any) -> int:
        return int(hub._clusters)

    @admin.display(description="policies", ordering="_policies")
    def policies(self, hub: Any) -> int:
        return int(hub._policies)

    @admin.display(description="non-compliant clusters", ordering="_non_compliant")
    def non_compliant(self, hub: Any) -> int:
        return int(hub._non_compliant)

    @admin.display(description="version", ordering="_version")
    def version(self, hub: Any) -> str:
        return str(hub._version or "")

    @admin.display(description="console")
    def console(self, hub: Any) -> str:
        link = safe_link(hub._console or "")
        if not link:
            return str(hub._console or "")  # shown as text, escaped by the admin
        return format_html('<a href="{}" rel="noopener noreferrer" target="_blank">console</a>', link)

    @admin.display(description="last full state")
    def last_full_states(self, hub: Any) -> str:
        return format_html_join(
            "",
            '<div class="gh-full-state"><span class="gh-type">{}</span> {}</div>',
            ((t.short, stamp(getattr(hub, full_state_field(t)))) for t in RESYNC_TYPES),
        )

    @admin.display(description="stalled types", ordering="_stalled")
    def stalled_types(self, hub: Any) -> str:
        if not hub._stalled:
            return "none"
        return ", ".join(sorted(short_type(t) for t in hub._stalled.split(",")))

    @admin.display(description="dead letters", ordering="_dead_letters")
    def dead_letters(self, hub: Any) -> int:
        return int(hub._dead_letters)

    # --- the hub page ---

    def get_urls(self) -> list[URLPattern]:
        resync = self.admin_site.admin_view(require_POST(self.request_resync_view))
        return [path("<path:object_id>/resync/", resync, name="manager_hub_resync"), *super().get_urls()]

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        """The hub page: an overview of what the manager knows of the hub, not a form."""
        hub = self._hub_or_none(request, object_id)
        if hub is None:
            return self._gone(request, object_id)
        if not self.has_view_permission(request, hub):
            raise PermissionDenied
        conf = settings.GLOBALHUB
        page = gather_hub_page(hub, timezone.now(), conf.hub_timeout, conf.resync_overdue)
        context = {
            **self.admin_site.each_context(request),
            "title": f"Hub {hub.name}",
            "subtitle": None,
            "opts": self.opts,
            "original": hub,
            "page": page,
            "heartbeat_age": age(page.heartbeat_age),
            "can_resync": self.has_resync_permission(request),
            "resync_form": ResyncForm(),
            "resync_url": reverse("admin:manager_hub_resync", args=[quote(hub.pk)]),
            **(extra_context or {}),
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/manager/hub/hub_page.html", context)

    def _hub_or_none(self, request: HttpRequest, object_id: str) -> Hub | None:
        return Hub.objects.filter(pk=unquote(object_id)).first()

    def _gone(self, request: HttpRequest, object_id: str) -> HttpResponseRedirect:
        """A hub deleted meanwhile (or never known): say so on the hub list."""
        self.message_user(request, f"No hub named {unquote(object_id)!r}; it may have been deleted.", messages.WARNING)
        return HttpResponseRedirect(reverse("admin:manager_hub_changelist"))

    def request_resync_view(self, request: HttpRequest, object_id: str) -> HttpResponseBase:
        """The hub page's "Request resync" button: records an operator's request for the chosen types."""
        if not self.has_resync_permission(request):
            raise PermissionDenied
        hub = self._hub_or_none(request, object_id)
        if hub is None:
            return self._gone(request, object_id)
        page = reverse("admin:manager_hub_change", args=[quote(hub.pk)])
        form = ResyncForm(request.POST)
        if not form.is_valid():
            self.message_user(request, "No resync request recorded: choose at least one type.", messages.ERROR)
            return HttpResponseRedirect(page)
        by = f"admin:{request.user.get_username()}"
        try:
            (created,) = request_resyncs([hub.name], form.cleaned_data["types"], ResyncRequest.Reason.OPERATOR, by)
        except ValueError as error:
            self.message_user(request, f"No resync request recorded: {error}", messages.ERROR)
            return HttpResponseRedirect(page)
        self.message_user(request, f"Resync request #{created.pk} recorded; it is sent by the manager's worker.")
        return HttpResponseRedirect(page)

    # --- actions ---

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

    @admin.action(description="Delete the selected hubs and what they reported…", permissions=["delete"])
    def delete_hubs(self, request: HttpRequest, queryset: QuerySet[Hub]) -> TemplateResponse | None:
        """Delete hubs after a confirmation page that says what goes and what stays."""
        names = list(queryset.order_by("name").values_list("name", flat=True))
        if request.POST.get("confirm") == "yes":
            self._delete(request, names)
            return None
        return self._confirm_deletion(request, queryset, action="delete_hubs")

    def delete_view(
        self, request: HttpRequest, object_id: str, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        """``…/<hub>/delete/``: the same confirmation and deletion as the list's action, for one hub."""
        if not self.has_delete_permission(request):
            raise PermissionDenied
        hub = self._hub_or_none(request, object_id)
        if hub is None:
            return self._gone(request, object_id)
        if request.method == "POST" and request.POST.get("confirm") == "yes":
            self._delete(request, [hub.name])
            return HttpResponseRedirect(reverse("admin:manager_hub_changelist"))
        return self._confirm_deletion(request, self.get_queryset(request).filter(pk=hub.pk), action="")

    def _confirm_deletion(self, request: HttpRequest, queryset: QuerySet[Hub], action: str) -> TemplateResponse:
        context = {
            **self.admin_site.each_context(request),
            "title": "Delete hubs",
            "subtitle": None,
            "hubs": [_deletion_row(hub) for hub in queryset.order_by("name")],
            "what_it_does": WHAT_DELETING_DOES,
            "action": action,
            "opts": self.opts,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/manager/hub/delete_hubs.html", context)

    def _delete(self, request: HttpRequest, names: list[str]) -> None:
        by = f"admin:{request.user.get_username()}"
        now = timezone.now()
        for name in names:
            deleted = lifecycle.delete_hub(name, now, by=by)
            if not deleted:
                self.message_user(request, f"Hub {name} was already gone.", messages.WARNING)
                continue
            rows = sum(deleted.values())
            self.message_user(request, f"Hub {name} deleted ({rows} rows); its history stays.", messages.SUCCESS)


def _deletion_row(hub: Any) -> dict[str, Any]:
    """What the confirmation page shows of a hub (annotated by :func:`annotate_hub_list`)."""
    return {
        "name": hub.name,
        "health": hub._health,
        "clusters": hub._clusters,
        "policies": hub._policies,
        "dead_letters": hub._dead_letters,
    }


@admin.register(HubTransition)
class HubTransitionAdmin(ReadOnlyAdmin):
    """The history of hubs' states, kept after a hub is deleted: never edited, never deleted by hand."""

    list_display = ["at_exact", "hub_name", "from_state", "to_state", "reason", "by"]
    list_filter = ["to_state", "from_state"]
    search_fields = ["hub_name"]
    date_hierarchy = "at"

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="at", ordering="at")
    def at_exact(self, transition: HubTransition) -> str:
        return stamp(transition.at)


@admin.register(HubInfo)
class HubInfoAdmin(ReadOnlyAdmin):
    list_display = ["hub", "cluster_id", "console_url", "updated_at", "deleted_at"]
    list_filter = [DeletedFilter]
