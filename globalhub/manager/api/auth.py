"""Who calls the API, and whether they may: one decorator every endpoint goes through.

A caller is authenticated by, in this order: ``Authorization: Bearer <token>`` (an ApiToken), ``Authorization:
Basic`` (a Django user and password), or the admin's session. An Authorization header that fails is a 401 even
with a session, so a script never runs as someone other than it says. CSRF is checked for session-authenticated
writes only: a token or a password is not sent by a browser on its own, so those requests cannot be forged.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib.auth import authenticate
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from globalhub.manager.api.pages import BadParameter
from globalhub.manager.api.responses import error, method_not_allowed
from globalhub.manager.api.tokens import TokenRefused, user_for_token

View = Callable[..., HttpResponse]
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


class Unauthenticated(Exception):
    """No usable credentials: a 401 with the challenge for the scheme tried."""

    def __init__(self, message: str, challenge: str = 'Basic realm="globalhub"') -> None:
        super().__init__(message)
        self.challenge = challenge


def endpoint(*methods: str, permission: str, doing: str) -> Callable[[View], View]:
    """An API view: only ``methods`` (else a JSON 405 with Allow), an authenticated active user (else 401), who
    holds ``permission`` (else 403, saying that ``doing`` needs it). A BadParameter from the view is a 400."""

    def decorate(view: View) -> View:
        @csrf_exempt
        @wraps(view)
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if request.method not in methods:
                return method_not_allowed(request.method or "", methods)
            refused = _authenticate(request, view, args, kwargs)
            if refused is not None:
                return refused
            if not request.user.has_perm(permission):
                return error(403, f"{doing} needs the {permission} permission")
            try:
                return view(request, *args, **kwargs)
            except BadParameter as problem:
                return error(400, str(problem))

        return wrapped

    return decorate


def _authenticate(request: HttpRequest, view: View, args: Any, kwargs: Any) -> JsonResponse | None:
    """Sets ``request.user`` from the credentials; an answer when the request may not go on."""
    try:
        user = _user_from_header(request)
    except Unauthenticated as problem:
        response = error(401, str(problem))
        response["WWW-Authenticate"] = problem.challenge
        return response
    if user is not None:
        request.user = user
    elif not request.user.is_authenticated:
        response = error(401, "authentication required (a Bearer token, Basic, or the admin's session)")
        response["WWW-Authenticate"] = 'Basic realm="globalhub"'
        return response
    elif request.method not in SAFE_METHODS and _csrf_fails(request, view, args, kwargs):
        return error(403, "CSRF check failed (send the csrftoken, or use a token)")
    if not request.user.is_active:
        return error(403, "inactive user")
    return None


def _user_from_header(request: HttpRequest) -> Any:
    """The user the Authorization header names, None without one; Unauthenticated when it does not hold."""
    header = request.headers.get("Authorization", "")
    if not header:
        return None
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() == "bearer":
        try:
            return user_for_token(credentials.strip(), timezone.now())
        except TokenRefused as refused:
            raise Unauthenticated(str(refused), 'Bearer realm="globalhub", error="invalid_token"') from None
    if scheme.lower() == "basic":
        user = _basic_user(request, credentials.strip())
        if user is None:
            raise Unauthenticated("wrong username or password")
        return user
    raise Unauthenticated(f"unsupported authorization scheme {scheme[:20]!r} (use Bearer or Basic)")


def _basic_user(request: HttpRequest, credentials: str) -> Any:
    try:
        username, _, password = base64.b64decode(credentials, validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    if "\x00" in username or "\x00" in password:  # PostgreSQL text cannot hold NUL: no such user
        return None
    return authenticate(request, username=username, password=password)


def _csrf_fails(request: HttpRequest, view: View, args: Any, kwargs: Any) -> bool:
    return CsrfViewMiddleware(lambda r: HttpResponse()).process_view(request, view, args, kwargs) is not None
