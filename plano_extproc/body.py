"""The request body as JSON text: parsed once, and its ``model`` rewritten in place.

A provider gets the client's own text with only ``model`` changed; the body is never
serialized again. Serializing the parsed body would cost as much as parsing it (200 µs for
100 KB, measured), respell the client's numbers and escapes, and could write what is not
JSON at all (Python reads 1e999 as infinity and writes it back as ``Infinity``). Instead the
top-level object is walked with the json module's own C scanner, which tells where each
top-level value starts and ends, and the new model is spliced into the text. A body sent in
UTF-16 or UTF-32 or with a byte-order mark is read as json.loads reads it and forwarded in
UTF-8; a ``model`` written more than once keeps its first place and loses the others (a
provider may read either).

Pure, no I/O. ``detach`` and ``attach`` carry a body read in a helper process back to the
server without its text: positions become byte offsets into the bytes the server holds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from json.decoder import scanstring  # type: ignore[attr-defined]  # C, not in typeshed
from typing import Any


class NestedTooDeeply(ValueError):
    """The body nests arrays and objects deeper than the json module's recursion allows
    (Python's recursion limit: about 990 levels)."""


def _reject_constant(name: str) -> object:
    # Python's json reads NaN/Infinity and would write them back: not JSON to a provider.
    raise ValueError(f"{name} is not a JSON value")


# The C scanner json.loads runs: (text, index) -> (value, end index).
_SCAN = json.JSONDecoder(parse_constant=_reject_constant).scan_once  # type: ignore[attr-defined]
_WHITESPACE = b" \t\n\r"
Span = tuple[int, int]


@dataclass(slots=True)  # not frozen: that costs 0.4 µs more per request; never mutated
class JsonBody:
    value: Any  # what json.loads gives (None once detached)
    # A top-level object: its text, with its first member starting at ``members_at`` and its
    # first "model" value at ``model_span`` (None: absent). Once attached, the UTF-8 bytes
    # to forward, positions in bytes. None when the body is not an object.
    text: str | bytes | memoryview | None = None
    members_at: int = 0
    model_span: Span | None = None
    # None: ``text`` is the body as sent and names its model at most once (the fast splice).
    # Otherwise the spans a rewrite deletes, each from the end of the value before a later
    # "model" member to the end of its value; empty for a body sent in another encoding,
    # which a rewrite always forwards in UTF-8.
    drops: tuple[Span, ...] | None = None


def parse(raw: bytes) -> JsonBody:
    """``raw`` parsed as json.loads would (the same value, the same ValueError), but
    strictly: bytes that are not UTF-8 (json.loads lets encoded surrogates through) are a
    ValueError, and so is nesting too deep for the parser (``NestedTooDeeply``)."""
    try:
        text = raw.decode("utf-8")
        walked = _walk_object(text)
    except (ValueError, StopIteration):  # UnicodeDecodeError and JSONDecodeError included
        walked = None
    except RecursionError:
        raise NestedTooDeeply("arrays and objects nested too deeply") from None
    if walked is None:
        return _parse_unusual(raw)
    value, members_at, model_span, drops = walked
    return JsonBody(value, text, members_at, model_span, drops)


def _parse_unusual(raw: bytes) -> JsonBody:
    """Another encoding or a byte-order mark, or not a JSON object: the value, or the error
    json.loads gives."""
    try:
        encoding = json.detect_encoding(raw)
        text = raw.decode(encoding)  # strict: a lone surrogate is no UTF-8 or UTF-16
        if encoding != "utf-8":
            try:
                walked = _walk_object(text)
            except (ValueError, StopIteration):
                walked = None
            if walked is not None:
                value, members_at, model_span, drops = walked
                return JsonBody(value, text, members_at, model_span, drops or ())
        value = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise NestedTooDeeply("arrays and objects nested too deeply") from None
    if isinstance(value, dict):
        # The walk reads every object json.loads reads; this would be a bug of ours.
        raise ValueError("the body's top-level object could not be walked")
    return JsonBody(value)


def with_model(body: JsonBody, model: str) -> bytes | None:
    """The body to forward with its top-level ``model`` set to ``model``; None if it is the
    body as sent and already names ``model``."""
    text = body.text
    if body.drops is not None or type(text) is not str:
        if text is None:
            raise ValueError("the body is not a JSON object: it has no model to set")
        return _rewrite(body, model)
    encoded = json.dumps(model, ensure_ascii=False)
    if body.model_span is not None:
        start, end = body.model_span
        if text[start:end] == encoded:
            return None
        return (text[:start] + encoded + text[end:]).encode()
    at = body.members_at
    comma = "," if body.value else ""
    return (text[:at] + f'"model":{encoded}{comma}' + text[at:]).encode()


def _rewrite(body: JsonBody, model: str) -> bytes:
    """The general splice: an attached body, a repeated model, another encoding."""
    text = body.text
    if not isinstance(text, str):
        return b"".join(pieces(body, model))
    parts: list[str] = []
    at = 0
    for start, end, new in _edits(body, text, model):
        parts += (text[at:start], new)
        at = end
    parts.append(text[at:])
    return "".join(parts).encode()


def pieces(body: JsonBody, model: str) -> list[bytes | memoryview]:
    """The attached ``body`` with its model set, as views of its bytes and the new parts
    between them: joined, ``with_model``'s answer; left in pieces, the caller's one copy of
    a big body is where it writes it."""
    text = body.text
    if text is None or isinstance(text, str):
        raise ValueError("pieces are cut from an attached body's bytes")
    view = memoryview(text)
    chunks: list[bytes | memoryview] = []
    at = 0
    for start, end, new in _edits(body, text, model):
        chunks += (view[at:start], new.encode())
        at = end
    chunks.append(view[at:])
    return chunks


def _edits(
    body: JsonBody, text: str | bytes | memoryview, model: str
) -> list[tuple[int, int, str]]:
    encoded = json.dumps(model, ensure_ascii=False)
    if body.model_span is None:
        at = body.members_at
        comma = "" if _empty_object(text, at) else ","
        return [(at, at, f'"model":{encoded}{comma}')]
    return [(*body.model_span, encoded), *((a, b, "") for a, b in body.drops or ())]


def _empty_object(text: str | bytes | memoryview, at: int) -> bool:
    """Whether the object whose members start at ``at`` has none."""
    if isinstance(text, str):
        return text.startswith("}", _skip(text, at))
    data = memoryview(text)
    while at < len(data) and data[at] in _WHITESPACE:
        at += 1
    return at < len(data) and data[at] == ord("}")


def detach(body: JsonBody, raw: bytes) -> JsonBody:
    """``body`` as it travels from a helper process: no value, no text, positions as byte
    offsets into ``raw`` (the body as sent), or into the UTF-8 body to forward instead when
    ``raw`` is in another encoding (the only case that carries text)."""
    text = body.text
    if not isinstance(text, str):
        return replace(body, value=None)
    utf8 = text.encode()
    positions = sorted(
        {body.members_at, *(body.model_span or ()), *(i for s in body.drops or () for i in s)}
    )
    offsets = _byte_offsets(text, positions) if len(utf8) != len(text) else {}

    def at(i: int) -> int:
        return offsets.get(i, i)

    span = body.model_span
    return JsonBody(
        value=None,
        text=None if utf8 == raw else utf8,
        members_at=at(body.members_at),
        model_span=None if span is None else (at(span[0]), at(span[1])),
        drops=tuple((at(a), at(b)) for a, b in body.drops or ()),
    )


def attach(body: JsonBody, raw: bytes | memoryview) -> JsonBody:
    """A detached ``body`` again, its text the bytes the server holds (``raw``, the body as
    sent, which a view into a bigger message spares copying)."""
    return body if body.text is not None else replace(body, text=raw)


def _byte_offsets(text: str, positions: list[int]) -> dict[int, int]:
    offsets = {}
    done = byte = 0
    for i in positions:
        byte += len(text[done:i].encode())
        done = i
        offsets[i] = byte
    return offsets


def _walk_object(
    text: str,
) -> tuple[dict[str, Any], int, Span | None, tuple[Span, ...] | None] | None:
    """The top-level object of ``text``, where its first member starts, the span of its
    first "model" value and the spans that drop the later ones (None: there are none);
    None when ``text`` is not a plain JSON object."""
    i = _skip(text, 0)
    if not text.startswith("{", i):
        return None
    members_at = i + 1
    i = _skip(text, members_at)
    value: dict[str, Any] = {}
    model_span: Span | None = None
    drops: list[Span] | None = None
    if text.startswith("}", i):
        i += 1
    else:
        previous = members_at
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
                if model_span is None:
                    model_span = (i, end)
                elif drops is None:
                    drops = [(previous, end)]
                else:
                    drops.append((previous, end))
            previous = end
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
    return value, members_at, model_span, None if drops is None else tuple(drops)


def _skip(text: str, i: int) -> int:
    """The index of the first character at or after ``i`` that is not JSON whitespace."""
    while i < len(text) and text[i] in " \t\n\r":
        i += 1
    return i
