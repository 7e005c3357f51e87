"""``Version``: upstream's ``pkg/bundle/version/version.go`` semantics (reference section 4.1), as plain functions."""

from __future__ import annotations

from typing import Any

import pytest

from globalhub.protocol.version import OVERFLOW_THRESHOLD, UINT64_MAX, Version, VersionError

THRESHOLD = 2**64 - 1 - 100


def v(text: str) -> Version:
    return Version.parse(text)


def test_the_overflow_constants_are_upstreams() -> None:
    assert UINT64_MAX == 18446744073709551615
    assert OVERFLOW_THRESHOLD == THRESHOLD == 18446744073709551515


def test_a_new_version_is_zero_zero() -> None:
    version = Version()
    assert (version.generation, version.value) == (0, 0)
    assert str(version) == "0.0"


# --- parse / format -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "generation", "value"),
    [
        ("0.0", 0, 0),
        ("1.2", 1, 2),
        ("12.345", 12, 345),
        ("007.010", 7, 10),
        ("18446744073709551615.18446744073709551615", UINT64_MAX, UINT64_MAX),
        ("0.18446744073709551615", 0, UINT64_MAX),
    ],
    ids=["zero", "small", "multi-digit", "leading-zeros", "max-uint64-both", "max-uint64-value"],
)
def test_parse_accepts_two_unsigned_decimals(text: str, generation: int, value: int) -> None:
    version = Version.parse(text)
    assert (version.generation, version.value) == (generation, value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0.0", "0.0"),
        ("12.345", "12.345"),
        ("18446744073709551615.18446744073709551615", "18446744073709551615.18446744073709551615"),
        ("007.010", "7.10"),
    ],
    ids=["zero", "multi-digit", "max-uint64", "leading-zeros-normalised"],
)
def test_str_writes_generation_dot_value(text: str, expected: str) -> None:
    assert str(Version.parse(text)) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "exactly two parts"),
        ("1", "exactly two parts"),
        ("1.2.3", "exactly two parts"),
        ("a.1", "generation 'a' is not an unsigned decimal integer"),
        ("1.b", "value 'b' is not an unsigned decimal integer"),
        ("-1.2", "generation '-1' is not an unsigned decimal integer"),
        ("1.-2", "value '-2' is not an unsigned decimal integer"),
        ("+1.2", "generation '+1' is not an unsigned decimal integer"),
        (" 1.2", "generation ' 1' is not an unsigned decimal integer"),
        ("1.2 ", "value '2 ' is not an unsigned decimal integer"),
        ("1.2\n", "value '2\\n' is not an unsigned decimal integer"),
        ("1.", "value '' is not an unsigned decimal integer"),
        (".1", "generation '' is not an unsigned decimal integer"),
        ("1_0.2", "generation '1_0' is not an unsigned decimal integer"),
        ("\u0661.2", "is not an unsigned decimal integer"),
        ("0x1.2", "generation '0x1' is not an unsigned decimal integer"),
        ("18446744073709551616.0", "generation overflows an unsigned 64-bit integer"),
        ("0.18446744073709551616", "value overflows an unsigned 64-bit integer"),
    ],
    ids=[
        "empty",
        "one-part",
        "three-parts",
        "letter-generation",
        "letter-value",
        "negative-generation",
        "negative-value",
        "plus-sign",
        "leading-space",
        "trailing-space",
        "trailing-newline",
        "missing-value",
        "missing-generation",
        "underscore-digit-separator",
        "non-ascii-digit",
        "hex",
        "generation-overflow",
        "value-overflow",
    ],
)
def test_parse_rejects_malformed_text_saying_why(text: str, reason: str) -> None:
    with pytest.raises(VersionError) as raised:
        Version.parse(text)
    assert reason in str(raised.value)
    assert repr(text) in str(raised.value)


@pytest.mark.parametrize("value", [None, 12, 1.2, b"1.2", ["1", "2"]], ids=["none", "int", "float", "bytes", "list"])
def test_parse_rejects_non_string_input(value: Any) -> None:
    with pytest.raises(VersionError, match=f"version must be a string, got {type(value).__name__}"):
        Version.parse(value)


def test_version_error_is_a_value_error() -> None:
    assert issubclass(VersionError, ValueError)


@pytest.mark.parametrize(
    ("generation", "value", "reason"),
    [
        (-1, 0, "generation -1 is outside the unsigned 64-bit range"),
        (0, 2**64, "value 18446744073709551616 is outside the unsigned 64-bit range"),
        (True, 0, "generation must be an int, got bool"),
        (0, "1", "value must be an int, got str"),
    ],
    ids=["negative", "overflow", "bool", "string"],
)
def test_the_constructor_rejects_counters_that_are_not_uint64(generation: Any, value: Any, reason: str) -> None:
    with pytest.raises(VersionError, match=reason):
        Version(generation, value)


# --- incr / next / reset / init_gen ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ("0.0", "0.1"),
        ("3.7", "3.8"),
        (f"5.{THRESHOLD - 2}", f"5.{THRESHOLD - 1}"),
        (f"5.{THRESHOLD - 1}", "0.0"),
        (f"5.{THRESHOLD}", "0.0"),
        (f"5.{UINT64_MAX}", "0.0"),
    ],
    ids=["from-zero", "keeps-generation", "just-below-threshold", "reaching-threshold", "past-threshold", "max"],
)
def test_incr_adds_one_to_the_value_and_resets_both_at_the_threshold(before: str, after: str) -> None:
    version = v(before)
    version.incr()
    assert str(version) == after


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ("0.0", "1.0"),
        ("3.7", "4.7"),
        (f"{THRESHOLD - 2}.9", f"{THRESHOLD - 1}.9"),
        (f"{THRESHOLD - 1}.9", "0.0"),
        (f"{UINT64_MAX}.9", "0.0"),
    ],
    ids=["from-zero", "keeps-value", "just-below-threshold", "reaching-threshold", "max"],
)
def test_next_adds_one_to_the_generation_and_resets_both_at_the_threshold(before: str, after: str) -> None:
    version = v(before)
    version.next()
    assert str(version) == after


def test_next_keeps_the_value() -> None:
    version = v("2.41")
    version.next()
    assert version.value == 41
    assert version.generation == 3


def test_incr_keeps_the_generation() -> None:
    version = v("9.1")
    version.incr()
    assert version.generation == 9


def test_incr_then_next_mirrors_a_change_then_a_send() -> None:
    version = Version()
    version.incr()
    version.incr()
    version.next()
    version.incr()
    assert str(version) == "1.3"


def test_reset_sets_both_counters_to_zero() -> None:
    version = v("17.4")
    version.reset()
    assert str(version) == "0.0"
    assert version == Version(0, 0)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("0.0", True), ("0.55", True), ("1.0", False), ("12.0", False)],
    ids=["zero-zero", "zero-generation-with-value", "generation-one", "generation-twelve"],
)
def test_init_gen_is_true_only_for_generation_zero(text: str, expected: bool) -> None:
    assert v(text).init_gen() is expected


def test_copy_is_independent_of_the_original() -> None:
    original = v("3.4")
    copy = original.copy()
    copy.incr()
    copy.next()
    assert str(original) == "3.4"
    assert str(copy) == "4.5"


# --- comparisons ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("left", "right", "expected"),
    [
        ("1.0", "0.0", True),
        ("0.1", "0.0", True),
        ("5.3", "4.7", True),
        ("4.7", "5.3", False),
        ("2.2", "2.2", False),
        ("0.0", "0.0", False),
        ("2.3", "2.2", True),
        ("2.2", "2.3", False),
        ("3.0", "2.99", True),
        ("0.99", "1.0", False),
    ],
    ids=[
        "higher-generation",
        "higher-value",
        "generation-wins-over-value",
        "lower-generation-loses",
        "equal",
        "equal-zero",
        "same-generation-higher-value",
        "same-generation-lower-value",
        "generation-beats-large-value",
        "value-cannot-beat-generation",
    ],
)
def test_newer_than_is_lexicographic(left: str, right: str, expected: bool) -> None:
    assert v(left).newer_than(v(right)) is expected


def test_newer_than_none_is_true() -> None:
    assert Version().newer_than(None) is True


@pytest.mark.parametrize(
    ("left", "right", "expected"),
    [
        ("2.2", "2.2", True),
        ("0.0", "0.0", True),
        ("3.3", "2.2", True),
        ("3.2", "2.2", True),
        ("2.3", "2.2", True),
        ("5.3", "4.7", False),
        ("4.7", "5.3", False),
        ("1.1", "2.2", False),
    ],
    ids=[
        "equal",
        "equal-zero",
        "both-higher",
        "only-generation-higher",
        "only-value-higher",
        "higher-generation-lower-value",
        "lower-generation-higher-value",
        "both-lower",
    ],
)
def test_newer_than_or_equal_is_component_wise(left: str, right: str, expected: bool) -> None:
    assert v(left).newer_than_or_equal(v(right)) is expected


def test_five_three_is_newer_than_four_seven_but_not_newer_than_or_equal() -> None:
    assert v("5.3").newer_than(v("4.7")) is True
    assert v("5.3").newer_than_or_equal(v("4.7")) is False


def test_newer_than_or_equal_none_is_true() -> None:
    assert Version().newer_than_or_equal(None) is True


@pytest.mark.parametrize(
    ("left", "right", "expected"),
    [("1.5", "9.5", True), ("1.5", "1.6", False), ("0.0", "7.0", True)],
    ids=["same-value-different-generation", "different-value", "both-zero-values"],
)
def test_equal_value_compares_only_the_value(left: str, right: str, expected: bool) -> None:
    assert v(left).equal_value(v(right)) is expected


def test_equal_value_with_none_is_false() -> None:
    assert Version().equal_value(None) is False


@pytest.mark.parametrize(
    ("left", "right", "expected"),
    [("0.6", "9.5", True), ("9.5", "0.5", False), ("9.4", "0.5", False)],
    ids=["higher-value-lower-generation", "equal-value", "lower-value"],
)
def test_newer_value_than_is_strictly_greater_value(left: str, right: str, expected: bool) -> None:
    assert v(left).newer_value_than(v(right)) is expected


def test_newer_value_than_none_is_true() -> None:
    assert Version().newer_value_than(None) is True


@pytest.mark.parametrize(
    ("left", "right", "expected"),
    [("3.0", "2.9", True), ("3.0", "3.9", True), ("2.9", "3.0", False), ("0.0", "0.0", True)],
    ids=["higher-generation", "equal-generation-counts", "lower-generation", "zero-equal"],
)
def test_newer_generation_than_includes_equality(left: str, right: str, expected: bool) -> None:
    assert v(left).newer_generation_than(v(right)) is expected


def test_newer_generation_than_none_is_true() -> None:
    assert Version().newer_generation_than(None) is True


def test_comparisons_do_not_mutate_either_side() -> None:
    left, right = v("5.3"), v("4.7")
    left.newer_than(right)
    left.newer_than_or_equal(right)
    left.equal_value(right)
    left.newer_value_than(right)
    left.newer_generation_than(right)
    assert (str(left), str(right)) == ("5.3", "4.7")


def test_equality_compares_both_fields() -> None:
    assert v("1.2") == Version(1, 2)
    assert v("1.2") != Version(2, 1)
