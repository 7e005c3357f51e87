"""A batch's heartbeats are applied for all its hubs at once (``lifecycle.heartbeats_seen``), with the semantics of
one hub at a time: ``last_heartbeat`` never moves backwards, the hub's own time and clock skew are shown, an
inactive hub with a fresh heartbeat comes back with its transition and one targeted resync, and a heartbeat stored
before the timeout brings nobody back. In a fixed number of statements whatever the number of hubs."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext

from globalhub.manager import lifecycle
from globalhub.manager.ingest.pipeline import ingest_batch
from globalhub.manager.lifecycle import HeartbeatSeen, Timing
from globalhub.manager.models import Hub, HubTransition, ResyncRequest
from tests.test_hub_lifecycle import PREFIX, heartbeat_record, make_hub, requests_for, state

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
TIMING = Timing(timeout=timedelta(minutes=5), startup_grace=timedelta(minutes=5))


def test_one_call_for_many_hubs_does_what_one_call_per_hub_does() -> None:
    now = T0 + timedelta(hours=1)
    active = make_hub("hb-active", heartbeat=now - timedelta(minutes=1))
    later = make_hub("hb-later", heartbeat=now)  # its stored heartbeat is newer than the one read
    back = make_hub("hb-back", heartbeat=T0, state="inactive")
    stale = make_hub("hb-stale", heartbeat=T0, state="inactive")
    skewed = make_hub("hb-skewed", heartbeat=T0)
    Hub.objects.filter(name=skewed).update(skewed_heartbeats=2, clock_skew_seconds=-400.0)
    never = make_hub("hb-never", heartbeat=None)
    seen = {
        active: HeartbeatSeen(now, True, now - timedelta(seconds=2)),
        later: HeartbeatSeen(now - timedelta(seconds=30), True, now - timedelta(seconds=30)),
        back: HeartbeatSeen(now - timedelta(seconds=5), False, now - timedelta(seconds=6)),  # the consumer's time
        stale: HeartbeatSeen(now - timedelta(minutes=6), True, None),  # stored before the timeout
        skewed: HeartbeatSeen(now, True, now + timedelta(minutes=2)),
        never: HeartbeatSeen(now, False, None),
        "hb-unknown": HeartbeatSeen(now, True, now),  # no such hub: nothing happens
    }

    requests = lifecycle.heartbeats_seen(seen, now, TIMING)

    hubs = {hub.name: hub for hub in Hub.objects.all()}
    assert hubs[active].last_heartbeat == now and hubs[active].clock_skew_seconds == pytest.approx(-2.0)
    assert hubs[active].last_heartbeat_sent_at == now - timedelta(seconds=2) and hubs[active].skewed_heartbeats == 0
    assert hubs[later].last_heartbeat == now  # never backwards
    assert hubs[later].last_heartbeat_sent_at == now - timedelta(seconds=30)
    # Read by the consumer (no broker time): the hub's time is shown, its skew is not measured.
    assert hubs[back].last_heartbeat == now - timedelta(seconds=5) and hubs[back].clock_skew_seconds is None
    assert hubs[back].last_heartbeat_sent_at == now - timedelta(seconds=6)
    assert hubs[stale].last_heartbeat == now - timedelta(minutes=6) and hubs[stale].last_heartbeat_sent_at is None
    assert hubs[skewed].clock_skew_seconds == pytest.approx(120.0) and hubs[skewed].skewed_heartbeats == 3
    assert hubs[never].last_heartbeat == now and hubs[never].last_heartbeat_sent_at is None
    assert "hb-unknown" not in hubs

    assert list(requests) == [back]
    assert [state(hub) for hub in (active, later, back, stale, skewed, never)] == [
        "active",
        "active",
        "active",
        "inactive",
        "active",
        "active",
    ]
    assert Hub.objects.get(name=back).state_changed_at == now
    (request,) = requests_for(back, ResyncRequest.Reason.REACTIVATION)
    assert request.pk == requests[back].pk and request.requested_by == "heartbeat"
    (transition,) = HubTransition.objects.filter(hub_name=back)
    assert (transition.from_state, transition.to_state, transition.by) == ("inactive", "active", "heartbeat")
    assert transition.reason == f"heartbeat read again: resync request #{request.pk}"
    assert requests_for(stale) == [] and not HubTransition.objects.filter(hub_name=stale).exists()


def test_a_hub_brought_back_once_is_not_brought_back_again_by_its_next_heartbeats() -> None:
    now = T0 + timedelta(hours=1)
    hub = make_hub(heartbeat=T0, state="inactive")
    assert lifecycle.heartbeat_seen(hub, HeartbeatSeen(now, True, now), now, TIMING) is not None
    assert lifecycle.heartbeat_seen(hub, HeartbeatSeen(now, True, now), now, TIMING) is None
    assert len(requests_for(hub, ResyncRequest.Reason.REACTIVATION)) == 1


def test_no_heartbeat_no_statement() -> None:
    with CaptureQueriesContext(connection) as queries:
        assert lifecycle.heartbeats_seen({}, T0, TIMING) == {}
    assert len(queries) == 0


def heartbeat_statements(count: int, now: datetime) -> int:
    """The statements applying ``count`` active hubs' heartbeats at once."""
    hubs = [make_hub(heartbeat=now - timedelta(minutes=1)) for _ in range(count)]
    seen = {hub: HeartbeatSeen(now, True, now - timedelta(seconds=1)) for hub in hubs}
    with CaptureQueriesContext(connection) as queries:
        assert lifecycle.heartbeats_seen(seen, now, TIMING) == {}
    assert set(Hub.objects.filter(name__in=hubs).values_list("last_heartbeat", flat=True)) == {now}
    return len(queries)


def test_the_heartbeats_of_many_hubs_take_a_fixed_number_of_statements() -> None:
    now = T0 + timedelta(hours=1)
    few, many = heartbeat_statements(2, now), heartbeat_statements(50, now)
    assert few == many <= 3


def test_a_batch_of_many_hubs_heartbeats_keeps_the_lifecycle_statements_fixed() -> None:
    """Through the consumer's pipeline: the hub updates of a batch do not grow with its hubs (one per hub before)."""

    def batch_statements(count: int, offset: int) -> int:
        hubs = [make_hub(heartbeat=T0) for _ in range(count)]
        now = T0 + timedelta(minutes=1)
        records = [replace(heartbeat_record(hub, now, offset), timestamp=now, log_append=True) for hub in hubs]
        with time_machine.travel(now, tick=False), CaptureQueriesContext(connection) as queries:
            ingest_batch(records, topic_prefix=PREFIX)
        assert set(Hub.objects.filter(name__in=hubs).values_list("last_heartbeat", flat=True)) == {now}
        return sum(1 for query in queries if 'UPDATE "manager_hub"' in query["sql"])

    assert batch_statements(2, 0) == batch_statements(40, 0)  # the heartbeats' update, the reactivations'
