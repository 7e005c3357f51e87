"""CloudEvent <-> Kafka message (binary content mode), with confluent-kafka-shaped inputs and outputs."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone

import pytest

from globalhub.protocol.codec import InvalidEvent, OutgoingMessage, ReceivedEvent, decode, encode
from globalhub.protocol.events import EventType

WHEN = datetime(2026, 8, 1, 10, 30, 15, 123456, tzinfo=UTC)


EVENT_ID = "5b1d7c52-7a57-4c8f-9d47-4b0b5f1b2f6e"
VERSION_ONLY: Mapping[str, str | int] = {"extversion": "3.7"}


def sample(
    *,
    event_type: str = EventType.MANAGED_CLUSTER.value,
    data: bytes = b'{"update":[{"metadata":{"name":"c1"}}]}',
    subject: str | None = None,
    extensions: Mapping[str, str | int] = VERSION_ONLY,
    event_id: str | None = EVENT_ID,
    time: datetime | None = WHEN,
) -> OutgoingMessage:
    return encode(
        event_type=event_type,
        source="hub1",
        data=data,
        subject=subject,
        extensions=extensions,
        event_id=event_id,
        time=time,
    )


def round_trip(message: OutgoingMessage) -> ReceivedEvent:
    return decode(message.key, message.value, list(message.headers))


def replace_header(message: OutgoingMessage, name: str, value: bytes) -> list[tuple[str, bytes]]:
    headers = [(key, value if key == name else raw) for key, raw in message.headers]
    assert name in dict(message.headers), f"the sample has no {name} header to replace"
    return headers


def without_header(message: OutgoingMessage, name: str) -> list[tuple[str, bytes]]:
    assert name in dict(message.headers), f"the sample has no {name} header to remove"
    return [(key, raw) for key, raw in message.headers if key != name]


# --- what encode writes ---------------------------------------------------------------------------------------------


def test_encode_writes_binary_mode_headers_with_exact_names() -> None:
    message = sample(subject="broadcast")
    headers = dict(message.headers)
    assert set(headers) == {
        "ce_id",
        "ce_type",
        "ce_source",
        "ce_specversion",
        "ce_time",
        "ce_subject",
        "ce_extversion",
        "content-type",
    }
    assert headers["ce_id"] == EVENT_ID.encode()
    assert headers["ce_type"] == b"io.open-cluster-management.operator.multiclusterglobalhubs.managedcluster"
    assert headers["ce_source"] == b"hub1"
    assert headers["ce_specversion"] == b"1.0"
    assert headers["ce_subject"] == b"broadcast"
    assert headers["ce_extversion"] == b"3.7"
    assert headers["content-type"] == b"application/json"
    assert headers["ce_time"].startswith(b"2026-08-01T10:30:15.123456")


def test_encode_writes_headers_as_a_list_of_str_bytes_tuples() -> None:
    message = sample()
    assert isinstance(message.headers, list)
    for name, raw in message.headers:
        assert isinstance(name, str)
        assert isinstance(raw, bytes)
    assert len({name for name, _ in message.headers}) == len(message.headers), "no header name is repeated"


def test_encode_omits_the_subject_header_without_a_subject() -> None:
    assert "ce_subject" not in dict(sample().headers)


def test_encode_does_not_write_the_partitionkey_as_a_header() -> None:
    assert not any("partitionkey" in name for name, _ in sample().headers)


def test_the_kafka_key_is_the_event_type() -> None:
    message = sample(event_type="Resync")
    assert message.key == b"Resync"
    assert message.event_type == "Resync"


def test_the_kafka_value_is_the_data_bytes_unchanged() -> None:
    data = '{"name":"clüster-ß","emoji":"\U0001f680","n":1}'.encode()
    assert sample(data=data).value == data


def test_encode_fills_in_a_fresh_uuid_id_when_none_is_given() -> None:
    first = sample(event_id=None)
    second = sample(event_id=None)
    assert first.event_id != second.event_id
    assert len(first.event_id) == 36
    assert dict(first.headers)["ce_id"] == first.event_id.encode()


def test_encode_fills_in_the_current_time_when_none_is_given() -> None:
    before = datetime.now(UTC)
    event = round_trip(sample(time=None))
    after = datetime.now(UTC)
    assert event.time is not None
    assert before - timedelta(seconds=1) <= event.time <= after + timedelta(seconds=1)


def test_integer_extensions_are_written_as_decimal_strings() -> None:
    message = sample(extensions={"extversion": "1.2", "extframeseq": 7})
    assert dict(message.headers)["ce_extframeseq"] == b"7"


# --- round trip -----------------------------------------------------------------------------------------------------


def test_round_trip_keeps_the_core_attributes() -> None:
    event = round_trip(sample(subject="hub1"))
    assert event.id == EVENT_ID
    assert event.type == EventType.MANAGED_CLUSTER.value
    assert event.source == "hub1"
    assert event.subject == "hub1"
    assert event.time == WHEN


def test_round_trip_without_a_subject_gives_none() -> None:
    assert round_trip(sample()).subject is None


def test_round_trip_returns_extensions_as_strings() -> None:
    event = round_trip(sample(extensions={"extversion": "12.345", "extframeseq": 3, "sendmode": "batch"}))
    assert dict(event.extensions) == {"extversion": "12.345", "extframeseq": "3", "sendmode": "batch"}
    assert event.extension("extversion") == "12.345"
    assert event.extension("extframeseq") == "3"
    assert event.extension("missing") is None


def test_round_trip_does_not_leak_the_partitionkey_into_extensions() -> None:
    event = round_trip(sample())
    assert "partitionkey" not in event.extensions
    assert "partitionkey" not in event.attributes


def test_round_trip_keeps_no_core_attribute_among_the_extensions() -> None:
    event = round_trip(sample(subject="s"))
    assert set(event.extensions) == {"extversion"}


@pytest.mark.parametrize(
    "data",
    [
        b"[]",
        b"{}",
        '{"name":"clüster-ß","emoji":"\U0001f680"}'.encode(),
        b'{"a": 1,\n  "b": [1, 2, 3]}',
        json.dumps({"resync": [{"x": "y" * 5000}] * 50}).encode(),
    ],
    ids=["empty-array", "empty-object", "non-ascii", "whitespace-kept", "large"],
)
def test_round_trip_keeps_the_data_bytes_exactly(data: bytes) -> None:
    event = round_trip(sample(data=data))
    assert event.data == data
    assert isinstance(event.data, bytes)


def test_round_trip_of_a_spec_resync_request() -> None:
    payload = json.dumps([EventType.HUB_INFO.value, EventType.MANAGED_CLUSTER.value]).encode()
    message = encode(event_type="Resync", source="global-hub", subject="broadcast", data=payload)
    event = decode(message.key, message.value, message.headers)
    assert (event.type, event.source, event.subject) == ("Resync", "global-hub", "broadcast")
    assert json.loads(event.data) == [EventType.HUB_INFO.value, EventType.MANAGED_CLUSTER.value]


def test_decode_accepts_a_str_key_and_no_key() -> None:
    message = sample()
    assert decode("anything", message.value, message.headers).type == EventType.MANAGED_CLUSTER.value
    assert decode(None, message.value, message.headers).type == EventType.MANAGED_CLUSTER.value


def test_decode_of_an_empty_value_gives_empty_data() -> None:
    message = sample()
    assert decode(message.key, None, message.headers).data == b""
    assert decode(message.key, b"", message.headers).data == b""


def test_decode_ignores_headers_without_a_value_and_foreign_headers() -> None:
    message = sample()
    headers = [*message.headers, ("traceparent", b"00-abc-def-01"), ("ce_nothing", None)]
    event = decode(message.key, message.value, headers)
    assert dict(event.extensions) == {"extversion": "3.7"}


def test_decode_reads_what_an_upstream_go_agent_writes() -> None:
    # sdk-go's Kafka binding: ce_ headers, RFC 3339 time with nanoseconds, key = type.
    headers = [
        ("ce_specversion", b"1.0"),
        ("ce_id", b"d9a4b3ce-0c4a-4d0d-9f4e-0a1b2c3d4e5f"),
        ("ce_source", b"hub2"),
        ("ce_type", b"io.open-cluster-management.operator.multiclusterglobalhubs.managedhub.heartbeat"),
        ("ce_time", b"2026-08-01T10:30:15.123456789Z"),
        ("ce_extversion", b"4.0"),
        ("content-type", b"application/json"),
    ]
    event = decode(EventType.HEARTBEAT.value.encode(), b"[]", headers)
    assert event.type == EventType.HEARTBEAT.value
    assert event.source == "hub2"
    assert event.extension("extversion") == "4.0"
    assert event.data == b"[]"
    assert event.time == datetime(2026, 8, 1, 10, 30, 15, 123456, tzinfo=UTC)


def test_decode_keeps_a_time_offset() -> None:
    message = sample(time=datetime(2026, 8, 1, 12, 0, tzinfo=timezone(timedelta(hours=2))))
    assert round_trip(message).time == datetime(2026, 8, 1, 10, 0, tzinfo=UTC)


def test_decode_without_a_time_header_gives_no_time() -> None:
    # ``time`` is optional in CloudEvents; the decoder must not invent one.
    message = sample()
    event = decode(message.key, message.value, without_header(message, "ce_time"))
    assert event.time is None


# --- decode failures ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("headers", [None, []], ids=["none", "empty-list"])
def test_a_message_without_headers_is_not_a_cloudevent(headers: list[tuple[str, bytes]] | None) -> None:
    with pytest.raises(InvalidEvent, match="no ce_specversion header"):
        decode(b"k", b'{"update":[]}', headers)


def test_a_structured_mode_json_value_is_not_accepted() -> None:
    value = json.dumps({"specversion": "1.0", "id": "1", "type": "t", "source": "s", "data": {}}).encode()
    with pytest.raises(InvalidEvent, match="binary content mode expected"):
        decode(b"t", value, [("content-type", b"application/cloudevents+json")])


@pytest.mark.parametrize(
    ("header", "reason"),
    [("ce_type", "'type'"), ("ce_source", "'source'"), ("ce_id", "'id'")],
    ids=["type", "source", "id"],
)
def test_a_missing_required_attribute_is_named_in_the_reason(header: str, reason: str) -> None:
    message = sample()
    with pytest.raises(InvalidEvent, match=reason):
        decode(message.key, message.value, without_header(message, header))


@pytest.mark.parametrize(
    ("header", "reason"),
    [("ce_type", "'type'"), ("ce_source", "'source'"), ("ce_id", "'id'")],
    ids=["type", "source", "id"],
)
def test_an_empty_required_attribute_is_named_in_the_reason(header: str, reason: str) -> None:
    message = sample()
    with pytest.raises(InvalidEvent, match=reason):
        decode(message.key, message.value, replace_header(message, header, b""))


@pytest.mark.parametrize("specversion", [b"2.0", b"abc", b"", b"1.0 "], ids=["2.0", "garbage", "empty", "padded"])
def test_a_wrong_specversion_is_rejected(specversion: bytes) -> None:
    message = sample()
    with pytest.raises(InvalidEvent, match="specversion"):
        decode(message.key, message.value, replace_header(message, "ce_specversion", specversion))


@pytest.mark.parametrize("header", ["ce_source", "ce_extversion", "content-type"], ids=["core", "extension", "ct"])
def test_a_header_that_is_not_utf8_is_named_in_the_reason(header: str) -> None:
    message = sample()
    with pytest.raises(InvalidEvent, match=f"header '{header}' is not UTF-8"):
        decode(message.key, message.value, replace_header(message, header, b"\xff\xfehub"))


@pytest.mark.parametrize("raw", [b"yesterday", b"2026-13-45T99:00:00Z", b""], ids=["word", "out-of-range", "empty"])
def test_a_bad_time_is_rejected_naming_the_time_attribute(raw: bytes) -> None:
    message = sample()
    with pytest.raises(InvalidEvent, match="ce_time"):
        decode(message.key, message.value, replace_header(message, "ce_time", raw))


def test_invalid_event_is_a_value_error() -> None:
    assert issubclass(InvalidEvent, ValueError)
