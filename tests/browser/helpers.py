"""What browser tests do often: log in through the form, watch a self-refreshing page, and answer a resync request
the way a hub's agent does (its full states, ingested by the manager's own pipeline)."""

from __future__ import annotations

import time
import uuid

from django.conf import settings
from playwright.sync_api import Locator, Page, expect

from globalhub.manager.ingest.pipeline import ingest_batch
from globalhub.manager.ingest.records import Record
from globalhub.manager.models import ConsumedPosition, ResyncRequest
from globalhub.protocol.bundles import frame_resync
from globalhub.protocol.codec import OutgoingMessage
from globalhub.protocol.events import EventType
from globalhub.protocol.requests import answers_extension
from tests.helpers import record_of, status_message

# Each check between two reloads: short, so a page that shows the change only after a reload is reloaded soon.
RELOAD_EVERY_MS = 3_000


def log_in(page: Page, username: str, password: str) -> None:
    """Log in through the admin's real login form, and wait for the admin index it leads to."""
    page.goto("/admin/login/?next=/admin/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("input[type=submit]")
    page.wait_for_url("**/admin/")
    expect(page.locator("#user-tools")).to_contain_text(username)


def expect_text_after_reloads(page: Page, locator: Locator, text: str, *, timeout: float) -> None:
    """Wait until ``locator`` contains ``text``, reloading the page between checks (as its own refresh would).

    Fails with Playwright's last assertion error after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            expect(locator).to_contain_text(text, timeout=RELOAD_EVERY_MS)
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            page.reload()


def answer_resync(request: ResyncRequest) -> None:
    """Ingest, through the consumer's pipeline, the full states a hub's agent sends to answer ``request``: one per
    requested type, empty, each naming the request (``ghrequests``)."""
    hub = request.subject
    prefix = settings.GLOBALHUB.status_topic_prefix
    topic = prefix + hub
    position = ConsumedPosition.objects.filter(topic=topic, partition=0).values_list("next_offset", flat=True).first()
    offset = position or 0
    answered = answers_extension([str(request.pk)])
    records: list[Record] = []
    for name in request.types:
        for message in full_state_messages(hub, EventType(name), answered):
            records.append(record_of(message, topic, offset))
            offset += 1
    ingest_batch(records, topic_prefix=prefix)


def full_state_messages(hub: str, kind: EventType, extensions: dict[str, str]) -> list[OutgoingMessage]:
    """An empty full state of ``kind`` as this project's agent sends it (framed for clusters and policies)."""
    version = "1.1"  # an answer to a request is taken whatever its version (ingest/admission.py)
    if kind in (EventType.MANAGED_CLUSTER, EventType.LOCAL_POLICY_SPEC):
        return [
            status_message(hub, kind, frame.payload, version, {**frame.extensions(), **extensions})
            for frame in frame_resync([])
        ]
    if kind is EventType.HUB_INFO:
        info = {"clusterId": str(uuid.uuid4()), "consoleURL": "https://console.example.invalid"}
        return [status_message(hub, kind, info, version, extensions)]
    return [status_message(hub, kind, [], version, extensions)]
