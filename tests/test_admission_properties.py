"""Property tests of version admission and conflation.

Admission is pure (``admission.admits``); conflation and ordering are checked through ``ingest_batch`` on real
PostgreSQL: whatever the batch boundaries and redeliveries, the manager ends where the hub's last state is.
"""

from __future__ import annotations

import itertools
import random
import uuid
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from globalhub.manager.ingest.admission import Mode, admits
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


@given(modes, versions)
def test_anything_is_admitted_when_nothing_was_processed(mode: Mode, incoming: Version) -> None:
    assert admits(mode, incoming, None)


@given(modes, counters, versions)
def test_generation_zero_is_always_admitted(mode: Mode, value: int, last: Version) -> None:
    assert admits(mode, Version(0, value), last)


@given(versions, versions)
def test_complete_and_delta_types_admit_exactly_the_componentwise_newer_or_equal(
    incoming: Version, last: Version
) -> None:
    expected = incoming.generation == 0 or (incoming.generation >= last.generation and incoming.value >= last.value)
    assert admits(Mode.COMPLETE, incoming, last) == expected
    assert admits(Mode.DELTA, incoming, last) == expected


@given(versions, versions)
def test_hybrid_types_compare_the_generation_only(incoming: Version, last: Version) -> None:
    assert admits(Mode.HYBRID, incoming, last) == (incoming.generation == 0 or incoming.generation >= last.generation)


@given(modes, st.lists(st.sampled_from(["incr", "next"]), max_size=60))
def test_every_bundle_of_one_agent_run_is_admitted_in_send_order(mode: Mode, operations: list[str]) -> None:
    version = Version()
    last: Version | None = None
    for operation in operations:
        version.incr() if operation == "incr" else version.next()
        if operation == "next":  # a send
            assert admits(mode, version, last)
            last = version.copy()


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
