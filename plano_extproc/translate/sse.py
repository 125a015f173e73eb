"""Server-sent events: an incremental parser and a writer, shared by both translation pairs.

The parser follows the HTML event-stream rules: lines end in ``\\n``, ``\\r\\n`` or ``\\r``
(a ``\\r`` at the end of one chunk and a ``\\n`` at the start of the next are one line end);
a line starting with ``:`` is a comment; ``field: value`` drops one space after the colon; a
line with no colon is a field with an empty value; several ``data`` lines join with ``\\n``;
a blank line dispatches the event; one leading byte-order mark is dropped. ``id`` and
``retry`` are kept but neither upstream API uses them.

It takes bytes split anywhere, even inside a UTF-8 character, because it decodes whole lines
only. Bytes that are not UTF-8 become U+FFFD rather than an exception: a broken upstream
must turn into a client-shaped error, never a crash.

One deliberate leniency at the end of the stream (``finish``): the spec drops an event whose
blank line never came, but an upstream that closes right after ``data: [DONE]`` (or after a
last line with no line end) did finish its event; the translators would otherwise report a
complete stream as cut short. A genuinely cut event still fails, later, as JSON that does
not parse.
"""

from __future__ import annotations

import json
import math
import re
import sys
from dataclasses import dataclass, field
from typing import Any

_BOM = "\ufeff"
_LINE_END = re.compile(rb"\r\n|\r|\n")


@dataclass(frozen=True)
class Event:
    """One dispatched event. ``event`` is None when the stream named no type."""

    data: str
    event: str | None = None
    id: str | None = None
    retry: int | None = None


@dataclass
class SSEParser:
    """Bytes in, in any chunking; complete events out."""

    _pending: bytearray = field(default_factory=bytearray)
    # A chunk ended in "\r": a "\n" at the start of the next chunk belongs to that line end.
    _after_cr: bool = False
    _first_line: bool = True
    _data: list[str] = field(default_factory=list)
    _event: str | None = None
    _id: str | None = None
    _retry: int | None = None
    # Only fields of the current event were seen since the last dispatch (the leniency above).
    _open: bool = False

    def feed(self, chunk: bytes) -> list[Event]:
        events: list[Event] = []
        if not chunk:
            return events  # nothing to read, and a "\r" just before may still pair with "\n"
        start = 0
        if self._after_cr:
            self._after_cr = False
            if chunk.startswith(b"\n"):
                start = 1
        for end in _LINE_END.finditer(chunk, start):
            self._pending += chunk[start : end.start()]
            self._line(bytes(self._pending), events)
            self._pending.clear()
            start = end.end()
            self._after_cr = start == len(chunk) and end.group() == b"\r"
        self._pending += chunk[start:]
        return events

    def finish(self) -> list[Event]:
        """The end of the stream: the last unterminated line and a pending event, if any."""
        events: list[Event] = []
        if self._pending:
            self._line(bytes(self._pending), events)
            self._pending.clear()
        if self._open:
            self._line(b"", events)
        return events

    def _line(self, raw: bytes, events: list[Event]) -> None:
        line = raw.decode("utf-8", "replace")
        if self._first_line:
            self._first_line = False
            line = line.removeprefix(_BOM)
        if not line:
            self._dispatch(events)
            return
        if line.startswith(":"):
            return
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        self._field(name, value)

    def _field(self, name: str, value: str) -> None:
        if name == "data":
            self._data.append(value)
            self._open = True
        elif name == "event":
            self._event = value
            self._open = True
        elif name == "id":
            # The spec ignores an id with a NUL in it.
            if "\0" not in value:
                self._id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self._retry = int(value)

    def _dispatch(self, events: list[Event]) -> None:
        if self._data:
            events.append(Event("\n".join(self._data), self._event or None, self._id, self._retry))
        # The spec keeps the last event id across events; the rest is per event.
        self._data = []
        self._event = None
        self._retry = None
        self._open = False


def dumps(value: Any) -> str:
    """Compact JSON for the wire; a lone surrogate (from a ``\\udc80`` escape) stays escaped,
    and a number JSON cannot spell (an upstream's NaN, or 1e999 read as infinity) is written
    as ``null`` or the largest double: strict readers (Node's JSON.parse) refuse bare NaN."""
    try:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except ValueError:
        value = _finite(value)
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    try:
        text.encode()
    except UnicodeEncodeError:
        # ASCII-escaped JSON keeps every character, the unpaired surrogate included.
        return json.dumps(value, separators=(",", ":"))
    return text


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else math.copysign(sys.float_info.max, value)
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite(item) for item in value]
    return value


def encode(data: str, event: str | None = None) -> bytes:
    """One event on the wire: ``event:`` when named, a ``data:`` line per line, a blank line."""
    lines = [f"event: {event}"] if event is not None else []
    lines.extend(f"data: {line}" for line in data.split("\n"))
    return ("\n".join(lines) + "\n\n").encode()


def encode_json(value: Any, event: str | None = None) -> bytes:
    return encode(dumps(value), event)
