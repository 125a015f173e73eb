"""The request body as JSON text: parsed once, and its ``model`` rewritten in place.

A provider gets the client's body with only ``model`` changed. Serializing the parsed body
again would cost as much as parsing it (200 µs for 100 KB, measured) and respell the
client's numbers and escapes. Instead the top-level object is walked with the json module's
own C scanner, which tells where each top-level value starts and ends, and the new model is
spliced into the text. Anything unusual (another encoding, a byte-order mark, ``model``
written twice) takes the plain path: ``json.loads`` and ``json.dumps``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from json.decoder import scanstring  # type: ignore[attr-defined]  # C, not in typeshed
from typing import Any


def _reject_constant(name: str) -> object:
    # Python's json reads NaN/Infinity and would write them back: not JSON to a provider.
    raise ValueError(f"{name} is not a JSON value")


# The C scanner json.loads runs: (text, index) -> (value, end index).
_SCAN = json.JSONDecoder(parse_constant=_reject_constant).scan_once  # type: ignore[attr-defined]


@dataclass(frozen=True)
class JsonBody:
    value: Any  # what json.loads gives
    # For a top-level object walked in place: its text, where the first member starts, and
    # the span of the "model" value (None: absent, or written more than once).
    text: str | None = None
    members_at: int = 0
    model_span: tuple[int, int] | None = None


def parse(raw: bytes) -> JsonBody:
    """``raw`` parsed as json.loads would (the same value, the same ValueError)."""
    try:
        text = raw.decode("utf-8")
        walked = _walk_object(text)
    except (UnicodeDecodeError, ValueError, StopIteration):
        walked = None
    if walked is None:
        return JsonBody(json.loads(raw, parse_constant=_reject_constant))
    value, members_at, model_span = walked
    return JsonBody(value, text, members_at, model_span)


def with_model(body: JsonBody, model: str) -> bytes | None:
    """The body with its top-level ``model`` set to ``model``; None if it already is."""
    value, text = body.value, body.text
    encoded = json.dumps(model, ensure_ascii=False)
    if text is not None and body.model_span is not None:
        start, end = body.model_span
        if text[start:end] == encoded:
            return None
        return (text[:start] + encoded + text[end:]).encode()
    if text is not None and "model" not in value:
        at = body.members_at
        comma = "," if value else ""
        return (text[:at] + f'"model":{encoded}{comma}' + text[at:]).encode()
    rewritten = {**value, "model": model}
    return json.dumps(rewritten, ensure_ascii=False, separators=(",", ":")).encode()


def _walk_object(text: str) -> tuple[dict[str, Any], int, tuple[int, int] | None] | None:
    """The top-level object of ``text``, where its first member starts and the span of its
    one "model" value; None when ``text`` is not a plain JSON object."""
    i = _skip(text, 0)
    if not text.startswith("{", i):
        return None
    members_at = i + 1
    i = _skip(text, members_at)
    value: dict[str, Any] = {}
    model_span: tuple[int, int] | None = None
    model_count = 0
    if text.startswith("}", i):
        i += 1
    else:
        while True:
            if not text.startswith('"', i):
                return None
            key, i = scanstring(text, i + 1)
            i = _skip(text, i)
            if not text.startswith(":", i):
                return None
            i = _skip(text, i + 1)
            member, end = _SCAN(text, i)
            value[key] = member
            if key == "model":
                model_span, model_count = (i, end), model_count + 1
            i = _skip(text, end)
            if text.startswith(",", i):
                i = _skip(text, i + 1)
            elif text.startswith("}", i):
                i += 1
                break
            else:
                return None
    if _skip(text, i) != len(text):
        return None
    return value, members_at, model_span if model_count == 1 else None


def _skip(text: str, i: int) -> int:
    """The index of the first character at or after ``i`` that is not JSON whitespace."""
    while i < len(text) and text[i] in " \t\n\r":
        i += 1
    return i
