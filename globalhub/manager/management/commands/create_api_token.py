"""``python manage.py create_api_token <username> --name NAME [--expires 30d]``: a Bearer token for the API.

The token is printed once, alone on stdout (``TOKEN=$(python manage.py create_api_token ...)``), and only its
SHA-256 is stored: it cannot be shown again. Revoke it by deleting it in the admin (*API tokens*). The token
acts as its user, with that user's permissions; an inactive user's tokens are refused.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from globalhub.envconf import ConfigError, parse_duration
from globalhub.manager.api.tokens import issue_token
from globalhub.manager.models import ApiToken

NAME_LENGTH = ApiToken._meta.get_field("name").max_length or 100


class Command(BaseCommand):
    help = "Create an API token for a user and print it once (only its hash is kept)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username", help="the user the token acts as")
        parser.add_argument("--name", required=True, help="what the token is for (shown in the admin)")
        parser.add_argument(
            "--expires", metavar="DURATION", help="a lifetime such as 30d, 12h or 90m (default: never expires)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        name = _token_name(options["name"])
        lifetime = _lifetime(options["expires"])
        user = _active_user(options["username"])
        now = timezone.now()
        try:
            record, token = issue_token(user, name, now, lifetime)
        except OverflowError:
            raise CommandError(f"--expires {options['expires']!r} ends past the year 9999") from None
        expiry = "never expires" if record.expires_at is None else f"expires {record.expires_at.isoformat()}"
        self.stderr.write(
            f"token {name!r} for {user.get_username()} (prefix {record.key_prefix}, {expiry}); "
            "it is shown once, store it now:"
        )
        self.stdout.write(token)


def _token_name(raw: str) -> str:
    name = raw.strip()
    if not name:
        raise CommandError("--name must not be empty")
    if len(name) > NAME_LENGTH or "\x00" in name:
        raise CommandError(f"--name must be at most {NAME_LENGTH} characters, without NUL")
    return name


def _lifetime(raw: str | None) -> timedelta | None:
    if raw is None:
        return None
    try:
        lifetime = parse_duration(raw)
    except ConfigError as problem:
        raise CommandError(f"--expires: {problem}") from None
    if lifetime <= timedelta(0):
        raise CommandError("--expires must be longer than zero")
    return lifetime


def _active_user(username: str) -> Any:
    user_model = get_user_model()
    user = None
    if "\x00" not in username:  # PostgreSQL text holds no NUL: no user can have it
        user = user_model._default_manager.filter(**{user_model.USERNAME_FIELD: username}).first()
    if user is None:
        raise CommandError(f"no user {username!r}")
    if not user.is_active:
        raise CommandError(f"user {username!r} is inactive: its tokens would be refused")
    return user
