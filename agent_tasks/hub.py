"""This hub's name and its Redis: what every agent process needs, without the Kafka client the watcher does not use."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from globalhub.envconf import env_str
from globalhub.protocol.events import validate_hub_name

DEFAULT_HUB = "hub1"
DEFAULT_REDIS_URL = "redis://127.0.0.1:56379/1"


@dataclass(frozen=True)
class HubConfig:
    hub_name: str
    redis_url: str

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> HubConfig:
        return cls(
            hub_name=validate_hub_name(env_str("HUB_NAME", DEFAULT_HUB, environ)),
            redis_url=env_str("REDIS_URL", DEFAULT_REDIS_URL, environ),
        )
