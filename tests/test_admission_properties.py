"""Property tests of version admission and conflation.

Admission is pure (``admission.judge``, ``next_slot``, ``stamp_of``); conflation and ordering are checked through
``ingest_batch`` on real PostgreSQL: whatever the batch boundaries and redeliveries, the manager ends where the
hub's last state is.
"""

from __future__ import annotations

import itertools
import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from globalhub.manager.ingest.admission import Mode, Slot, judge, next_slot, stamp_of, starts_a_run
from globalhub.manager.ingest.pipeline import ingest_batch
from globalhub.manager.ingest.records import Record
from globalhub.manager.models import LocalCompliance, ManagedCluster
from globalhub.protocol.events import EventType
from globalhub.protocol.objects import CLUSTER_ID_CLAIM
from globalhub.protocol.version import Version
from tests.helpers import record_of, status_message

counters = st.integers(min_value=0, max_value=2**64 - 102)
versions = st.builds(Version, counters, counters)
modes = st.sampled_from(list(Mode))
# The modes whose bundles can be refused (an append-only event stream's never are: see the last property).
versioned_modes = st.sampled_from([mode for mode in Mode if mode is not Mode.APPEND])
BASE = datetime(2026, 1, 1, tzinfo=UTC)
times = st.integers(min_value=-10_000, max_value=10_000).map(lambda s: BASE + timedelta(seconds=s))
slots = st.builds(Slot, st.none() | versions, st.none() | times, st.none() | times)
LATER = BASE + timedelta(seconds=1)  # a later send of the run that began at BASE


@given(modes, versions, st.none() | times)
def test_anything_is_admitted_when_nothing_was_processed(mode: Mode, incoming: Version, sent_at: datetime) -> None:
    assert judge(mode, incoming, sent_at, Slot(), answers_request=False).admitted


@given(modes, versions, st.none() | times, slots)
def test_an_answer_to_a_request_is_admitted_and_authoritative_whatever_the_slot(
    mode: Mode, incoming: Version, sent_at: datetime | None, slot: Slot
) -> None:
    verdict = judge(mode, incoming, sent_at, slot, answers_request=True)
    assert verdict.admitted and verdict.authoritative


@given(versioned_modes, versions, times, slots)
def test_a_bundle_sent_before_the_run_began_is_refused_unless_it_answers(
    mode: Mode, incoming: Version, sent_at: datetime, slot: Slot
) -> None:
    straggler = slot.run_started_at is not None and sent_at < slot.run_started_at
    verdict = judge(mode, incoming, sent_at, slot, answers_request=False)
    if straggler:
        assert not verdict.admitted and "before the agent's run began" in verdict.reason
    else:
        new_run = incoming.generation == 0 and starts_a_run(sent_at, slot)
        assert verdict.admitted or (mode is not Mode.HYBRID and not new_run)


@given(versions, st.none() | times, slots)
def test_an_append_only_event_bundle_is_always_admitted_and_never_re_bases_the_slot(
    incoming: Version, sent_at: datetime | None, slot: Slot
) -> None:
    verdict = judge(Mode.APPEND, incoming, sent_at, slot, answers_request=False)
    assert verdict.admitted and not verdict.authoritative


# Generation 0 starts a new run only when sent strictly after the run began. This test asserted before that a
# Generation-0 bundle sent *at* the run's start is authoritative: that is a duplicate of the bundle that started the
# run (a replay), which then wrote over newer rows and moved the version back. Now it starts nothing.
@given(versioned_modes, counters, st.none() | versions, times)
def test_generation_zero_starts_a_new_run_only_when_sent_after_the_run_began(
    mode: Mode, value: int, last: Version | None, run: datetime
) -> None:
    slot = Slot(last, run)
    later = run + timedelta(microseconds=1)
    assert judge(mode, Version(0, value), later, slot, answers_request=False).authoritative
    assert not judge(mode, Version(0, value), run, slot, answers_request=False).authoritative
    assert not judge(mode, Version(0, value), run - timedelta(seconds=1), slot, answers_request=False).admitted


@given(versioned_modes, counters, versions, times, st.integers(1, 10_000))
def test_generation_zero_sent_before_the_newest_bundle_admitted_starts_no_run(
    mode: Mode, value: int, last: Version, run: datetime, later: int
) -> None:
    """A Generation-0 frame reordered behind a later bundle of its own run re-bases nothing, and the version stays."""
    newest = run + timedelta(seconds=later)
    slot = Slot(last, run, newest)
    sent_at = newest - timedelta(microseconds=1)
    verdict = judge(mode, Version(0, value), sent_at, slot, answers_request=False)
    assert not verdict.authoritative
    if verdict.admitted:
        after = next_slot(slot, Version(0, value), sent_at, verdict, newest)
        assert after.run_started_at == run and after.last_sent_at == newest
        assert after.version is not None and not last.newer_than(after.version)  # never moves back


@given(versions, versions)
def test_complete_and_delta_types_admit_exactly_the_componentwise_newer_or_equal(
    incoming: Version, last: Version
) -> None:
    expected = incoming.generation == 0 or (incoming.generation >= last.generation and incoming.value >= last.value)
    slot = Slot(last, BASE)
    assert judge(Mode.COMPLETE, incoming, LATER, slot, answers_request=False).admitted == expected
    assert judge(Mode.DELTA, incoming, LATER, slot, answers_request=False).admitted == expected


@given(versions, versions)
def test_hybrid_bundles_of_the_run_are_admitted_and_their_rows_decide(incoming: Version, last: Version) -> None:
    verdict = judge(Mode.HYBRID, incoming, LATER, Slot(last, BASE), answers_request=False)
    assert verdict.admitted
    assert verdict.authoritative == (incoming.generation == 0)


@given(versions, versions)
def test_a_row_stamp_orders_by_version_within_a_run(incoming: Version, last: Version) -> None:
    slot = Slot(last, BASE)
    newer = stamp_of(slot, incoming).newer_than(stamp_of(slot, last))
    assert newer == ((incoming.generation, incoming.value) > (last.generation, last.value))


@given(versions, versions, st.integers(1, 10_000))
def test_any_row_of_a_later_run_is_newer_than_any_of_an_earlier_one(
    incoming: Version, last: Version, later: int
) -> None:
    run = BASE + timedelta(seconds=later)
    assert stamp_of(Slot(None, run), incoming).newer_than(stamp_of(Slot(None, BASE), last))


@given(modes, st.lists(st.sampled_from(["incr", "next"]), max_size=60))
def test_every_bundle_of_one_agent_run_is_admitted_in_send_order_and_advances(
    mode: Mode, operations: list[str]
) -> None:
    version = Version()
    slot = Slot()
    sent_at = BASE
    previous = None
    for operation in operations:
        version.incr() if operation == "incr" else version.next()
        if operation == "next":  # a send
            sent_at += timedelta(milliseconds=1)
            verdict = judge(mode, version, sent_at, slot, answers_request=False)
            assert verdict.admitted
            slot = next_slot(slot, version, sent_at, verdict, sent_at)
            stamp = stamp_of(slot, version)
            assert previous is None or stamp.newer_than(previous)
            previous = stamp


# --- conflation and ordering through the real pipeline --------------------------------------------------------------

PREFIX = "gh-status."


def split(records: list[Record], cuts: list[int], repeats: list[int]) -> list[list[Record]]:
    """Batches at the given cut points; some batches are delivered twice (a consumer crash before its commit)."""
    bounds = sorted({0, len(records), *(c % (len(records) + 1) for c in cuts)})
    batches = [records[a:b] for a, b in itertools.pairwise(bounds) if records[a:b]]
    delivered = []
    for index, batch in enumerate(batches):
        delivered.append(batch)
        if index in repeats:
            delivered.append(batch)
    return delivered


compliance_states = st.lists(
    st.dictionaries(st.sampled_from(["c1", "c2", "c3", "c4"]), st.sampled_from(["compliant", "non_compliant"])),
    min_size=1,
    max_size=8,
)


@pytest.mark.django_db
@settings(max_examples=25, deadline=None)
@given(compliance_states, st.lists(st.integers(0, 20), max_size=4), st.lists(st.integers(0, 8), max_size=3))
def test_compliance_ends_at_the_last_state_sent_whatever_the_batches_and_redeliveries(
    states: list[dict[str, str]], cuts: list[int], repeats: list[int]
) -> None:
    hub = f"hub-{uuid.uuid4().hex[:8]}"
    policy_id = str(uuid.uuid4())
    records = []
    for send, state in enumerate(states):
        entry = {
            "policyId": policy_id,
            "compliantClusters": [c for c, s in state.items() if s == "compliant"],
            "nonCompliantClusters": [c for c, s in state.items() if s == "non_compliant"],
        }
        version = f"{send}.{send * 3 + 1}"
        message = status_message(hub, EventType.LOCAL_COMPLIANCE, [entry], version)
        records.append(record_of(message, PREFIX + hub, send))
    for batch in split(records, cuts, repeats):
        ingest_batch(batch, topic_prefix=PREFIX)

    rows = LocalCompliance.objects.filter(hub_id=hub).values_list("cluster_name", "compliance")
    assert dict(rows) == states[-1]


operations = st.lists(
    st.tuples(st.sampled_from(["upsert", "delete"]), st.integers(0, 4), st.integers(0, 99)), min_size=1, max_size=25
)


def cluster(index: int, label: int) -> dict[str, Any]:
    claim = str(uuid.UUID(int=index + 1))
    return {
        "metadata": {"name": f"c{index}", "labels": {"l": str(label)}},
        "status": {"clusterClaims": [{"name": CLUSTER_ID_CLAIM, "value": claim}]},
    }


@pytest.mark.django_db
@settings(max_examples=25, deadline=None)
@given(
    operations,
    st.lists(st.integers(0, 30), max_size=5),
    st.lists(st.integers(0, 25), max_size=3),
    st.integers(0, 2**32),
)
def test_hybrid_deltas_apply_in_order_each_once_so_the_copy_equals_the_hub(
    ops: list[tuple[str, int, int]], cuts: list[int], repeats: list[int], seed: int
) -> None:
    hub = f"hub-{uuid.uuid4().hex[:8]}"
    rng = random.Random(seed)
    model: dict[str, int] = {}
    records = []
    for send, (op, index, label) in enumerate(ops):
        claim = str(uuid.UUID(int=index + 1))
        if op == "upsert":
            payload: dict[str, Any] = {"update": [cluster(index, label)]}
            model[claim] = label
        else:
            payload = {"delete": [{"id": claim, "name": f"c{index}"}]}
            model.pop(claim, None)
        value = send + 1 + rng.randrange(3)  # changes per send vary; versions only grow within a run
        records.append(
            record_of(
                status_message(hub, EventType.MANAGED_CLUSTER, payload, f"{send}.{value * 2}"), PREFIX + hub, send
            )
        )
    for batch in split(records, cuts, repeats):
        ingest_batch(batch, topic_prefix=PREFIX)

    live = ManagedCluster.objects.filter(hub_id=hub, deleted_at__isnull=True).values_list("cluster_id", "payload")
    assert {str(cid): int(payload["metadata"]["labels"]["l"]) for cid, payload in live} == model
