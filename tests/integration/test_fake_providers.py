"""The fake providers are faithful: the official SDKs, pointed straight at them (no gateway),
parse what they answer, raise their typed exceptions for what they refuse, and see the
failures they inject the way they would see a real provider's."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any, cast

import anthropic
import httpx
import openai
import pytest
from anthropic.types import MessageParam, ThinkingConfigParam, ToolParam, ToolResultBlockParam
from anthropic.types.beta import BetaMessageParam
from openai.types.chat import ChatCompletionMessageParam, ChatCompletionToolParam

from tests.fake_providers import (
    Failure,
    FakeAnthropic,
    FakeOpenAI,
    Reply,
    ToolCall,
    estimate_input_tokens,
    thinking_signature,
)

pytestmark = pytest.mark.integration

OPENAI_KEY = "sk-test-openai"
ANTHROPIC_KEY = "sk-ant-test"
# The same first turn, typed for each SDK.
HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Hello there"}]
CLAUDE_HELLO: list[MessageParam] = [{"role": "user", "content": "Hello there"}]
WEATHER_TOOL: ChatCompletionToolParam = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
CLAUDE_TOOLS: list[ToolParam] = [
    {
        "name": "get_weather",
        "description": "Weather in a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
    {"name": "get_time", "input_schema": {"type": "object"}},
]
TWO_CALLS = Reply(
    text="Let me look.",
    tool_calls=[
        ToolCall("get_weather", {"city": "Paris", "units": "metric"}),
        ToolCall("get_time", {"tz": "Europe/Paris"}, id="call_fixed_1"),
    ],
)


@pytest.fixture
def oai() -> Iterator[FakeOpenAI]:
    with FakeOpenAI("fake-openai", api_key=OPENAI_KEY) as fake:
        yield fake


@pytest.fixture
def ant() -> Iterator[FakeAnthropic]:
    with FakeAnthropic("fake-anthropic", api_key=ANTHROPIC_KEY) as fake:
        yield fake


def openai_client(fake: FakeOpenAI, **kwargs: Any) -> openai.OpenAI:
    options: dict[str, Any] = {"api_key": OPENAI_KEY, "max_retries": 0, "timeout": 10}
    return openai.OpenAI(base_url=fake.base_url(), **(options | kwargs))


def anthropic_client(fake: FakeAnthropic, **kwargs: Any) -> anthropic.Anthropic:
    options: dict[str, Any] = {"api_key": ANTHROPIC_KEY, "max_retries": 0, "timeout": 10}
    return anthropic.Anthropic(base_url=fake.url, **(options | kwargs))


def sse(response: httpx.Response) -> list[tuple[str | None, str]]:
    """(event name, data) per server-sent event."""
    events: list[tuple[str | None, str]] = []
    name: str | None = None
    for line in response.iter_lines():
        if line.startswith("event: "):
            name = line[len("event: ") :]
        elif line.startswith("data: "):
            events.append((name, line[len("data: ") :]))
            name = None
    return events


CLAUDE_HEADERS = {"x-api-key": ANTHROPIC_KEY, "anthropic-version": "2023-06-01"}


# ---------------------------------------------------------------------------------------------
# OpenAI


def test_openai_text_reply_and_exact_recording(oai: FakeOpenAI) -> None:
    raw = openai_client(oai).chat.completions.with_raw_response.create(
        model="gpt-5.2", messages=HELLO, max_completion_tokens=100
    )
    completion = raw.parse()
    assert raw.headers["x-request-id"].startswith("req_")
    assert completion.object == "chat.completion"
    assert completion.model == "gpt-5.2"
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == "from fake-openai: Hello there"
    assert choice.finish_reason == "stop"
    assert completion.usage is not None
    request = {"model": "gpt-5.2", "messages": HELLO, "max_completion_tokens": 100}
    assert completion.usage.prompt_tokens == estimate_input_tokens(request)
    total = completion.usage.prompt_tokens + completion.usage.completion_tokens
    assert completion.usage.total_tokens == total

    got = oai.last
    assert (got.method, got.path, got.route) == (
        "POST",
        "/v1/chat/completions",
        "/v1/chat/completions",
    )
    assert got.headers["authorization"] == f"Bearer {OPENAI_KEY}"
    assert got.headers["content-type"] == "application/json"
    assert got.json == request
    assert got.headers["content-length"] == str(len(got.raw_body))
    assert ("authorization", f"Bearer {OPENAI_KEY}") in got.raw_headers  # as the SDK sent it
    assert ("Host", f"127.0.0.1:{oai.port}") in got.raw_headers


def test_openai_stream_text_with_and_without_usage(oai: FakeOpenAI) -> None:
    client = openai_client(oai)
    chunks = list(
        client.chat.completions.create(
            model="gpt-5.2",
            messages=HELLO,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    assert len({chunk.id for chunk in chunks}) == 1
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "from fake-openai: Hello there"
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 2
    *body, finish, usage = chunks
    assert all(chunk.usage is None for chunk in [*body, finish])
    assert finish.choices[0].finish_reason == "stop"
    assert usage.choices == []
    assert usage.usage is not None and usage.usage.completion_tokens > 0

    plain = list(client.chat.completions.create(model="gpt-5.2", messages=HELLO, stream=True))
    assert all(chunk.choices for chunk in plain)
    assert all("usage" not in chunk.model_fields_set for chunk in plain)

    with httpx.stream(
        "POST",
        f"{oai.base_url()}/chat/completions",
        headers={"authorization": f"Bearer {OPENAI_KEY}"},
        json={"model": "m", "messages": HELLO, "stream": True},
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse(response)
    assert all(name is None for name, _ in events)
    assert events[-1][1] == "[DONE]"


def test_openai_tool_calls(oai: FakeOpenAI) -> None:
    oai.script(TWO_CALLS)
    completion = openai_client(oai).chat.completions.create(
        model="gpt-5.2", messages=HELLO, tools=[WEATHER_TOOL]
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Let me look."
    calls = choice.message.tool_calls or []
    assert [call.function.name for call in calls] == ["get_weather", "get_time"]  # type: ignore[union-attr]
    assert calls[0].id.startswith("call_") and calls[1].id == "call_fixed_1"
    assert json.loads(calls[0].function.arguments) == {"city": "Paris", "units": "metric"}  # type: ignore[union-attr]
    assert json.loads(calls[1].function.arguments) == {"tz": "Europe/Paris"}  # type: ignore[union-attr]


def test_openai_tool_calls_streamed_as_deltas(oai: FakeOpenAI) -> None:
    client = openai_client(oai)
    oai.script(TWO_CALLS)
    chunks = list(
        client.chat.completions.create(
            model="gpt-5.2", messages=HELLO, tools=[WEATHER_TOOL], stream=True
        )
    )
    deltas = [call for c in chunks for call in c.choices[0].delta.tool_calls or []]
    heads = [d for d in deltas if d.id is not None]
    assert [(d.index, d.function.name, d.function.arguments) for d in heads] == [  # type: ignore[union-attr]
        (0, "get_weather", ""),
        (1, "get_time", ""),
    ]
    assert heads[1].id == "call_fixed_1" and heads[0].type == "function"
    for index in (0, 1):
        fragments = [d.function.arguments for d in deltas if d.index == index and d.id is None]  # type: ignore[union-attr]
        assert len(fragments) >= 2  # the arguments arrive in pieces
        assert json.loads("".join(fragments)) == TWO_CALLS.tool_calls[index].arguments  # type: ignore[arg-type]
    assert chunks[-1].choices[0].finish_reason == "tool_calls"

    # The SDK's own stream helper puts the calls back together.
    oai.script(TWO_CALLS)
    with client.chat.completions.stream(
        model="gpt-5.2", messages=HELLO, tools=[WEATHER_TOOL]
    ) as stream:
        final = stream.get_final_completion()
    calls = final.choices[0].message.tool_calls or []
    assert [json.loads(c.function.arguments) for c in calls] == [
        {"city": "Paris", "units": "metric"},
        {"tz": "Europe/Paris"},
    ]


def test_openai_reasoning_content(oai: FakeOpenAI) -> None:
    client = openai_client(oai)
    reply = Reply(thinking="The user greets me. I should greet back.", text="Hi!")
    oai.script(reply, reply)
    message = client.chat.completions.create(model="deepseek-reasoner", messages=HELLO)
    assert message.choices[0].message.content == "Hi!"
    assert message.choices[0].message.model_extra == {"reasoning_content": reply.thinking}
    assert message.usage is not None and message.usage.completion_tokens_details is not None
    reasoning_tokens = message.usage.completion_tokens_details.reasoning_tokens
    assert reasoning_tokens is not None and reasoning_tokens > 0

    chunks = list(
        client.chat.completions.create(model="deepseek-reasoner", messages=HELLO, stream=True)
    )
    reasoning = "".join(
        (c.choices[0].delta.model_extra or {}).get("reasoning_content") or "" for c in chunks
    )
    assert reasoning == reply.thinking
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Hi!"


def test_openai_tool_loop_accepted_and_orphans_refused(oai: FakeOpenAI) -> None:
    client = openai_client(oai)
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
    }
    loop: list[Any] = [
        {"role": "system", "content": "Be brief."},
        *HELLO,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "Sunny, 21C"},
    ]
    answer = client.chat.completions.create(model="gpt-5.2", messages=loop, tools=[WEATHER_TOOL])
    assert answer.choices[0].message.content == "from fake-openai: Hello there"

    with pytest.raises(openai.BadRequestError) as orphan:
        client.chat.completions.create(model="gpt-5.2", messages=[*HELLO, loop[3]])
    assert "must be a response to a preceeding message with 'tool_calls'" in orphan.value.message
    with pytest.raises(openai.BadRequestError) as unanswered:
        client.chat.completions.create(model="gpt-5.2", messages=loop[:3] + HELLO)
    assert "did not have response messages: call_1" in unanswered.value.message


@pytest.mark.parametrize(
    ("body", "param", "code", "words"),
    [
        ({"model": "m", "messages": []}, "messages", "empty_array", "empty array"),
        ({"model": "m"}, "messages", "missing_required_parameter", "'messages'"),
        ({"messages": HELLO}, None, None, "you must provide a model parameter"),
        ({"model": 5, "messages": HELLO}, "model", "invalid_type", "expected a string"),
        (
            {"model": "m", "messages": [{"role": "bogus", "content": "x"}]},
            "messages[0].role",
            "invalid_value",
            "Invalid value: 'bogus'",
        ),
        (
            {"model": "m", "messages": [{"role": "user"}]},
            "messages[0].content",
            "missing_required_parameter",
            "messages[0].content",
        ),
        (
            {"model": "m", "messages": [{"role": "user", "content": [{"type": "video"}]}]},
            "messages[0].content[0].type",
            "invalid_value",
            "'video'",
        ),
        (
            {"model": "m", "messages": HELLO, "stream_options": {"include_usage": True}},
            "stream_options",
            None,
            "only allowed when 'stream' is enabled",
        ),
        (
            {"model": "m", "messages": HELLO, "tool_choice": "auto"},
            "tool_choice",
            None,
            "only allowed when 'tools' are specified",
        ),
    ],
)
def test_openai_refuses_what_openai_refuses(
    oai: FakeOpenAI, body: dict[str, Any], param: str | None, code: str | None, words: str
) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        openai_client(oai).post("/chat/completions", body=body, cast_to=dict[str, Any])
    error = refused.value
    assert error.status_code == 400
    assert error.body == {
        "message": error.body["message"],  # type: ignore[index]
        "type": "invalid_request_error",
        "param": param,
        "code": code,
    }
    assert words in error.message


def test_openai_not_json_and_unknown_path(oai: FakeOpenAI) -> None:
    headers = {"authorization": f"Bearer {OPENAI_KEY}"}
    answer = httpx.post(f"{oai.base_url()}/chat/completions", headers=headers, content=b"{nope")
    assert answer.status_code == 400
    assert "could not parse the JSON body" in answer.json()["error"]["message"]
    answer = httpx.post(f"{oai.base_url()}/completions", headers=headers, json={})
    assert answer.status_code == 404
    assert answer.json()["error"]["message"] == "Invalid URL (POST /v1/completions)"


def test_openai_authentication(oai: FakeOpenAI) -> None:
    with pytest.raises(openai.AuthenticationError) as wrong:
        openai_client(oai, api_key="sk-wrong-key").chat.completions.create(
            model="m", messages=HELLO
        )
    assert wrong.value.code == "invalid_api_key"
    missing = httpx.post(f"{oai.base_url()}/chat/completions", json={"model": "m"})
    assert missing.status_code == 401
    assert missing.json()["error"]["message"].startswith("You didn't provide an API key")
    with FakeOpenAI("keyless") as keyless:  # no key configured: none checked
        assert (
            openai_client(keyless, api_key="anything")
            .chat.completions.create(model="m", messages=HELLO)
            .choices[0]
            .message.content
            == "from keyless: Hello there"
        )


def test_openai_rate_limit_and_retry_after(oai: FakeOpenAI) -> None:
    oai.fail(Failure.error(429))
    with pytest.raises(openai.RateLimitError) as limited:
        openai_client(oai).chat.completions.create(model="m", messages=HELLO)
    assert limited.value.code == "rate_limit_exceeded"
    assert "retry-after" not in limited.value.response.headers
    assert len(oai.received) == 1

    oai.fail(Failure.error(429, retry_after=1))
    answer = openai_client(oai, max_retries=1).chat.completions.create(model="m", messages=HELLO)
    assert answer.choices[0].message.content == "from fake-openai: Hello there"
    first, second = oai.received[1:]
    assert second.at - first.at >= 0.9  # the SDK waited as retry-after said
    assert second.headers["x-stainless-retry-count"] == "1"


@pytest.mark.parametrize("status", [500, 502, 503])
def test_openai_server_errors(oai: FakeOpenAI, status: int) -> None:
    oai.fail(Failure.error(status))
    with pytest.raises(openai.InternalServerError) as failed:
        openai_client(oai).chat.completions.create(model="m", messages=HELLO)
    assert failed.value.status_code == status
    assert failed.value.type == "server_error"


def test_openai_connection_failures(oai: FakeOpenAI) -> None:
    client = openai_client(oai)
    oai.fail(Failure.disconnect())
    with pytest.raises(openai.APIConnectionError):
        client.chat.completions.create(model="m", messages=HELLO)

    oai.fail(Failure.hang(5))
    started = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        openai_client(oai, timeout=0.3).chat.completions.create(model="m", messages=HELLO)
    assert time.monotonic() - started < 3

    oai.fail(Failure.cut(after_events=2))
    got: list[str] = []
    with pytest.raises((openai.APIConnectionError, httpx.HTTPError)):
        for chunk in client.chat.completions.create(model="m", messages=HELLO, stream=True):
            got.append(chunk.choices[0].delta.content or "")
    assert len(got) == 2

    oai.fail(Failure.stream_error(after_events=2, message="The server had an error"))
    with pytest.raises(openai.APIError) as reported:
        for _ in client.chat.completions.create(model="m", messages=HELLO, stream=True):
            pass
    assert "The server had an error" in reported.value.message

    oai.fail(Failure.raw(502, "<html>Bad Gateway</html>", content_type="text/html"))
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="m", messages=HELLO)
    assert client.chat.completions.create(model="m", messages=HELLO).choices  # recovered


def test_openai_length_finish(oai: FakeOpenAI) -> None:
    answer = openai_client(oai).chat.completions.create(
        model="m", messages=HELLO, max_completion_tokens=2
    )
    assert answer.choices[0].finish_reason == "length"
    assert answer.choices[0].message.content == "from fak"


# ---------------------------------------------------------------------------------------------
# Anthropic


def test_anthropic_text_reply_and_exact_recording(ant: FakeAnthropic) -> None:
    raw = anthropic_client(ant).messages.with_raw_response.create(
        model="claude-sonnet-4-5", max_tokens=100, messages=CLAUDE_HELLO, system="Be brief."
    )
    message = raw.parse()
    assert raw.headers["request-id"].startswith("req_")
    assert message.id.startswith("msg_")
    assert (message.type, message.role, message.model) == (
        "message",
        "assistant",
        "claude-sonnet-4-5",
    )
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text == "from fake-anthropic: Hello there"  # type: ignore[union-attr]
    assert (message.stop_reason, message.stop_sequence) == ("end_turn", None)
    request = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 100,
        "messages": CLAUDE_HELLO,
        "system": "Be brief.",
    }
    assert message.usage.input_tokens == estimate_input_tokens(request)
    assert message.usage.output_tokens > 0
    assert message.usage.cache_read_input_tokens == 0
    assert message.usage.cache_creation_input_tokens == 0

    got = ant.last
    assert (got.method, got.path) == ("POST", "/v1/messages")
    assert got.json == request
    # The 2.x SDK sends its key as a bearer token and the 2026-10-21 API version.
    assert got.headers["authorization"] == f"Bearer {ANTHROPIC_KEY}"
    assert got.headers["anthropic-version"] == "2026-10-21"

    # A client that sends x-api-key (as the gateway does) is accepted the same way.
    answer = httpx.post(
        f"{ant.url}/v1/messages",
        headers=CLAUDE_HEADERS,
        json={"model": "m", "max_tokens": 5, "messages": CLAUDE_HELLO},
    )
    assert answer.status_code == 200 and answer.json()["type"] == "message"
    assert ant.last.headers["x-api-key"] == ANTHROPIC_KEY


def test_anthropic_stream_events_in_the_real_order(ant: FakeAnthropic) -> None:
    ant.script(
        Reply(
            thinking="Paris weather, then time.",
            text="Checking.",
            tool_calls=[ToolCall("get_weather", {"city": "Paris", "days": [1, 2]})],
            cache_read_input_tokens=7,
        )
    )
    body = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 4096,
        "stream": True,
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "tools": CLAUDE_TOOLS,
        "messages": CLAUDE_HELLO,
    }
    with httpx.stream("POST", f"{ant.url}/v1/messages", headers=CLAUDE_HEADERS, json=body) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["request-id"].startswith("req_")
        events = [(name, json.loads(data)) for name, data in sse(r)]
    assert all(name == data["type"] for name, data in events)
    names = [name for name, _ in events]
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    assert names[-2:] == ["message_delta", "message_stop"]
    start = events[0][1]["message"]
    assert start["content"] == [] and start["stop_reason"] is None
    assert start["usage"]["cache_read_input_tokens"] == 7

    blocks: dict[int, list[dict[str, Any]]] = {}
    for name, data in events:
        if name == "content_block_start":
            assert data["index"] == len(blocks)  # blocks open in order, one at a time
            blocks[data["index"]] = [data["content_block"]]
        elif name == "content_block_delta":
            blocks[data["index"]].append(data["delta"])
        elif name == "content_block_stop":
            assert data["index"] == len(blocks) - 1
    thinking, text, tool = blocks[0], blocks[1], blocks[2]
    assert thinking[0] == {"type": "thinking", "thinking": "", "signature": ""}
    assert {d["type"] for d in thinking[1:-1]} == {"thinking_delta"}
    assert "".join(d["thinking"] for d in thinking[1:-1]) == "Paris weather, then time."
    assert thinking[-1] == {
        "type": "signature_delta",
        "signature": thinking_signature("Paris weather, then time."),
    }
    assert text[0] == {"type": "text", "text": ""}
    assert "".join(d["text"] for d in text[1:]) == "Checking."
    assert tool[0]["type"] == "tool_use" and tool[0]["input"] == {}
    assert tool[0]["id"].startswith("toolu_") and tool[0]["name"] == "get_weather"
    fragments = [d["partial_json"] for d in tool[1:]]
    assert fragments[0] == "" and len(fragments) >= 3
    assert json.loads("".join(fragments)) == {"city": "Paris", "days": [1, 2]}
    delta = events[-2][1]
    assert delta["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}
    assert delta["usage"]["output_tokens"] > 1


def test_anthropic_sdk_stream_final_messages(ant: FakeAnthropic) -> None:
    client = anthropic_client(ant)
    with client.messages.stream(model="m", max_tokens=100, messages=CLAUDE_HELLO) as stream:
        assert "".join(stream.text_stream) == "from fake-anthropic: Hello there"
        final = stream.get_final_message()
    assert final.stop_reason == "end_turn"

    ant.script(Reply(tool_calls=[ToolCall("get_weather", {"city": "Oslo"}, id="toolu_01")]))
    with client.messages.stream(
        model="m",
        max_tokens=100,
        messages=CLAUDE_HELLO,
        tools=CLAUDE_TOOLS,
    ) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    assert [(b.type, b.id, b.input) for b in final.content] == [  # type: ignore[union-attr]
        ("tool_use", "toolu_01", {"city": "Oslo"})
    ]

    with client.messages.stream(
        model="m",
        max_tokens=2048,
        messages=CLAUDE_HELLO,
        thinking={"type": "enabled", "budget_tokens": 1024},
    ) as stream:
        final = stream.get_final_message()
    thinking, text = final.content
    assert thinking.type == "thinking" and text.type == "text"
    assert thinking.thinking == "The user wrote: Hello there"
    assert thinking.signature == thinking_signature(thinking.thinking)


def test_anthropic_count_tokens(ant: FakeAnthropic) -> None:
    client = anthropic_client(ant)
    ant.script("scripted")
    counted = client.messages.count_tokens(
        model="m",
        messages=CLAUDE_HELLO,
        system="Be brief.",
        tools=CLAUDE_TOOLS,
    )
    assert ant.last.path == "/v1/messages/count_tokens"
    assert ant.pending() == (1, 0)  # counting does not use a scripted reply
    message = client.messages.create(
        model="m",
        max_tokens=10,
        messages=CLAUDE_HELLO,
        system="Be brief.",
        tools=CLAUDE_TOOLS,
    )
    assert message.content[0].text == "scripted"  # type: ignore[union-attr]
    assert counted.input_tokens == message.usage.input_tokens > 0
    with pytest.raises(anthropic.BadRequestError):
        client.messages.count_tokens(model="m", messages=[])


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"model": "m", "messages": CLAUDE_HELLO}, "max_tokens: Field required"),
        ({"model": "m", "max_tokens": "9", "messages": CLAUDE_HELLO}, "valid integer"),
        ({"max_tokens": 9, "messages": CLAUDE_HELLO}, "model: Field required"),
        ({"model": "m", "max_tokens": 9, "messages": []}, "at least one message"),
        ({"model": "m", "max_tokens": 9, "messages": CLAUDE_HELLO * 2}, "roles must alternate"),
        (
            {"model": "m", "max_tokens": 9, "messages": [{"role": "assistant", "content": "x"}]},
            'first message must use the "user" role',
        ),
        (
            {"model": "m", "max_tokens": 9, "messages": [{"role": "system", "content": "x"}]},
            "Input should be 'user' or 'assistant'",
        ),
        (
            {
                "model": "m",
                "max_tokens": 9,
                "messages": [{"role": "user", "content": [{"type": "video"}]}],
            },
            "Input tag 'video'",
        ),
        (
            {"model": "m", "max_tokens": 9, "messages": [{"role": "user", "content": ""}]},
            "non-empty content",
        ),
        (
            {
                "model": "m",
                "max_tokens": 9,
                "messages": CLAUDE_HELLO,
                "system": [{"type": "image"}],
            },
            "system.0.type",
        ),
        (
            {"model": "m", "max_tokens": 9, "messages": CLAUDE_HELLO, "tools": [{"name": "t"}]},
            "input_schema: Field required",
        ),
        (
            {
                "model": "m",
                "max_tokens": 2000,
                "messages": CLAUDE_HELLO,
                "thinking": {"type": "enabled", "budget_tokens": 1024},
                "temperature": 0.5,
            },
            "`temperature` may only be set to 1 when thinking is enabled",
        ),
        (
            {
                "model": "m",
                "max_tokens": 1000,
                "messages": CLAUDE_HELLO,
                "thinking": {"type": "enabled", "budget_tokens": 1024},
            },
            "`max_tokens` must be greater than `thinking.budget_tokens`",
        ),
        (
            {
                "model": "m",
                "max_tokens": 9,
                "messages": [
                    *CLAUDE_HELLO,
                    {
                        "role": "assistant",
                        "content": [{"type": "tool_use", "id": "t1", "name": "t", "input": {}}],
                    },
                    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1"}]},
                ],
            },
            "must define tools",
        ),
    ],
)
def test_anthropic_refuses_what_anthropic_refuses(
    ant: FakeAnthropic, body: dict[str, Any], words: str
) -> None:
    raw = httpx.post(f"{ant.url}/v1/messages", headers=CLAUDE_HEADERS, json=body)
    assert raw.status_code == 400
    payload = raw.json()
    assert payload == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": payload["error"]["message"]},
        "request_id": raw.headers["request-id"],
    }
    assert words in payload["error"]["message"]
    # The SDK raises its typed exception for the same refusal.
    with pytest.raises(anthropic.BadRequestError) as refused:
        anthropic_client(ant, default_headers={"anthropic-version": "2023-06-01"}).post(
            "/v1/messages", body=body, cast_to=dict
        )
    assert words in refused.value.message


def test_anthropic_headers_checked(ant: FakeAnthropic, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    keyless = anthropic_client(ant, api_key=None, default_headers={"Authorization": anthropic.omit})
    with pytest.raises(anthropic.AuthenticationError) as no_key_sdk:
        keyless.messages.create(model="m", max_tokens=9, messages=CLAUDE_HELLO)
    assert "x-api-key header is required" in no_key_sdk.value.message
    body = {"model": "m", "max_tokens": 9, "messages": CLAUDE_HELLO}
    no_key = httpx.post(
        f"{ant.url}/v1/messages", headers={"anthropic-version": "2023-06-01"}, json=body
    )
    assert no_key.status_code == 401
    assert no_key.json()["error"] == {
        "type": "authentication_error",
        "message": "x-api-key header is required",
    }
    no_version = httpx.post(
        f"{ant.url}/v1/messages", headers={"x-api-key": ANTHROPIC_KEY}, json=body
    )
    assert no_version.status_code == 400
    assert no_version.json()["error"]["message"] == "anthropic-version: header is required"
    with pytest.raises(anthropic.AuthenticationError) as wrong:
        anthropic_client(ant, api_key="sk-ant-wrong").messages.create(
            model="m", max_tokens=9, messages=CLAUDE_HELLO
        )
    assert wrong.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
    assert ant.pending() == (0, 0)


def test_anthropic_error_statuses(ant: FakeAnthropic) -> None:
    client = anthropic_client(ant)
    ant.fail(Failure.error(529), Failure.error(500), Failure.error(429))
    with pytest.raises(anthropic.OverloadedError) as overloaded:
        client.messages.create(model="m", max_tokens=9, messages=CLAUDE_HELLO)
    assert overloaded.value.status_code == 529
    assert overloaded.value.body["error"] == {"type": "overloaded_error", "message": "Overloaded"}  # type: ignore[index]
    with pytest.raises(anthropic.InternalServerError) as internal:
        client.messages.create(model="m", max_tokens=9, messages=CLAUDE_HELLO)
    assert internal.value.body["error"]["type"] == "api_error"  # type: ignore[index]
    with pytest.raises(anthropic.RateLimitError):
        client.messages.create(model="m", max_tokens=9, messages=CLAUDE_HELLO)

    ant.fail(Failure.error(429, retry_after=1))
    answer = anthropic_client(ant, max_retries=1).messages.create(
        model="m", max_tokens=9, messages=CLAUDE_HELLO
    )
    assert answer.content[0].text == "from fake-anthropic: Hello there"  # type: ignore[union-attr]
    limited, retried = ant.received[-2:]
    assert retried.at - limited.at >= 0.9


def test_anthropic_beta_query_headers_and_unknown_fields(ant: FakeAnthropic) -> None:
    extra = {
        "context_management": {"edits": [{"type": "clear_tool_uses_20250919"}]},
        "output_config": {"effort": "high"},
    }
    hello: list[BetaMessageParam] = [{"role": "user", "content": "Hello there"}]  # the beta's type
    # The 2.x SDK no longer adds ?beta=true by itself; Claude Code's client does.
    message = anthropic_client(ant).beta.messages.create(
        model="claude-sonnet-4-5",
        max_tokens=2048,
        messages=hello,
        betas=["context-management-2025-06-27", "interleaved-thinking-2025-05-14"],
        metadata={"user_id": "user-1"},
        thinking={"type": "enabled", "budget_tokens": 1024},
        extra_query={"beta": "true"},
        extra_body=extra,
    )
    assert message.content[-1].text == "from fake-anthropic: Hello there"  # type: ignore[union-attr]
    got = ant.last
    assert got.path == "/v1/messages?beta=true"
    assert (got.route, got.query) == ("/v1/messages", {"beta": ["true"]})
    assert got.headers["anthropic-beta"] == (
        "context-management-2025-06-27,interleaved-thinking-2025-05-14"
    )
    assert got.json["context_management"] == extra["context_management"]
    assert got.json["output_config"] == extra["output_config"]


def test_anthropic_api_version_2026_refuses_sampling(ant: FakeAnthropic) -> None:
    body = {"model": "m", "max_tokens": 9, "messages": CLAUDE_HELLO, "temperature": 0.2}
    with pytest.raises(anthropic.BadRequestError) as refused:
        anthropic_client(ant).post("/v1/messages", body=body, cast_to=dict[str, Any])
    assert "temperature: Extra inputs are not permitted" in refused.value.message
    old = anthropic_client(ant, default_headers={"anthropic-version": "2023-06-01"})
    assert old.post("/v1/messages", body=body, cast_to=dict[str, Any])["type"] == "message"


def test_anthropic_multi_turn_tool_loop(ant: FakeAnthropic) -> None:
    client = anthropic_client(ant)
    ant.script(TWO_CALLS)
    first = client.messages.create(
        model="m",
        max_tokens=100,
        messages=CLAUDE_HELLO,
        tools=CLAUDE_TOOLS,
    )
    assert first.stop_reason == "tool_use"
    calls = [block for block in first.content if block.type == "tool_use"]
    assert [c.name for c in calls] == ["get_weather", "get_time"]
    # The blocks sent back as the SDK dumps them (a plain dict each, so cast to their params).
    assistant = cast(
        MessageParam, {"role": "assistant", "content": [b.model_dump() for b in first.content]}
    )

    def results(*ids: str) -> MessageParam:
        blocks: list[ToolResultBlockParam] = [
            {"type": "tool_result", "tool_use_id": i, "content": "ok"} for i in ids
        ]
        return {"role": "user", "content": blocks}

    answered = client.messages.create(
        model="m",
        max_tokens=100,
        tools=CLAUDE_TOOLS,
        messages=[*CLAUDE_HELLO, assistant, results(calls[0].id, calls[1].id)],
    )
    assert answered.stop_reason == "end_turn"

    with pytest.raises(anthropic.BadRequestError) as wrong_id:
        client.messages.create(
            model="m",
            max_tokens=100,
            tools=CLAUDE_TOOLS,
            messages=[*CLAUDE_HELLO, assistant, results(calls[0].id, "toolu_nope")],
        )
    assert "unexpected `tool_use_id` found in `tool_result` blocks: toolu_nope" in (
        wrong_id.value.message
    )
    with pytest.raises(anthropic.BadRequestError) as unanswered:
        client.messages.create(
            model="m",
            max_tokens=100,
            tools=CLAUDE_TOOLS,
            messages=[*CLAUDE_HELLO, assistant, results(calls[0].id)],
        )
    assert "`tool_use` ids were found without `tool_result` blocks" in unanswered.value.message


def test_anthropic_thinking_signatures_verified(ant: FakeAnthropic) -> None:
    client = anthropic_client(ant)
    thinking: ThinkingConfigParam = {"type": "enabled", "budget_tokens": 1024}
    ant.script(Reply(thinking="Weather first.", tool_calls=[ToolCall("get_weather", {})]))
    first = client.messages.create(
        model="m",
        max_tokens=2048,
        messages=CLAUDE_HELLO,
        tools=CLAUDE_TOOLS,
        thinking=thinking,
    )
    call = first.content[-1]
    assert first.content[0].type == "thinking" and call.type == "tool_use"
    replayed = [b.model_dump(exclude_none=True) for b in first.content]
    result: MessageParam = {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": call.id}],
    }

    def loop(blocks: list[dict[str, Any]]) -> anthropic.types.Message:
        # The blocks as dumped, or altered: plain dicts, so cast to the message's param.
        assistant = cast(MessageParam, {"role": "assistant", "content": blocks})
        return client.messages.create(
            model="m",
            max_tokens=2048,
            tools=CLAUDE_TOOLS,
            thinking=thinking,
            messages=[*CLAUDE_HELLO, assistant, result],
        )

    assert loop(replayed).stop_reason == "end_turn"
    with pytest.raises(anthropic.BadRequestError) as altered:
        loop([{**replayed[0], "thinking": "Something else."}, replayed[1]])
    assert "Invalid `signature` in `thinking` block" in altered.value.message
    with pytest.raises(anthropic.BadRequestError) as dropped:
        loop(replayed[1:])
    assert "must start with a thinking block" in dropped.value.message


def test_anthropic_max_tokens_stop(ant: FakeAnthropic) -> None:
    client = anthropic_client(ant)
    cut = client.messages.create(model="m", max_tokens=2, messages=CLAUDE_HELLO)
    assert (cut.stop_reason, cut.content[0].text) == ("max_tokens", "from fak")  # type: ignore[union-attr]
    ant.script(Reply(text="partial", stop="max_tokens"))
    with client.messages.stream(model="m", max_tokens=100, messages=CLAUDE_HELLO) as stream:
        final = stream.get_final_message()
    assert (final.stop_reason, final.content[0].text) == ("max_tokens", "partial")  # type: ignore[union-attr]


def test_anthropic_connection_failures(ant: FakeAnthropic) -> None:
    client = anthropic_client(ant)
    ant.fail(Failure.cut(after_events=3))
    seen: list[str] = []
    with (
        pytest.raises(anthropic.APIConnectionError),
        client.messages.stream(model="m", max_tokens=100, messages=CLAUDE_HELLO) as stream,
    ):
        seen.extend(event.type for event in stream)
    assert seen[:2] == ["message_start", "content_block_start"]

    ant.fail(Failure.stream_error(after_events=2))
    with (
        pytest.raises(anthropic.APIStatusError) as overloaded,
        client.messages.stream(model="m", max_tokens=100, messages=CLAUDE_HELLO) as stream,
    ):
        stream.get_final_message()
    assert overloaded.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]

    ant.fail(Failure.disconnect())
    with pytest.raises(anthropic.APIConnectionError):
        client.messages.create(model="m", max_tokens=9, messages=CLAUDE_HELLO)

    ant.fail(Failure.hang(5))
    with pytest.raises(anthropic.APITimeoutError):
        anthropic_client(ant, timeout=0.3).messages.create(
            model="m", max_tokens=9, messages=CLAUDE_HELLO
        )

    ant.fail(Failure.cut(after_events=0))  # not streamed: half a body
    with pytest.raises(anthropic.APIConnectionError):
        client.messages.create(model="m", max_tokens=9, messages=CLAUDE_HELLO)
    assert client.messages.create(model="m", max_tokens=9, messages=CLAUDE_HELLO).content


# ---------------------------------------------------------------------------------------------
# Both


def test_script_responder_and_failure_queue(oai: FakeOpenAI) -> None:
    client = openai_client(oai)

    def ask(text: str) -> str:
        answer = client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": text}]
        )
        return answer.choices[0].message.content or ""

    oai.script("first", lambda request: Reply(text=request.json["messages"][0]["content"][::-1]))
    oai.fail(None, None, Failure.error(500))
    assert ask("abc") == "first"
    assert ask("abc") == "cba"
    with pytest.raises(openai.InternalServerError):
        ask("abc")
    oai.responder = lambda request: "from the responder"
    assert ask("x") == "from the responder"
    oai.reset()
    assert ask("x") == "from fake-openai: x"
    assert len(oai.received) == 1


def test_recording_is_thread_safe(ant: FakeAnthropic) -> None:
    body = {"model": "m", "max_tokens": 9, "messages": HELLO}

    def send(n: int) -> None:
        with httpx.Client(headers=CLAUDE_HEADERS) as client:
            for i in range(5):
                assert client.post(f"{ant.url}/v1/messages?n={n}-{i}", json=body).is_success

    threads = [threading.Thread(target=send, args=(n,)) for n in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    got = ant.wait_for(60, timeout=5)
    assert sorted(r.query["n"][0] for r in got) == sorted(
        f"{n}-{i}" for n in range(12) for i in range(5)
    )


def test_chunked_request_bodies_are_recorded_whole(oai: FakeOpenAI) -> None:
    payload = json.dumps({"model": "m", "messages": HELLO}).encode()
    answer = httpx.post(
        f"{oai.base_url()}/chat/completions?trace=1",
        headers={"authorization": f"Bearer {OPENAI_KEY}"},
        content=iter([payload[:10], payload[10:]]),
    )
    assert answer.status_code == 200
    assert oai.last.headers["transfer-encoding"] == "chunked"
    assert oai.last.raw_body == payload
    assert oai.last.path == "/v1/chat/completions?trace=1"


def test_stop_closes_kept_alive_connections() -> None:
    fake = FakeOpenAI("short-lived").start()
    body = {"model": "m", "messages": HELLO}
    with httpx.Client() as client:
        assert client.post(f"{fake.base_url()}/chat/completions", json=body).is_success
        fake.stop()
        with pytest.raises(httpx.TransportError):
            client.post(f"{fake.base_url()}/chat/completions", json=body)
    assert len(fake.received) == 1
