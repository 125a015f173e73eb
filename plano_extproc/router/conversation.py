"""What a router reads of a chat request: the user and assistant turns, as text.

System, developer and tool messages are never read: a system prompt describes the app, not
what the user wants now. Image and audio parts are dropped and their text parts kept.

A router reads only what its token budget can use (``Reading``): the messages are walked
newest first and the walk stops once the latest user turn and the turns before it that the
router reads are found; a turn longer than the budget can use is cut to its head and tail
(where a long paste's instruction is) before anything splits or joins it. A decision's cost
then depends on ``max_tokens``, not on the size of the body.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from ..config import RouterSettings

READ_ROLES = ("user", "assistant")
TEXT_PARTS = ("text", "input_text")
# No token of the routers' tokenizers is longer than this many characters in ordinary text:
# text beyond max_tokens * CHARS_PER_TOKEN characters can never be read.
CHARS_PER_TOKEN = 8
# Arch-Router's BPE merges long runs (indentation, rules of dashes) into one token: its
# turns keep twice as much, so trimming by real token counts sees what it saw before.
ARCH_CHARS_PER_TOKEN = 16
# The embedded router: the turns read before the latest user turn, and how far into either
# end of a long turn its first and last lines are looked for (embedded.views).
CONTEXT_TURNS = 3
EDGE_WINDOW = 4096
# A lone surrogate (a "\udc80" escape in the JSON) cannot be encoded as UTF-8: tokenizers
# refuse such text, so it is read as U+FFFD.
_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True)
class Turn:
    role: str  # "user" or "assistant"
    text: str


@dataclass(frozen=True)
class Reading:
    """How much of a conversation a router can use."""

    context_turns: int  # turns read before the latest user turn
    turn_chars: int  # a longer turn is read as its head and tail, this many characters in all
    context_chars: int  # earlier turns are read until they hold this many characters


def reading_for(settings: RouterSettings) -> Reading:
    """What the configured router reads: enough for ``max_tokens`` and no more."""
    if settings.kind == "arch":
        # trim_conversation fills the whole budget with the newest turns (each costs two
        # tokens or more) and keeps the head and tail of an over-long latest turn.
        chars = settings.max_tokens * ARCH_CHARS_PER_TOKEN
        return Reading(settings.max_tokens // 2, 2 * chars + 1, chars)
    # The embedded router reads a turn whole up to max_tokens, and its first and last lines.
    half = max(settings.max_tokens * CHARS_PER_TOKEN, EDGE_WINDOW)
    return Reading(CONTEXT_TURNS, 2 * half + 1, CONTEXT_TURNS * (2 * half + 1))


def conversation(messages: Sequence[object], reading: Reading | None = None) -> list[Turn]:
    """The turns a router reads, oldest first; empty turns are dropped. With ``reading``,
    only the latest user turn and the turns before it that ``reading`` allows, each cut to
    ``reading.turn_chars``; without, every turn."""
    if reading is not None:
        return _recent(messages, reading)
    turns: list[Turn] = []
    for message in messages:
        if not isinstance(message, dict):
            continue
        role = message.get("role")
        if role not in READ_ROLES:
            continue
        text = _readable(content_text(message.get("content")).strip())
        if text:
            turns.append(Turn(str(role), text))
    return turns


def _recent(messages: Sequence[object], reading: Reading) -> list[Turn]:
    picked: list[Turn] = []
    chars = 0
    for message in reversed(messages):
        if not isinstance(message, dict):
            continue
        role = message.get("role")
        if role not in READ_ROLES or (not picked and role != "user"):
            continue  # before the latest user turn is found: an assistant prefill, unread
        text = _readable(_clipped_content(message.get("content"), reading.turn_chars))
        if not text:
            continue
        picked.append(Turn(str(role), text))
        if len(picked) > 1:
            chars += len(text)
        if len(picked) > reading.context_turns or chars >= reading.context_chars:
            break
    picked.reverse()
    return picked


def content_text(content: object) -> str:
    """A message's text: a string, or the text parts of a list of content parts."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    texts = []
    for part in content:
        if isinstance(part, dict) and part.get("type") in TEXT_PARTS:
            text = part.get("text")
            if isinstance(text, str) and text.strip():
                texts.append(text.strip())
    return "\n".join(texts)


def _clipped_content(content: object, limit: int) -> str:
    """``content_text`` stripped and cut by ``clip``, reading no more parts than the head and
    tail need."""
    if isinstance(content, str):
        return clip(content, limit)
    if not isinstance(content, list):
        return ""
    head: list[str] = []
    size = 0
    stop = len(content)
    for i, part in enumerate(content):
        text = _part_text(part, limit)
        if text:
            head.append(text)
            size += len(text) + 1
            if size > limit:
                stop = i + 1
                break
    else:
        return clip("\n".join(head), limit)
    tail: list[str] = []
    size = 0
    for i in range(len(content) - 1, stop - 1, -1):
        text = _part_text(content[i], limit)
        if text:
            tail.append(text)
            size += len(text) + 1
            if size > limit:
                break
    tail.reverse()
    return clip("\n".join(head + tail), limit)


def _part_text(part: object, limit: int) -> str:
    if isinstance(part, dict) and part.get("type") in TEXT_PARTS:
        text = part.get("text")
        if isinstance(text, str):
            return clip(text, limit)
    return ""


def clip(text: str, limit: int) -> str:
    """``text`` stripped; if longer than ``limit``, its first and last characters joined by a
    newline, ``limit`` in all. Reads only the ends of ``text``, and clipping a clipped text
    changes nothing."""
    start, stop = _lead(text), len(text) - _trail(text)
    if stop - start <= limit:
        return text[start:stop]
    head = (limit - 1) // 2
    tail = limit - 1 - head
    return text[start : start + head].rstrip() + "\n" + text[stop - tail : stop].lstrip()


def _lead(text: str) -> int:
    """How many whitespace characters ``text`` starts with (looking no further than that)."""
    window = 64
    while True:
        part = text[:window]
        lead = len(part) - len(part.lstrip())
        if lead < len(part) or window >= len(text):
            return lead
        window *= 4


def _trail(text: str) -> int:
    window = 64
    while True:
        part = text[-window:]
        trail = len(part) - len(part.rstrip())
        if trail < len(part) or window >= len(text):
            return trail
        window *= 4


def _readable(text: str) -> str:
    if text.isascii() or not _SURROGATE.search(text):
        return text
    return _SURROGATE.sub("\ufffd", text)


def latest_user_index(turns: Sequence[Turn]) -> int | None:
    """Index of the newest user turn: the intent a router must serve."""
    for i in range(len(turns) - 1, -1, -1):
        if turns[i].role == "user":
            return i
    return None
