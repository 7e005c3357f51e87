"""The manager's Prometheus metrics at ``/metrics``, read from the database at scrape time (first part of issue 13).

What every process of the manager writes ends up in PostgreSQL, so one endpoint of the web process describes them
all: hubs (state, last heartbeat, stalled types), resync requests by status, stored dead letters by event type, and
divergences found by the anti-entropy digests. Only grouped counts and one row per hub. Unauthenticated, as scrape
targets usually are: it shows hub names and counts, nothing of their data.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

from django.conf import settings
from django.db.models import Count, Q
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from globalhub.manager.models import DeadLetter, Divergence, Hub, HubTypeStatus, ResyncRequest


def _seconds(moment: datetime | None) -> float | None:
    return None if moment is None else moment.timestamp()


class ManagerCollector(Collector):
    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield from self._hubs()
        yield self._requests(timezone.now())
        yield self._dead_letters()
        yield self._divergences()

    def _hubs(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily("globalhub_hub_up", "1 while the hub is active, 0 once judged inactive", labels=["hub"])
        heartbeat = GaugeMetricFamily(
            "globalhub_hub_last_heartbeat_timestamp_seconds",
            "When the hub's last heartbeat reached the manager's side (the broker's time)",
            labels=["hub"],
        )
        stalled = GaugeMetricFamily("globalhub_hub_stalled_types", "Types of the hub marked stalled", labels=["hub"])
        stalls = dict(
            HubTypeStatus.objects.filter(stalled_since__isnull=False)
            .values("hub_id")
            .annotate(n=Count("id"))
            .values_list("hub_id", "n")
        )
        for name, state, last in Hub.objects.values_list("name", "state", "last_heartbeat").order_by("name"):
            up.add_metric([name], 1.0 if state == Hub.State.ACTIVE else 0.0)
            seen = _seconds(last)
            if seen is not None:
                heartbeat.add_metric([name], seen)
            stalled.add_metric([name], float(stalls.get(name, 0)))
        yield from (up, heartbeat, stalled)

    def _requests(self, now: datetime) -> GaugeMetricFamily:
        overdue_before = now - settings.GLOBALHUB.resync_overdue
        open_ = Q(completed_at__isnull=True)
        counts = ResyncRequest.objects.aggregate(
            complete=Count("id", filter=Q(completed_at__isnull=False)),
            pending=Count("id", filter=open_ & Q(sent_at__isnull=True) & Q(requested_at__gte=overdue_before)),
            sent=Count("id", filter=open_ & Q(sent_at__isnull=False) & Q(requested_at__gte=overdue_before)),
            overdue=Count("id", filter=open_ & Q(requested_at__lt=overdue_before)),
        )
        family = GaugeMetricFamily(
            "globalhub_resync_requests",
            "Resync requests by status (overdue: not complete past GH_RESYNC_OVERDUE)",
            labels=["status"],
        )
        for status in ("pending", "sent", "complete", "overdue"):
            family.add_metric([status], float(counts[status]))
        return family

    def _dead_letters(self) -> GaugeMetricFamily:
        family = GaugeMetricFamily("globalhub_dead_letters", "Stored dead letters by event type", labels=["type"])
        for event_type, n in DeadLetter.objects.values_list("event_type").annotate(n=Count("id")).order_by():
            family.add_metric([event_type or "unknown"], float(n))
        return family

    def _divergences(self) -> GaugeMetricFamily:
        family = GaugeMetricFamily(
            "globalhub_divergences", "Divergences the anti-entropy digests found, by type", labels=["type"]
        )
        for event_type, n in Divergence.objects.values_list("event_type").annotate(n=Count("id")).order_by():
            family.add_metric([event_type], float(n))
        return family


_REGISTRY = CollectorRegistry(auto_describe=False)
_REGISTRY.register(ManagerCollector())


def metrics_view(request: HttpRequest) -> HttpResponse:
    return HttpResponse(generate_latest(_REGISTRY), content_type=CONTENT_TYPE_LATEST)
