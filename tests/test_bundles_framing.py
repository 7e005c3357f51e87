"""Framing of a full resync (``frame_resync``) and reading the framing back (``FrameInfo.from_extensions``)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from globalhub.protocol.bundles import (
    MAX_BUNDLE_BYTES,
    BundleError,
    Frame,
    FrameInfo,
    FrameKind,
    ObjectMetadata,
    ObjectTooLarge,
    dumps,
    frame_resync,
)


def cluster(index: int, padding: int = 0) -> tuple[ObjectMetadata, bytes]:
    object_id = str(uuid.UUID(int=index))
    obj = {"metadata": {"name": f"cluster-{index}", "uid": object_id}, "spec": {"pad": "x" * padding}}
    return ObjectMetadata(id=object_id, name=f"cluster-{index}"), dumps(obj)


def inventory(count: int, padding: int = 0) -> list[tuple[ObjectMetadata, bytes]]:
    return [cluster(index, padding) for index in range(count)]


def check_frames(frames: list[Frame], objects: list[tuple[ObjectMetadata, bytes]], limit: int) -> None:
    """Every invariant a receiver relies on."""
    assert len(frames) >= 2
    assert [frame.seq for frame in frames] == list(range(len(frames)))
    assert len({frame.resync_id for frame in frames}) == 1
    assert frames[0].kind is FrameKind.BEGIN
    assert frames[-1].kind is FrameKind.COMPLETE
    assert all(frame.kind is FrameKind.CHUNK for frame in frames[1:-1])
    assert frames[-1].total == len(frames)
    assert frames[-1].object_count == len(objects)
    assert all(frame.total is None and frame.object_count is None for frame in frames[:-1])

    seen_objects: list[Any] = []
    seen_ids: list[str] = []
    metadata_started = False
    for frame in frames:
        assert len(frame.payload) <= limit, f"frame {frame.seq} is {len(frame.payload)} bytes, limit {limit}"
        payload = json.loads(frame.payload)
        assert isinstance(payload, dict)
        assert set(payload) <= {"resync", "resync_metadata"}
        assert len(payload) <= 1, "a frame carries objects or metadata, never both"
        if "resync" in payload:
            assert not metadata_started, "every resync frame comes before the metadata frames"
            assert payload["resync"], "no frame carries an empty resync array"
            seen_objects.extend(payload["resync"])
        if "resync_metadata" in payload:
            metadata_started = True
            seen_ids.extend(entry["id"] for entry in payload["resync_metadata"])
    assert "resync_metadata" in json.loads(frames[-1].payload), "the complete frame carries metadata"

    expected_objects = [json.loads(encoded) for _, encoded in objects]
    assert seen_objects == expected_objects, "every object exactly once, in order"
    assert sorted(seen_ids) == sorted(meta.id for meta, _ in objects)
    assert len(seen_ids) == len(set(seen_ids)) == len(objects), "every id exactly once"


# --- frame_resync ---------------------------------------------------------------------------------------------------


def test_an_empty_inventory_is_exactly_a_begin_and_a_complete_frame() -> None:
    frames = list(frame_resync([], resync_id="r0"))
    assert len(frames) == 2
    begin, complete = frames
    assert (begin.kind, begin.seq, begin.payload, begin.total, begin.object_count) == (
        FrameKind.BEGIN,
        0,
        b"{}",
        None,
        None,
    )
    assert (complete.kind, complete.seq, complete.total, complete.object_count) == (FrameKind.COMPLETE, 1, 2, 0)
    assert json.loads(complete.payload) == {"resync_metadata": []}
    check_frames(frames, [], MAX_BUNDLE_BYTES)


def test_a_small_inventory_fits_in_begin_and_complete() -> None:
    objects = inventory(3)
    frames = list(frame_resync(objects, resync_id="r1"))
    assert [frame.kind for frame in frames] == [FrameKind.BEGIN, FrameKind.COMPLETE]
    assert json.loads(frames[0].payload) == {"resync": [json.loads(encoded) for _, encoded in objects]}
    assert json.loads(frames[1].payload) == {
        "resync_metadata": [{"id": meta.id, "name": meta.name} for meta, _ in objects]
    }
    check_frames(frames, objects, MAX_BUNDLE_BYTES)


def test_a_small_inventory_is_exactly_what_an_upstream_agent_sends() -> None:
    meta = ObjectMetadata(id="0f8b1c4e-aaaa-bbbb-cccc-000000000001", name="p1", namespace="default")
    frames = list(frame_resync([(meta, b'{"kind":"Policy"}')], resync_id="r"))
    assert [frame.payload for frame in frames] == [
        b'{"resync":[{"kind":"Policy"}]}',
        b'{"resync_metadata":[{"id":"0f8b1c4e-aaaa-bbbb-cccc-000000000001","ns":"default","name":"p1"}]}',
    ]


def test_the_resync_id_is_generated_when_not_given_and_differs_per_resync() -> None:
    first = list(frame_resync(inventory(2)))
    second = list(frame_resync(inventory(2)))
    assert len({frame.resync_id for frame in first}) == 1
    assert first[0].resync_id != second[0].resync_id
    assert 1 <= len(first[0].resync_id) <= 64


def test_five_thousand_objects_of_two_kilobytes_span_several_frames_within_the_limit() -> None:
    objects = inventory(5_000, padding=2_000)
    frames = list(frame_resync(objects, resync_id="big"))
    check_frames(frames, objects, MAX_BUNDLE_BYTES)
    object_frames = [frame for frame in frames if b'"resync":' in frame.payload]
    total_object_bytes = sum(len(encoded) for _, encoded in objects)
    assert total_object_bytes > 10 * 1024 * 1024
    assert len(object_frames) >= total_object_bytes // MAX_BUNDLE_BYTES
    # Frames are filled, not merely bounded: all but the last object frame are at least 99% full.
    assert all(len(frame.payload) > 0.99 * MAX_BUNDLE_BYTES for frame in object_frames[:-1])


def test_tiny_objects_with_a_small_limit_split_the_metadata_over_several_frames() -> None:
    objects = inventory(200)
    frames = list(frame_resync(objects, limit=2_000, resync_id="tiny"))
    check_frames(frames, objects, 2_000)
    metadata_frames = [frame for frame in frames if b'"resync_metadata":' in frame.payload]
    assert len(metadata_frames) >= 5
    assert all(frame.kind is FrameKind.CHUNK for frame in metadata_frames[:-1])
    assert metadata_frames[-1] is frames[-1]


def test_twenty_thousand_ids_at_the_real_limit_span_several_metadata_frames() -> None:
    objects = [(ObjectMetadata(id=str(uuid.UUID(int=index)), name=f"c{index}"), b"{}") for index in range(20_000)]
    frames = list(frame_resync(objects, resync_id="ids"))
    check_frames(frames, objects, MAX_BUNDLE_BYTES)
    metadata_frames = [frame for frame in frames if b'"resync_metadata":' in frame.payload]
    assert len(metadata_frames) >= 2
    assert frames[-1].object_count == 20_000


@pytest.mark.parametrize("limit", [60, 61, 97, 150, 333], ids=lambda limit: f"limit-{limit}")
def test_frames_never_exceed_odd_limits(limit: int) -> None:
    objects = [(ObjectMetadata(id=f"id{index}"), dumps({"i": index, "pad": "p" * (index % 20)})) for index in range(60)]
    frames = list(frame_resync(objects, limit=limit, resync_id="odd"))
    check_frames(frames, objects, limit)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1, 40), st.integers(0, 300)), max_size=80),
    st.integers(min_value=40, max_value=3_000),
)
def test_any_inventory_either_frames_within_the_limit_or_raises_object_too_large(
    shapes: list[tuple[int, int]], limit: int
) -> None:
    objects = [
        (ObjectMetadata(id=f"{index}-" + "i" * id_length), dumps({"pad": "p" * padding}))
        for index, (id_length, padding) in enumerate(shapes)
    ]
    object_fits = all(len(encoded) + len(b'{"resync":[]}') <= limit for _, encoded in objects)
    entry_fits = all(len(dumps(meta.to_json())) + len(b'{"resync_metadata":[]}') <= limit for meta, _ in objects)
    if object_fits and entry_fits:
        check_frames(list(frame_resync(objects, limit=limit, resync_id="h")), objects, limit)
    else:
        with pytest.raises(ObjectTooLarge):
            list(frame_resync(objects, limit=limit, resync_id="h"))


def test_an_object_exactly_at_the_limit_fits_alone() -> None:
    limit = 100
    overhead = len(b'{"resync":[]}')
    encoded = dumps({"p": "x" * (limit - overhead - len(b'{"p":""}'))})
    assert len(encoded) + overhead == limit
    frames = list(frame_resync([(ObjectMetadata(id="a"), encoded)], limit=limit, resync_id="edge"))
    assert len(frames[0].payload) == limit
    check_frames(frames, [(ObjectMetadata(id="a"), encoded)], limit)


def test_an_object_bigger_than_the_limit_raises_object_too_large() -> None:
    meta, encoded = cluster(1, padding=MAX_BUNDLE_BYTES)
    with pytest.raises(ObjectTooLarge, match=meta.id):
        list(frame_resync([(meta, encoded)]))


def test_an_object_too_large_after_other_objects_still_raises() -> None:
    # The oversized object arrives when the buffer already holds objects; it must not slip into a frame of its own.
    objects = [*inventory(3), cluster(99, padding=MAX_BUNDLE_BYTES)]
    with pytest.raises(ObjectTooLarge, match=str(uuid.UUID(int=99))):
        list(frame_resync(objects))


def test_a_metadata_entry_bigger_than_the_limit_raises_object_too_large() -> None:
    objects = [(ObjectMetadata(id="a" * 200), b"{}")]
    with pytest.raises(ObjectTooLarge):
        list(frame_resync(objects, limit=100))


def test_a_metadata_entry_too_large_after_other_entries_still_raises() -> None:
    objects = [(ObjectMetadata(id="a"), b"{}"), (ObjectMetadata(id="b" * 200), b"{}")]
    with pytest.raises(ObjectTooLarge):
        list(frame_resync(objects, limit=100))


def test_object_too_large_is_a_bundle_error() -> None:
    assert issubclass(ObjectTooLarge, BundleError)
    assert issubclass(BundleError, ValueError)


def test_frame_resync_streams_objects_lazily() -> None:
    consumed: list[int] = []

    def objects() -> Any:
        for index in range(1_000):
            consumed.append(index)
            yield cluster(index, padding=1_000)

    frames = frame_resync(objects(), limit=50_000, resync_id="lazy")
    first = next(frames)
    assert first.kind is FrameKind.BEGIN
    assert len(consumed) < 100, "the first frame is yielded before the whole inventory is read"


# --- Frame.extensions -----------------------------------------------------------------------------------------------


def test_frame_extensions_of_a_begin_frame() -> None:
    frame = Frame("r1", FrameKind.BEGIN, 0, b"{}")
    assert frame.extensions() == {"extresyncid": "r1", "extframe": "begin", "extframeseq": 0}


def test_frame_extensions_of_a_complete_frame_carry_total_and_count() -> None:
    frame = Frame("r1", FrameKind.COMPLETE, 4, b"{}", total=5, object_count=1234)
    assert frame.extensions() == {
        "extresyncid": "r1",
        "extframe": "complete",
        "extframeseq": 4,
        "extframetotal": 5,
        "extobjectcount": 1234,
    }


def test_frames_read_back_from_their_own_extensions() -> None:
    frames = list(frame_resync(inventory(50, padding=100), limit=2_000, resync_id="rt"))
    for frame in frames:
        info = FrameInfo.from_extensions({name: str(value) for name, value in frame.extensions().items()})
        assert info == FrameInfo("rt", frame.kind, frame.seq, frame.total, frame.object_count)


# --- FrameInfo.from_extensions --------------------------------------------------------------------------------------


def test_an_unframed_upstream_bundle_has_no_frame_info() -> None:
    assert FrameInfo.from_extensions({}) is None
    assert FrameInfo.from_extensions({"extversion": "1.2", "extframe": "begin", "extframeseq": "0"}) is None


def test_a_chunk_frame_is_read() -> None:
    info = FrameInfo.from_extensions({"extresyncid": "r", "extframe": "chunk", "extframeseq": "3"})
    assert info == FrameInfo("r", FrameKind.CHUNK, 3, None, None)


def test_a_complete_frame_is_read() -> None:
    extensions = {
        "extresyncid": "r",
        "extframe": "complete",
        "extframeseq": "2",
        "extframetotal": "3",
        "extobjectcount": "0",
    }
    assert FrameInfo.from_extensions(extensions) == FrameInfo("r", FrameKind.COMPLETE, 2, 3, 0)


BEGIN = {"extresyncid": "r", "extframe": "begin", "extframeseq": "0"}
COMPLETE = {"extresyncid": "r", "extframe": "complete", "extframeseq": "1", "extframetotal": "2", "extobjectcount": "5"}


@pytest.mark.parametrize(
    ("extensions", "reason"),
    [
        ({**BEGIN, "extresyncid": ""}, "extresyncid must be 1-64 letters, digits"),
        ({**BEGIN, "extresyncid": "r" * 65}, "extresyncid must be 1-64 letters, digits"),
        ({**BEGIN, "extresyncid": "a\x00b"}, "extresyncid must be 1-64 letters, digits"),
        ({**BEGIN, "extresyncid": "a b"}, "extresyncid must be 1-64 letters, digits"),
        ({**BEGIN, "extframe": "middle"}, "extframe must be one of begin/chunk/complete"),
        ({**BEGIN, "extframe": "BEGIN"}, "extframe must be one of begin/chunk/complete"),
        ({"extresyncid": "r", "extframeseq": "0"}, "extframe must be one of begin/chunk/complete"),
        ({"extresyncid": "r", "extframe": "begin"}, "extframeseq is required"),
        ({**BEGIN, "extframeseq": "zero"}, "extframeseq 'zero' is not an integer from 0 to 2147483646"),
        ({**BEGIN, "extframeseq": "-1"}, "extframeseq '-1' is not an integer from 0 to 2147483646"),
        ({**BEGIN, "extframeseq": "1.0"}, "extframeseq '1.0' is not an integer from 0 to 2147483646"),
        ({**BEGIN, "extframeseq": ""}, "extframeseq '' is not an integer from 0 to 2147483646"),
        ({**BEGIN, "extframeseq": " 0"}, "extframeseq ' 0' is not an integer from 0 to 2147483646"),
        ({**BEGIN, "extframeseq": "\u00b2"}, "extframeseq '\u00b2' is not an integer from 0 to 2147483646"),
        ({**BEGIN, "extframeseq": "\u0661"}, "extframeseq '\u0661' is not an integer from 0 to 2147483646"),
        ({**BEGIN, "extframeseq": "1" * 13}, "is not an integer from 0 to 2147483646"),
        ({**BEGIN, "extframeseq": "2147483647"}, "is not an integer from 0 to 2147483646"),
        ({**BEGIN, "extframeseq": "1"}, "a begin frame must have sequence number 0"),
        ({k: v for k, v in COMPLETE.items() if k != "extframetotal"}, "extframetotal is required"),
        ({k: v for k, v in COMPLETE.items() if k != "extobjectcount"}, "extobjectcount is required"),
        ({**COMPLETE, "extframetotal": "many"}, "extframetotal 'many' is not an integer from 0 to 2147483646"),
        ({**COMPLETE, "extobjectcount": "-5"}, "extobjectcount '-5' is not an integer from 0 to 2147483646"),
        ({**COMPLETE, "extframeseq": "2"}, "complete frame has sequence 2 but says there are 2 frames"),
        ({**COMPLETE, "extframeseq": "0", "extframetotal": "2"}, "complete frame has sequence 0"),
        ({**COMPLETE, "extframeseq": "0", "extframetotal": "0"}, "says there are 0 frames"),
    ],
    ids=[
        "empty-resync-id",
        "resync-id-too-long",
        "resync-id-with-nul",
        "resync-id-with-space",
        "unknown-kind",
        "kind-is-case-sensitive",
        "missing-kind",
        "missing-seq",
        "word-seq",
        "negative-seq",
        "decimal-seq",
        "empty-seq",
        "padded-seq",
        "superscript-digit-seq",
        "arabic-indic-digit-seq",
        "absurdly-long-seq",
        "seq-past-a-32-bit-column",
        "begin-not-at-zero",
        "complete-without-total",
        "complete-without-count",
        "non-integer-total",
        "negative-count",
        "complete-seq-past-total",
        "complete-seq-before-last",
        "complete-with-zero-total",
    ],
)
def test_broken_framing_raises_bundle_error_saying_why(extensions: dict[str, str], reason: str) -> None:
    with pytest.raises(BundleError) as raised:
        FrameInfo.from_extensions(extensions)
    assert reason in str(raised.value)
