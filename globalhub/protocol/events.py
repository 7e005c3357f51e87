"""CloudEvent type strings, attributes and topic names shared by the manager and the agents.

The strings are upstream's (``pkg/enum/event_type.go``), so an upstream agent or manager can talk to ours.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Final

EVENT_TYPE_PREFIX: Final = "io.open-cluster-management.operator.multiclusterglobalhubs."


class EventType(StrEnum):
    """Full CloudEvent ``type`` of every status event. ``.short`` is the key used in configuration and logs."""

    HEARTBEAT = EVENT_TYPE_PREFIX + "managedhub.heartbeat"
    HUB_INFO = EVENT_TYPE_PREFIX + "managedhub.info"
    MANAGED_CLUSTER = EVENT_TYPE_PREFIX + "managedcluster"
    MANAGED_CLUSTER_EVENT = EVENT_TYPE_PREFIX + "event.managedcluster"
    LOCAL_POLICY_SPEC = EVENT_TYPE_PREFIX + "policy.localspec"
    LOCAL_COMPLIANCE = EVENT_TYPE_PREFIX + "policy.localcompliance"
    LOCAL_COMPLETE_COMPLIANCE = EVENT_TYPE_PREFIX + "policy.localcompletecompliance"
    LOCAL_ROOT_POLICY_EVENT = EVENT_TYPE_PREFIX + "event.localrootpolicy"
    LOCAL_REPLICATED_POLICY_EVENT = EVENT_TYPE_PREFIX + "event.localreplicatedpolicy"
    CLUSTER_GROUP_UPGRADE_EVENT = EVENT_TYPE_PREFIX + "event.clustergroupupgrade"

    @property
    def short(self) -> str:
        return self.value.removeprefix(EVENT_TYPE_PREFIX)

    @classmethod
    def from_any(cls, name: str) -> EventType:
        """Accept the full type string or its short key; raise ``ValueError`` for anything else."""
        full = name if name.startswith(EVENT_TYPE_PREFIX) else EVENT_TYPE_PREFIX + name
        return cls(full)


def short_name(event_type: str) -> str:
    """``managedcluster`` for a known type's full CloudEvent type string; anything else (a type of a newer agent,
    stored as it came) unchanged, so showing a stored type never fails."""
    return event_type.removeprefix(EVENT_TYPE_PREFIX) if event_type.startswith(EVENT_TYPE_PREFIX) else event_type


# What the manager asks for on start, on reactivation and by default: exactly these, in this order.
RESYNC_TYPES: Final = (
    EventType.HUB_INFO,
    EventType.MANAGED_CLUSTER,
    EventType.LOCAL_POLICY_SPEC,
    EventType.LOCAL_COMPLIANCE,
)

# Spec direction (manager -> agents).
RESYNC_EVENT_TYPE: Final = "Resync"
MANAGER_SOURCE: Final = "global-hub"
BROADCAST: Final = "broadcast"

DATA_CONTENT_TYPE: Final = "application/json"

# CloudEvent extension attributes. Names follow the CloudEvents rule: lower-case letters and digits only.
EXT_VERSION: Final = "extversion"
EXT_DEPENDENCY_VERSION: Final = "extdependencyversion"
EXT_SEND_MODE: Final = "sendmode"
# Our resync framing (upstream sends one unframed ``resync_metadata`` bundle, see bundles.py).
EXT_RESYNC_ID: Final = "extresyncid"
EXT_FRAME: Final = "extframe"
# Anti-entropy digests riding with a heartbeat (ours; see digest.py).
EXT_DIGEST: Final = "ghdigest"
EXT_FRAME_SEQ: Final = "extframeseq"
EXT_FRAME_TOTAL: Final = "extframetotal"
EXT_OBJECT_COUNT: Final = "extobjectcount"
# Which manager requests a full state answers (ours; upstream managers ignore it): on a ``Resync`` the request's id
# (``ghrequest``), on every message of a full resync the ids it answers, comma-separated (``ghrequests``).
EXT_REQUEST: Final = "ghrequest"
EXT_ANSWERS: Final = "ghrequests"
# On every full state this project's agent sends (``"1"``): it names in ``ghrequests`` every request it answers, so
# the manager never infers an answer from the time Kafka stored it (which it does for an upstream agent's).
EXT_ANSWERS_NAMED: Final = "ghanswersnamed"

DEFAULT_SPEC_TOPIC: Final = "gh-spec"
DEFAULT_STATUS_TOPIC_PREFIX: Final = "gh-status."

# Kafka topic names: ASCII letters, digits, '.', '_' and '-', at most 249 characters.
_TOPIC_SAFE = re.compile(r"[A-Za-z0-9._-]+")
HUB_NAME_MAX = 200


def validate_hub_name(name: str) -> str:
    """A hub name must be usable inside a topic name; return it or raise ``ValueError`` saying why."""
    if not name or len(name) > HUB_NAME_MAX or not _TOPIC_SAFE.fullmatch(name):
        raise ValueError(f"hub name {name!r} must be 1-{HUB_NAME_MAX} characters of letters, digits, '.', '_' or '-'")
    return name


def status_topic(hub: str, prefix: str = DEFAULT_STATUS_TOPIC_PREFIX) -> str:
    """The per-hub status topic, ``gh-status.<hub>``."""
    return prefix + validate_hub_name(hub)


def hub_from_status_topic(topic: str, prefix: str = DEFAULT_STATUS_TOPIC_PREFIX) -> str | None:
    """The hub a per-hub status topic belongs to, or None when the topic is not one of ours."""
    if not topic.startswith(prefix):
        return None
    hub = topic[len(prefix) :]
    try:
        return validate_hub_name(hub)
    except ValueError:
        return None


def status_topic_pattern(prefix: str = DEFAULT_STATUS_TOPIC_PREFIX) -> str:
    """librdkafka regex subscription (a leading ``^`` marks a pattern) matching every hub's status topic."""
    return "^" + re.escape(prefix) + r"[A-Za-z0-9._-]+$"
