"""Per-type bookkeeping of one agent, in the hub's Redis so every agent process shares it.

``gh:<hub>:agent:state`` holds ``<type>.<field>`` entries:

* ``last_sync`` / ``last_resync``: when the type's delta check / full resync last ran (epoch seconds);
* ``cursor``: the change-stream id up to which changes were sent;
* ``last_error`` / ``last_error_at``: the last failure, for the status command.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import redis

from agent_tasks.redisutil import text

FIELDS = ("last_sync", "last_resync", "cursor", "last_error", "last_error_at", "last_sent", "sent_messages")


@dataclass
class TypeState:
    last_sync: float | None = None
    last_resync: float | None = None
    cursor: str = "0-0"
    last_error: str = ""
    last_error_at: float | None = None
    last_sent: float | None = None
    sent_messages: int = 0
    extra: dict[str, str] = field(default_factory=dict)


class StateStore:
    def __init__(self, client: redis.Redis, hub: str) -> None:
        self._redis = client
        self._key = self.key(hub)

    @staticmethod
    def key(hub: str) -> str:
        return f"gh:{hub}:agent:state"

    def all(self) -> dict[str, TypeState]:
        states: dict[str, TypeState] = {}
        for raw_key, raw_value in self._redis.hgetall(self._key).items():
            name, _, attribute = text(raw_key).rpartition(".")
            value = text(raw_value)
            state = states.setdefault(name, TypeState())
            if attribute in ("last_sync", "last_resync", "last_error_at", "last_sent"):
                setattr(state, attribute, float(value))
            elif attribute == "sent_messages":
                state.sent_messages = int(value)
            elif attribute in ("cursor", "last_error"):
                setattr(state, attribute, value)
        return states

    def get(self, name: str) -> TypeState:
        return self.all().get(name, TypeState())

    def update(self, name: str, **values: float | str | None) -> None:
        mapping: dict[str | bytes, str | bytes] = {
            f"{name}.{k}": (repr(v) if isinstance(v, float) else str(v)) for k, v in values.items() if v is not None
        }
        if mapping:
            self._redis.hset(self._key, mapping=mapping)  # type: ignore[arg-type]

    def count_sent(self, name: str, messages: int, now: float) -> None:
        pipe = self._redis.pipeline()
        pipe.hincrby(self._key, f"{name}.sent_messages", messages)
        pipe.hset(self._key, f"{name}.last_sent", repr(now))
        pipe.execute()

    def record_error(self, name: str, error: str, now: float) -> None:
        self.update(name, last_error=error[:500], last_error_at=now)

    def clear_error(self, name: str) -> None:
        self._redis.hdel(self._key, f"{name}.last_error", f"{name}.last_error_at")

    def reset(self) -> None:
        self._redis.delete(self._key)
