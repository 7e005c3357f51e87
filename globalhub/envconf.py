"""Typed environment variables that fail loudly on bad values. Django-free: the agents use it too."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from datetime import timedelta

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


class ConfigError(ValueError):
    """An environment variable with a value that cannot be used."""


def env_str(name: str, default: str, environ: Mapping[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    value = env.get(name)
    if value:
        return value
    path = env.get(name + "_FILE")
    if path:
        try:
            with open(path, encoding="utf-8") as handle:
                return handle.read().strip()
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigError(f"{name}_FILE={path!r} cannot be read ({error})") from None
    return default


def env_bool(name: str, default: bool, environ: Mapping[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    raw = env.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"{name}={raw!r} is not a boolean (use true/false)")


def env_int(name: str, default: int, environ: Mapping[str, str] | None = None, *, minimum: int = 0) -> int:
    env = os.environ if environ is None else environ
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer") from None
    if value < minimum:
        raise ConfigError(f"{name}={value} must be at least {minimum}")
    return value


def parse_duration(text: str) -> timedelta:
    """``"500ms"``, ``"5s"``, ``"2m"``, ``"6h"``, ``"1d"``, combinations like ``"1h30m"``, or plain seconds."""
    raw = text.strip().lower()
    if not raw:
        raise ConfigError("empty duration")
    try:
        plain = float(raw)
    except ValueError:
        plain = None
    if plain is not None:
        return _seconds(text, plain)
    total = 0.0
    number = ""
    index = 0
    while index < len(raw):
        char = raw[index]
        if char.isdigit() or char == ".":
            number += char
            index += 1
            continue
        unit = "ms" if raw.startswith("ms", index) else char
        if unit not in _UNITS or not number:
            raise ConfigError(f"duration {text!r}: use a number with ms, s, m, h or d (e.g. 5s, 6h, 1h30m)")
        try:
            total += float(number) * _UNITS[unit]
        except ValueError:
            raise ConfigError(f"duration {text!r}: {number!r} is not a number") from None
        number = ""
        index += len(unit)
    if number:
        raise ConfigError(f"duration {text!r} ends with a number without a unit")
    return _seconds(text, total)


def _seconds(text: str, seconds: float) -> timedelta:
    # float() accepts "-5", "inf", "nan" and "1e400"; timedelta raises OverflowError past ~10^9 days.
    if not math.isfinite(seconds):
        raise ConfigError(f"duration {text!r} is not a finite number of seconds")
    if seconds < 0:
        raise ConfigError(f"duration {text!r} must not be negative")
    try:
        return timedelta(seconds=seconds)
    except OverflowError:
        raise ConfigError(f"duration {text!r} is too long") from None


def env_duration(name: str, default: str, environ: Mapping[str, str] | None = None) -> timedelta:
    env = os.environ if environ is None else environ
    raw = env.get(name) or default
    try:
        return parse_duration(raw)
    except ConfigError as error:
        raise ConfigError(f"{name}: {error}") from None
