"""The agent's configuration, from the environment (see README "Configuration")."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from agent_tasks.emitter import SendMode
from agent_tasks.hub import HubConfig
from globalhub.envconf import ConfigError, env_duration, env_int, env_str
from globalhub.protocol.events import DEFAULT_SPEC_TOPIC, DEFAULT_STATUS_TOPIC_PREFIX, status_topic
from globalhub.protocol.kafka import KafkaSettings


@dataclass(frozen=True)
class AgentConfig:
    hub_name: str
    redis_url: str
    kafka: KafkaSettings
    spec_topic: str = DEFAULT_SPEC_TOPIC
    status_topic_prefix: str = DEFAULT_STATUS_TOPIC_PREFIX
    send_mode: SendMode = SendMode.BATCH
    send_timeout_ms: int = 15_000  # a send fails when Kafka confirmed nothing for this long
    metrics_port: int = 0  # the spec listener's own metrics endpoint (0.0.0.0), kept for existing deployments

    @property
    def status_topic(self) -> str:
        return status_topic(self.hub_name, self.status_topic_prefix)

    @property
    def spec_group(self) -> str:
        """The spec listener's consumer group: one per hub, as upstream (``-`` becomes ``_``)."""
        return "globalhub_agent_" + self.hub_name.replace("-", "_")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> AgentConfig:
        env = os.environ if environ is None else environ
        mode = env_str("GH_SEND_MODE", SendMode.BATCH.value, env)
        try:
            send_mode = SendMode(mode)
        except ValueError:
            raise ConfigError(f"GH_SEND_MODE={mode!r} must be 'batch' or 'single'") from None
        hub = HubConfig.from_env(env)
        return cls(
            hub_name=hub.hub_name,
            redis_url=hub.redis_url,
            kafka=KafkaSettings.from_env(env),
            spec_topic=env_str("GH_SPEC_TOPIC", DEFAULT_SPEC_TOPIC, env),
            status_topic_prefix=env_str("GH_STATUS_TOPIC_PREFIX", DEFAULT_STATUS_TOPIC_PREFIX, env),
            send_mode=send_mode,
            send_timeout_ms=int(env_duration("GH_SEND_TIMEOUT", "15s", env).total_seconds() * 1000),
            metrics_port=env_int("GH_AGENT_METRICS_PORT", 0, env),
        )


DEFAULT_METRICS_ADDR = "127.0.0.1:9109"


@dataclass(frozen=True)
class MetricsConfig:
    """The metrics process (``python -m agent_tasks.metrics``): this hub, and where to serve.

    ``GH_AGENT_METRICS_ADDR`` is ``host:port`` (``[::1]:9109`` for IPv6); loopback by default, so the agent's state
    is not published on every interface unless asked (a container sets ``0.0.0.0:9109``).
    """

    hub: HubConfig
    host: str
    port: int
    explicit: bool  # the address was set, not the default

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> MetricsConfig:
        env = os.environ if environ is None else environ
        raw = env_str("GH_AGENT_METRICS_ADDR", "", env).strip()
        host, port = parse_address(raw or DEFAULT_METRICS_ADDR)
        return cls(hub=HubConfig.from_env(env), host=host, port=port, explicit=bool(raw))


def parse_address(raw: str) -> tuple[str, int]:
    """``host:port`` or ``[v6 host]:port`` as (host, port); a port from 1 to 65535 is required."""
    host, sep, port_text = raw.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigError(f"GH_AGENT_METRICS_ADDR={raw!r} must be host:port, e.g. {DEFAULT_METRICS_ADDR}")
    return host, int(port_text)
