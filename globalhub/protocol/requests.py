"""Spec-direction requests (manager -> agents): the ``Resync`` CloudEvent, built and read in one place."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from globalhub.protocol.bundles import dumps
from globalhub.protocol.codec import OutgoingMessage, ReceivedEvent, encode
from globalhub.protocol.events import BROADCAST, EVENT_TYPE_PREFIX, MANAGER_SOURCE, RESYNC_EVENT_TYPE, EventType


class RequestError(ValueError):
    """A spec event that is not a usable resync request; ``str()`` says why."""


def resync_request(subject: str, types: Sequence[EventType | str]) -> OutgoingMessage:
    """A ``Resync`` for ``subject`` (a hub name or ``broadcast``); data = JSON array of full type strings."""
    full = [EventType.from_any(str(t)).value for t in types]
    return encode(event_type=RESYNC_EVENT_TYPE, source=MANAGER_SOURCE, subject=subject, data=dumps(full))


@dataclass(frozen=True)
class ResyncRequest:
    subject: str
    types: list[str]  # as sent: full type strings (or whatever the sender put there)


def read_resync_request(event: ReceivedEvent, hub: str) -> ResyncRequest | None:
    """The request if this event asks *this hub* to resync; None when it is for someone else.

    Raises :class:`RequestError` for a ``Resync`` that is malformed or not from the manager.
    """
    if event.type != RESYNC_EVENT_TYPE:
        return None
    if not event.subject:
        raise RequestError("Resync without a subject (a hub name or 'broadcast' is required)")
    if event.subject not in (hub, BROADCAST):
        return None
    if event.source != MANAGER_SOURCE:
        raise RequestError(f"Resync from source {event.source[:100]!r}, only {MANAGER_SOURCE!r} may ask")
    try:
        data = json.loads(event.data) if event.data else None
    except (ValueError, UnicodeDecodeError) as error:
        raise RequestError(f"Resync data is not JSON: {error}") from None
    if not isinstance(data, list) or not all(isinstance(item, str) for item in data):
        raise RequestError("Resync data must be a JSON array of event type strings")
    return ResyncRequest(event.subject, list(data))


def short_type(name: str) -> str:
    return name.removeprefix(EVENT_TYPE_PREFIX)
