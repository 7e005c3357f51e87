"""Properties of ``Version`` over the whole uint64 space (hypothesis)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from globalhub.protocol.version import OVERFLOW_THRESHOLD, UINT64_MAX, Version, VersionError

uint64 = st.integers(min_value=0, max_value=UINT64_MAX)
versions = st.builds(Version, uint64, uint64)
# Versions drawn mostly near the interesting edges, plus anywhere.
small = st.integers(min_value=0, max_value=5)
counters = st.one_of(small, uint64)
clustered_versions = st.builds(Version, counters, counters)
# Far enough below the threshold that a hundred operations never reach it.
below_threshold = st.integers(min_value=0, max_value=OVERFLOW_THRESHOLD - 1_000)
operations = st.lists(st.sampled_from(["incr", "next"]), max_size=100)


@given(uint64, uint64)
def test_str_then_parse_round_trips_every_uint64_pair(generation: int, value: int) -> None:
    text = str(Version(generation, value))
    assert text == f"{generation}.{value}"
    assert Version.parse(text) == Version(generation, value)


@given(st.text(max_size=50))
def test_parse_either_rejects_with_version_error_or_round_trips(text: str) -> None:
    try:
        version = Version.parse(text)
    except VersionError:
        return
    assert Version.parse(str(version)) == version
    generation, value = text.split(".")
    assert (version.generation, version.value) == (int(generation), int(value))


@given(clustered_versions, clustered_versions)
def test_newer_than_matches_tuple_comparison(a: Version, b: Version) -> None:
    assert a.newer_than(b) == ((a.generation, a.value) > (b.generation, b.value))


@given(clustered_versions, clustered_versions)
def test_newer_than_is_a_strict_total_order_exactly_one_relation_holds(a: Version, b: Version) -> None:
    relations = [a.newer_than(b), b.newer_than(a), a == b]
    assert relations.count(True) == 1


@given(clustered_versions)
def test_newer_than_is_irreflexive(a: Version) -> None:
    assert a.newer_than(a.copy()) is False


@given(clustered_versions, clustered_versions, clustered_versions)
def test_newer_than_is_transitive(a: Version, b: Version, c: Version) -> None:
    if a.newer_than(b) and b.newer_than(c):
        assert a.newer_than(c)


@given(versions)
def test_newer_than_or_equal_is_reflexive(a: Version) -> None:
    assert a.newer_than_or_equal(a.copy()) is True


@given(clustered_versions, clustered_versions)
def test_newer_than_or_equal_matches_component_wise_comparison(a: Version, b: Version) -> None:
    assert a.newer_than_or_equal(b) == (a.generation >= b.generation and a.value >= b.value)


@given(clustered_versions, clustered_versions)
def test_newer_than_or_equal_implies_not_older(a: Version, b: Version) -> None:
    # Component-wise >= is stricter than lexicographic >=.
    if a.newer_than_or_equal(b):
        assert not b.newer_than(a)


@given(clustered_versions, clustered_versions)
def test_newer_generation_than_and_value_comparisons_match_their_fields(a: Version, b: Version) -> None:
    assert a.newer_generation_than(b) == (a.generation >= b.generation)
    assert a.newer_value_than(b) == (a.value > b.value)
    assert a.equal_value(b) == (a.value == b.value)


@given(below_threshold, below_threshold, operations)
def test_incr_and_next_below_the_threshold_are_monotonic_within_one_run(
    generation: int, value: int, steps: list[str]
) -> None:
    version = Version(generation, value)
    history = [version.copy()]
    for step in steps:
        getattr(version, step)()
        for earlier in history:
            assert version.newer_than_or_equal(earlier)
            assert version.newer_than(earlier)
            assert not earlier.newer_than_or_equal(version)
        history.append(version.copy())
    assert version.generation == generation + steps.count("next")
    assert version.value == value + steps.count("incr")


@given(versions)
def test_after_reset_the_version_equals_zero_zero(a: Version) -> None:
    a.reset()
    assert a == Version(0, 0)
    assert str(a) == "0.0"
    assert a.init_gen()


@given(st.integers(min_value=OVERFLOW_THRESHOLD - 1, max_value=UINT64_MAX), uint64)
def test_incr_at_or_past_the_threshold_resets_both(value: int, generation: int) -> None:
    version = Version(generation, value)
    version.incr()
    assert version == Version(0, 0)


@given(st.integers(min_value=OVERFLOW_THRESHOLD - 1, max_value=UINT64_MAX), uint64)
def test_next_at_or_past_the_threshold_resets_both(generation: int, value: int) -> None:
    version = Version(generation, value)
    version.next()
    assert version == Version(0, 0)
