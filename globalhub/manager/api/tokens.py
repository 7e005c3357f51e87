"""Bearer tokens for scripts: issued once, stored as their SHA-256, checked with one indexed lookup.

HTTP Basic runs the password hasher (about 0.4 s) on every call; a token is checked by hashing it once with SHA-256
and looking the hash up. The lookup needs no constant-time comparison: what is compared is the hash, and learning
a prefix of a hash gives nothing towards a token that produces it. The token itself is never stored, so a
database dump cannot be used to call the API.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Q

from globalhub.manager.models import ApiToken

TOKEN_BYTES = 32  # secrets.token_urlsafe(32): 43 characters, 256 bits
PREFIX_LENGTH = 8  # kept in clear to tell tokens apart in the admin; 8 of 43 characters leave 210 bits unknown
LONGEST_TOKEN = 200  # anything longer is refused before hashing
LAST_USED_STEP = timedelta(minutes=1)  # last_used_at is written at most this often per token


class TokenRefused(Exception):
    """The token is unknown, expired, or its user is inactive; the message says which (a 401)."""


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def issue_token(user: Any, name: str, now: datetime, expires_in: timedelta | None = None) -> tuple[ApiToken, str]:
    """A new token for ``user``: the stored record and the token itself, which is shown once and never again."""
    token = secrets.token_urlsafe(TOKEN_BYTES)
    record = ApiToken.objects.create(
        user=user,
        name=name,
        key_prefix=token[:PREFIX_LENGTH],
        key_hash=hash_token(token),
        expires_at=None if expires_in is None else now + expires_in,
    )
    return record, token


def user_for_token(token: str, now: datetime) -> Any:
    """The active user a live token belongs to; records its use (at most once a minute). Raises TokenRefused."""
    if not token or len(token) > LONGEST_TOKEN:
        raise TokenRefused("invalid token")
    record = ApiToken.objects.select_related("user").filter(key_hash=hash_token(token)).first()
    if record is None:
        raise TokenRefused("invalid token")
    if record.expires_at is not None and record.expires_at <= now:
        raise TokenRefused("token expired")
    if not record.user.is_active:
        raise TokenRefused("the token's user is inactive")
    _note_use(record, now)
    return record.user


def _note_use(record: ApiToken, now: datetime) -> None:
    # A script calling many times a second would otherwise write the row on every call; the conditional update
    # lets one of several concurrent calls write it.
    if record.last_used_at is not None and now - record.last_used_at < LAST_USED_STEP:
        return
    ApiToken.objects.filter(pk=record.pk).filter(
        Q(last_used_at__isnull=True) | Q(last_used_at__lte=now - LAST_USED_STEP)
    ).update(last_used_at=now)
