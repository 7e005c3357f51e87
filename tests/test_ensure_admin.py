"""``ensure_admin``: the operator's first login, never a well-known default password."""

from __future__ import annotations

import re
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError

pytestmark = pytest.mark.django_db


def run(monkeypatch: pytest.MonkeyPatch, *args: str, password: str | None = None) -> str:
    monkeypatch.setenv("DJANGO_SUPERUSER_USERNAME", "operator")
    if password is None:
        monkeypatch.delenv("DJANGO_SUPERUSER_PASSWORD", raising=False)
    else:
        monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", password)
    out = StringIO()
    call_command("ensure_admin", *args, stdout=out)
    return out.getvalue()


def test_without_a_password_it_refuses(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(CommandError, match="DJANGO_SUPERUSER_PASSWORD"):
        run(monkeypatch)
    assert not get_user_model().objects.filter(username="operator").exists()


def test_a_generated_password_is_printed_once_and_works(monkeypatch: pytest.MonkeyPatch) -> None:
    output = run(monkeypatch, "--generate-password")
    found = re.search(r"with the generated password (\S+) ", output)
    assert found, output
    user = get_user_model().objects.get(username="operator")
    assert user.is_superuser and user.check_password(found.group(1))
    assert not user.check_password("admin")
    again = run(monkeypatch, "--generate-password")
    assert "already exists" in again and found.group(1) not in again


def test_a_given_password_is_used_and_not_printed(monkeypatch: pytest.MonkeyPatch) -> None:
    output = run(monkeypatch, "--generate-password", password="s3cret-from-env")
    assert "s3cret-from-env" not in output
    assert get_user_model().objects.get(username="operator").check_password("s3cret-from-env")
