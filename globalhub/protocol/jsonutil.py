"""JSON for payloads, fast: orjson, with the standard library behind it for what orjson refuses.

orjson refuses integers wider than 64 bits (and non-string keys); such documents are still valid JSON, so they
fall back to :mod:`json` rather than being treated as malformed.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

MAX_DEPTH = 255
"""How deeply a written document may nest (orjson's limit; the standard library's depends on the stack)."""


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON; ``ValueError`` for a value nested deeper than :data:`MAX_DEPTH`."""
    try:
        # Copied into a right-sized bytes object: keeping orjson's own result made a 100,000-object resync grow the
        # process to 550 MiB (its buffers are shrunk in place, which glibc cannot reuse well); the copy keeps the
        # peak at 70 MiB for a few percent of the time (bench/agent_big_resync.py).
        return bytes(memoryview(orjson.dumps(value)))
    except TypeError as error:
        if "recursion" in str(error).lower():
            raise ValueError(f"JSON nested deeper than {MAX_DEPTH} levels") from None
        try:  # what orjson cannot write but JSON can, such as an integer wider than 64 bits
            return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        except RecursionError:
            raise ValueError("JSON nested too deeply") from None


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
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    except UnicodeEncodeError:
        # An escaped lone surrogate ("\ud800") is JSON syntax but no text: nothing could store or send it on.
        raise ValueError("text that is not valid Unicode (a lone surrogate escape)") from None
    return value
