"""Spec-direction requests (manager -> agents): the ``Resync`` CloudEvent, built and read in one place."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from globalhub.protocol.bundles import dumps
from globalhub.protocol.codec import OutgoingMessage, ReceivedEvent, encode
from globalhub.protocol.events import (
    BROADCAST,
    EVENT_TYPE_PREFIX,
    EXT_ANSWERS,
    EXT_ANSWERS_NAMED,
    EXT_REQUEST,
    MANAGER_SOURCE,
    RESYNC_EVENT_TYPE,
    EventType,
)


class RequestError(ValueError):
    """A spec event that is not a usable resync request; ``str()`` says why."""


MAX_ANSWERS = 20  # request ids one full state carries at most (the newest): a backlog of requests is answered by one


def resync_request(subject: str, types: Sequence[EventType | str], request_id: str | None = None) -> OutgoingMessage:
    """A ``Resync`` for ``subject`` (a hub name or ``broadcast``); data = JSON array of full type strings.

    ``request_id`` (the manager's record of the request) goes in the ``ghrequest`` extension: the full states that
    answer it carry it back, which is how the manager knows them (upstream agents ignore it).
    """
    full = [EventType.from_any(str(t)).value for t in types]
    extensions = {EXT_REQUEST: request_id} if request_id else None
    return encode(
        event_type=RESYNC_EVENT_TYPE, source=MANAGER_SOURCE, subject=subject, data=dumps(full), extensions=extensions
    )


@dataclass(frozen=True)
class ResyncRequest:
    subject: str
    types: list[str]  # as sent: full type strings (or whatever the sender put there)
    request_id: str = ""  # the manager's id of the request, when it gave one


_REQUEST_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


def answers_extension(request_ids: Iterable[str]) -> dict[str, str]:
    """The extensions every full state of this project's agent carries: the marker ``ghanswersnamed`` (it names
    every request it answers, none when it answers none) and, when it answers some, their ids in ``ghrequests``."""
    ids = [i for i in dict.fromkeys(request_ids) if _REQUEST_ID.fullmatch(i)][-MAX_ANSWERS:]
    return {EXT_ANSWERS_NAMED: "1", **({EXT_ANSWERS: ",".join(ids)} if ids else {})}


def answered_requests(extensions: Mapping[str, str]) -> list[str]:
    """The request ids a received full state says it answers (malformed ones are left out)."""
    raw = extensions.get(EXT_ANSWERS) or ""
    return [i for i in raw.split(",") if _REQUEST_ID.fullmatch(i)][:MAX_ANSWERS]


def names_its_answers(extensions: Mapping[str, str]) -> bool:
    """Whether a received full state names the requests it answers (this project's agent, see
    :func:`answers_extension`): then it answers those and no other, whenever Kafka stored it."""
    return EXT_ANSWERS_NAMED in extensions or EXT_ANSWERS in extensions


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
    request_id = event.extension(EXT_REQUEST) or ""
    return ResyncRequest(event.subject, list(data), request_id if _REQUEST_ID.fullmatch(request_id) else "")


def short_type(name: str) -> str:
    return name.removeprefix(EVENT_TYPE_PREFIX)
