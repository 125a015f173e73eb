"""What a router reads of a chat request: the user and assistant turns, as text.

System, developer and tool messages are never read: a system prompt describes the app, not
what the user wants now. Image and audio parts are dropped and their text parts kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

READ_ROLES = ("user", "assistant")


@dataclass(frozen=True)
class Turn:
    role: str  # "user" or "assistant"
    text: str


def conversation(messages: Sequence[object]) -> list[Turn]:
    """The turns a router reads, oldest first; empty turns are dropped."""
    turns: list[Turn] = []
    for message in messages:
        if not isinstance(message, dict):
            continue
        role = message.get("role")
        if role not in READ_ROLES:
            continue
        text = content_text(message.get("content")).strip()
        if text:
            turns.append(Turn(str(role), text))
    return turns


def content_text(content: object) -> str:
    """A message's text: a string, or the text parts of a list of content parts."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    texts = []
    for part in content:
        if isinstance(part, dict) and part.get("type") in ("text", "input_text"):
            text = part.get("text")
            if isinstance(text, str) and text.strip():
                texts.append(text.strip())
    return "\n".join(texts)


def latest_user_index(turns: Sequence[Turn]) -> int | None:
    """Index of the newest user turn: the intent a router must serve."""
    for i in range(len(turns) - 1, -1, -1):
        if turns[i].role == "user":
            return i
    return None
