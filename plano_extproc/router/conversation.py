"""What a router reads of a chat request: the text a person typed in the current agent turn
and the turns before it.

It reads OpenAI chat-completions messages and Anthropic Messages API messages alike: a
message's content is a string or a list of content blocks, and only text blocks
(``{"type": "text", "text": ...}``) are read. Images, audio, documents, tool calls, tool
results and thinking blocks say what a model did or saw, not what the user asked for.
System, developer and tool messages are never read either, wherever they stand in the list
(a coding agent sends its system message after the user turn): a system prompt describes
the app, not what the user wants now. A ``<system-reminder>`` span is text an agent adds
to a user message (Claude Code sends file context and to-do lists so), not what the person
typed: every such span is cut out of a text before it is read.

A router reads the conversation up to the last human message: the last user message with
text left to read. What follows it is the agent at work on that message: assistant text
and tool calls, and tool results (in Anthropic's shape, user messages of ``tool_result``
blocks only). Reading none of it, every request of one agent turn (each step of a tool
loop is a request) hands the router the same turns, so it makes one decision for the
whole turn and the decision cache answers all the steps after the first.

A router reads only what its token budget can use (``Reading``): the messages are walked
newest first and the walk stops once the last human message and the turns before it that
the router reads are found; a turn longer than the budget can use is cut to its head and
tail (where a long paste's instruction is) before anything splits or joins it, and its
reminders are looked for only where that head and tail are. A decision's cost then
depends on ``max_tokens``, not on the size of the body.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from ..config import RouterSettings

READ_ROLES = ("user", "assistant")
# OpenAI's text parts and Anthropic's text blocks are both {"type": "text", "text": ...};
# input_text is the Responses API's.
TEXT_PARTS = ("text", "input_text")
REMINDER_OPEN = "<system-reminder>"
REMINDER_CLOSE = "</system-reminder>"
# The leftmost open tag up to the nearest close tag, across lines. A span is replaced by a
# line break: it stood apart from the text around it, and no tag can form across the break,
# so reading a text again cuts nothing more.
_REMINDER = re.compile(re.escape(REMINDER_OPEN) + ".*?" + re.escape(REMINDER_CLOSE), re.DOTALL)
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
    """The turns a router reads, oldest first, ending at the last human message (the last
    user turn with text to read); empty turns are dropped. With ``reading``, only that turn
    and the turns before it that ``reading`` allows, each cut to ``reading.turn_chars``;
    without, every turn up to it. With no human message, the assistant turns."""
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
    # Every user turn left has text: the last one is the last human message.
    latest = latest_user_index(turns)
    return turns if latest is None else turns[: latest + 1]


def _recent(messages: Sequence[object], reading: Reading) -> list[Turn]:
    picked: list[Turn] = []
    chars = 0
    for message in reversed(messages):
        if not isinstance(message, dict):
            continue
        role = message.get("role")
        if role not in READ_ROLES or (not picked and role != "user"):
            # Before the last human message is found: the agent's work on it (assistant
            # text, tool calls, a prefill), unread.
            continue
        text = _readable(_clipped_content(message.get("content"), reading.turn_chars))
        if not text:
            continue  # tool results or reminders only: not a human message either
        picked.append(Turn(str(role), text))
        if len(picked) > 1:
            chars += len(text)
        if len(picked) > reading.context_turns or chars >= reading.context_chars:
            break
    picked.reverse()
    return picked


def content_text(content: object) -> str:
    """A message's text: a string, or the text parts of a list of content parts (blocks),
    without their ``<system-reminder>`` spans."""
    if isinstance(content, str):
        return strip_reminders(content)
    if not isinstance(content, list):
        return ""
    texts = []
    for part in content:
        if isinstance(part, dict) and part.get("type") in TEXT_PARTS:
            text = part.get("text")
            if isinstance(text, str):
                text = strip_reminders(text).strip()
                if text:
                    texts.append(text)
    return "\n".join(texts)


def strip_reminders(text: str) -> str:
    """``text`` without its ``<system-reminder>`` spans."""
    if REMINDER_OPEN not in text:
        return text
    return _REMINDER.sub("\n", text)


def _clipped_content(content: object, limit: int) -> str:
    """``content_text`` stripped and cut by ``clip``, reading no more parts than the head and
    tail need."""
    if isinstance(content, str):
        return clip_read(content, limit)
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
            return clip_read(text, limit)
    return ""


def clip_read(text: str, limit: int) -> str:
    """``clip(strip_reminders(text), limit)``, looking for reminders only near the ends of
    ``text``: in its first and last ``window`` characters, ``window`` growing until these
    hold the head and tail that ``clip`` keeps (a reminder at an end is read through)."""
    head_chars = (limit - 1) // 2
    tail_chars = limit - 1 - head_chars
    window = max(limit, 64)
    while 2 * window < len(text):
        head = _head_unreminded(text[:window])
        tail = _tail_unreminded(text[-window:])
        # Each is a piece of the text without reminders, with more than clip keeps of it:
        # the whole is longer than limit, and clip keeps the same of both.
        if len(head) - _lead(head) > head_chars and len(tail) - _trail(tail) > tail_chars:
            return clip(head + tail, limit)
        window *= 4
    return clip(strip_reminders(text), limit)


def _head_unreminded(window: str) -> str:
    """The start of a text without its reminders, from the text's first characters: a
    reminder still open where the window ends (or a tag that it cuts) and what follows it
    are not read, so what is returned comes before any reminder the window cannot see."""
    text = strip_reminders(window)
    cut = text.find(REMINDER_OPEN)
    if cut >= 0:
        return text[:cut]
    for n in range(len(REMINDER_OPEN) - 1, 0, -1):
        if text.endswith(REMINDER_OPEN[:n]):
            return text[:-n]
    return text


def _tail_unreminded(window: str) -> str:
    """The end of a text without its reminders, from the text's last characters. A
    reminder begun before the window ends at the window's first close tag: what comes
    before that tag (or before the end of a tag the window cuts) is not read."""
    for n in range(len(REMINDER_CLOSE) - 1, 0, -1):
        if window.startswith(REMINDER_CLOSE[-n:]):
            window = window[n:]
            break
    end = window.find(REMINDER_CLOSE)
    if end >= 0:
        window = window[end + len(REMINDER_CLOSE) :]
    return strip_reminders(window)


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
