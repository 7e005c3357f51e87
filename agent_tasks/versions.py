"""The agent's bundle version per type, kept in the hub's Redis so every worker process shares it."""

from __future__ import annotations

import redis

from agent_tasks.redisutil import text
from globalhub.protocol.version import Version


class VersionStore:
    def __init__(self, client: redis.Redis, hub: str) -> None:
        self._redis = client
        self._key = f"gh:{hub}:agent:versions"

    def get(self, short_type: str) -> Version:
        raw = self._redis.hget(self._key, short_type)
        return Version.parse(text(raw)) if raw else Version()

    def set(self, short_type: str, version: Version) -> None:
        self._redis.hset(self._key, short_type, str(version))

    def advance_generation(self, short_type: str) -> Version:
        """``Next`` after a confirmed send. Callers hold the type's lock, so read-modify-write is safe."""
        version = self.get(short_type)
        version.next()
        self.set(short_type, version)
        return version

    def reset_all(self) -> None:
        self._redis.delete(self._key)

    def all(self) -> dict[str, Version]:
        return {text(k): Version.parse(text(v)) for k, v in self._redis.hgetall(self._key).items()}
