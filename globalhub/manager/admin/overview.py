"""The operator's control room: what the overview page, the hub list and the hub page show, read from the database.

The functions here only read, with the Django ORM, and take the time and the settings they judge by as arguments,
so tests call them directly. Every query is bounded: the overview asks for the hubs that need attention and a
page of the others, and the hub list computes its columns with subqueries, never a query per hub.

A hub's *health* is its state as an operator needs it: ``inactive``, ``overdue`` (active, but no heartbeat read
for longer than the timeout: the probe's rule, shown before the probe has run) or ``active``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode, urlsplit

from django.conf import settings
from django.contrib import admin
from django.contrib.admin.utils import quote
from django.contrib.postgres.aggregates import StringAgg
from django.db.models import (
    Case,
    CharField,
    Count,
    DurationField,
    ExpressionWrapper,
    F,
    IntegerField,
    Max,
    Min,
    OuterRef,
    QuerySet,
    Subquery,
    Sum,
    Value,
    When,
)
from django.db.models.fields.json import KT
from django.db.models.functions import Coalesce
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, reverse
from django.utils import timezone

from globalhub.manager.lifecycle import silent_since
from globalhub.manager.models import (
    Compliance,
    ConsumedPosition,
    DeadLetter,
    Hub,
    HubInfo,
    HubTransition,
    HubTypeStatus,
    LocalCompliance,
    LocalPolicy,
    ManagedCluster,
    ResyncRequest,
    ResyncTarget,
    TaskRun,
)
from globalhub.manager.resync_requests import with_status
from globalhub.protocol.events import RESYNC_TYPES, EventType, short_name

HEALTHS = ("overdue", "inactive", "active")
RECENT = timedelta(hours=1)  # dead letters this recent put a hub on the attention list
INGEST_WINDOW = timedelta(minutes=5)  # the ingest rate counts the rows written this recently
REFRESH_SECONDS = 15


# --- small helpers shared by the pages -----------------------------------------------------------------------------


def stamp(moment: datetime | None) -> str:
    """An exact timestamp with its time zone, in the manager's zone (``TIME_ZONE``): ``2025-01-31 12:00:05 UTC``."""
    if moment is None:
        return "never"
    return timezone.localtime(moment).strftime("%Y-%m-%d %H:%M:%S %Z")


def age(span: timedelta | None) -> str:
    """A duration as an operator reads it: ``42 s``, ``7 min 3 s``, ``2 h 5 min``, ``3 d 4 h``."""
    if span is None:
        return "never"
    seconds = max(0, int(span.total_seconds()))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


def short_type(event_type: str) -> str:
    """``managedcluster`` for the 70-character CloudEvent type; an unknown string as it is."""
    return short_name(event_type)


def safe_link(url: str) -> str:
    """``url`` when it is an absolute http(s) URL, else "": a hub reports it, and only such a URL becomes a link."""
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return ""
    return url.strip() if parts.scheme in ("http", "https") and parts.netloc else ""


def admin_url(name: str, *args: Any, query: dict[str, str] | None = None) -> str:
    """The admin URL ``name`` (a changelist filtered by ``query``), or "" when that page is not registered."""
    try:
        url = reverse(f"admin:{name}", args=args)
    except NoReverseMatch:
        return ""
    return f"{url}?{urlencode(query)}" if query else url


# --- health and the hub list's columns -----------------------------------------------------------------------------


def health_of(now: datetime, timeout: timedelta) -> Case:
    """The hub's health as an expression: ``inactive``, ``overdue`` (active, silent for the timeout) or ``active``."""
    return Case(
        When(state=Hub.State.INACTIVE, then=Value("inactive")),
        When(silent_since(now - timeout), then=Value("overdue")),
        default=Value("active"),
        output_field=CharField(),
    )


def heartbeat_age_of(now: datetime) -> ExpressionWrapper[Any]:
    """How long ago the last heartbeat was read (NULL, sorted as the oldest, when never)."""
    return ExpressionWrapper(Value(now) - F("last_heartbeat"), output_field=DurationField())


def _count_per_hub(rows: QuerySet[Any], counted: Any = None) -> Coalesce:
    """A correlated count of ``rows`` (already filtered on ``hub=OuterRef("pk")``), 0 when none."""
    per_hub = rows.order_by().values("hub").annotate(n=counted if counted is not None else Count("*")).values("n")
    return Coalesce(Subquery(per_hub, output_field=IntegerField()), 0)


def _newest_info() -> QuerySet[HubInfo]:
    """The hub's hub info, a live row before a soft-deleted one (an inactive hub still shows its last)."""
    return HubInfo.objects.filter(hub=OuterRef("pk")).order_by(F("deleted_at").desc(nulls_first=True), "-updated_at")


def full_state_field(event_type: EventType) -> str:
    return "_full_" + event_type.short.replace(".", "_")


def annotate_hub_list(hubs: QuerySet[Hub], now: datetime, timeout: timedelta) -> QuerySet[Hub]:
    """The hub list's columns, each computed by the database in the one query of the page.

    Counts: live clusters and policies, clusters with a non-compliant policy, dead letters. From the newest hub
    info: the version (``mchVersion``) and the console URL. Per resync type: the last full state.
    """
    stalled = (
        HubTypeStatus.objects.filter(hub=OuterRef("pk"), stalled_since__isnull=False)
        .order_by()
        .values("hub")
        .annotate(types=StringAgg("event_type", delimiter=","))
        .values("types")
    )
    dead_letters = (
        DeadLetter.objects.filter(hub_name=OuterRef("name")).order_by().values("hub_name").annotate(n=Count("*"))
    )
    full_states = {
        full_state_field(t): Subquery(
            HubTypeStatus.objects.filter(hub=OuterRef("pk"), event_type=t.value).values("last_full_state_at")[:1]
        )
        for t in RESYNC_TYPES
    }
    return hubs.annotate(
        _health=health_of(now, timeout),
        _heartbeat_age=heartbeat_age_of(now),
        _clusters=_count_per_hub(ManagedCluster.objects.filter(hub=OuterRef("pk"), deleted_at__isnull=True)),
        _policies=_count_per_hub(LocalPolicy.objects.filter(hub=OuterRef("pk"), deleted_at__isnull=True)),
        _non_compliant=_count_per_hub(
            LocalCompliance.objects.filter(hub=OuterRef("pk"), compliance=Compliance.NON_COMPLIANT),
            Count("cluster_name", distinct=True),
        ),
        _dead_letters=Coalesce(Subquery(dead_letters.values("n"), output_field=IntegerField()), 0),
        _stalled=Subquery(stalled, output_field=CharField()),
        _version=Subquery(_newest_info().annotate(v=KT("payload__mchVersion")).values("v")[:1]),
        _console=Subquery(_newest_info().values("console_url")[:1]),
        **full_states,
    )


# --- the overview ---------------------------------------------------------------------------------------------------


@dataclass
class HubRow:
    """A hub on the overview, and why it needs attention (nothing: it does not)."""

    name: str
    health: str
    last_heartbeat: datetime | None
    heartbeat_age: timedelta | None
    reasons: list[str] = field(default_factory=list)
    rank: int = 99  # the most urgent reason's rank: the attention list is sorted by it

    @property
    def age_text(self) -> str:
        return age(self.heartbeat_age)

    @property
    def url(self) -> str:
        return admin_url("manager_hub_change", quote(self.name))

    def flag(self, rank: int, reason: str) -> None:
        self.reasons.append(reason)
        self.rank = min(self.rank, rank)


@dataclass(frozen=True)
class LastError:
    kind: str  # "dead-letter" or "task": a CSS class
    what: str
    at: datetime | None
    source: str  # the hub (dead letter) or the task's name
    message: str
    url: str


@dataclass(frozen=True)
class Overview:
    now: datetime
    timeout: timedelta
    by_health: dict[str, int]
    attention: list[HubRow]
    attention_left_off: int  # needing attention too, beyond ATTENTION_LIMIT
    others: list[HubRow]
    others_left_off: int
    clusters: int
    policies: int
    non_compliant_clusters: int
    rows_written: int  # clusters, policies and compliance rows written in the last INGEST_WINDOW
    consumer_lag: int | None  # messages not ingested yet, as the probe last read the partitions' ends
    lag_read_at: datetime | None
    dead_letters_last_hour: int
    last_dead_letter: LastError | None
    last_failed_task: LastError | None

    @property
    def rows_per_minute(self) -> float:
        return self.rows_written / (INGEST_WINDOW.total_seconds() / 60)

    @property
    def timeout_text(self) -> str:
        return age(self.timeout)

    @property
    def last_errors(self) -> list[LastError]:
        return [error for error in (self.last_dead_letter, self.last_failed_task) if error is not None]

    @property
    def hubs(self) -> int:
        return sum(self.by_health.values())


ATTENTION_LIMIT = 200  # hubs listed as needing attention; the rest are counted, with a link to the hub list

# The attention list's order: the most urgent reason first.
RANK_SILENT, RANK_STALLED, RANK_RESYNC_OVERDUE, RANK_DEAD_LETTERS, RANK_RESYNC_OPEN = range(5)


def _flag_stalled(rows: dict[str, HubRow], new: set[str]) -> None:
    stalled = HubTypeStatus.objects.filter(stalled_since__isnull=False).order_by("hub_id", "event_type")
    for hub, event_type, refusal in stalled.values_list("hub_id", "event_type", "last_refusal"):
        new.add(hub)
        reason = f"stalled: {short_type(event_type)}" + (f" ({refusal[:200]})" if refusal else "")
        rows.setdefault(hub, _placeholder(hub)).flag(RANK_STALLED, reason)


def _flag_open_resyncs(rows: dict[str, HubRow], new: set[str], now: datetime, overdue: timedelta) -> None:
    open_targets = (
        ResyncTarget.objects.filter(completed_at__isnull=True)
        .order_by()
        .values("hub_id")
        .annotate(n=Count("id"), oldest=Min("request__requested_at"), first=Min("request_id"))
    )
    for target in open_targets:
        new.add(target["hub_id"])
        row = rows.setdefault(target["hub_id"], _placeholder(target["hub_id"]))
        waited = now - target["oldest"]
        if waited > overdue:
            row.flag(RANK_RESYNC_OVERDUE, f"resync overdue: {target['n']} open request(s), oldest {age(waited)} old")
        else:
            row.flag(RANK_RESYNC_OPEN, f"resync open: {target['n']} request(s) waiting, from #{target['first']}")


def _flag_dead_letters(rows: dict[str, HubRow], new: set[str], now: datetime) -> int:
    recent = (
        DeadLetter.objects.filter(received_at__gte=now - RECENT).order_by().values("hub_name").annotate(n=Count("id"))
    )
    total = 0
    for letters in recent:
        total += letters["n"]
        if letters["hub_name"]:
            new.add(letters["hub_name"])
            row = rows.setdefault(letters["hub_name"], _placeholder(letters["hub_name"]))
            row.flag(RANK_DEAD_LETTERS, f"{letters['n']} dead letter(s) in the last hour")
    return total


def _placeholder(name: str) -> HubRow:
    return HubRow(name=name, health="", last_heartbeat=None, heartbeat_age=None)


def _hub_rows(hubs: QuerySet[Hub], now: datetime, timeout: timedelta) -> list[HubRow]:
    annotated = hubs.annotate(_health=health_of(now, timeout), _age=heartbeat_age_of(now))
    return [
        HubRow(name=name, health=health, last_heartbeat=beat, heartbeat_age=heartbeat_age)
        for name, health, beat, heartbeat_age in annotated.values_list("name", "_health", "last_heartbeat", "_age")
    ]


def attention_list(now: datetime, timeout: timedelta, resync_overdue: timedelta) -> list[HubRow]:
    """The hubs that need attention, the most urgent first: overdue heartbeat, stalled type, overdue resync request,
    dead letters in the last hour, open resync request. A hub the manager no longer knows is left out."""
    rows: dict[str, HubRow] = {}
    named: set[str] = set()
    for row in _hub_rows(Hub.objects.filter(state=Hub.State.ACTIVE).filter(silent_since(now - timeout)), now, timeout):
        rows[row.name] = row
        row.flag(RANK_SILENT, f"heartbeat overdue: {age(row.heartbeat_age)} old, timeout {age(timeout)}")
    _flag_stalled(rows, named)
    _flag_open_resyncs(rows, named, now, resync_overdue)
    _flag_dead_letters(rows, named, now)
    placeholders = [name for name, row in rows.items() if not row.health]
    for known in _hub_rows(Hub.objects.filter(name__in=placeholders), now, timeout):
        rows[known.name].health = known.health
        rows[known.name].last_heartbeat = known.last_heartbeat
        rows[known.name].heartbeat_age = known.heartbeat_age
    return sorted((row for row in rows.values() if row.health), key=lambda row: (row.rank, row.name))


def _last_dead_letter() -> LastError | None:
    letter = DeadLetter.objects.order_by("-received_at").only("id", "received_at", "hub_name", "reason").first()
    if letter is None:
        return None
    url = admin_url("manager_deadletter_change", letter.pk)
    return LastError(
        "dead-letter", "dead letter", letter.received_at, letter.hub_name or "(no hub)", letter.reason[:300], url
    )


def _last_failed_task() -> LastError | None:
    run = (
        TaskRun.objects.filter(status=TaskRun.Status.FAILED)
        .order_by("-started_at")
        .only("id", "task_name", "started_at", "finished_at", "error")
        .first()
    )
    if run is None:
        return None
    lines = [line for line in run.error.strip().splitlines() if line.strip()]
    message = (lines[-1] if lines else "no error recorded")[:300]  # a traceback ends with the exception
    url = admin_url("manager_taskrun_change", run.pk)
    return LastError("task", "failed task", run.finished_at or run.started_at, run.task_name, message, url)


def gather_overview(now: datetime, timeout: timedelta, resync_overdue: timedelta, limit: int = 100) -> Overview:
    """Everything the overview page shows, in a fixed number of queries whatever the number of hubs.

    ``limit`` caps the hubs listed after the attention list (the hub list has them all).
    """
    everyone = attention_list(now, timeout, resync_overdue)
    attention = everyone[:ATTENTION_LIMIT]  # a consumer down makes every hub overdue: the hub list has them all
    by_health = dict.fromkeys(HEALTHS, 0)
    counted = Hub.objects.annotate(h=health_of(now, timeout)).order_by().values("h").annotate(n=Count("name"))
    by_health.update({row["h"]: row["n"] for row in counted})
    others = Hub.objects.exclude(name__in=[row.name for row in attention]).order_by("state", "name")
    listed = _hub_rows(others[:limit], now, timeout)
    lag = ConsumedLag.read()
    since = now - INGEST_WINDOW
    return Overview(
        now=now,
        timeout=timeout,
        by_health=by_health,
        attention=attention,
        attention_left_off=len(everyone) - len(attention),
        others=listed,
        others_left_off=max(0, sum(by_health.values()) - len(attention) - len(listed)),
        clusters=ManagedCluster.objects.filter(deleted_at__isnull=True).count(),
        policies=LocalPolicy.objects.filter(deleted_at__isnull=True).count(),
        non_compliant_clusters=LocalCompliance.objects.filter(compliance=Compliance.NON_COMPLIANT)
        .values("hub_id", "cluster_name")
        .distinct()
        .count(),
        rows_written=ManagedCluster.objects.filter(updated_at__gte=since).count()
        + LocalPolicy.objects.filter(updated_at__gte=since).count()
        + LocalCompliance.objects.filter(updated_at__gte=since).count(),
        consumer_lag=lag.messages,
        lag_read_at=lag.read_at,
        dead_letters_last_hour=DeadLetter.objects.filter(received_at__gte=now - RECENT).count(),
        last_dead_letter=_last_dead_letter(),
        last_failed_task=_last_failed_task(),
    )


@dataclass(frozen=True)
class ConsumedLag:
    """Messages the consumer has not ingested yet: the partitions' ends (as the probe last read them) minus the
    stored positions. None when the probe never read an end."""

    messages: int | None
    read_at: datetime | None

    @classmethod
    def read(cls) -> ConsumedLag:
        totals = ConsumedPosition.objects.filter(end_offset__isnull=False).aggregate(
            waiting=Sum(Case(When(end_offset__gt=F("next_offset"), then=F("end_offset") - F("next_offset")))),
            read_at=Max("end_read_at"),
            partitions=Count("id"),
        )
        if not totals["partitions"]:
            return cls(None, None)
        return cls(int(totals["waiting"] or 0), totals["read_at"])


def overview_view(request: HttpRequest) -> HttpResponse:
    """The admin index: the overview first, then the admin's list of models. Refreshes itself."""
    conf = settings.GLOBALHUB
    user = request.user
    overview = None
    if user.has_perm("manager.view_hub"):  # hub names and their trouble: for those who may see hubs
        overview = gather_overview(timezone.now(), conf.hub_timeout, conf.resync_overdue)
        overview = replace(
            overview,
            last_dead_letter=overview.last_dead_letter if user.has_perm("manager.view_deadletter") else None,
            last_failed_task=overview.last_failed_task if user.has_perm("manager.view_taskrun") else None,
        )
    context = {
        **admin.site.each_context(request),
        "title": "Overview",
        "subtitle": None,
        "app_list": admin.site.get_app_list(request),
        "overview": overview,
        "refresh_seconds": REFRESH_SECONDS,
        "hub_list_url": admin_url("manager_hub_changelist"),
    }
    request.current_app = admin.site.name
    return TemplateResponse(request, "admin/manager/overview.html", context)


# --- the hub page ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TypeRow:
    """One type on the hub page."""

    short: str
    full: str
    status: HubTypeStatus | None  # None: nothing received of it yet

    @property
    def stalled(self) -> bool:
        return self.status is not None and self.status.stalled_since is not None


@dataclass(frozen=True)
class ResyncRow:
    request_id: int
    reason: str
    types: str
    requested_at: datetime
    progress: str
    answered: str
    url: str


@dataclass(frozen=True)
class HubPage:
    hub: Hub
    health: str
    heartbeat_age: timedelta | None
    version: str
    console_url: str
    grafana_url: str
    cluster_id: str
    types: list[TypeRow]
    clusters: int
    policies: int
    compliance: int
    non_compliant_clusters: int
    dead_letters: int
    dead_letters_last_hour: int
    resyncs: list[ResyncRow]
    transitions: list[HubTransition]
    links: dict[str, str]


def type_rows(hub: str) -> list[TypeRow]:
    """Every type the manager received from ``hub``, the four resync types first (shown even when nothing came)."""
    received = {row.event_type: row for row in HubTypeStatus.objects.filter(hub_id=hub)}
    rows = [TypeRow(t.short, t.value, received.pop(t.value, None)) for t in RESYNC_TYPES]
    rest = sorted(received.values(), key=lambda row: short_type(row.event_type))
    return rows + [TypeRow(short_type(row.event_type), row.event_type, row) for row in rest]


def resync_rows(hub: str, now: datetime, overdue: timedelta, limit: int = 10) -> list[ResyncRow]:
    targets = list(
        ResyncTarget.objects.filter(hub_id=hub).select_related("request").order_by("-request__requested_at")[:limit]
    )
    requests = ResyncRequest.objects.filter(pk__in=[target.request_id for target in targets])
    statuses = {r.pk: r.gh_status for r in with_status(requests, now, overdue)}  # type: ignore[attr-defined]
    rows = []
    for target in targets:
        request = target.request
        progress = "complete" if target.completed_at else statuses[request.pk]
        answered = ", ".join(short_type(t) for t in target.answered_types) if target.answered_types else "none yet"
        rows.append(
            ResyncRow(
                request_id=request.pk,
                reason=request.reason,
                types=", ".join(short_type(t) for t in request.types),
                requested_at=request.requested_at,
                progress=progress,
                answered=answered,
                url=admin_url("manager_resyncrequest_change", request.pk),
            )
        )
    return rows


def hub_links(hub: str) -> dict[str, str]:
    """The admin lists of what this hub reported, filtered to it."""
    by_hub = {"hub_id__exact": hub}
    return {
        "clusters": admin_url("manager_managedcluster_changelist", query=by_hub),
        "policies": admin_url("manager_localpolicy_changelist", query=by_hub),
        "compliance": admin_url("manager_localcompliance_changelist", query=by_hub),
        "dead_letters": admin_url("manager_deadletter_changelist", query={"hub_name": hub}),
        "resync_requests": admin_url("manager_resyncrequest_changelist", query={"targets__hub__name__exact": hub}),
        "transitions": admin_url("manager_hubtransition_changelist", query={"hub_name": hub}),
    }


def gather_hub_page(hub: Hub, now: datetime, timeout: timedelta, resync_overdue: timedelta) -> HubPage:
    """Everything the hub page shows about ``hub``."""
    counts: Any = annotate_hub_list(Hub.objects.filter(pk=hub.pk), now, timeout).get()
    info = HubInfo.objects.filter(hub=hub).order_by(F("deleted_at").desc(nulls_first=True), "-updated_at").first()
    payload = info.payload if info is not None and isinstance(info.payload, dict) else {}
    version = payload.get("mchVersion")
    return HubPage(
        hub=hub,
        health=counts._health,
        heartbeat_age=counts._heartbeat_age,
        version=version if isinstance(version, str) else "",
        console_url=safe_link(info.console_url) if info else "",
        grafana_url=safe_link(info.grafana_url) if info else "",
        cluster_id=str(info.cluster_id) if info else "",
        types=type_rows(hub.name),
        clusters=counts._clusters,
        policies=counts._policies,
        compliance=LocalCompliance.objects.filter(hub=hub).count(),
        non_compliant_clusters=counts._non_compliant,
        dead_letters=counts._dead_letters,
        dead_letters_last_hour=DeadLetter.objects.filter(hub_name=hub.name, received_at__gte=now - RECENT).count(),
        resyncs=resync_rows(hub.name, now, resync_overdue),
        transitions=list(HubTransition.objects.filter(hub_name=hub.name).order_by("-at", "-id")[:100]),
        links=hub_links(hub.name),
    )
