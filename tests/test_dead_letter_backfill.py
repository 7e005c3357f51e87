"""Migration 0018 gives the dead letters stored before reason classes existed their class."""

from __future__ import annotations

import importlib

import pytest
from django.apps import apps

from globalhub.manager.models import DeadLetter

pytestmark = pytest.mark.django_db

backfill = importlib.import_module("globalhub.manager.migrations.0018_dead_letter_hub_index")


def stored(offset: int, reason: str, hub: str = "", event_type: str = "") -> DeadLetter:
    return DeadLetter.objects.create(
        topic="gh-status.hub1", partition=0, offset=offset, reason=reason, hub_name=hub, event_type=event_type
    )


def test_old_dead_letters_get_the_class_their_reason_tells() -> None:
    letters = [
        stored(1, "not a CloudEvent: no ce_specversion header (binary content mode expected)"),
        stored(2, "malformed extversion '1.x'", "hub1", "managedcluster"),
        stored(3, "a heartbeat must be a JSON array", "hub1", "managedhub.heartbeat"),
        stored(4, "something nobody wrote before"),
    ]
    assert {letter.reason_class for letter in DeadLetter.objects.all()} == {"other"}

    backfill.classify_stored(apps, None)

    classes = dict(DeadLetter.objects.values_list("offset", "reason_class"))
    assert classes == {1: "malformed", 2: "version", 3: "payload", 4: "other"}
    assert len(letters) == 4
