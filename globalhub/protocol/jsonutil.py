"""JSON for payloads, fast: orjson, with the standard library behind it for what orjson refuses.

orjson refuses integers wider than 64 bits (and non-string keys); such documents are still valid JSON, so they
fall back to :mod:`json` rather than being treated as malformed.
"""

from __future__ import annotations

import json
from typing import Any

import orjson


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON."""
    try:
        # Copied into a right-sized bytes object: keeping orjson's own result made a 100,000-object resync grow the
        # process to 550 MiB (its buffers are shrunk in place, which glibc cannot reuse well); the copy keeps the
        # peak at 70 MiB for a few percent of the time (bench/agent_big_resync.py).
        return bytes(memoryview(orjson.dumps(value)))
    except TypeError:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def loads(data: bytes | str) -> Any:
    """Parse JSON; ``ValueError`` (with the reason) when it is not JSON, or its text is not Unicode."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        try:
            value = json.loads(data)  # a valid document orjson cannot hold (e.g. a huge integer), or the real error
        except RecursionError:
            raise ValueError("JSON nested too deeply") from None  # orjson stops at 1,024 levels, json at the stack
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        # An escaped lone surrogate ("\ud800") is JSON syntax but no text: nothing could store or send it on.
        raise ValueError("text that is not valid Unicode (a lone surrogate escape)") from None
    return value
