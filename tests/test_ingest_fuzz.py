"""Whatever a hub puts on its topic, the batch goes through: a bad record is a dead letter, never an exception.

An exception out of ``ingest_batch`` makes the consumer retry the same batch for ever (a stuck partition), so
these properties feed mutated and random records, each followed by a good one, through the real pipeline and
PostgreSQL, and require that the batch completes, the good record is applied and the positions move past both.
"""

from __future__ import annotations

import itertools
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent_tasks.simulate import make_cluster
from agent_tasks.types import tweak_cluster
from globalhub.manager.ingest.pipeline import ingest_batch
from globalhub.manager.ingest.records import Record
from globalhub.manager.models import ConsumedPosition, ManagedCluster
from globalhub.protocol.bundles import ObjectMetadata, dumps, frame_complete, frame_resync
from globalhub.protocol.events import EventType
from globalhub.protocol.objects import cluster_claim_id
from tests.helpers import status_message

pytestmark = pytest.mark.django_db

PREFIX = "gh-status."
FUZZ = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,  # the same examples every run: a failure here is reproducible, never a flaky CI
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
_hubs = itertools.count()

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
nasty_text = st.sampled_from(
    [
        *("", "\x00", "a\x00b", "\\", "\t\n\r", "\\N", "\ufffd", "x" * 300, "é" * 200, "\U0001f600" * 300),
        *("1.2.3", "-1.-1", "9" * 40, "99999999999", "2147483648", "2147483647", "0", "complete", "begin"),
    ]
) | st.text(max_size=40)


def _cluster(hub: str) -> dict[str, Any]:
    return tweak_cluster(make_cluster(hub, 0, __import__("random").Random(3)), hub)


def _event(name: str = "c.1") -> dict[str, Any]:
    return {
        "eventName": name,
        "eventNamespace": "ns",
        "message": "m",
        "reason": "r",
        "createdAt": "2026-12-01T09:30:00Z",
    }


def _messages(hub: str) -> dict[str, tuple[bytes | None, bytes, list[tuple[str, bytes]]]]:
    """Valid messages of every shape the manager reads, as (key, value, headers)."""
    cluster = _cluster(hub)
    frames = list(frame_resync([(ObjectMetadata(cluster_claim_id(cluster) or "", "c"), dumps(cluster))]))
    compliance = [{"policyId": str(uuid.uuid4()), "compliantClusters": ["a", "b"], "nonCompliantClusters": ["c"]}]
    (compliance_frame,) = frame_complete([dumps(e) for e in compliance])
    built = {
        "cluster update": status_message(hub, EventType.MANAGED_CLUSTER, {"update": [cluster]}, "3.1"),
        "cluster resync frame": status_message(
            hub, EventType.MANAGED_CLUSTER, frames[0].payload, "3.2", frames[0].extensions()
        ),
        "compliance": status_message(hub, EventType.LOCAL_COMPLIANCE, compliance, "3.3"),
        "framed compliance": status_message(
            hub, EventType.LOCAL_COMPLIANCE, compliance_frame.payload, "3.4", compliance_frame.extensions()
        ),
        "hub info": status_message(hub, EventType.HUB_INFO, {"clusterId": str(uuid.uuid4())}, "3.5"),
        "heartbeat": status_message(hub, EventType.HEARTBEAT, [], "3.6"),
        "policy": status_message(
            hub,
            EventType.LOCAL_POLICY_SPEC,
            {"update": [{"metadata": {"name": "p", "uid": str(uuid.uuid4())}, "spec": {}}]},
            "3.7",
        ),
        "cluster events": status_message(hub, EventType.MANAGED_CLUSTER_EVENT, [_event(), _event("c.2")], "3.8"),
        "root policy event": status_message(
            hub, EventType.LOCAL_ROOT_POLICY_EVENT, {**_event(), "count": 3, "source": {"c": "x"}}, "3.9"
        ),
        "replicated policy events": status_message(
            hub, EventType.LOCAL_REPLICATED_POLICY_EVENT, [{**_event(), "clusterName": "c1"}], "3.10"
        ),
    }
    return {name: (m.key, m.value, [(k, v) for k, v in m.headers]) for name, m in built.items()}


def _run(hub: str, key: bytes | None, value: bytes | None, headers: list[tuple[str, Any]]) -> None:
    topic = PREFIX + hub
    bad = Record(topic=topic, partition=0, offset=0, key=key, value=value, headers=tuple(headers))
    good_message = status_message(hub, EventType.MANAGED_CLUSTER, {"update": [_cluster(hub)]}, "9.9")
    good = Record(topic, 0, 1, good_message.key, good_message.value, tuple(good_message.headers))
    ingest_batch([bad, good], topic_prefix=PREFIX)  # must not raise

    assert ConsumedPosition.objects.get(topic=topic).next_offset == 2
    assert ManagedCluster.objects.filter(hub_id=hub, cluster_id=cluster_claim_id(_cluster(hub)) or "").exists()


def _hub() -> str:
    return f"fuzz-{next(_hubs)}-{uuid.uuid4().hex[:6]}"


@FUZZ
@given(kind=st.sampled_from(sorted(_messages("x"))), data=st.data())
def test_a_record_with_bytes_changed_cut_or_added_never_stops_the_batch(kind: str, data: st.DataObject) -> None:
    hub = _hub()
    key, value, headers = _messages(hub)[kind]
    mutation = data.draw(st.sampled_from(["flip", "cut", "insert", "replace"]))
    position = data.draw(st.integers(min_value=0, max_value=1 << 20)) % max(len(value), 1)  # lengths vary by hub
    if mutation == "flip" and value:
        value = value[:position] + bytes([value[position] ^ data.draw(st.integers(1, 255))]) + value[position + 1 :]
    elif mutation == "cut":
        value = value[:position]
    elif mutation == "insert":
        value = value[:position] + data.draw(st.binary(min_size=1, max_size=8)) + value[position:]
    else:
        value = data.draw(st.binary(max_size=64))
    _run(hub, key, value, headers)


@FUZZ
@given(kind=st.sampled_from(sorted(_messages("x"))), data=st.data())
def test_a_record_with_a_header_changed_dropped_or_repeated_never_stops_the_batch(
    kind: str, data: st.DataObject
) -> None:
    hub = _hub()
    key, value, headers = _messages(hub)[kind]
    index = data.draw(st.integers(min_value=0, max_value=len(headers) - 1))
    name, _ = headers[index]
    mutation = data.draw(st.sampled_from(["text", "bytes", "none", "drop", "repeat"]))
    if mutation == "text":
        headers[index] = (name, data.draw(nasty_text).encode("utf-8", "surrogatepass"))
    elif mutation == "bytes":
        headers[index] = (name, data.draw(st.binary(max_size=40)))
    elif mutation == "none":
        headers[index] = (name, None)  # type: ignore[assignment]
    elif mutation == "drop":
        del headers[index]
    else:
        headers.append((name, data.draw(nasty_text).encode("utf-8", "surrogatepass")))
    if data.draw(st.booleans()):
        key = data.draw(st.none() | st.binary(max_size=20))
    _run(hub, key, value, headers)


@FUZZ
@given(kind=st.sampled_from(sorted(_messages("x"))), payload=json_values, data=st.data())
def test_a_payload_of_any_json_shape_never_stops_the_batch(kind: str, payload: Any, data: st.DataObject) -> None:
    hub = _hub()
    key, _, headers = _messages(hub)[kind]
    wrap = data.draw(st.sampled_from(["as is", "in update", "as compliance entry", "in resync_metadata"]))
    if wrap == "in update":
        payload = {"update": [payload]}
    elif wrap == "as compliance entry":
        payload = [{"policyId": str(uuid.uuid4()), "compliantClusters": payload}]
    elif wrap == "in resync_metadata":
        payload = {"resync_metadata": [payload]}
    _run(hub, key, dumps(payload), headers)
