"""What a router reads of a conversation, bounded by its token budget: newest first, the
walk stops once the router has what it can use, long turns cut to their head and tail."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import pytest

from plano_extproc.config import DEFAULT_ROUTER
from plano_extproc.router.conversation import (
    CHARS_PER_TOKEN,
    CONTEXT_TURNS,
    Reading,
    Turn,
    clip,
    conversation,
    reading_for,
)
from plano_extproc.router.embedded import views

pytestmark = pytest.mark.unit

EMBEDDED = reading_for(DEFAULT_ROUTER)
ARCH = reading_for(dataclasses.replace(DEFAULT_ROUTER, kind="arch", max_tokens=2048))


class Counted(Sequence[Any]):
    """A list that counts the items read from it."""

    def __init__(self, items: list[Any]) -> None:
        self.items = items
        self.reads = 0

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: Any) -> Any:
        self.reads += 1
        return self.items[i]


class CountedPart(dict[str, Any]):
    reads = 0

    def get(self, key: str, default: Any = None) -> Any:
        CountedPart.reads += 1
        return super().get(key, default)


def user(text: object) -> dict[str, object]:
    return {"role": "user", "content": text}


def assistant(text: object) -> dict[str, object]:
    return {"role": "assistant", "content": text}


def embedded(turns: list[Turn]) -> object:
    """What the embedded router embeds of ``turns``: its views, each as far as a view can
    be read (max_tokens tokens of CHARS_PER_TOKEN characters)."""
    v = views(turns)
    if v is None:
        return None
    return [t[: DEFAULT_ROUTER.max_tokens * CHARS_PER_TOKEN] for t in v.texts], v.latest, v.context


def as_messages(turns: list[Turn]) -> list[dict[str, object]]:
    return [{"role": t.role, "content": t.text} for t in turns]


CONVERSATIONS: list[list[dict[str, object]]] = [
    [user("write a poem")],
    [user("write a sorting function"), assistant("def sort(x): ..."), user("now in rust")],
    [
        {"role": "system", "content": "You are a lawyer."},
        user("a"),
        assistant("b"),
        {"role": "tool", "content": "42"},
        user("c"),
        assistant("d"),
        user(
            [{"type": "text", "text": " e "}, {"type": "image_url"}, {"type": "text", "text": "f"}]
        ),
        assistant("a prefill after the latest user turn"),
    ],
    [assistant("hello")],
    [user("translate this to German please:\n" + "a clause about liability\n" * 40)],
]


@pytest.mark.parametrize("messages", CONVERSATIONS)
@pytest.mark.parametrize("reading", [EMBEDDED, ARCH], ids=["embedded", "arch"])
def test_a_bounded_reading_of_a_short_conversation_sees_what_the_whole_one_does(
    messages: list[dict[str, object]], reading: Reading
) -> None:
    whole = conversation(messages)
    bounded = conversation(messages, reading)
    assert embedded(bounded) == embedded(whole)
    if reading is ARCH:  # it reads every turn up to the latest user turn
        latest = max((i for i, t in enumerate(whole) if t.role == "user"), default=-1)
        assert bounded == whole[: latest + 1]


@pytest.mark.parametrize("reading", [EMBEDDED, ARCH], ids=["embedded", "arch"])
def test_reading_again_what_was_read_changes_nothing(reading: Reading) -> None:
    # A helper process sends back what it read, and the router reads that again.
    messages = [
        user("x" * 100_000 + "\n   end"),
        assistant([{"type": "text", "text": "y" * 70_000}] * 3),
        user("  what about this \udc80?  "),
    ]
    once = conversation(messages, reading)
    assert conversation(as_messages(once), reading) == once
    assert once[-1] == Turn("user", "what about this \ufffd?")


def test_the_walk_stops_once_the_router_has_its_turns() -> None:
    messages = Counted(
        [user(f"old question {i}") for i in range(100_000)]
        + [assistant("an answer"), user("a follow-up"), assistant("a prefill")]
    )
    turns = conversation(messages, EMBEDDED)
    assert CONTEXT_TURNS == 3
    assert [t.text for t in turns] == [
        "old question 99998",
        "old question 99999",
        "an answer",
        "a follow-up",
    ]
    assert messages.reads <= CONTEXT_TURNS + 3
    turns = conversation(messages, ARCH)
    assert len(turns) == ARCH.context_turns + 1  # each short turn costs tokens too


def test_earlier_turns_stop_at_the_character_budget() -> None:
    messages = [user("x" * 10_000) for _ in range(100)] + [user("now")]
    turns = conversation(messages, ARCH)
    assert sum(len(t.text) for t in turns[:-1]) < ARCH.context_chars + ARCH.turn_chars
    assert len(turns) < 10


def test_a_huge_turn_is_read_at_its_ends_only() -> None:
    paste = "please translate this contract into German:\n" + "clause\n" * 2_000_000 + "thanks!"
    (turn,) = conversation([user(paste)], EMBEDDED)
    assert len(turn.text) <= EMBEDDED.turn_chars
    assert turn.text.startswith("please translate this contract") and turn.text.endswith("thanks!")
    # What the embedded router embeds of it is what it embeds of the whole turn.
    assert embedded([turn]) == embedded([Turn("user", paste)])


def test_a_turn_of_many_parts_is_read_at_its_ends_only() -> None:
    CountedPart.reads = 0
    parts = [CountedPart(type="text", text=f"part {i}") for i in range(200_000)]
    (turn,) = conversation([user(parts)], EMBEDDED)
    assert turn.text.startswith("part 0\npart 1\n") and turn.text.endswith("part 199999")
    assert CountedPart.reads < 10_000
    assert embedded([turn]) == embedded(conversation([user(parts)]))


@pytest.mark.parametrize(
    ("text", "limit", "clipped"),
    [
        ("  abc  ", 3, "abc"),
        ("abcdef", 6, "abcdef"),
        ("abcdefgh", 5, "ab\ngh"),
        ("ab    \n   efgh", 7, "ab\nfgh"),
        (" \n\t ", 3, ""),
        ("x" + " " * 10_000 + "y", 5, "x\ny"),
        (" " * 5000 + "abcdefgh" + " " * 5000, 5, "ab\ngh"),
    ],
)
def test_clip(text: str, limit: int, clipped: str) -> None:
    assert clip(text, limit) == clipped
    assert clip(clipped, limit) == clipped


def test_the_budget_follows_max_tokens() -> None:
    small = reading_for(dataclasses.replace(DEFAULT_ROUTER, max_tokens=256))
    large = reading_for(dataclasses.replace(DEFAULT_ROUTER, max_tokens=8192))
    assert small.context_turns == large.context_turns == CONTEXT_TURNS
    assert small.turn_chars < large.turn_chars
    assert large.turn_chars >= 2 * 8192 * 8  # a whole-turn view of max_tokens fits its head
