"""Typed environment helpers: durations, booleans, integers, strings and ``*_FILE`` secrets."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from globalhub.envconf import ConfigError, env_bool, env_duration, env_int, env_str, parse_duration

# --- parse_duration -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("5s", timedelta(seconds=5)),
        ("500ms", timedelta(milliseconds=500)),
        ("2m", timedelta(minutes=2)),
        ("6h", timedelta(hours=6)),
        ("1d", timedelta(days=1)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1m500ms", timedelta(minutes=1, milliseconds=500)),
        ("1d2h3m4s5ms", timedelta(days=1, hours=2, minutes=3, seconds=4, milliseconds=5)),
        ("90", timedelta(seconds=90)),
        ("0", timedelta(0)),
        ("0s", timedelta(0)),
        ("2.5", timedelta(seconds=2.5)),
        ("1.5s", timedelta(seconds=1.5)),
        ("0.5h", timedelta(minutes=30)),
        (" 5s ", timedelta(seconds=5)),
        ("5S", timedelta(seconds=5)),
        ("6H", timedelta(hours=6)),
    ],
    ids=[
        "seconds",
        "milliseconds",
        "minutes",
        "hours",
        "days",
        "hours-and-minutes",
        "minutes-and-milliseconds",
        "every-unit",
        "plain-seconds",
        "zero",
        "zero-seconds",
        "plain-fractional-seconds",
        "fractional-seconds",
        "fractional-hours",
        "surrounding-space",
        "upper-case-seconds",
        "upper-case-hours",
    ],
)
def test_parse_duration_accepts(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty duration"),
        ("   ", "empty duration"),
        ("5x", "use a number with ms, s, m, h or d"),
        ("h", "use a number with ms, s, m, h or d"),
        ("ms", "use a number with ms, s, m, h or d"),
        ("5s3", "ends with a number without a unit"),
        ("1h30", "ends with a number without a unit"),
        ("5 s", "use a number with ms, s, m, h or d"),
        ("1..5s", "'1..5' is not a number"),
        (".s", "'.' is not a number"),
        ("-5s", "use a number with ms, s, m, h or d"),
        ("-5", "must not be negative"),
        ("-0.5", "must not be negative"),
        ("inf", "is not a finite"),
        ("nan", "is not a finite"),
        ("1e400", "is not a finite"),
        ("99999999999999d", "too long"),
        ("5 seconds", "use a number with ms, s, m, h or d"),
    ],
    ids=[
        "empty",
        "blank",
        "unknown-unit",
        "unit-without-number",
        "ms-without-number",
        "trailing-number",
        "trailing-number-after-units",
        "space-before-unit",
        "two-dots",
        "lone-dot",
        "negative-with-unit",
        "negative-plain",
        "negative-fraction",
        "infinity",
        "not-a-number",
        "overflowing-float",
        "overflowing-days",
        "words",
    ],
)
def test_parse_duration_rejects_saying_why(text: str, reason: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_duration(text)
    assert reason in str(raised.value)


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)


# --- env_duration ---------------------------------------------------------------------------------------------------


def test_env_duration_reads_the_variable() -> None:
    assert env_duration("GH_SYNC", "5s", {"GH_SYNC": "2m"}) == timedelta(minutes=2)


def test_env_duration_uses_the_default_when_unset_or_empty() -> None:
    assert env_duration("GH_SYNC", "6h", {}) == timedelta(hours=6)
    assert env_duration("GH_SYNC", "6h", {"GH_SYNC": ""}) == timedelta(hours=6)


def test_env_duration_error_names_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"^GH_SYNC: duration '5x'"):
        env_duration("GH_SYNC", "5s", {"GH_SYNC": "5x"})


def test_env_duration_error_for_an_overflow_names_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"^GH_SYNC: "):
        env_duration("GH_SYNC", "5s", {"GH_SYNC": "inf"})


# --- env_bool -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1", True),
        ("true", True),
        ("True", True),
        ("YES", True),
        ("on", True),
        (" true ", True),
        ("0", False),
        ("false", False),
        ("FALSE", False),
        ("no", False),
        ("off", False),
        ("", False),
    ],
    ids=["1", "true", "title-true", "upper-yes", "on", "padded", "0", "false", "upper-false", "no", "off", "empty"],
)
def test_env_bool_reads_common_spellings(raw: str, expected: bool) -> None:
    assert env_bool("GH_FLAG", not expected, {"GH_FLAG": raw}) is expected


@pytest.mark.parametrize("default", [True, False])
def test_env_bool_uses_the_default_when_unset(default: bool) -> None:
    assert env_bool("GH_FLAG", default, {}) is default


@pytest.mark.parametrize("raw", ["2", "maybe", "y", "t", "enabled"])
def test_env_bool_rejects_other_values_naming_the_variable(raw: str) -> None:
    with pytest.raises(ConfigError) as raised:
        env_bool("GH_FLAG", False, {"GH_FLAG": raw})
    assert str(raised.value) == f"GH_FLAG={raw!r} is not a boolean (use true/false)"


# --- env_int --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"), [("0", 0), ("42", 42), (" 7 ", 7), ("007", 7)], ids=["zero", "int", "padded", "leading-zeros"]
)
def test_env_int_reads_the_variable(raw: str, expected: int) -> None:
    assert env_int("GH_N", 99, {"GH_N": raw}) == expected


@pytest.mark.parametrize("environ", [{}, {"GH_N": ""}, {"GH_N": "  "}], ids=["unset", "empty", "blank"])
def test_env_int_uses_the_default_when_unset_or_blank(environ: dict[str, str]) -> None:
    assert env_int("GH_N", 99, environ) == 99


@pytest.mark.parametrize("raw", ["ten", "1.5", "0x10", "5s"])
def test_env_int_rejects_a_non_integer_naming_the_variable(raw: str) -> None:
    with pytest.raises(ConfigError) as raised:
        env_int("GH_N", 1, {"GH_N": raw})
    assert str(raised.value) == f"GH_N={raw!r} is not an integer"


def test_env_int_rejects_a_value_below_the_minimum_naming_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"^GH_N=-1 must be at least 0$"):
        env_int("GH_N", 1, {"GH_N": "-1"})
    with pytest.raises(ConfigError, match=r"^GH_WORKERS=4 must be at least 5$"):
        env_int("GH_WORKERS", 10, {"GH_WORKERS": "4"}, minimum=5)


def test_env_int_accepts_the_minimum_itself() -> None:
    assert env_int("GH_WORKERS", 10, {"GH_WORKERS": "5"}, minimum=5) == 5
    assert env_int("GH_OFFSET", 0, {"GH_OFFSET": "-3"}, minimum=-10) == -3


# --- env_str and *_FILE ---------------------------------------------------------------------------------------------


def test_env_str_reads_the_variable() -> None:
    assert env_str("GH_NAME", "dflt", {"GH_NAME": "hub7"}) == "hub7"


def test_env_str_uses_the_default_when_unset_or_empty() -> None:
    assert env_str("GH_NAME", "dflt", {}) == "dflt"
    assert env_str("GH_NAME", "dflt", {"GH_NAME": ""}) == "dflt"


def test_env_str_reads_a_secret_from_the_file_variable(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("s3cr\u00e9t\n", encoding="utf-8")
    assert env_str("KAFKA_PASSWORD", "", {"KAFKA_PASSWORD_FILE": str(secret)}) == "s3cr\u00e9t"


def test_env_str_prefers_the_variable_over_the_file(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("from-file", encoding="utf-8")
    environ = {"KAFKA_PASSWORD": "direct", "KAFKA_PASSWORD_FILE": str(secret)}
    assert env_str("KAFKA_PASSWORD", "", environ) == "direct"


def test_env_str_uses_the_file_when_the_variable_is_empty(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("from-file", encoding="utf-8")
    environ = {"KAFKA_PASSWORD": "", "KAFKA_PASSWORD_FILE": str(secret)}
    assert env_str("KAFKA_PASSWORD", "", environ) == "from-file"


def test_env_str_with_an_empty_file_variable_uses_the_default() -> None:
    assert env_str("KAFKA_PASSWORD", "dflt", {"KAFKA_PASSWORD_FILE": ""}) == "dflt"


def test_env_str_with_a_missing_file_fails_naming_the_variable(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(ConfigError) as raised:
        env_str("KAFKA_PASSWORD", "dflt", {"KAFKA_PASSWORD_FILE": str(missing)})
    assert "KAFKA_PASSWORD_FILE" in str(raised.value)
    assert str(missing) in str(raised.value)


def test_env_str_with_a_directory_as_file_fails_naming_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="KAFKA_PASSWORD_FILE"):
        env_str("KAFKA_PASSWORD", "dflt", {"KAFKA_PASSWORD_FILE": str(tmp_path)})


def test_helpers_read_os_environ_when_no_mapping_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GH_TEST_ENVCONF_STR", "x")
    monkeypatch.setenv("GH_TEST_ENVCONF_BOOL", "yes")
    monkeypatch.setenv("GH_TEST_ENVCONF_INT", "12")
    monkeypatch.setenv("GH_TEST_ENVCONF_DURATION", "3m")
    assert env_str("GH_TEST_ENVCONF_STR", "") == "x"
    assert env_bool("GH_TEST_ENVCONF_BOOL", False) is True
    assert env_int("GH_TEST_ENVCONF_INT", 0) == 12
    assert env_duration("GH_TEST_ENVCONF_DURATION", "1s") == timedelta(minutes=3)
