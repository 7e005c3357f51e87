"""Small helpers for redis-py's bytes-or-str replies."""

from __future__ import annotations

from typing import Any


def text(value: Any) -> str:
    """A reply element as str (clients here do not decode responses)."""
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)
