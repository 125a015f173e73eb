"""Streamed responses, both ways: the exact client events, any chunking, cut and broken
upstreams; and the protocol rules each client's parser relies on, for any upstream."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plano_extproc.translate import AnthropicToOpenAI, OpenAIToAnthropic
from plano_extproc.translate.base import EventStream
from plano_extproc.translate.sse import Event, SSEParser
from tests.translate_fixtures import (
    ANTHROPIC_OVERLOADED_MID_STREAM,
    ANTHROPIC_STREAM,
    ANTHROPIC_STREAM_CUT_BEFORE_STOP,
    ANTHROPIC_STREAM_CUT_MID_EVENT,
    ANTHROPIC_STREAM_EVENTS,
    OPENAI_REASONING_STREAM,
    OPENAI_STREAM,
    OPENAI_STREAM_CHUNKS,
    OPENAI_STREAM_CUT_MID_EVENT,
    sse,
)

pytestmark = pytest.mark.unit

TO_OPENAI_CLIENT = OpenAIToAnthropic(clock=lambda: 1700000000)
TO_ANTHROPIC_CLIENT = AnthropicToOpenAI()
WITH_USAGE = {"stream": True, "stream_options": {"include_usage": True}}


def openai_client_stream(include_usage: bool = True) -> EventStream:
    return TO_OPENAI_CLIENT.stream(WITH_USAGE if include_usage else {"stream": True})


def anthropic_client_stream() -> EventStream:
    return TO_ANTHROPIC_CLIENT.stream({"stream": True})


def run(stream: EventStream, raw: bytes, cuts: list[int] | None = None) -> bytes:
    out = b""
    start = 0
    for cut in sorted(cuts or []):
        out += stream.feed(raw[start:cut])
        start = cut
    return out + stream.feed(raw[start:]) + stream.finish()


def events(raw: bytes) -> list[Event]:
    parser = SSEParser()
    return parser.feed(raw) + parser.finish()


def chunks(raw: bytes) -> list[Any]:
    """An OpenAI client's stream: the chunk objects, and "[DONE]" as itself."""
    return [
        event.data if event.data == "[DONE]" else json.loads(event.data) for event in events(raw)
    ]


def deltas(raw: bytes) -> list[Any]:
    return [
        chunk["choices"][0]["delta"]
        for chunk in chunks(raw)
        if chunk != "[DONE]" and chunk["choices"]
    ]


def anthropic_events(raw: bytes) -> list[tuple[str | None, Any]]:
    return [(event.event, json.loads(event.data)) for event in events(raw)]


# --- Anthropic upstream -> OpenAI client ----------------------------------------------------


def test_an_anthropic_stream_as_openai_chunks() -> None:
    out = chunks(run(openai_client_stream(), ANTHROPIC_STREAM))
    assert out[-1] == "[DONE]"
    for chunk in out[:-1]:
        assert chunk["id"] == "msg_014p7gG3wDgGV9EUtLvnow3U"
        assert chunk["model"] == "claude-sonnet-4-5-20250929"
        assert chunk["object"] == "chat.completion.chunk"
        assert chunk["created"] == 1700000000
    assert [chunk["choices"][0]["finish_reason"] for chunk in out[:-2]] == [None] * 9 + [
        "tool_calls"
    ]
    assert deltas(run(openai_client_stream(), ANTHROPIC_STREAM)) == [
        {"role": "assistant", "content": ""},
        {"reasoning_content": "The user asks about "},
        {"reasoning_content": "Paris weather — café?"},
        {
            "thinking_blocks": [
                {
                    "index": 0,
                    "type": "thinking",
                    "thinking": "The user asks about Paris weather — café?",
                    "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3h",
                }
            ]
        },
        {"content": "Okay, let's check "},
        {"content": "the weather in Paris 日本."},
        {
            "tool_calls": [
                {
                    "index": 0,
                    "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": ""},
                }
            ]
        },
        {"tool_calls": [{"index": 0, "function": {"arguments": '{"location": "Pa'}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": 'ris", "unit": "celsius"}'}}]},
        {},
    ]
    assert out[-2] == {
        "id": "msg_014p7gG3wDgGV9EUtLvnow3U",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "claude-sonnet-4-5-20250929",
        "choices": [],
        "usage": {
            "prompt_tokens": 600,
            "completion_tokens": 89,
            "total_tokens": 689,
            "prompt_tokens_details": {"cached_tokens": 128},
        },
    }


def test_no_usage_chunk_unless_asked() -> None:
    out = chunks(run(openai_client_stream(include_usage=False), ANTHROPIC_STREAM))
    assert out[-1] == "[DONE]"
    assert out[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert all("usage" not in chunk for chunk in out[:-1])


def test_two_tool_uses_get_consecutive_indexes() -> None:
    start, *_ = ANTHROPIC_STREAM_EVENTS
    raw = sse(
        start,
        *[
            event
            for index, name in ((0, "a"), (1, "b"))
            for event in (
                (
                    "content_block_start",
                    {
                        "type": "content_block_start",
                        "index": index,
                        "content_block": {
                            "type": "tool_use",
                            "id": f"t{index}",
                            "name": name,
                            "input": {},
                        },
                    },
                ),
                (
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "input_json_delta", "partial_json": "{}"},
                    },
                ),
                ("content_block_stop", {"type": "content_block_stop", "index": index}),
            )
        ],
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "tool_use"},
                "usage": {"output_tokens": 3},
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    )
    calls = [
        call
        for delta in deltas(run(openai_client_stream(), raw))
        for call in delta.get("tool_calls", [])
    ]
    assert [(call["index"], call.get("id")) for call in calls] == [
        (0, "t0"),
        (0, None),
        (1, "t1"),
        (1, None),
    ]


def test_a_redacted_thinking_block_and_a_server_tool_block() -> None:
    start, *_ = ANTHROPIC_STREAM_EVENTS
    raw = sse(
        start,
        (
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "redacted_thinking", "data": "opaque"},
            },
        ),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        (
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 1,
                "content_block": {
                    "type": "server_tool_use",
                    "id": "s",
                    "name": "web_search",
                    "input": {},
                },
            },
        ),
        (
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 1,
                "delta": {"type": "input_json_delta", "partial_json": "{}"},
            },
        ),
        ("content_block_stop", {"type": "content_block_stop", "index": 1}),
        ("message_stop", {"type": "message_stop"}),
    )
    assert deltas(run(openai_client_stream(), raw)) == [
        {"role": "assistant", "content": ""},
        {"thinking_blocks": [{"index": 0, "type": "redacted_thinking", "data": "opaque"}]},
        {},
    ]


def test_an_upstream_error_event_ends_the_openai_stream() -> None:
    out = chunks(run(openai_client_stream(), ANTHROPIC_OVERLOADED_MID_STREAM))
    assert out[-1] == {
        "error": {
            "message": "Overloaded",
            "type": "server_error",
            "param": None,
            "code": "overloaded_error",
        }
    }
    assert "[DONE]" not in out


def test_cut_mid_event_ends_with_an_error_not_done() -> None:
    out = chunks(run(openai_client_stream(), ANTHROPIC_STREAM_CUT_MID_EVENT))
    assert out[-1]["error"]["message"] == "The upstream sent an event that is not a JSON object."
    assert "[DONE]" not in out


def test_cut_after_message_delta_closes_normally() -> None:
    out = chunks(run(openai_client_stream(), ANTHROPIC_STREAM_CUT_BEFORE_STOP))
    assert out[-1] == "[DONE]"
    assert out[-3]["choices"][0]["finish_reason"] == "tool_calls"


@pytest.mark.parametrize("raw", [b"", b": only a comment\n\n", b"event: ping\ndata: {}\n\n"])
def test_an_empty_upstream_stream_is_an_error(raw: bytes) -> None:
    out = chunks(run(openai_client_stream(), raw))
    assert out == [
        {
            "error": {
                "message": "The upstream's stream ended before the response was complete.",
                "type": "server_error",
                "param": None,
                "code": "api_error",
            }
        }
    ]


def test_nothing_after_the_end() -> None:
    stream = openai_client_stream()
    out = stream.feed(ANTHROPIC_STREAM)
    assert out.endswith(b"data: [DONE]\n\n")
    assert stream.feed(ANTHROPIC_STREAM) == b""
    assert stream.finish() == b""


# --- OpenAI upstream -> Anthropic client ----------------------------------------------------


def test_an_openai_stream_as_anthropic_events() -> None:
    def delta(index: int, body: dict[str, Any]) -> tuple[str, Any]:
        return "content_block_delta", {"type": "content_block_delta", "index": index, "delta": body}

    def stop(index: int) -> tuple[str, Any]:
        return "content_block_stop", {"type": "content_block_stop", "index": index}

    def tool(index: int, call_id: str, name: str) -> tuple[str, Any]:
        block = {"type": "tool_use", "id": call_id, "name": name, "input": {}}
        return "content_block_start", {
            "type": "content_block_start",
            "index": index,
            "content_block": block,
        }

    assert anthropic_events(run(anthropic_client_stream(), OPENAI_STREAM)) == [
        (
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": "chatcmpl-7QyqpwdfhqwajicIEznoc6Q47XAyW",
                    "type": "message",
                    "role": "assistant",
                    "content": [],
                    "model": "gpt-4o-mini-2024-07-18",
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {"input_tokens": 0, "output_tokens": 0},
                },
            },
        ),
        (
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        ),
        delta(0, {"type": "text_delta", "text": "Checking "}),
        delta(0, {"type": "text_delta", "text": "both — ünïcode."}),
        stop(0),
        tool(1, "call_abc123", "get_weather"),
        delta(1, {"type": "input_json_delta", "partial_json": '{"loc'}),
        delta(1, {"type": "input_json_delta", "partial_json": 'ation": "Paris"}'}),
        stop(1),
        tool(2, "call_def456", "get_time"),
        delta(2, {"type": "input_json_delta", "partial_json": '{"tz": "Europe/Paris"}'}),
        stop(2),
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                "usage": {
                    "input_tokens": 18,
                    "output_tokens": 17,
                    "cache_creation_input_tokens": 0,
                    "cache_read_input_tokens": 64,
                },
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]


def test_reasoning_then_text_without_done() -> None:
    out = anthropic_events(run(anthropic_client_stream(), OPENAI_REASONING_STREAM))
    assert [name for name, _ in out] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert out[1][1]["content_block"] == {"type": "thinking", "thinking": "", "signature": ""}
    assert out[2][1]["delta"] == {"type": "thinking_delta", "thinking": "Two plus two "}
    assert out[8][1]["delta"]["stop_reason"] == "end_turn"


def test_tool_calls_without_index_are_told_apart_by_id() -> None:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> tuple[None, Any]:
        return None, {
            "id": "x",
            "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }

    raw = sse(
        chunk({"tool_calls": [{"id": "a", "function": {"name": "f", "arguments": '{"x":'}}]}),
        chunk({"tool_calls": [{"function": {"arguments": "1}"}}]}),
        chunk({"tool_calls": [{"id": "b", "function": {"name": "g", "arguments": "{}"}}]}),
        chunk({}, "tool_calls"),
        (None, "[DONE]"),
    )
    out = anthropic_events(run(anthropic_client_stream(), raw))
    starts = [data["content_block"] for name, data in out if name == "content_block_start"]
    assert [(block["id"], block["name"]) for block in starts] == [("a", "f"), ("b", "g")]
    fragments = [
        (data["index"], data["delta"]["partial_json"])
        for name, data in out
        if name == "content_block_delta"
    ]
    assert fragments == [(0, '{"x":'), (0, "1}"), (1, "{}")]


def test_an_openai_error_chunk_ends_the_anthropic_stream() -> None:
    raw = OPENAI_STREAM[: OPENAI_STREAM.index(b"data:", 10)] + sse(
        (
            None,
            {
                "error": {
                    "message": "Rate limit reached",
                    "type": "requests",
                    "code": "rate_limit_exceeded",
                }
            },
        )
    )
    out = anthropic_events(run(anthropic_client_stream(), raw))
    assert out[-1] == (
        "error",
        {"type": "error", "error": {"type": "api_error", "message": "Rate limit reached"}},
    )
    assert "message_stop" not in [name for name, _ in out]


def test_cut_openai_stream_ends_with_an_error_event() -> None:
    out = anthropic_events(run(anthropic_client_stream(), OPENAI_STREAM_CUT_MID_EVENT))
    assert out[-1] == (
        "error",
        {
            "type": "error",
            "error": {
                "type": "api_error",
                "message": "The upstream sent a chunk that is not a JSON object.",
            },
        },
    )


def test_an_empty_openai_stream_is_an_error_event() -> None:
    assert anthropic_events(run(anthropic_client_stream(), b"")) == [
        (
            "error",
            {
                "type": "error",
                "error": {
                    "type": "api_error",
                    "message": "The upstream's stream ended before the response was complete.",
                },
            },
        )
    ]


def test_done_alone_is_an_empty_message() -> None:
    out = anthropic_events(run(anthropic_client_stream(), b"data: [DONE]\n\n"))
    assert [name for name, _ in out] == ["message_start", "message_delta", "message_stop"]


# --- any chunking ---------------------------------------------------------------------------

CASES = [
    ("openai-client", ANTHROPIC_STREAM),
    ("openai-client", ANTHROPIC_STREAM.replace(b"\n", b"\r\n")),
    ("openai-client", ANTHROPIC_STREAM_CUT_MID_EVENT),
    ("openai-client", ANTHROPIC_STREAM_CUT_BEFORE_STOP),
    ("openai-client", ANTHROPIC_OVERLOADED_MID_STREAM),
    ("anthropic-client", OPENAI_STREAM),
    ("anthropic-client", OPENAI_STREAM.replace(b"\n", b"\r")),
    ("anthropic-client", OPENAI_REASONING_STREAM),
    ("anthropic-client", OPENAI_STREAM_CUT_MID_EVENT),
]


def new_stream(client: str) -> EventStream:
    return openai_client_stream() if client == "openai-client" else anthropic_client_stream()


@pytest.mark.parametrize(("client", "raw"), CASES)
@settings(max_examples=60, derandomize=True, deadline=None)
@given(data=st.data())
def test_any_chunking_gives_the_same_client_bytes(
    client: str, raw: bytes, data: st.DataObject
) -> None:
    cuts = data.draw(st.lists(st.integers(0, len(raw)), max_size=40))
    assert run(new_stream(client), raw, cuts) == run(new_stream(client), raw)


@pytest.mark.parametrize(("client", "raw"), CASES)
def test_byte_at_a_time_gives_the_same_client_bytes(client: str, raw: bytes) -> None:
    assert run(new_stream(client), raw, list(range(len(raw)))) == run(new_stream(client), raw)


# --- any upstream: never an exception, always a closed stream that keeps the rules ---------

JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers(-2, 5) | st.text(max_size=6),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3)
    ),
    max_leaves=10,
)


def mutated(value: Any) -> st.SearchStrategy[Any]:
    """A fixture event with one field replaced by anything."""
    if isinstance(value, dict) and value:
        return st.sampled_from(sorted(value)).flatmap(
            lambda key: (mutated(value[key]) | JSONISH).map(lambda new: {**value, key: new})
        )
    return JSONISH


ANTHROPIC_VOCABULARY = [data for _, data in ANTHROPIC_STREAM_EVENTS]
OPENAI_VOCABULARY = list(OPENAI_STREAM_CHUNKS)
EXTRAS = [{"type": "ping"}, "[DONE]", "{not json", {"type": "message_stop"}]


@st.composite
def upstream_streams(draw: st.DrawFn, vocabulary: list[Any], named: bool) -> bytes:
    """A fixture stream put out of order: events dropped, repeated, swapped, mutated, added;
    and maybe cut anywhere."""
    items = list(vocabulary)
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.sampled_from(["drop", "repeat", "swap", "mutate", "add"]))
        at = draw(st.integers(0, max(len(items) - 1, 0)))
        if op == "add" or not items:
            items.insert(at, draw(st.sampled_from(EXTRAS + vocabulary)))
        elif op == "drop":
            del items[at]
        elif op == "repeat":
            items.insert(at, items[at])
        elif op == "swap":
            other = draw(st.integers(0, len(items) - 1))
            items[at], items[other] = items[other], items[at]
        else:
            items[at] = draw(mutated(items[at]))
    raw = sse(
        *[(item.get("type") if named and isinstance(item, dict) else None, item) for item in items]
    )
    cut = draw(st.none() | st.integers(0, len(raw)))
    return raw if cut is None else raw[:cut]


def assert_openai_client_rules(out: bytes) -> None:
    """What the OpenAI SDK needs: JSON chunks, one choice 0, tool-call indexes from 0 with the
    id and name first, and an end: [DONE] after a finish_reason, or an error object."""
    parsed = chunks(out)
    assert parsed, "the client's stream must say something"
    *body, last = parsed
    seen_calls: set[int] = set()
    finished = False
    for chunk in body:
        assert chunk != "[DONE]"
        assert "error" not in chunk
        if chunk["choices"]:
            assert not finished
            (choice,) = chunk["choices"]
            finished = choice["finish_reason"] is not None
            for call in choice["delta"].get("tool_calls", []):
                if call["index"] not in seen_calls:
                    assert call["index"] == len(seen_calls)
                    assert isinstance(call["id"], str) and isinstance(call["function"]["name"], str)
                    seen_calls.add(call["index"])
    if last == "[DONE]":
        assert finished
    else:
        assert set(last["error"]) == {"message", "type", "param", "code"}
    if body:
        assert body[0]["choices"][0]["delta"]["role"] == "assistant"


def assert_anthropic_client_rules(out: bytes) -> None:
    """What the Anthropic SDK needs: message_start first, blocks opened at the next index,
    deltas and stops for open blocks only, and an end: message_delta + message_stop, or an
    error event."""
    parsed = anthropic_events(out)
    assert parsed, "the client's stream must say something"
    if parsed[-1][0] == "error":
        assert set(parsed[-1][1]["error"]) == {"type", "message"}
        parsed = parsed[:-1]
    else:
        assert [name for name, _ in parsed[-2:]] == ["message_delta", "message_stop"]
    if not parsed:
        return
    assert parsed[0][0] == "message_start"
    started = 0
    open_block: int | None = None
    for name, data in parsed[1:]:
        assert name == data["type"]
        if name == "content_block_start":
            assert open_block is None and data["index"] == started
            open_block = data["index"]
            started += 1
        elif name == "content_block_delta":
            assert data["index"] < started
        elif name == "content_block_stop":
            assert data["index"] == open_block
            open_block = None
        else:
            assert name in ("message_delta", "message_stop")
            assert open_block is None


@settings(max_examples=300, derandomize=True, deadline=None)
@given(raw=upstream_streams(ANTHROPIC_VOCABULARY, named=True))
def test_any_anthropic_upstream_gives_a_well_formed_openai_stream(raw: bytes) -> None:
    assert_openai_client_rules(run(openai_client_stream(), raw))


@settings(max_examples=300, derandomize=True, deadline=None)
@given(raw=upstream_streams(OPENAI_VOCABULARY, named=False))
def test_any_openai_upstream_gives_a_well_formed_anthropic_stream(raw: bytes) -> None:
    assert_anthropic_client_rules(run(anthropic_client_stream(), raw))


@settings(max_examples=200, derandomize=True, deadline=None)
@given(raw=st.binary(max_size=200))
def test_any_bytes_give_a_closed_client_stream(raw: bytes) -> None:
    assert_openai_client_rules(run(openai_client_stream(), raw))
    assert_anthropic_client_rules(run(anthropic_client_stream(), raw))


def test_the_fixtures_keep_the_rules() -> None:
    for client, raw in CASES:
        check = (
            assert_openai_client_rules
            if client == "openai-client"
            else assert_anthropic_client_rules
        )
        check(run(new_stream(client), raw))
