"""The manager's ``/metrics`` (first part): scraped and parsed with prometheus_client's parser; the values move when
their event happens (real PostgreSQL)."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from globalhub.manager.models import DeadLetter, Divergence, Hub, HubTypeStatus, ResyncRequest
from globalhub.protocol.events import EventType

pytestmark = pytest.mark.django_db


def scrape(client: Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = client.get("/metrics")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def test_hubs_requests_dead_letters_and_divergences_are_exported_and_move(client: Client) -> None:
    hub = f"hub-{uuid.uuid4().hex[:8]}"
    beat = timezone.now().replace(microsecond=0)
    Hub.objects.create(name=hub, last_heartbeat=beat)
    before = scrape(client)
    assert before[("globalhub_hub_up", (("hub", hub),))] == 1.0
    assert before[("globalhub_hub_last_heartbeat_timestamp_seconds", (("hub", hub),))] == beat.timestamp()
    assert before[("globalhub_hub_stalled_types", (("hub", hub),))] == 0.0
    pending = before[("globalhub_resync_requests", (("status", "pending"),))]

    Hub.objects.filter(name=hub).update(state=Hub.State.INACTIVE)
    HubTypeStatus.objects.create(hub_id=hub, event_type=EventType.MANAGED_CLUSTER.value, stalled_since=beat)
    now = timezone.now()
    ResyncRequest.objects.create(subject=hub, types=[], reason="operator", requested_by="t", requested_at=now)
    ResyncRequest.objects.create(
        subject=hub, types=[], reason="operator", requested_by="t", requested_at=now - timedelta(hours=1)
    )
    letters = before.get(("globalhub_dead_letters", (("type", EventType.HUB_INFO.value),)), 0.0)
    DeadLetter.objects.create(topic="t", partition=0, offset=1, reason="bad", event_type=EventType.HUB_INFO.value)
    Divergence.objects.create(
        hub_id=hub,
        event_type=EventType.MANAGED_CLUSTER.value,
        seen_at=now,
        expected_count=3,
        found_count=2,
        expected_hash="0" * 16,
        found_hash="1" * 16,
    )

    after = scrape(client)
    assert after[("globalhub_hub_up", (("hub", hub),))] == 0.0
    assert after[("globalhub_hub_stalled_types", (("hub", hub),))] == 1.0
    assert after[("globalhub_resync_requests", (("status", "pending"),))] == pending + 1
    assert after[("globalhub_resync_requests", (("status", "overdue"),))] >= 1.0
    assert after[("globalhub_dead_letters", (("type", EventType.HUB_INFO.value),))] == letters + 1
    assert after[("globalhub_divergences", (("type", EventType.MANAGED_CLUSTER.value),))] >= 1.0
