"""Non-streamed responses and upstream errors, both ways, whatever the upstream sent."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plano_extproc.translate import AnthropicToOpenAI, OpenAIToAnthropic
from tests.translate_fixtures import (
    ANTHROPIC_ERROR_BODIES,
    ANTHROPIC_MESSAGE,
    OPENAI_COMPLETION,
    OPENAI_ERROR_BODIES,
    as_json,
)

pytestmark = pytest.mark.unit

TO_ANTHROPIC = OpenAIToAnthropic(clock=lambda: 1700000000.5)
TO_OPENAI = AnthropicToOpenAI()


def anthropic_message(**fields: Any) -> dict[str, Any]:
    return {**ANTHROPIC_MESSAGE, **fields}


def openai_completion(
    message: dict[str, Any], finish: str | None = "stop", **fields: Any
) -> dict[str, Any]:
    choice = {"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish}
    return {**OPENAI_COMPLETION, "choices": [choice], **fields}


# --- Anthropic upstream -> OpenAI client ----------------------------------------------------


def test_an_anthropic_message_as_a_chat_completion() -> None:
    assert TO_ANTHROPIC.response(ANTHROPIC_MESSAGE) == {
        "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "claude-sonnet-4-5-20250929",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Let me check the weather in Paris.",
                    "refusal": None,
                    "tool_calls": [
                        {
                            "id": "toolu_01A09q90qw90lq917835lq9",
                            "type": "function",
                            "function": {
                                "name": "get_weather",
                                "arguments": '{"location":"Paris","unit":"celsius"}',
                            },
                        }
                    ],
                    "reasoning_content": "The user wants weather.",
                    "thinking_blocks": [
                        {
                            "type": "thinking",
                            "thinking": "The user wants weather.",
                            "signature": "EqQBCgIYAhIM",
                        }
                    ],
                },
                "finish_reason": "tool_calls",
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": 582,
            "completion_tokens": 91,
            "total_tokens": 673,
            "prompt_tokens_details": {"cached_tokens": 100},
        },
    }


@pytest.mark.parametrize(
    ("stop_reason", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("pause_turn", "stop"),
        ("max_tokens", "length"),
        ("model_context_window_exceeded", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        (None, "stop"),
        ("something_new", "stop"),
    ],
)
def test_stop_reasons(stop_reason: str | None, finish: str) -> None:
    assert (
        TO_ANTHROPIC.response(anthropic_message(stop_reason=stop_reason))["choices"][0][
            "finish_reason"
        ]
        == finish
    )


def test_text_blocks_join_and_other_blocks_drop() -> None:
    content = [
        {"type": "text", "text": "Paris is ", "citations": [{"type": "char_location"}]},
        {
            "type": "server_tool_use",
            "id": "srvtoolu_1",
            "name": "web_search",
            "input": {"query": "q"},
        },
        {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": []},
        {"type": "text", "text": "sunny."},
        {"type": "redacted_thinking", "data": "opaque"},
        "garbage",
    ]
    message = TO_ANTHROPIC.response(anthropic_message(content=content, stop_reason="end_turn"))[
        "choices"
    ][0]["message"]
    assert message == {
        "role": "assistant",
        "content": "Paris is sunny.",
        "refusal": None,
        "thinking_blocks": [{"type": "redacted_thinking", "data": "opaque"}],
    }


def test_no_text_is_null_content() -> None:
    content = [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]
    message = TO_ANTHROPIC.response(anthropic_message(content=content))["choices"][0]["message"]
    assert message["content"] is None
    assert message["tool_calls"][0]["function"]["arguments"] == "{}"


# --- OpenAI upstream -> Anthropic client ----------------------------------------------------


def test_a_chat_completion_as_an_anthropic_message() -> None:
    assert TO_OPENAI.response(OPENAI_COMPLETION) == {
        "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
        "type": "message",
        "role": "assistant",
        "model": "gpt-4.1-2025-04-14",
        "content": [
            {"type": "text", "text": "I'll look both up."},
            {
                "type": "tool_use",
                "id": "call_abc123",
                "name": "get_weather",
                "input": {"location": "Paris"},
            },
            {
                "type": "tool_use",
                "id": "call_def456",
                "name": "get_time",
                "input": {"tz": "Europe/Paris"},
            },
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 18,
            "output_tokens": 17,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 64,
        },
    }


@pytest.mark.parametrize(
    ("finish", "stop_reason"),
    [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("tool_calls", "tool_use"),
        ("function_call", "tool_use"),
        ("content_filter", "refusal"),
        (None, "end_turn"),
        ("eos", "end_turn"),
    ],
)
def test_finish_reasons(finish: str | None, stop_reason: str) -> None:
    assert (
        TO_OPENAI.response(openai_completion({"content": "x"}, finish))["stop_reason"]
        == stop_reason
    )


@pytest.mark.parametrize(
    ("message", "content"),
    [
        (
            {"content": "4", "reasoning_content": "2+2"},
            [
                {"type": "thinking", "thinking": "2+2", "signature": ""},
                {"type": "text", "text": "4"},
            ],
        ),
        (
            {"content": "4", "reasoning": "2+2"},
            [
                {"type": "thinking", "thinking": "2+2", "signature": ""},
                {"type": "text", "text": "4"},
            ],
        ),
        (
            {"content": None, "refusal": "I can't help with that."},
            [{"type": "text", "text": "I can't help with that."}],
        ),
        (
            {"content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
            [{"type": "text", "text": "ab"}],
        ),
        ({"content": ""}, []),
        (
            {
                "content": None,
                "tool_calls": [
                    {"type": "function", "function": {"name": "f", "arguments": "not json"}}
                ],
            },
            [
                {
                    "type": "tool_use",
                    "id": "call_chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT_0",
                    "name": "f",
                    "input": {},
                }
            ],
        ),
        (
            {
                "content": None,
                "tool_calls": [
                    {"id": "c", "function": {"name": "f", "arguments": {"already": "parsed"}}}
                ],
            },
            [{"type": "tool_use", "id": "c", "name": "f", "input": {"already": "parsed"}}],
        ),
    ],
)
def test_message_shapes(message: dict[str, Any], content: list[Any]) -> None:
    assert TO_OPENAI.response(openai_completion(message))["content"] == content


def test_missing_usage_is_zero() -> None:
    body = {"id": "x", "model": "m", "choices": []}
    assert TO_OPENAI.response(body) == {
        "id": "x",
        "type": "message",
        "role": "assistant",
        "model": "m",
        "content": [],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 0,
            "output_tokens": 0,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        },
    }


# --- round trip -----------------------------------------------------------------------------


@pytest.mark.parametrize("stop_reason", ["end_turn", "max_tokens", "tool_use", "refusal"])
def test_an_anthropic_message_survives_a_round_trip(stop_reason: str) -> None:
    message = anthropic_message(stop_reason=stop_reason)
    message["usage"] = {**message["usage"], "cache_creation_input_tokens": 0}
    back = TO_OPENAI.response(TO_ANTHROPIC.response(message))
    # What OpenAI's shape cannot carry: the thinking's signature.
    thinking, *rest = message["content"]
    assert back == {**message, "content": [{**thinking, "signature": ""}, *rest]}


def test_a_chat_completion_survives_a_round_trip() -> None:
    back = TO_ANTHROPIC.response(TO_OPENAI.response(OPENAI_COMPLETION))
    choice = OPENAI_COMPLETION["choices"][0]  # type: ignore[index]
    assert back["id"] == OPENAI_COMPLETION["id"]
    assert back["choices"][0]["message"]["content"] == choice["message"]["content"]
    assert [call["function"]["name"] for call in back["choices"][0]["message"]["tool_calls"]] == [
        "get_weather",
        "get_time",
    ]
    assert [
        json.loads(call["function"]["arguments"])
        for call in back["choices"][0]["message"]["tool_calls"]
    ] == [
        {"location": "Paris"},
        {"tz": "Europe/Paris"},
    ]
    assert back["choices"][0]["finish_reason"] == "tool_calls"
    usage = back["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"], usage["prompt_tokens_details"]) == (
        82,
        17,
        {"cached_tokens": 64},
    )


# --- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "status", "type"),
    [
        ("invalid", 400, "invalid_request_error"),
        ("auth", 401, "authentication_error"),
        ("rate", 429, "rate_limit_error"),
        ("overloaded", 503, "server_error"),
    ],
)
def test_anthropic_errors_for_an_openai_client(name: str, status: int, type: str) -> None:
    upstream_status, body = ANTHROPIC_ERROR_BODIES[name]
    got_status, got = TO_ANTHROPIC.error(upstream_status, as_json(body))
    assert got_status == status
    assert json.loads(got) == {
        "error": {
            "message": body["error"]["message"],
            "type": type,
            "param": None,
            "code": body["error"]["type"],
        }
    }


@pytest.mark.parametrize(
    ("name", "status", "type"),
    [
        ("invalid", 400, "invalid_request_error"),
        ("auth", 401, "authentication_error"),
        ("quota", 429, "billing_error"),
        ("overloaded", 529, "overloaded_error"),
    ],
)
def test_openai_errors_for_an_anthropic_client(name: str, status: int, type: str) -> None:
    upstream_status, body = OPENAI_ERROR_BODIES[name]
    got_status, got = TO_OPENAI.error(upstream_status, as_json(body))
    assert got_status == status
    assert json.loads(got) == {
        "type": "error",
        "error": {"type": type, "message": body["error"]["message"]},
    }


@pytest.mark.parametrize(
    ("status", "anthropic_type", "openai_type"),
    [
        (400, "invalid_request_error", "invalid_request_error"),
        (401, "authentication_error", "authentication_error"),
        (402, "billing_error", "insufficient_quota"),
        (403, "permission_error", "permission_error"),
        (404, "not_found_error", "not_found_error"),
        (413, "request_too_large", "invalid_request_error"),
        (422, "invalid_request_error", "invalid_request_error"),
        (429, "rate_limit_error", "rate_limit_error"),
        (500, "api_error", "server_error"),
        (502, "api_error", "server_error"),
        (504, "timeout_error", "timeout_error"),
    ],
)
def test_error_status_table(status: int, anthropic_type: str, openai_type: str) -> None:
    """The status decides the category when the body says nothing useful."""
    _, anthropic_body = TO_OPENAI.error(status, b"<html>oops</html>")
    assert json.loads(anthropic_body)["error"]["type"] == anthropic_type
    _, openai_body = TO_ANTHROPIC.error(status, b"<html>oops</html>")
    assert json.loads(openai_body)["error"]["type"] == openai_type
    assert (
        json.loads(openai_body)["error"]["message"]
        == f"upstream returned HTTP {status}: <html>oops</html>"
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "upstream returned HTTP 502 with no body"),
        (b'{"error": "model crashed"}', "model crashed"),
        (b'{"detail": "Not Found"}', "Not Found"),
        (b'{"message": "bad things"}', "bad things"),
        (
            b'{"object": "error", "message": "vllm says no", "type": "BadRequestError",'
            b' "code": 400}',
            "vllm says no",
        ),
        (b"[1, 2]", "upstream returned HTTP 502: [1, 2]"),
        (b"\xff\xfe\x00garbage", "upstream returned HTTP 502: \ufffd\ufffd\x00garbage"),
    ],
)
def test_openai_compatible_error_variants(body: bytes, message: str) -> None:
    status, got = TO_OPENAI.error(502, body)
    assert status == 502
    assert json.loads(got) == {"type": "error", "error": {"type": "api_error", "message": message}}


def test_a_long_garbage_body_is_quoted_short() -> None:
    _, got = TO_ANTHROPIC.error(500, b"x" * 10_000)
    assert len(json.loads(got)["error"]["message"]) < 600


def test_response_bytes_routes_errors_and_garbage() -> None:
    status, body = TO_ANTHROPIC.response_bytes(200, as_json(ANTHROPIC_MESSAGE))
    assert status == 200 and json.loads(body)["object"] == "chat.completion"
    status, body = TO_ANTHROPIC.response_bytes(
        529, as_json(ANTHROPIC_ERROR_BODIES["overloaded"][1])
    )
    assert status == 503 and json.loads(body)["error"]["code"] == "overloaded_error"
    status, body = TO_ANTHROPIC.response_bytes(200, b"{not json")
    assert status == 502 and json.loads(body)["error"]["type"] == "server_error"
    # An error body sent with a 200 is still an error.
    status, body = TO_OPENAI.response_bytes(200, as_json(OPENAI_ERROR_BODIES["invalid"][1]))
    assert status == 502
    assert (
        json.loads(body)["error"]["message"]
        == "This model's maximum context length is 128000 tokens."
    )


def test_response_of_a_non_response_is_a_client_error() -> None:
    assert (
        TO_ANTHROPIC.response({"type": "error"})["error"]["message"]
        == "The upstream's response could not be read."
    )
    assert TO_OPENAI.response([1])["type"] == "error"


@settings(max_examples=300, derandomize=True, deadline=None)
@given(
    status=st.integers(0, 999), body=st.binary(max_size=200) | st.text(max_size=100).map(str.encode)
)
def test_any_error_reply_is_a_client_error(status: int, body: bytes) -> None:
    for pair, shape in ((TO_ANTHROPIC, "openai"), (TO_OPENAI, "anthropic")):
        got_status, got = pair.error(status, body)
        assert 400 <= got_status <= 599
        parsed = json.loads(got.decode())
        if shape == "openai":
            assert set(parsed["error"]) == {"message", "type", "param", "code"}
        else:
            assert parsed["type"] == "error" and set(parsed["error"]) == {"type", "message"}
        assert isinstance(parsed["error"]["message"], str)


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=15,
)


@settings(max_examples=300, derandomize=True, deadline=None)
@given(
    body=st.fixed_dictionaries(
        {"type": st.just("message"), "content": st.lists(JSONISH, max_size=4)},
        optional={"usage": JSONISH, "stop_reason": JSONISH, "id": JSONISH, "model": JSONISH},
    )
    | st.fixed_dictionaries(
        {"choices": st.lists(JSONISH, max_size=3)}, optional={"usage": JSONISH, "id": JSONISH}
    )
    | JSONISH
)
def test_any_response_body_translates_without_raising(body: Any) -> None:
    for pair in (TO_ANTHROPIC, TO_OPENAI):
        json.dumps(pair.response(body))
        _, raw = pair.response_bytes(200, json.dumps(body).encode())
        json.loads(raw)
