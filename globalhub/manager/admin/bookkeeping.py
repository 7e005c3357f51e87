"""The ingestion bookkeeping: resync requests, divergences, dead letters, positions, versions (read-only).

Nothing here is added, edited or deleted by hand. Resync requests show their status (the rule is
:func:`globalhub.manager.resync_requests.status_conditions`), how long they took, and what each hub answered; an
operator may ask again. Dead letters show their raw key and value (capped on the page, whole as a download).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import F, Func, IntegerField, QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from globalhub.manager.admin.base import ReadOnlyAdmin
from globalhub.manager.ingest.deadletters import REASON_CLASSES
from globalhub.manager.models import (
    ConsumedPosition,
    DeadLetter,
    Divergence,
    ResyncProgress,
    ResyncRequest,
    TypeVersion,
)
from globalhub.manager.resync_requests import Status, request_resyncs, status_conditions, with_status
from globalhub.protocol.events import BROADCAST, EventType

DISPLAY_CAP = 64 * 1024  # bytes of a dead letter's key or value shown on its page; the download has them all


def short_type(event_type: str) -> str:
    """``managedcluster`` for the 70-character CloudEvent type; an unknown type as it came."""
    try:
        return EventType(event_type).short
    except ValueError:
        return event_type


def duration(seconds: float) -> str:
    """A span as an operator reads it: ``42 s``, ``3 min 5 s``, ``2 h 10 min``."""
    whole = max(0, int(seconds))
    if whole < 60:
        return f"{whole} s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


class ResyncStatusFilter(admin.SimpleListFilter):
    """By status, and "not completed" (every status but complete)."""

    title = "status"
    parameter_name = "status"
    NOT_COMPLETED = "not_completed"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(self.NOT_COMPLETED, "not completed"), *((s.value, s.value) for s in Status)]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if value is None:
            return queryset
        conditions = status_conditions(timezone.now(), settings.GLOBALHUB.resync_overdue)
        if value == self.NOT_COMPLETED:
            return queryset.exclude(conditions[Status.COMPLETE])
        if value in conditions:
            return queryset.filter(conditions[Status(value)])
        return queryset


@admin.register(ResyncRequest)
class ResyncRequestAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "subject",
        "status",
        "reason",
        "short_types",
        "requested_by",
        "requested_at",
        "sent_at",
        "completed_at",
        "took",
        "answered",
    ]
    list_filter = [ResyncStatusFilter, "reason", "subject"]
    search_fields = ["subject", "requested_by"]

    def lookup_allowed(self, lookup: str, value: str, request: HttpRequest | None = None) -> bool:
        # The hub page links to every request that asked its hub, broadcasts included.
        return lookup == "targets__hub__name__exact" or super().lookup_allowed(lookup, value, request)

    readonly_fields = (
        "subject",
        "status",
        "reason",
        "short_types",
        "requested_by",
        "requested_at",
        "sent_at",
        "send_attempts",
        "last_send_error",
        "completed_at",
        "took",
        "answered",
        "outcome",
        "divergence_list",
    )
    fields = readonly_fields
    actions = ["re_request"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[ResyncRequest]:
        queryset: QuerySet[ResyncRequest] = super().get_queryset(request)
        return with_status(queryset, timezone.now(), settings.GLOBALHUB.resync_overdue).prefetch_related("targets__hub")

    @admin.display(description="status", ordering="gh_status")
    def status(self, request: Any) -> SafeString:
        """Pending (not sent), sent, complete, overdue (``GH_RESYNC_OVERDUE``) or failed; see resync_requests.py."""
        status = Status(request.gh_status)
        why = self._failure(request) if status is Status.FAILED else ""
        return format_html('<span class="gh-status gh-status-{}" title="{}">{}</span>', status.value, why, status)

    def _failure(self, request: ResyncRequest) -> str:
        if request.sent_at is None and request.last_send_error:
            return f"not sent: {request.last_send_error}"
        return "no hub able to answer is left (its hubs went inactive or were deleted)"

    @admin.display(description="took")
    def took(self, request: ResyncRequest) -> str:
        """From requested to completed; "so far" while it is not complete."""
        if request.completed_at is not None:
            return duration((request.completed_at - request.requested_at).total_seconds())
        return f"{duration((timezone.now() - request.requested_at).total_seconds())} so far"

    @admin.display(description="answered")
    def answered(self, request: ResyncRequest) -> str:
        targets = list(request.targets.all())
        if not targets:
            return "no hub to ask" if request.completed_at is not None else "its hubs were deleted"
        done = sum(1 for t in targets if t.completed_at is not None)
        return f"{done} of {len(targets)} hub{'s' if len(targets) != 1 else ''}"

    @admin.display(description="types")
    def short_types(self, request: ResyncRequest) -> str:
        return ", ".join(short_type(t) for t in request.types)

    @admin.display(description="outcome per hub and type")
    def outcome(self, request: ResyncRequest) -> SafeString:
        """A table: one row per hub asked, one column per requested type, answered or still owed."""
        types = list(request.types)
        targets = sorted(request.targets.all(), key=lambda t: t.hub_id)
        if not targets:
            return format_html("<p>{}</p>", self.answered(request))
        header = format_html_join("", "<th>{}</th>", ((short_type(t),) for t in types))
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td>{}<td>{}</td></tr>",
            (
                (
                    target.hub_id,
                    target.hub.state,
                    format_html_join(
                        "",
                        "<td>{}</td>",
                        (("answered" if t in target.answered_types else "owed",) for t in types),
                    ),
                    target.completed_at.isoformat(timespec="seconds") if target.completed_at else "—",
                )
                for target in targets
            ),
        )
        return format_html(
            '<table id="gh-resync-outcome"><thead><tr><th>hub</th><th>state</th>{}<th>complete at</th></tr></thead>'
            "<tbody>{}</tbody></table>",
            header,
            rows,
        )

    @admin.display(description="divergences that asked for it")
    def divergence_list(self, request: ResyncRequest) -> str:
        found = request.divergences.order_by("-seen_at")[:20]
        return ", ".join(f"{d.hub_id} {short_type(d.event_type)} at {d.seen_at:%Y-%m-%d %H:%M:%S}" for d in found)

    @admin.action(description="Request the selected resyncs again", permissions=["resync"])
    def re_request(self, request: HttpRequest, queryset: QuerySet[ResyncRequest]) -> None:
        """A new request per selected one: the same subject and types, reason operator, by ``admin:<user>``.

        All or nothing: if a hub asked before is gone, nothing is recorded and the error names it.
        """
        by = f"admin:{request.user.get_username()}"
        originals = list(queryset.order_by("id"))
        try:
            with transaction.atomic():
                created = [
                    new
                    for original in originals
                    for new in request_resyncs(
                        None if original.subject == BROADCAST else [original.subject],
                        original.types,
                        ResyncRequest.Reason.OPERATOR,
                        by,
                    )
                ]
        except ValueError as error:
            self.message_user(request, f"No resync request recorded: {error}", messages.ERROR)
            return
        pairs = ", ".join(f"#{new.pk} (again #{old.pk})" for old, new in zip(originals, created, strict=True))
        self.message_user(request, f"{len(created)} resync request(s) recorded: {pairs}")

    def has_resync_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.has_perm("manager.add_resyncrequest"))


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
    list_select_related = ["hub", "request"]  # the request is a nullable key: not followed by default


class EventTypeFilter(admin.SimpleListFilter):
    """The event types dead letters have, by their short names."""

    title = "event type"
    parameter_name = "event_type"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        types = DeadLetter.objects.order_by("event_type").values_list("event_type", flat=True).distinct()
        return [(t, short_type(t) or "(none)") for t in types[:200]]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        return queryset if value is None else queryset.filter(event_type=value)


class ReasonClassFilter(admin.SimpleListFilter):
    """The fixed reason classes (docs/protocol.md, "Dead letters")."""

    title = "reason class"
    parameter_name = "reason_class"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(c, c) for c in REASON_CLASSES]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        return queryset if value is None else queryset.filter(reason_class=value)


def shown_bytes(data: bytes | memoryview | None, cap: int = DISPLAY_CAP) -> tuple[str, str, bool]:
    """(text, how, cut): the bytes as text when they are UTF-8, else as hex; at most ``cap`` bytes of them."""
    raw = bytes(data) if data is not None else b""
    cut = len(raw) > cap
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw[:cap].hex(" ", -2), "hex", cut
    return raw[:cap].decode("utf-8", "ignore"), "UTF-8 text", cut  # "ignore": a character the cap split


@admin.register(DeadLetter)
class DeadLetterAdmin(ReadOnlyAdmin):
    list_display = [
        "received_at",
        "hub_name",
        "short_event_type",
        "reason_class",
        "short_reason",
        "topic",
        "partition",
        "offset",
        "value_size",
    ]
    list_filter = [ReasonClassFilter, EventTypeFilter, "hub_name"]
    search_fields = ["reason"]
    readonly_fields = (
        "received_at",
        "hub_name",
        "event_type",
        "reason_class",
        "reason",
        "topic",
        "partition",
        "offset",
        "header_list",
        "key_shown",
        "value_shown",
    )
    fields = readonly_fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[DeadLetter]:
        queryset: QuerySet[DeadLetter] = super().get_queryset(request)
        return queryset.annotate(_value_size=Func(F("value"), function="octet_length", output_field=IntegerField()))

    def get_changelist_instance(self, request: HttpRequest) -> Any:
        """The list does not load the raw bytes (up to a Kafka message each); a page of one does."""
        changelist = super().get_changelist_instance(request)
        changelist.queryset = changelist.queryset.defer("key", "value")
        return changelist

    def get_urls(self) -> list[URLPattern]:
        download = path(
            "<int:object_id>/download/<str:part>/",
            self.admin_site.admin_view(self.download),
            name="manager_deadletter_download",
        )
        return [download, *super().get_urls()]

    def download(self, request: HttpRequest, object_id: int, part: str) -> HttpResponse:
        """The dead letter's key or value, whole, as bytes (staff, and the view permission)."""
        if part not in ("key", "value"):
            raise Http404("only the key or the value can be downloaded")
        letter = DeadLetter.objects.filter(pk=object_id).first()
        if letter is None:
            raise Http404("no such dead letter")
        if not self.has_view_permission(request, letter):
            raise PermissionDenied
        data = getattr(letter, part)
        response = HttpResponse(bytes(data) if data is not None else b"", content_type="application/octet-stream")
        response["Content-Disposition"] = f'attachment; filename="dead-letter-{letter.pk}-{part}.bin"'
        return response

    @admin.display(description="type", ordering="event_type")
    def short_event_type(self, letter: DeadLetter) -> str:
        return short_type(letter.event_type)

    @admin.display(description="reason", ordering="reason")
    def short_reason(self, letter: DeadLetter) -> str:
        return letter.reason if len(letter.reason) <= 120 else letter.reason[:119] + "…"

    @admin.display(description="value bytes", ordering="_value_size")
    def value_size(self, letter: Any) -> int:
        return int(letter._value_size or 0)

    @admin.display(description="headers")
    def header_list(self, letter: DeadLetter) -> SafeString:
        pairs = letter.headers if isinstance(letter.headers, list) else []
        rows = ((str(p[0]), str(p[1])) for p in pairs if isinstance(p, list) and len(p) == 2)
        return format_html("<table>{}</table>", format_html_join("", "<tr><td>{}</td><td>{}</td></tr>", rows))

    @admin.display(description="key")
    def key_shown(self, letter: DeadLetter) -> SafeString:
        return self._raw(letter, "key")

    @admin.display(description="value")
    def value_shown(self, letter: DeadLetter) -> SafeString:
        return self._raw(letter, "value")

    def _raw(self, letter: DeadLetter, part: str) -> SafeString:
        data = getattr(letter, part)
        if data is None:
            return format_html("<p>{}</p>", "none")
        text, how, cut = shown_bytes(data)
        size = len(data)
        url = reverse("admin:manager_deadletter_download", args=[letter.pk, part])
        note = (
            f"{size:,} bytes as {how}; cut: the first {DISPLAY_CAP:,} bytes are shown"
            if cut
            else f"{size:,} bytes as {how}"
        )
        return format_html(
            '<p>{} — <a href="{}" download>download the whole {}</a></p>'
            '<pre id="gh-dead-letter-{}" style="white-space: pre-wrap; word-break: break-all">{}</pre>',
            note,
            url,
            part,
            part,
            text,
        )


@admin.register(ConsumedPosition)
class ConsumedPositionAdmin(ReadOnlyAdmin):
    list_display = ["topic", "partition", "next_offset", "end_offset", "lag", "end_read_at", "updated_at"]
    search_fields = ["topic"]

    @admin.display(description="lag")
    def lag(self, position: ConsumedPosition) -> str:
        """The partition's end as the probe last read it, minus where the consumer goes on."""
        if position.end_offset is None:
            return "unknown"
        return str(max(0, position.end_offset - position.next_offset))


@admin.register(TypeVersion)
class TypeVersionAdmin(ReadOnlyAdmin):
    list_display = ["hub", "event_type", "generation", "value", "updated_at"]
    list_filter = ["hub"]


@admin.register(ResyncProgress)
class ResyncProgressAdmin(ReadOnlyAdmin):
    list_display = ["hub", "event_type", "resync_id", "outcome", "listed", "deleted_count", "started_at", "finished_at"]
    list_filter = ["outcome", "hub"]
