"""The healthchecks of docker-compose.yml's manager services: ``/healthz`` and ``manage.py check_beat``."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

pytestmark = pytest.mark.django_db


def test_healthz_answers_ok_without_login(client: Client) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_check_beat_fails_until_beat_sends_and_when_it_stopped(capsys: pytest.CaptureFixture[str]) -> None:
    PeriodicTask.objects.update(last_run_at=None)
    with pytest.raises(CommandError, match="not sent any"):
        call_command("check_beat")
    PeriodicTask.objects.filter(name="send resync requests").update(last_run_at=timezone.now() - timedelta(minutes=11))
    with pytest.raises(CommandError, match="more than 10m"):
        call_command("check_beat")
    PeriodicTask.objects.filter(name="send resync requests").update(last_run_at=timezone.now() - timedelta(seconds=30))
    call_command("check_beat")
    assert "beat alive" in capsys.readouterr().out
    with pytest.raises(CommandError, match="more than 10s"):
        call_command("check_beat", "--max-age", "10s")
    with pytest.raises(CommandError):
        call_command("check_beat", "--max-age", "soon")
