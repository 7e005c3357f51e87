"""Query strings read strictly, and keyset pagination for the list endpoints.

A list is ordered by a unique key (``id``, or the hub's name) and paged with ``limit`` and ``after`` (the last key
of the previous page). That order is stable: a row added while a script pages comes after the rows already read,
and no page costs more than its own rows however deep it is (an offset would scan everything before it). The
first page (no ``after``) also says how many rows match in all; later pages do not count again.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlencode

from django.db.models import Model, QuerySet
from django.http import HttpRequest

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
PAGING = ("limit", "after")

M = TypeVar("M", bound=Model)


class BadParameter(ValueError):
    """A query parameter the API refuses; its message is the 400 answer."""


class Query:
    """A request's query string. Unknown parameters are refused rather than ignored, so a misspelt filter
    (``lable=``) does not silently return everything."""

    def __init__(self, request: HttpRequest, known: Iterable[str]) -> None:
        self.params = request.GET
        allowed = {*known, *PAGING}
        unknown = sorted(set(self.params) - allowed)
        if unknown:
            raise BadParameter(f"unknown parameter {unknown[0]!r} (known: {', '.join(sorted(allowed))})")
        for name, values in self.params.lists():
            if any("\x00" in value for value in values):
                raise BadParameter(f"parameter {name!r} contains a NUL character")

    def one(self, name: str) -> str | None:
        """The parameter's value, or None; given twice, it is refused (which one would win is a guess)."""
        values = self.params.getlist(name)
        if len(values) > 1:
            raise BadParameter(f"parameter {name!r} is given {len(values)} times; give it once")
        return values[0] if values else None

    def every(self, name: str) -> list[str]:
        """A repeatable parameter's values (each one narrows the list further)."""
        return self.params.getlist(name)

    def choice(self, name: str, choices: Iterable[str], default: str | None = None) -> str | None:
        value = self.one(name)
        if value is None:
            return default
        allowed = list(choices)
        if value not in allowed:
            raise BadParameter(f"{name}={value!r} is not one of {', '.join(allowed)}")
        return value

    def uuid(self, name: str) -> uuid.UUID | None:
        value = self.one(name)
        if value is None:
            return None
        try:
            return uuid.UUID(value)
        except ValueError:
            raise BadParameter(f"{name}={value!r} is not a UUID") from None

    def limit(self) -> int:
        """The page size: ``DEFAULT_LIMIT`` when not given, at most ``MAX_LIMIT`` (a larger one is lowered)."""
        value = self.one("limit")
        if value is None:
            return DEFAULT_LIMIT
        try:
            limit = int(value)
        except ValueError:
            raise BadParameter(f"limit={value!r} is not an integer") from None
        if limit < 1:
            raise BadParameter(f"limit={limit} must be at least 1")
        return min(limit, MAX_LIMIT)


@dataclass(frozen=True)
class Page:
    rows: list[Any]
    next: str | None  # the URL of the next page, None on the last one
    count: int | None  # every matching row, on the first page only

    def body(self, name: str, render: Callable[[Any], dict[str, Any]]) -> dict[str, Any]:
        """The list's JSON: ``{name: [...], "count": n | null, "next": url | null}``."""
        return {name: [render(row) for row in self.rows], "count": self.count, "next": self.next}


def integer_key(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise BadParameter(f"after={value!r} is not an integer (use the next link)") from None


def paginate(
    request: HttpRequest,
    query: Query,
    rows: QuerySet[M],
    key: str,
    parse_key: Callable[[str], object] = integer_key,
) -> Page:
    """One page of ``rows`` ordered by the unique field ``key``: one query for the page, and one more for the total
    when the first page is full."""
    limit = query.limit()
    after_value = query.one("after")
    ordered = rows.order_by(key)
    page_rows = ordered
    if after_value is not None:
        page_rows = ordered.filter(**{f"{key}__gt": parse_key(after_value)})
    fetched = list(page_rows[: limit + 1])
    more = len(fetched) > limit
    fetched = fetched[:limit]
    count = None
    if after_value is None:
        count = ordered.count() if more else len(fetched)
    next_url = _next_url(request, limit, getattr(fetched[-1], key)) if more else None
    return Page(rows=fetched, next=next_url, count=count)


def _next_url(request: HttpRequest, limit: int, last_key: object) -> str:
    params = [(name, value) for name, values in request.GET.lists() if name not in PAGING for value in values]
    params += [("limit", str(limit)), ("after", str(last_key))]
    return request.build_absolute_uri(f"{request.path}?{urlencode(params)}")
