"""The official SDKs, offline, read what the translators make: the OpenAI client over an
Anthropic upstream and the Anthropic client over an OpenAI-compatible one.

Each test puts a real SDK client in front of ``Gateway`` (tests/translate_fixtures.py): an
HTTP transport that translates the request the SDK sends, then answers with a canned
upstream reply translated back, fed in small pieces when streamed, as the ext_proc wiring
will. What the SDK reconstructs (text, tool calls, thinking, stop reason, usage, errors)
is what a client of the gateway would see.
"""

from __future__ import annotations

import json
from typing import Any, cast

import anthropic
import openai
import pytest
from openai.types.chat import ChatCompletionAssistantMessageParam

from plano_extproc.translate import AnthropicToOpenAI, OpenAIToAnthropic
from tests.translate_fixtures import (
    ANTHROPIC_ERROR_BODIES,
    ANTHROPIC_MESSAGE,
    ANTHROPIC_OVERLOADED_MID_STREAM,
    ANTHROPIC_STREAM,
    ANTHROPIC_STREAM_CUT_BEFORE_STOP,
    ANTHROPIC_STREAM_CUT_MID_EVENT,
    OPENAI_COMPLETION,
    OPENAI_ERROR_BODIES,
    OPENAI_REASONING_STREAM,
    OPENAI_STREAM,
    OPENAI_STREAM_CUT_MID_EVENT,
    UPSTREAM_MODEL,
    Gateway,
    as_json,
    sse,
)

pytestmark = pytest.mark.unit

OPENAI_TOOLS: Any = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather",
            "parameters": {"type": "object", "properties": {"location": {"type": "string"}}},
        },
    }
]
ANTHROPIC_TOOLS: Any = [
    {
        "name": "get_weather",
        "description": "Current weather",
        "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}},
    },
    {"type": "web_search_20250305", "name": "web_search", "max_uses": 3},
]
QUESTION: Any = [{"role": "user", "content": "Weather in Paris?"}]


def openai_gateway(status: int, body: bytes) -> Gateway:
    return Gateway(OpenAIToAnthropic(), status, body)


def anthropic_gateway(status: int, body: bytes) -> Gateway:
    return Gateway(AnthropicToOpenAI(), status, body)


# --- the OpenAI SDK over an Anthropic upstream ----------------------------------------------


def test_openai_sdk_reads_a_translated_message() -> None:
    gateway = openai_gateway(200, as_json(ANTHROPIC_MESSAGE))
    completion = gateway.openai().chat.completions.create(
        model="anthropic/claude-sonnet-4-5",
        messages=[{"role": "system", "content": "Be brief."}, *QUESTION],
        tools=OPENAI_TOOLS,
        tool_choice="auto",
        parallel_tool_calls=False,
        temperature=1.5,
        user="u-42",
    )
    assert gateway.upstream_requests == [
        {
            "model": UPSTREAM_MODEL,
            "system": "Be brief.",
            "messages": [{"role": "user", "content": "Weather in Paris?"}],
            "tools": [
                {
                    "name": "get_weather",
                    "description": "Current weather",
                    "input_schema": {
                        "type": "object",
                        "properties": {"location": {"type": "string"}},
                    },
                }
            ],
            "tool_choice": {"type": "auto", "disable_parallel_tool_use": True},
            "max_tokens": 4096,
            "temperature": 1.0,
            "metadata": {"user_id": "u-42"},
        }
    ]
    assert completion.id == "msg_01XFDUDYJgAACzvnptvVoYEL"
    assert completion.model == "claude-sonnet-4-5-20250929"
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Let me check the weather in Paris."
    (call,) = choice.message.tool_calls or []
    assert call.type == "function"
    assert (call.id, call.function.name) == ("toolu_01A09q90qw90lq917835lq9", "get_weather")
    assert json.loads(call.function.arguments) == {"location": "Paris", "unit": "celsius"}
    assert getattr(choice.message, "reasoning_content", None) == "The user wants weather."
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (582, 91)
    assert completion.usage.total_tokens == 673
    assert completion.usage.prompt_tokens_details is not None
    assert completion.usage.prompt_tokens_details.cached_tokens == 100


def test_openai_sdk_streams_a_translated_stream() -> None:
    gateway = openai_gateway(200, ANTHROPIC_STREAM)
    stream = gateway.openai().chat.completions.create(
        model="claude",
        messages=QUESTION,
        tools=OPENAI_TOOLS,
        stream=True,
        stream_options={"include_usage": True},
    )
    text, reasoning, finish = "", "", None
    calls: dict[int, dict[str, str]] = {}
    usage = None
    for chunk in stream:
        usage = chunk.usage or usage
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        text += delta.content or ""
        reasoning += getattr(delta, "reasoning_content", None) or ""
        for call in delta.tool_calls or []:
            entry = calls.setdefault(call.index, {"id": "", "name": "", "arguments": ""})
            entry["id"] += call.id or ""
            entry["name"] += call.function.name or "" if call.function else ""
            entry["arguments"] += call.function.arguments or "" if call.function else ""
        finish = chunk.choices[0].finish_reason or finish
    assert gateway.upstream_requests[0]["stream"] is True
    assert "stream_options" not in gateway.upstream_requests[0]
    assert text == "Okay, let's check the weather in Paris 日本."
    assert reasoning == "The user asks about Paris weather — café?"
    assert list(calls) == [0]
    assert calls[0]["id"] == "toolu_01T1x1fJ34qAmk2tNTrN7Up6"
    assert calls[0]["name"] == "get_weather"
    assert json.loads(calls[0]["arguments"]) == {"location": "Paris", "unit": "celsius"}
    assert finish == "tool_calls"
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (600, 89, 689)


def test_openai_sdk_stream_helper_builds_the_final_completion() -> None:
    gateway = openai_gateway(200, ANTHROPIC_STREAM)
    client = gateway.openai()
    with client.chat.completions.stream(
        model="claude",
        messages=QUESTION,
        tools=OPENAI_TOOLS,
        stream_options={"include_usage": True},
    ) as stream:
        seen = [event.type for event in stream]
        final = stream.get_final_completion()
    assert "content.delta" in seen and "tool_calls.function.arguments.done" in seen
    message = final.choices[0].message
    assert message.content == "Okay, let's check the weather in Paris 日本."
    (call,) = message.tool_calls or []
    assert call.type == "function"
    assert json.loads(call.function.arguments) == {"location": "Paris", "unit": "celsius"}
    assert final.choices[0].finish_reason == "tool_calls"
    # The signed thinking block, to send back on the next turn.
    (block,) = getattr(message, "thinking_blocks", [])
    assert block["signature"] == "EqQBCgIYAhIM1gbcDa9GJwZA2b3h"
    assert block["thinking"] == "The user asks about Paris weather — café?"
    assert final.usage is not None and final.usage.completion_tokens == 89


def test_openai_sdk_sends_thinking_blocks_back() -> None:
    """Turn two of a thinking + tool conversation, as the SDK serialises it."""
    gateway = openai_gateway(200, as_json({**ANTHROPIC_MESSAGE, "stop_reason": "end_turn"}))
    first = openai_gateway(200, ANTHROPIC_STREAM).openai()
    with first.chat.completions.stream(
        model="claude", messages=QUESTION, tools=OPENAI_TOOLS
    ) as stream:
        message = stream.get_final_completion().choices[0].message
    assistant = message.model_dump(exclude_none=True)
    for call in assistant.get("tool_calls", []):
        call.pop("index", None)
        call["function"].pop("parsed_arguments", None)
    call_id = assistant["tool_calls"][0]["id"]
    gateway.openai().chat.completions.create(
        model="claude",
        messages=[
            *QUESTION,
            # The message as the SDK dumps it (a plain dict, so cast to its param).
            cast(ChatCompletionAssistantMessageParam, assistant),
            {"role": "tool", "tool_call_id": call_id, "content": "18C"},
        ],
        tools=OPENAI_TOOLS,
        reasoning_effort="low",
    )
    (request,) = gateway.upstream_requests
    assert request["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert [block["type"] for block in request["messages"][1]["content"]] == [
        "thinking",
        "text",
        "tool_use",
    ]
    assert request["messages"][1]["content"][0]["signature"] == "EqQBCgIYAhIM1gbcDa9GJwZA2b3h"
    assert request["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": call_id, "content": "18C"}
    ]


@pytest.mark.parametrize(
    ("name", "error", "status"),
    [
        ("invalid", openai.BadRequestError, 400),
        ("auth", openai.AuthenticationError, 401),
        ("rate", openai.RateLimitError, 429),
        ("overloaded", openai.InternalServerError, 503),
    ],
)
def test_openai_sdk_raises_translated_errors(
    name: str, error: type[openai.APIStatusError], status: int
) -> None:
    upstream_status, body = ANTHROPIC_ERROR_BODIES[name]
    with pytest.raises(error) as caught:
        openai_gateway(upstream_status, as_json(body)).openai().chat.completions.create(
            model="claude", messages=QUESTION
        )
    assert caught.value.status_code == status
    assert caught.value.code == body["error"]["type"]
    assert body["error"]["message"] in caught.value.message


def test_openai_sdk_raises_a_refusal() -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        openai_gateway(200, b"").openai().chat.completions.create(
            model="claude", messages=QUESTION, n=3
        )
    assert caught.value.param == "n"


def test_openai_sdk_raises_for_a_garbage_upstream_reply() -> None:
    with pytest.raises(openai.InternalServerError) as caught:
        openai_gateway(200, b"<html>upstream proxy error</html>").openai().chat.completions.create(
            model="claude", messages=QUESTION
        )
    assert caught.value.status_code == 502
    assert "upstream proxy error" in caught.value.message


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (ANTHROPIC_OVERLOADED_MID_STREAM, "Overloaded"),
        (ANTHROPIC_STREAM_CUT_MID_EVENT, "The upstream sent an event that is not a JSON object."),
        (
            ANTHROPIC_STREAM[: ANTHROPIC_STREAM.index(b"event: content_block_stop")],
            "The upstream's stream ended before the response was complete.",
        ),
    ],
)
def test_openai_sdk_raises_for_a_broken_stream(raw: bytes, message: str) -> None:
    stream = (
        openai_gateway(200, raw)
        .openai()
        .chat.completions.create(model="claude", messages=QUESTION, stream=True)
    )
    with pytest.raises(openai.APIError) as caught:
        for _ in stream:
            pass
    assert caught.value.message == message


def test_openai_sdk_reads_a_stream_cut_just_before_its_end() -> None:
    client = openai_gateway(200, ANTHROPIC_STREAM_CUT_BEFORE_STOP).openai()
    with client.chat.completions.stream(
        model="claude", messages=QUESTION, tools=OPENAI_TOOLS
    ) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].finish_reason == "tool_calls"


# --- the Anthropic SDK over an OpenAI-compatible upstream -----------------------------------


def test_anthropic_sdk_reads_a_translated_completion() -> None:
    gateway = anthropic_gateway(200, as_json(OPENAI_COMPLETION))
    message = gateway.anthropic().messages.create(
        model="openai/gpt-4.1",
        max_tokens=1024,
        system=[
            {
                "type": "text",
                "text": "You are a helpful agent.",
                "cache_control": {"type": "ephemeral"},
            }
        ],
        messages=QUESTION,
        tools=ANTHROPIC_TOOLS,
        tool_choice={"type": "auto", "disable_parallel_tool_use": False},
        metadata={"user_id": "u-7"},
        extra_body={"top_k": 5},
    )
    assert gateway.upstream_requests == [
        {
            "model": UPSTREAM_MODEL,
            "messages": [
                {"role": "system", "content": "You are a helpful agent."},
                {"role": "user", "content": "Weather in Paris?"},
            ],
            "max_completion_tokens": 1024,
            "tools": [
                {
                    "type": "function",
                    "function": {
                        "name": "get_weather",
                        "description": "Current weather",
                        "parameters": {
                            "type": "object",
                            "properties": {"location": {"type": "string"}},
                        },
                    },
                }
            ],
            "tool_choice": "auto",
            "user": "u-7",
        }
    ]
    assert message.id == "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT"
    assert message.model == "gpt-4.1-2025-04-14"
    assert message.stop_reason == "tool_use"
    text, *calls = message.content
    assert text.type == "text" and text.text == "I'll look both up."
    assert [(c.type, c.id, c.name, c.input) for c in calls if c.type == "tool_use"] == [
        ("tool_use", "call_abc123", "get_weather", {"location": "Paris"}),
        ("tool_use", "call_def456", "get_time", {"tz": "Europe/Paris"}),
    ]
    assert (message.usage.input_tokens, message.usage.output_tokens) == (18, 17)
    assert message.usage.cache_read_input_tokens == 64


def test_anthropic_sdk_streams_with_the_helper() -> None:
    gateway = anthropic_gateway(200, OPENAI_STREAM)
    with gateway.anthropic().messages.stream(
        model="gpt", max_tokens=512, messages=QUESTION, tools=ANTHROPIC_TOOLS
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert gateway.upstream_requests[0]["stream_options"] == {"include_usage": True}
    assert text == "Checking both — ünïcode."
    assert [block.type for block in final.content] == ["text", "tool_use", "tool_use"]
    assert [(b.id, b.name, b.input) for b in final.content if b.type == "tool_use"] == [
        ("call_abc123", "get_weather", {"location": "Paris"}),
        ("call_def456", "get_time", {"tz": "Europe/Paris"}),
    ]
    assert final.stop_reason == "tool_use"
    assert (
        final.usage.input_tokens,
        final.usage.output_tokens,
        final.usage.cache_read_input_tokens,
    ) == (18, 17, 64)


def test_anthropic_sdk_raw_stream_events() -> None:
    gateway = anthropic_gateway(200, OPENAI_STREAM)
    stream = gateway.anthropic().messages.create(
        model="gpt", max_tokens=512, messages=QUESTION, stream=True
    )
    kinds = [event.type for event in stream]
    assert kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"]
    assert kinds.count("content_block_start") == kinds.count("content_block_stop") == 3


def test_anthropic_sdk_reads_reasoning_as_thinking() -> None:
    gateway = anthropic_gateway(200, OPENAI_REASONING_STREAM)
    with gateway.anthropic().messages.stream(
        model="deepseek",
        max_tokens=2048,
        messages=[{"role": "user", "content": "2+2?"}],
        thinking={"type": "enabled", "budget_tokens": 1024},
    ) as stream:
        thinking = "".join(event.thinking for event in stream if event.type == "thinking")
        final = stream.get_final_message()
    assert gateway.upstream_requests[0]["reasoning_effort"] == "low"
    assert thinking == "Two plus two is four."
    assert [block.type for block in final.content] == ["thinking", "text"]
    assert final.content[1].type == "text" and final.content[1].text == "4"
    assert final.stop_reason == "end_turn"


def test_anthropic_sdk_claude_code_style_turn() -> None:
    """A tool-result turn as Claude Code sends it: reminders as text blocks, cache_control,
    thinking blocks in the history, then the tool's result and the next prompt."""
    gateway = anthropic_gateway(200, OPENAI_STREAM)
    history: Any = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "<system-reminder>ctx</system-reminder>"},
                {
                    "type": "text",
                    "text": "Weather in Paris?",
                    "cache_control": {"type": "ephemeral"},
                },
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "need tool", "signature": "s"},
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "get_weather",
                    "input": {"location": "Paris"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_1",
                    "content": [{"type": "text", "text": "18C"}],
                }
            ],
        },
    ]
    with gateway.anthropic().messages.stream(
        model="gpt",
        max_tokens=32000,
        messages=history,
        tools=ANTHROPIC_TOOLS,
        thinking={"type": "enabled", "budget_tokens": 31999},
    ) as stream:
        stream.until_done()
    (request,) = gateway.upstream_requests
    assert request["messages"] == [
        {"role": "user", "content": "<system-reminder>ctx</system-reminder>\n\nWeather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "toolu_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"location":"Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "18C"},
    ]
    assert request["reasoning_effort"] == "high"
    assert [tool["function"]["name"] for tool in request["tools"]] == ["get_weather"]


@pytest.mark.parametrize(
    ("name", "error", "status", "type"),
    [
        ("invalid", anthropic.BadRequestError, 400, "invalid_request_error"),
        ("auth", anthropic.AuthenticationError, 401, "authentication_error"),
        ("quota", anthropic.RateLimitError, 429, "billing_error"),
        ("overloaded", anthropic.InternalServerError, 529, "overloaded_error"),
    ],
)
def test_anthropic_sdk_raises_translated_errors(
    name: str, error: type[anthropic.APIStatusError], status: int, type: str
) -> None:
    upstream_status, body = OPENAI_ERROR_BODIES[name]
    with pytest.raises(error) as caught:
        anthropic_gateway(upstream_status, as_json(body)).anthropic().messages.create(
            model="gpt", max_tokens=10, messages=QUESTION
        )
    assert caught.value.status_code == status
    assert caught.value.type == type
    assert caught.value.api_message == body["error"]["message"]


def test_anthropic_sdk_raises_a_refusal() -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        anthropic_gateway(200, b"").anthropic().messages.create(
            model="gpt",
            max_tokens=10,
            messages=[
                {
                    "role": "user",
                    "content": [{"type": "image", "source": {"type": "file", "file_id": "file_1"}}],
                }
            ],
        )
    assert caught.value.type == "invalid_request_error"
    assert caught.value.api_message is not None and caught.value.api_message.startswith(
        "messages[0].content[0]: "
    )


@pytest.mark.parametrize(
    ("raw", "type", "message"),
    [
        (
            OPENAI_STREAM_CUT_MID_EVENT,
            "api_error",
            "The upstream sent a chunk that is not a JSON object.",
        ),
        (
            OPENAI_STREAM[: OPENAI_STREAM.index(b"data:", 1000)],
            "api_error",
            "The upstream's stream ended before the response was complete.",
        ),
        (
            OPENAI_STREAM[: OPENAI_STREAM.index(b"data:", 10)]
            + sse((None, {"error": {"message": "Rate limit reached", "type": "requests"}})),
            "api_error",
            "Rate limit reached",
        ),
    ],
)
def test_anthropic_sdk_raises_for_a_broken_stream(raw: bytes, type: str, message: str) -> None:
    gateway = anthropic_gateway(200, raw)
    with (
        pytest.raises(anthropic.APIStatusError) as caught,
        gateway.anthropic().messages.stream(
            model="gpt", max_tokens=10, messages=QUESTION
        ) as stream,
    ):
        stream.get_final_message()
    assert caught.value.type == type
    assert caught.value.api_message == message


def test_anthropic_sdk_reads_a_stream_without_done() -> None:
    raw = OPENAI_STREAM[: OPENAI_STREAM.index(b"data: [DONE]")]
    with (
        anthropic_gateway(200, raw)
        .anthropic()
        .messages.stream(model="gpt", max_tokens=10, messages=QUESTION) as stream
    ):
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    assert final.usage.output_tokens == 17
