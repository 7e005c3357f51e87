"""Sync and resync intervals per type: defaults as upstream, overridden by environment, changeable at run time.

Keys are upstream's ConfigMap keys: ``<short type>`` for the delta-sync interval, ``resync.<short type>`` for the
periodic full resync (e.g. ``managedcluster=5s``, ``resync.managedcluster=6h``).

* Environment: ``GH_AGENT_INTERVALS="managedcluster=10s,resync.managedcluster=1h"``.
* Run time: ``python -m agent_tasks.ctl set resync.managedcluster=1h`` writes the hub's Redis; every tick reads it,
  so a change takes effect within a second, without a restart. ``ctl unset <key>`` goes back to the default.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import timedelta

import redis

from agent_tasks.redisutil import text
from agent_tasks.types import STATUS_TYPES, StatusType
from globalhub.envconf import ConfigError, parse_duration

RESYNC_PREFIX = "resync."
MINIMUM = timedelta(milliseconds=100)


def interval_keys() -> list[str]:
    keys = []
    for name, kind in STATUS_TYPES.items():
        keys.append(name)
        if kind.resyncable:
            keys.append(RESYNC_PREFIX + name)
    return keys


def parse_setting(item: str) -> tuple[str, timedelta]:
    """``"resync.managedcluster=1h"`` -> (key, interval); :class:`ConfigError` saying what is wrong."""
    key, sep, value = item.partition("=")
    key = key.strip()
    if not sep:
        raise ConfigError(f"interval setting {item!r} must look like <key>=<duration>, e.g. managedcluster=5s")
    if key not in interval_keys():
        raise ConfigError(f"unknown interval key {key!r}; known: {', '.join(interval_keys())}")
    interval = parse_duration(value)
    if interval < MINIMUM:
        raise ConfigError(f"interval {key}={value.strip()} is shorter than {MINIMUM.total_seconds()}s")
    return key, interval


def parse_overrides(text_value: str) -> dict[str, timedelta]:
    overrides: dict[str, timedelta] = {}
    for item in text_value.split(","):
        if item.strip():
            key, interval = parse_setting(item)
            overrides[key] = interval
    return overrides


class Intervals:
    def __init__(self, client: redis.Redis, hub: str, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self._redis = client
        self._key = f"gh:{hub}:agent:intervals"
        self._env = parse_overrides(env.get("GH_AGENT_INTERVALS", ""))

    def snapshot(self) -> dict[str, timedelta]:
        """Every key's effective interval: run-time setting, else environment, else the type's default."""
        effective: dict[str, timedelta] = {}
        for status_type in STATUS_TYPES.values():
            effective[status_type.short] = status_type.sync_interval
            effective[RESYNC_PREFIX + status_type.short] = status_type.resync_interval
        effective.update(self._env)
        for raw_key, raw_value in self._redis.hgetall(self._key).items():
            key = text(raw_key)
            if key in effective:
                effective[key] = timedelta(seconds=float(text(raw_value)))
        return effective

    def sync(self, status_type: StatusType, snapshot: Mapping[str, timedelta] | None = None) -> timedelta:
        return (snapshot or self.snapshot())[status_type.short]

    def resync(self, status_type: StatusType, snapshot: Mapping[str, timedelta] | None = None) -> timedelta:
        return (snapshot or self.snapshot())[RESYNC_PREFIX + status_type.short]

    def set(self, item: str) -> tuple[str, timedelta]:
        key, interval = parse_setting(item)
        self._redis.hset(self._key, key, repr(interval.total_seconds()))
        return key, interval

    def unset(self, key: str) -> bool:
        if key not in interval_keys():
            raise ConfigError(f"unknown interval key {key!r}; known: {', '.join(interval_keys())}")
        return bool(self._redis.hdel(self._key, key))

    def runtime_settings(self) -> dict[str, timedelta]:
        return {text(k): timedelta(seconds=float(text(v))) for k, v in self._redis.hgetall(self._key).items()}
