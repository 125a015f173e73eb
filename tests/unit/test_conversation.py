"""What a router reads of a conversation, bounded by its token budget: newest first, the
walk stops once the router has what it can use, long turns cut to their head and tail.
OpenAI and Anthropic messages alike: text blocks only, without <system-reminder> spans,
and nothing after the last human message, so each step of an agent's tool loop is read
the same."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plano_extproc.config import DEFAULT_ROUTER
from plano_extproc.router.conversation import (
    CHARS_PER_TOKEN,
    CONTEXT_TURNS,
    Reading,
    Turn,
    clip,
    clip_read,
    content_text,
    conversation,
    reading_for,
    strip_reminders,
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


# Anthropic Messages API conversations, and the agent turn.

SMALL = Reading(1, 40, 40)  # cuts turns and context: the anchor must hold when clipped too
READINGS = [None, EMBEDDED, ARCH, SMALL]
READING_IDS = ["whole", "embedded", "arch", "small"]

CONTEXT_REMINDER = (
    "<system-reminder>\nAs you answer the user's questions, you can use the following "
    "context:\n# claudeMd\nCodebase and user instructions are shown below.\n\n"
    "Contents of /repo/CLAUDE.md:\n\n- run `make test` before committing\n\n"
    "      IMPORTANT: this context may or may not be relevant to your tasks.\n"
    "</system-reminder>\n"
)
TODO_REMINDER = (
    "<system-reminder>\nThe TodoWrite tool hasn't been used recently. If you're working on "
    "tasks that would benefit from tracking progress, consider using it.\n</system-reminder>"
)
FILE_REMINDER = (
    "<system-reminder>\nNote: /repo/app.py was modified, either by the user or by a linter."
    "\n</system-reminder>"
)


def text(value: str) -> dict[str, object]:
    return {"type": "text", "text": value}


def human(typed: str) -> dict[str, object]:
    """A user message as Claude Code sends it: reminders around the typed text."""
    return user([text(CONTEXT_REMINDER), text(typed + "\n\n" + TODO_REMINDER)])


def tool_step(i: int) -> list[dict[str, object]]:
    """One step of Claude Code's tool loop: the model's text and tool call, then its result
    in a user message (with a reminder, as Claude Code sends after some tools)."""
    call: dict[str, object] = {
        "role": "assistant",
        "content": [
            {"type": "thinking", "thinking": f"step {i}: what next?", "signature": "c2ln"},
            text(f"Let me check step {i}..."),
            {"type": "tool_use", "id": f"toolu_{i}", "name": "Bash", "input": {"cmd": "ls"}},
        ],
    }
    result = user(
        [
            {
                "type": "tool_result",
                "tool_use_id": f"toolu_{i}",
                "content": [text(f"output of step {i}: FAILED test_app.py")],
            },
            text(FILE_REMINDER),
        ]
    )
    return [call, result]


CLAUDE_CODE: list[dict[str, object]] = [
    human("what does app.py do?"),
    assistant([text("It serves the HTTP API.")]),
    human("fix the failing test in test_app.py"),
    {"role": "system", "content": "You are Claude Code, Anthropic's official CLI for Claude."},
]
CLAUDE_CODE_TURNS = [
    Turn("user", "what does app.py do?"),
    Turn("assistant", "It serves the HTTP API."),
    Turn("user", "fix the failing test in test_app.py"),
]


def openai_step(i: int) -> list[dict[str, object]]:
    """One step of an OpenAI tool loop: a tool call (with text or without), its result."""
    call = {
        "id": f"call_{i}",
        "type": "function",
        "function": {"name": "run", "arguments": "{}"},
    }
    return [
        {
            "role": "assistant",
            "content": f"Let me check step {i}..." if i % 2 else None,
            "tool_calls": [call],
        },
        {"role": "tool", "tool_call_id": f"call_{i}", "content": f"output of step {i}"},
    ]


OPENAI_AGENT: list[dict[str, object]] = [
    {"role": "system", "content": "You are a coding agent."},
    user("what does app.py do?"),
    assistant("It serves the HTTP API."),
    user("fix the failing test in test_app.py"),
]


@pytest.mark.parametrize(
    "messages",
    [
        CLAUDE_CODE + tool_step(0) + tool_step(1),
        OPENAI_AGENT + openai_step(0) + [assistant("Fixed.")],
    ],
    ids=["claude-code", "openai"],
)
@pytest.mark.parametrize("reading", [EMBEDDED, ARCH], ids=["embedded", "arch"])
def test_a_bounded_reading_of_an_agent_turn_sees_what_the_whole_one_does(
    messages: list[dict[str, object]], reading: Reading
) -> None:
    test_a_bounded_reading_of_a_short_conversation_sees_what_the_whole_one_does(messages, reading)


@pytest.mark.parametrize("reading", READINGS, ids=READING_IDS)
def test_anthropic_string_and_block_content(reading: Reading | None) -> None:
    messages = [
        user("what is a monad?"),
        assistant([text("A monoid"), text("of endofunctors.")]),
        user([text("  in plain words  "), text(""), text("please")]),
    ]
    turns = conversation(messages, reading)
    expected = [
        Turn("user", "what is a monad?"),
        Turn("assistant", "A monoid\nof endofunctors."),
        Turn("user", "in plain words\nplease"),
    ]
    assert len(turns) == (2 if reading is SMALL else 3)
    assert turns == expected[-len(turns) :]


NOT_TEXT: list[object] = [
    {"type": "tool_use", "id": "t1", "name": "Read", "input": {"text": "tool input"}},
    {"type": "tool_result", "tool_use_id": "t1", "content": "tool output"},
    {"type": "tool_result", "tool_use_id": "t2", "content": [text("nested tool output")]},
    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"}},
    {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "doc"}},
    {"type": "thinking", "thinking": "hmm", "signature": "c2ln", "text": "thought"},
    {"type": "redacted_thinking", "data": "ZW5j"},
    {"type": "server_tool_use", "id": "s1", "name": "web_search", "input": {"query": "q"}},
    {"type": "web_search_tool_result", "tool_use_id": "s1", "content": [text("found")]},
    {"type": "search_result", "source": "s", "title": "t", "text": "an unknown block type"},
    {"text": "no type"},
    {"type": "text", "text": None},
    "a bare string",
]


@pytest.mark.parametrize("reading", READINGS, ids=READING_IDS)
def test_only_text_blocks_are_read(reading: Reading | None) -> None:
    messages = [
        user([*NOT_TEXT[:5], text("what is in this image?"), *NOT_TEXT[5:]]),
        assistant([*NOT_TEXT, text("A cat."), *NOT_TEXT]),
        user([*NOT_TEXT, text("and its colour?")]),
    ]
    assert conversation(messages, reading)[-1] == Turn("user", "and its colour?")
    if reading is not SMALL:
        assert conversation(messages, reading) == [
            Turn("user", "what is in this image?"),
            Turn("assistant", "A cat."),
            Turn("user", "and its colour?"),
        ]
    # A user message of tool results and other blocks only is not a human message.
    assert conversation([*messages, user(NOT_TEXT)], reading) == conversation(messages, reading)
    assert content_text(NOT_TEXT) == ""


@pytest.mark.parametrize(
    ("content", "typed"),
    [
        ([text(CONTEXT_REMINDER), text("fix the bug")], "fix the bug"),  # a whole block
        ([text(CONTEXT_REMINDER + "fix the bug")], "fix the bug"),  # before the typed text
        ([text("fix the bug\n\n" + TODO_REMINDER)], "fix the bug"),  # after it
        ([text(f"{CONTEXT_REMINDER}fix{FILE_REMINDER} the bug\n{TODO_REMINDER}")], "fix\n the bug"),
        (CONTEXT_REMINDER + "fix the bug" + TODO_REMINDER + FILE_REMINDER, "fix the bug"),
        ("<system-reminder>a\n<b>\n\n  c</system-reminder>fix the bug", "fix the bug"),
        # An open tag with no close tag after it is no span: it is text.
        ("fix the <system-reminder> tag", "fix the <system-reminder> tag"),
        ("fix </system-reminder> this", "fix </system-reminder> this"),
        # A span goes from the leftmost open tag to the nearest close tag.
        (
            "<system-reminder>a<system-reminder>b</system-reminder>fix</system-reminder>",
            "fix</system-reminder>",
        ),
    ],
)
@pytest.mark.parametrize("reading", READINGS, ids=READING_IDS)
def test_system_reminders_are_not_read(
    content: object, typed: str, reading: Reading | None
) -> None:
    turns = conversation([user(content)], reading)
    expected = typed if reading is not SMALL else clip(typed, SMALL.turn_chars)
    assert turns == [Turn("user", expected)]
    # Reading again what was read changes nothing: no span is left in it.
    assert conversation(as_messages(turns), reading) == turns


@pytest.mark.parametrize("reading", READINGS, ids=READING_IDS)
def test_a_message_of_reminders_only_is_not_human(reading: Reading | None) -> None:
    messages = [user("write a haiku"), assistant("Autumn moonlight...")]
    for content in ([text(TODO_REMINDER)], [text(TODO_REMINDER), text(" \n ")], FILE_REMINDER):
        assert conversation([*messages, user(content)], reading) == conversation(
            messages[:1], reading
        )


@pytest.mark.parametrize("reading", READINGS, ids=READING_IDS)
def test_system_and_developer_messages_are_never_read(reading: Reading | None) -> None:
    messages = [
        user("what is a monad?"),
        {"role": "system", "content": "You are Claude Code."},
        {"role": "developer", "content": [text("Be terse.")]},
    ]
    assert conversation(messages, reading) == [Turn("user", "what is a monad?")]
    assert conversation(CLAUDE_CODE, reading)[-1] == CLAUDE_CODE_TURNS[-1]


@pytest.mark.parametrize("reading", READINGS, ids=READING_IDS)
def test_every_step_of_a_claude_code_tool_loop_reads_the_same(reading: Reading | None) -> None:
    turns = conversation(CLAUDE_CODE, reading)
    assert turns == CLAUDE_CODE_TURNS[-len(turns) :]
    assert len(turns) == (2 if reading is SMALL else 3)
    messages = list(CLAUDE_CODE)
    for i in range(10):
        for message in tool_step(i):
            messages.append(message)
            assert conversation(messages, reading) == turns, (i, message["role"])
    messages.append(assistant([text("Fixed: the test expected the old port.")]))
    assert conversation(messages, reading) == turns
    # The next human message is a new agent turn.
    messages.append(human("now update the docs"))
    after = conversation(messages, reading)
    assert after[-1] == Turn("user", "now update the docs")
    if reading is not SMALL:
        assert after[-2] == Turn("assistant", "Fixed: the test expected the old port.")
    # A message typed while tools run (Claude Code adds it to the tool results) is human.
    queued = user([{"type": "tool_result", "tool_use_id": "t", "content": "ok"}, text("stop")])
    assert conversation([*CLAUDE_CODE, *tool_step(0)[:1], queued], reading)[-1] == Turn(
        "user", "stop"
    )


@pytest.mark.parametrize("reading", READINGS, ids=READING_IDS)
def test_every_step_of_an_openai_tool_loop_reads_the_same(reading: Reading | None) -> None:
    turns = conversation(OPENAI_AGENT, reading)
    assert (
        turns
        == [
            Turn("user", "what does app.py do?"),
            Turn("assistant", "It serves the HTTP API."),
            Turn("user", "fix the failing test in test_app.py"),
        ][-len(turns) :]
    )
    messages = list(OPENAI_AGENT)
    for i in range(10):
        for message in openai_step(i):
            messages.append(message)
            assert conversation(messages, reading) == turns, (i, message["role"])
    messages.append(assistant("Fixed."))
    assert conversation(messages, reading) == turns
    messages.append(user("now update the docs"))
    assert conversation(messages, reading)[-1] == Turn("user", "now update the docs")
    assert conversation(messages, reading) != turns


@pytest.mark.parametrize("reading", [None, SMALL], ids=["whole", "small"])
def test_with_no_human_message_the_assistant_turns_are_read_as_before(
    reading: Reading | None,
) -> None:
    messages = [assistant("hello"), user(NOT_TEXT), user(TODO_REMINDER), assistant("bye")]
    expected = [Turn("assistant", "hello"), Turn("assistant", "bye")]
    assert conversation(messages, reading) == (expected if reading is None else [])


def test_the_walk_stops_at_the_last_human_message_and_its_context() -> None:
    loop = [message for i in range(1000) for message in tool_step(i)]
    messages = Counted(
        [human(f"old question {i}") for i in range(10_000)] + [human("fix it"), *loop]
    )
    turns = conversation(messages, EMBEDDED)
    assert turns[-1] == Turn("user", "fix it") and len(turns) == CONTEXT_TURNS + 1
    assert messages.reads <= len(loop) + CONTEXT_TURNS + 3


# Tool-loop steps of either API: whatever they hold, none is a human message.
REMINDERS = st.builds(
    lambda inner: f"<system-reminder>{inner}</system-reminder>",
    st.text(alphabet=st.characters(exclude_characters="<"), max_size=20),
)
ANY_TEXT = st.one_of(st.text(max_size=20), REMINDERS, st.just("Let me check..."))
NOT_TEXT_BLOCK = st.sampled_from(NOT_TEXT)
ASSISTANT_BLOCKS = st.lists(st.one_of(NOT_TEXT_BLOCK, ANY_TEXT.map(text)), max_size=4).map(
    assistant
)
TOOL_RESULTS = st.lists(
    st.one_of(
        NOT_TEXT_BLOCK,
        REMINDERS.map(text),
        st.sampled_from(["", " ", "\n\t"]).map(text),
        st.builds(
            lambda out: {"type": "tool_result", "tool_use_id": "t", "content": [text(out)]},
            ANY_TEXT,
        ),
    ),
    max_size=4,
).map(user)
OPENAI_CALLS = st.builds(
    lambda content: {
        "role": "assistant",
        "content": content,
        "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f"}}],
    },
    st.one_of(st.none(), ANY_TEXT),
)
OTHER_ROLES = st.builds(
    lambda role, content: {"role": role, "content": content},
    st.sampled_from(["tool", "system", "developer", "function", None]),
    st.one_of(ANY_TEXT, st.lists(ANY_TEXT.map(text), max_size=2)),
)
STEP = st.one_of(
    ASSISTANT_BLOCKS,
    TOOL_RESULTS,
    OPENAI_CALLS,
    OTHER_ROLES,
    ANY_TEXT.map(assistant),
    st.sampled_from([user(None), user(7), user(""), "junk"]),
)
TYPED = st.text(alphabet="abc xyz\n", min_size=1, max_size=30).filter(str.strip)
HISTORY = st.lists(
    st.one_of(TYPED.map(user), TYPED.map(assistant), TYPED.map(human), STEP), max_size=6
)


@settings(max_examples=200, derandomize=True, deadline=None)
@given(
    history=HISTORY,
    typed=TYPED,
    steps=st.lists(STEP, max_size=8),
    step=STEP,
    reading=st.sampled_from(READINGS),
)
def test_no_tool_loop_step_after_the_last_human_message_changes_the_turns(
    history: list[object],
    typed: str,
    steps: list[object],
    step: object,
    reading: Reading | None,
) -> None:
    messages = [*history, human(typed), *steps]
    turns = conversation(messages, reading)
    assert turns == conversation([*history, human(typed)], reading)
    assert turns[-1].role == "user"
    assert typed.strip().startswith(turns[-1].text.split("\n")[0])
    assert conversation([*messages, step], reading) == turns


# clip_read: clip(strip_reminders(text)), looking only near the ends of a long text.

PIECES = [
    "<system-reminder>",
    "</system-reminder>",
    "<system-",
    "reminder>",
    "r>",
    "<",
    "ab c",
    " ",
    "\n",
    "x" * 50,
    " " * 80,
]


@settings(max_examples=200, derandomize=True, deadline=None)
@given(
    pieces=st.lists(st.sampled_from(PIECES), max_size=60),
    limit=st.sampled_from([3, 5, 10, 33, 64, 100]),
)
def test_clip_read_is_clip_of_the_text_without_reminders(pieces: list[str], limit: int) -> None:
    text = "".join(pieces)
    clipped = clip_read(text, limit)
    assert clipped == clip(strip_reminders(text), limit)
    assert clip_read(clipped, limit) == clipped


class Watched(str):
    """A string that counts the characters sliced out of it and notes a search of it all."""

    sliced = 0
    searched = False

    def __getitem__(self, key: Any) -> str:
        part = str.__getitem__(self, key)
        Watched.sliced += len(part)
        return part

    def __contains__(self, key: object) -> bool:
        Watched.searched = True
        return str.__contains__(self, key)  # type: ignore[operator]

    def find(self, *args: Any) -> int:
        Watched.searched = True
        return str.find(self, *args)


@pytest.mark.parametrize(
    ("head", "tail"),
    [
        ("please translate this contract:\n", "thanks!"),
        (CONTEXT_REMINDER + "please translate this contract:\n", "thanks!\n" + TODO_REMINDER),
        # A reminder longer than a first look at either end: it is read through.
        ("<system-reminder>" + "x" * 100_000 + "</system-reminder>please translate:", "thanks!"),
        ("please translate:", "thanks!<system-reminder>" + "y\n" * 100_000 + "</system-reminder>"),
    ],
)
def test_a_huge_turn_with_reminders_is_read_at_its_ends_only(head: str, tail: str) -> None:
    paste = head + "clause <system-reminder>x</system-reminder>\n" * 500_000 + tail
    Watched.sliced, Watched.searched = 0, False
    (turn,) = conversation([user(Watched(paste))], EMBEDDED)
    assert not Watched.searched
    # The windows grow fourfold until they hold the ends clip keeps, reminders read through.
    assert Watched.sliced < 32 * (EMBEDDED.turn_chars + len(head) + len(tail))
    assert Watched.sliced < len(paste) // 10
    assert turn.text.startswith("please translate") and turn.text.endswith("thanks!")
    assert turn.text == clip(strip_reminders(paste), EMBEDDED.turn_chars)
    (whole,) = conversation([user(paste)])
    assert embedded([turn]) == embedded([whole])
