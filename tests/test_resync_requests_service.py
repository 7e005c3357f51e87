"""The one service that records resync requests for operators and schedules: every hub checked, all or nothing.

Real PostgreSQL. The dispatch after the commit is looked at as the callbacks the transaction holds, not run, so no
test queues a task on the shared broker.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest
from django.db import connections, transaction

from globalhub.manager.models import Hub, ResyncRequest, ResyncTarget
from globalhub.manager.resync_requests import dispatch_pending, request_resyncs
from globalhub.protocol.codec import OutgoingMessage
from globalhub.protocol.events import RESYNC_TYPES, EventType
from globalhub.protocol.kafka import ConfirmedProducer

pytestmark = pytest.mark.django_db

OPERATOR = ResyncRequest.Reason.OPERATOR
T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)

CaptureCallbacks = Callable[..., AbstractContextManager[list[Callable[[], Any]]]]


def make_hub(state: str = "active") -> str:
    return Hub.objects.create(name=f"hub-{uuid.uuid4().hex[:8]}", state=state).name


def test_every_named_hub_gets_its_own_request_in_the_names_order() -> None:
    first, second, third = make_hub(), make_hub(), make_hub()
    created = request_resyncs([third, first, second], ["managedcluster"], OPERATOR, "test", now=T0)
    assert [r.subject for r in created] == [third, first, second]
    assert all(r.types == [EventType.MANAGED_CLUSTER.value] for r in created)
    assert all((r.reason, r.requested_by, r.requested_at) == (OPERATOR, "test", T0) for r in created)
    assert [[t.hub_id for t in r.targets.all()] for r in created] == [[third], [first], [second]]


def test_a_hub_named_twice_gets_one_request() -> None:
    first, second = make_hub(), make_hub()
    created = request_resyncs([first, second, first], None, OPERATOR, "test")
    assert [r.subject for r in created] == [first, second]
    assert ResyncRequest.objects.count() == 2


def test_no_hubs_means_one_broadcast_to_the_hubs_active_now() -> None:
    active = sorted([make_hub(), make_hub()])
    make_hub(state="inactive")
    (request,) = request_resyncs(None, None, ResyncRequest.Reason.PERIODIC, "schedule")
    assert request.subject == "broadcast"
    assert request.types == [t.value for t in RESYNC_TYPES]
    assert sorted(t.hub_id for t in request.targets.all()) == active


def test_every_request_is_rolled_back_when_the_last_hub_is_unknown() -> None:
    known = [make_hub(), make_hub()]
    with pytest.raises(ValueError, match="unknown hub 'nope'") as refused:
        request_resyncs([*known, "nope"], None, OPERATOR, "test")
    assert not any(name in str(refused.value) for name in known)
    assert not ResyncRequest.objects.exists()
    assert not ResyncTarget.objects.exists()


def test_the_refusal_names_every_unknown_hub() -> None:
    known = make_hub()
    with pytest.raises(ValueError, match="unknown hubs 'gone', 'nope'"):
        request_resyncs(["gone", known, "nope", "gone"], None, OPERATOR, "test")
    assert not ResyncRequest.objects.exists()


def test_a_type_that_cannot_be_resynced_records_nothing() -> None:
    hubs = [make_hub(), make_hub()]
    with pytest.raises(ValueError, match="cannot be resynced"):
        request_resyncs(hubs, ["managedcluster", "managedhub.heartbeat"], OPERATOR, "test")
    assert not ResyncRequest.objects.exists()


def test_an_empty_list_of_hubs_is_refused_rather_than_read_as_every_hub() -> None:
    make_hub()
    with pytest.raises(ValueError, match="no hub named"):
        request_resyncs([], None, OPERATOR, "test")
    assert not ResyncRequest.objects.exists()


def test_a_single_string_is_refused_rather_than_read_letter_by_letter() -> None:
    with pytest.raises(TypeError, match="not the string"):
        request_resyncs(make_hub(), None, OPERATOR, "test")


def test_the_requests_join_the_callers_transaction_and_go_with_it() -> None:
    hubs = [make_hub(), make_hub()]
    with pytest.raises(RuntimeError), transaction.atomic():
        request_resyncs(hubs, None, OPERATOR, "test")
        assert ResyncRequest.objects.count() == 2
        raise RuntimeError("the caller fails after the requests were written")
    assert not ResyncRequest.objects.exists()


def test_a_batch_asks_for_one_dispatch_after_its_commit_and_none_when_refused(
    django_capture_on_commit_callbacks: CaptureCallbacks,
) -> None:
    hubs = [make_hub(), make_hub(), make_hub()]
    with django_capture_on_commit_callbacks() as accepted:
        request_resyncs(hubs, None, OPERATOR, "test")
    assert len(accepted) == 1
    with django_capture_on_commit_callbacks() as refused, pytest.raises(ValueError):
        request_resyncs([*hubs, "nope"], None, OPERATOR, "test")
    assert refused == []


# This test asserted before that a schedule naming one unknown hub records nothing: a hub deleted after the
# schedule was written then blocked every other hub's periodic resync for good. A schedule leaves it out instead.
def test_a_periodic_resync_leaves_out_a_hub_deleted_since_and_asks_the_others(caplog: pytest.LogCaptureFixture) -> None:
    from globalhub.manager.tasks import periodic_resync

    first, second = make_hub(), make_hub()
    ids = periodic_resync(["policy.localspec"], [first, second])
    assert [ResyncRequest.objects.get(pk=i).subject for i in ids] == [first, second]
    ids = periodic_resync(["policy.localspec"], [first, "nope", second])
    assert [ResyncRequest.objects.get(pk=i).subject for i in ids] == [first, second]
    assert "unknown hub 'nope' left out" in caplog.text
    assert periodic_resync(["policy.localspec"], ["nope"]) == []
    with pytest.raises(ValueError, match="cannot be resynced"):
        periodic_resync(["managedhub.heartbeat"], ["nope"])
    assert ResyncRequest.objects.count() == 4


def test_an_operators_request_naming_an_unknown_hub_stays_all_or_nothing() -> None:
    first = make_hub()
    with pytest.raises(ValueError, match="unknown hub 'nope'"):
        request_resyncs([first, "nope"], None, OPERATOR, "test")
    assert not ResyncRequest.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_each_request_sent_has_its_sent_at_committed_before_the_next_send() -> None:
    """An answer ingested right after a send must find ``sent_at``: it is committed per confirmed send."""
    hub = make_hub()
    created = [request_resyncs([hub], None, OPERATOR, "test")[0] for _ in range(3)]

    class Observing:
        """Confirms every send; before each, reads from another connection which requests are committed as sent."""

        def __init__(self) -> None:
            self.committed: list[list[int]] = []

        def send(self, topic: str, messages: Iterable[OutgoingMessage]) -> int:
            count = len(list(messages))
            seen: list[list[int]] = []

            def look() -> None:
                try:
                    sent = ResyncRequest.objects.filter(sent_at__isnull=False).order_by("id")
                    seen.append(list(sent.values_list("id", flat=True)))
                finally:
                    connections.close_all()

            thread = threading.Thread(target=look)
            thread.start()
            thread.join()
            self.committed.extend(seen)
            return count

    producer = Observing()
    assert dispatch_pending(cast(ConfirmedProducer, producer), "unused") == 3
    first, second, _ = (r.pk for r in created)
    assert producer.committed == [[], [first], [first, second]]


def test_the_domain_modules_import_without_the_celery_tasks() -> None:
    script = textwrap.dedent(
        """
        import sys
        import django

        django.setup()
        import globalhub.manager.lifecycle
        import globalhub.manager.resync_requests

        assert "globalhub.manager.tasks" not in sys.modules, "the domain modules imported the Celery tasks"
        """
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "globalhub.settings"}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at its top or inside a function (``from a import b`` counts as a and a.b)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_no_domain_module_imports_the_celery_tasks_even_inside_a_function() -> None:
    manager = Path(__file__).resolve().parent.parent / "globalhub" / "manager"
    domain = [manager / "lifecycle.py", manager / "resync_requests.py", *sorted((manager / "ingest").glob("*.py"))]
    importers = [str(p.relative_to(manager)) for p in domain if "globalhub.manager.tasks" in imported_modules(p)]
    assert importers == []


def test_the_dispatch_is_queued_by_the_name_the_send_task_is_registered_under() -> None:
    from globalhub.celery import app
    from globalhub.manager import tasks
    from globalhub.manager.resync_requests import SEND_TASK

    assert SEND_TASK == "manager.send_resync_requests"  # the name the installed beat schedule uses too
    assert app.tasks[SEND_TASK].name == tasks.send_resync_requests.name == SEND_TASK
