"""Request bodies, both ways: each mapping, each refusal, and the round trips that hold."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plano_extproc.translate import (
    AnthropicToOpenAI,
    OpenAIToAnthropic,
    TranslationError,
    translator,
    wants_stream,
)
from plano_extproc.translate.openai_to_anthropic import JSON_OBJECT_INSTRUCTION
from plano_extproc.upstreams import UPSTREAM_APIS

pytestmark = pytest.mark.unit

TO_ANTHROPIC = OpenAIToAnthropic()
TO_OPENAI = AnthropicToOpenAI()
USER = {"role": "user", "content": "Hi"}
A_USER = {"role": "user", "content": "Hi"}
PNG = "iVBORw0KGgo="
WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
A_WEATHER_TOOL: dict[str, Any] = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}


def to_anthropic(**body: Any) -> dict[str, Any]:
    body.setdefault("messages", [USER])
    return TO_ANTHROPIC.request(body, "claude-x")


def to_openai(**body: Any) -> dict[str, Any]:
    body.setdefault("messages", [A_USER])
    body.setdefault("max_tokens", 100)
    return TO_OPENAI.request(body, "gpt-x")


# --- the registry ---------------------------------------------------------------------------


def test_the_registry_pairs_the_apis() -> None:
    assert translator("openai", "openai") is None
    assert translator("anthropic", "anthropic") is None
    assert isinstance(translator("openai", "anthropic"), OpenAIToAnthropic)
    assert isinstance(translator("anthropic", "openai"), AnthropicToOpenAI)
    with pytest.raises(ValueError, match="unknown API 'gemini'"):
        translator("openai", "gemini")


def test_upstream_path_and_headers() -> None:
    # What a translated request is sent to, and with: the upstream API's module says.
    anthropic = UPSTREAM_APIS[TO_ANTHROPIC.upstream_api]
    assert anthropic.path == "/messages"
    assert anthropic.required_headers == {"anthropic-version": "2023-06-01"}
    openai = UPSTREAM_APIS[TO_OPENAI.upstream_api]
    assert openai.path == "/chat/completions"
    assert openai.required_headers == {}


@pytest.mark.parametrize(
    ("body", "expected"),
    [({"stream": True}, True), ({"stream": False}, False), ({}, False), ({"stream": "yes"}, False)],
)
def test_wants_stream(body: dict[str, Any], expected: bool) -> None:
    assert wants_stream(body) is expected


# --- OpenAI client -> Anthropic upstream ----------------------------------------------------


def test_a_minimal_request() -> None:
    assert to_anthropic(model="anthropic/claude") == {
        "model": "claude-x",
        "max_tokens": 4096,
        "messages": [{"role": "user", "content": "Hi"}],
    }


@pytest.mark.parametrize(
    ("messages", "system"),
    [
        ([{"role": "system", "content": "Be brief."}, USER], "Be brief."),
        ([{"role": "developer", "content": "Be brief."}, USER], "Be brief."),
        (
            [{"role": "system", "content": "A"}, USER, {"role": "developer", "content": "B"}],
            [{"type": "text", "text": "A"}, {"type": "text", "text": "B"}],
        ),
        (
            [
                {
                    "role": "system",
                    "content": [{"type": "text", "text": "A"}, {"type": "text", "text": "B"}],
                },
                USER,
            ],
            [{"type": "text", "text": "A"}, {"type": "text", "text": "B"}],
        ),
        (
            [
                {
                    "role": "system",
                    "content": [
                        {"type": "text", "text": "A", "cache_control": {"type": "ephemeral"}}
                    ],
                },
                USER,
            ],
            [{"type": "text", "text": "A", "cache_control": {"type": "ephemeral"}}],
        ),
    ],
)
def test_system_and_developer_messages_become_system(messages: list[Any], system: Any) -> None:
    out = to_anthropic(messages=messages)
    assert out["system"] == system
    assert out["messages"] == [{"role": "user", "content": "Hi"}]


def test_user_parts_text_images_and_pdf() -> None:
    content = [
        {"type": "text", "text": "What is in these?"},
        {
            "type": "image_url",
            "image_url": {"url": f"data:image/png;base64,{PNG}", "detail": "high"},
        },
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
        {
            "type": "file",
            "file": {"file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a.pdf"},
        },
        {"type": "text", "text": ""},
    ]
    out = to_anthropic(messages=[{"role": "user", "content": content}])
    assert out["messages"][0]["content"] == [
        {"type": "text", "text": "What is in these?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
        {
            "type": "document",
            "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="},
            "title": "a.pdf",
        },
    ]


def test_tool_calls_and_results_merge_into_alternating_turns() -> None:
    messages = [
        {"role": "user", "content": "Weather and time in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                },
                {
                    "id": "call.2",
                    "type": "function",
                    "function": {"name": "get_time", "arguments": ""},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
        {"role": "tool", "tool_call_id": "call.2", "content": [{"type": "text", "text": "14:00"}]},
        {"role": "user", "content": "Thanks. And tomorrow?"},
    ]
    out = to_anthropic(messages=messages, tools=[WEATHER_TOOL])
    assert out["messages"] == [
        {"role": "user", "content": "Weather and time in Paris?"},
        {
            "role": "assistant",
            "content": [
                {
                    "type": "tool_use",
                    "id": "call_1",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                },
                {"type": "tool_use", "id": "call_2", "name": "get_time", "input": {}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": "18C"},
                {
                    "type": "tool_result",
                    "tool_use_id": "call_2",
                    "content": [{"type": "text", "text": "14:00"}],
                },
                {"type": "text", "text": "Thanks. And tomorrow?"},
            ],
        },
    ]


def test_tool_results_go_first_in_a_merged_user_turn() -> None:
    messages = [
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{}"}}],
        },
        {"role": "user", "content": "note"},
        {"role": "tool", "tool_call_id": "c", "content": "done"},
    ]
    out = to_anthropic(messages=[USER, *messages])
    assert [block["type"] for block in out["messages"][2]["content"]] == ["tool_result", "text"]


def test_consecutive_assistant_messages_merge() -> None:
    messages = [
        USER,
        {"role": "assistant", "content": "One."},
        {"role": "assistant", "content": "Two."},
    ]
    assert to_anthropic(messages=messages)["messages"][1] == {
        "role": "assistant",
        "content": [{"type": "text", "text": "One."}, {"type": "text", "text": "Two."}],
    }


def test_an_assistant_refusal_and_empty_messages() -> None:
    messages = [
        USER,
        {"role": "assistant", "content": [{"type": "refusal", "refusal": "I can't."}]},
        {"role": "user", "content": ""},
        {"role": "user", "content": "Why?", "name": "bob"},
    ]
    assert to_anthropic(messages=messages)["messages"] == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "I can't."},
        {"role": "user", "content": "Why?"},
    ]


def test_thinking_blocks_are_replayed_and_bare_reasoning_dropped() -> None:
    assistant = {
        "role": "assistant",
        "content": "Sunny.",
        "reasoning_content": "hmm",
        "thinking_blocks": [
            {"index": 0, "type": "thinking", "thinking": "hmm", "signature": "sig"},
            {"type": "redacted_thinking", "data": "opaque"},
            {"type": "thinking", "thinking": "unsigned"},
        ],
    }
    out = to_anthropic(messages=[USER, assistant])
    assert out["messages"][1]["content"] == [
        {"type": "thinking", "thinking": "hmm", "signature": "sig"},
        {"type": "redacted_thinking", "data": "opaque"},
        {"type": "text", "text": "Sunny."},
    ]
    plain = to_anthropic(
        messages=[USER, {"role": "assistant", "content": "x", "reasoning_content": "y"}]
    )
    assert plain["messages"][1] == {"role": "assistant", "content": "x"}


def test_tools_map_to_input_schema() -> None:
    bare = {"type": "function", "function": {"name": "ping", "strict": True}}
    out = to_anthropic(tools=[WEATHER_TOOL, bare])
    assert out["tools"] == [
        A_WEATHER_TOOL,
        {"name": "ping", "input_schema": {"type": "object", "properties": {}}},
    ]
    assert "tool_choice" not in out


@pytest.mark.parametrize(
    ("choice", "parallel", "expected"),
    [
        ("auto", None, {"type": "auto"}),
        ("none", None, {"type": "none"}),
        ("required", None, {"type": "any"}),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            None,
            {"type": "tool", "name": "get_weather"},
        ),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
        ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
        ("none", False, {"type": "none"}),
        (None, True, None),
    ],
)
def test_tool_choice(choice: Any, parallel: Any, expected: Any) -> None:
    body: dict[str, Any] = {"tools": [WEATHER_TOOL]}
    if choice is not None:
        body["tool_choice"] = choice
    if parallel is not None:
        body["parallel_tool_calls"] = parallel
    assert to_anthropic(**body).get("tool_choice") == expected


def test_tool_choice_without_tools_is_dropped() -> None:
    assert "tool_choice" not in to_anthropic(tool_choice="required")


def test_history_with_tool_calls_but_no_tools_defines_them() -> None:
    messages = [
        USER,
        {
            "role": "assistant",
            "tool_calls": [{"id": "c1", "function": {"name": "f", "arguments": "{}"}}],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "ok"},
    ]
    out = to_anthropic(messages=messages, tool_choice="auto")
    assert out["tools"] == [{"name": "f", "input_schema": {"type": "object"}}]
    assert out["tool_choice"] == {"type": "none"}


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"stop": "END"}, {"stop_sequences": ["END"]}),
        ({"stop": ["a", "b", ""]}, {"stop_sequences": ["a", "b"]}),
        ({"stop": None}, {}),
        ({"max_tokens": 100}, {"max_tokens": 100}),
        ({"max_completion_tokens": 50, "max_tokens": 100}, {"max_tokens": 50}),
        ({"temperature": 0.3}, {"temperature": 0.3}),
        ({"temperature": 1.7}, {"temperature": 1.0}),
        ({"temperature": 2}, {"temperature": 1.0}),
        ({"temperature": 0}, {"temperature": 0.0}),
        ({"top_p": 0.9}, {"top_p": 0.9}),
        ({"top_p": 1}, {}),
        ({"top_k": 40}, {"top_k": 40}),
        ({"user": "u-1"}, {"metadata": {"user_id": "u-1"}}),
        ({"safety_identifier": "s-1"}, {"metadata": {"user_id": "s-1"}}),
        ({"n": 1}, {}),
        ({"stream": True, "stream_options": {"include_usage": True}}, {"stream": True}),
        ({"response_format": {"type": "text"}}, {}),
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "r", "schema": {"type": "object"}},
                }
            },
            {"output_config": {"format": {"type": "json_schema", "schema": {"type": "object"}}}},
        ),
        ({"response_format": {"type": "json_object"}}, {"system": JSON_OBJECT_INSTRUCTION}),
        ({"reasoning_effort": "none"}, {}),
        # Dropped: nothing Anthropic could do with them.
        (
            {
                "logprobs": True,
                "top_logprobs": 3,
                "logit_bias": {"1": 2},
                "frequency_penalty": 0.5,
                "presence_penalty": 0.5,
                "seed": 7,
                "service_tier": "auto",
                "store": True,
                "metadata": {"k": "v"},
                "modalities": ["text"],
                "prediction": {"type": "content", "content": "x"},
                "prompt_cache_key": "k",
                "verbosity": "low",
            },
            {},
        ),
    ],
)
def test_parameters(fields: dict[str, Any], expected: dict[str, Any]) -> None:
    out = to_anthropic(**fields)
    base = {
        "model": "claude-x",
        "max_tokens": 4096,
        "messages": [{"role": "user", "content": "Hi"}],
    }
    assert out == {**base, **expected}


@pytest.mark.parametrize(
    ("fields", "thinking", "max_tokens"),
    [
        ({"reasoning_effort": "minimal"}, 1024, 4096 + 1024),
        ({"reasoning_effort": "low"}, 2048, 4096 + 2048),
        ({"reasoning_effort": "medium"}, 8192, 4096 + 8192),
        ({"reasoning_effort": "high"}, 16384, 4096 + 16384),
        ({"reasoning_effort": "high", "max_tokens": 32000}, 16384, 32000),
        ({"reasoning_effort": "high", "max_tokens": 3000}, 2999, 3000),
        ({"reasoning_effort": "low", "max_tokens": 1000}, None, 1000),
        (
            {"reasoning_effort": "low", "tools": [WEATHER_TOOL], "tool_choice": "required"},
            None,
            4096,
        ),
    ],
)
def test_reasoning_effort_becomes_a_thinking_budget(
    fields: dict[str, Any], thinking: int | None, max_tokens: int
) -> None:
    out = to_anthropic(**fields)
    assert out.get("thinking") == (
        {"type": "enabled", "budget_tokens": thinking} if thinking else None
    )
    assert out["max_tokens"] == max_tokens


def test_thinking_needs_the_last_tool_turn_signed() -> None:
    call = {"id": "c1", "function": {"name": "get_weather", "arguments": "{}"}}
    unsigned = [
        USER,
        {"role": "assistant", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": "x"},
    ]
    assert "thinking" not in to_anthropic(
        messages=unsigned, reasoning_effort="low", tools=[WEATHER_TOOL]
    )
    signed = [
        USER,
        {
            "role": "assistant",
            "tool_calls": [call],
            "thinking_blocks": [{"type": "thinking", "thinking": "t", "signature": "s"}],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "x"},
    ]
    assert "thinking" in to_anthropic(messages=signed, reasoning_effort="low", tools=[WEATHER_TOOL])
    # An earlier unsigned tool turn does not matter once a plain turn came after it.
    later = [*unsigned, {"role": "assistant", "content": "18C"}, {"role": "user", "content": "ok"}]
    assert "thinking" in to_anthropic(messages=later, reasoning_effort="low", tools=[WEATHER_TOOL])


def test_image_jpg_and_schemas_without_type() -> None:
    content = [{"type": "image_url", "image_url": {"url": "data:image/jpg;base64,/9j/"}}]
    out = to_anthropic(
        messages=[{"role": "user", "content": content}],
        tools=[
            {"type": "function", "function": {"name": "f", "parameters": {"properties": {"a": {}}}}}
        ],
    )
    assert out["messages"][0]["content"][0]["source"]["media_type"] == "image/jpeg"
    assert out["tools"][0]["input_schema"] == {"type": "object", "properties": {"a": {}}}


def test_thinking_drops_the_sampling_it_cannot_take() -> None:
    out = to_anthropic(reasoning_effort="low", temperature=0.2, top_k=5, top_p=0.5)
    assert not {"temperature", "top_k", "top_p"} & out.keys()
    assert to_anthropic(reasoning_effort="low", top_p=0.97)["top_p"] == 0.97


def test_a_custom_default_max_tokens() -> None:
    assert (
        OpenAIToAnthropic(default_max_tokens=1000).request({"messages": [USER]}, "m")["max_tokens"]
        == 1000
    )


def test_json_object_instruction_joins_the_system_prompt() -> None:
    out = to_anthropic(
        messages=[{"role": "system", "content": "Be brief."}, USER],
        response_format={"type": "json_object"},
    )
    assert out["system"] == [
        {"type": "text", "text": "Be brief."},
        {"type": "text", "text": JSON_OBJECT_INSTRUCTION},
    ]


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"n": 2}, "n"),
        ({"functions": [{"name": "f"}]}, "functions"),
        ({"function_call": "auto"}, "function_call"),
        ({"messages": "Hi"}, "messages"),
        ({"messages": ["Hi"]}, "messages[0]"),
        ({"messages": [{"role": "critic", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "function", "name": "f", "content": "x"}]}, "messages[0].role"),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "input_audio", "input_audio": {"data": "x"}}],
                    }
                ]
            },
            "messages[0].content[0]",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "file", "file": {"file_id": "f-1"}}]}
                ]
            },
            "messages[0].content[0]",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "image_url", "image_url": {"url": "data:image/svg+xml,<svg/>"}}
                        ],
                    }
                ]
            },
            "messages[0].content[0]",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "file", "file": {"file_data": "data:text/csv;base64,YQ=="}}
                        ],
                    }
                ]
            },
            "messages[0].content[0]",
        ),
        (
            {"messages": [{"role": "system", "content": [{"type": "image_url"}]}]},
            "messages[0].content[0]",
        ),
        ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        (
            {
                "messages": [
                    {
                        "role": "assistant",
                        "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "[1]"}}],
                    }
                ]
            },
            "messages[0].tool_calls[0].function.arguments",
        ),
        (
            {
                "messages": [
                    {
                        "role": "assistant",
                        "tool_calls": [
                            {"id": "c", "function": {"name": "f", "arguments": "{oops"}}
                        ],
                    }
                ]
            },
            "messages[0].tool_calls[0].function.arguments",
        ),
        (
            {"messages": [{"role": "assistant", "tool_calls": [{"function": {"name": "f"}}]}]},
            "messages[0].tool_calls[0]",
        ),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].tool_call_id"),
        ({"tools": [{"type": "custom", "custom": {"name": "grammar"}}]}, "tools[0]"),
        ({"tools": [WEATHER_TOOL], "tool_choice": {"type": "allowed_tools"}}, "tool_choice"),
        ({"reasoning_effort": "extreme"}, "reasoning_effort"),
        ({"response_format": {"type": "xml"}}, "response_format"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": "100"}, "max_tokens"),
    ],
)
def test_refusals_name_the_parameter(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(TranslationError) as caught:
        to_anthropic(**fields)
    assert caught.value.param == param
    assert caught.value.status == 400
    status, body = TO_ANTHROPIC.refusal(caught.value)
    error = json.loads(body)["error"]
    assert status == 400
    assert error["param"] == param
    assert error["type"] == "invalid_request_error"
    assert error["message"] == caught.value.message


def test_a_body_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(TranslationError):
        TO_ANTHROPIC.request([1, 2], "m")  # type: ignore[arg-type]


# --- Anthropic client -> OpenAI upstream ----------------------------------------------------


def test_a_minimal_anthropic_request() -> None:
    assert to_openai() == {
        "model": "gpt-x",
        "messages": [{"role": "user", "content": "Hi"}],
        "max_completion_tokens": 100,
    }


def test_the_max_tokens_field_is_configurable() -> None:
    out = AnthropicToOpenAI(max_tokens_field="max_tokens").request(
        {"messages": [A_USER], "max_tokens": 9}, "m"
    )
    assert out["max_tokens"] == 9
    assert "max_completion_tokens" not in out


@pytest.mark.parametrize(
    ("system", "expected"),
    [
        ("Be brief.", "Be brief."),
        (
            [
                {
                    "type": "text",
                    "text": "You are Claude Code.",
                    "cache_control": {"type": "ephemeral"},
                },
                {"type": "text", "text": "Be brief."},
            ],
            "You are Claude Code.\n\nBe brief.",
        ),
        ("", None),
        ([], None),
    ],
)
def test_system_becomes_a_leading_system_message(system: Any, expected: str | None) -> None:
    messages = to_openai(system=system)["messages"]
    if expected is None:
        assert messages == [{"role": "user", "content": "Hi"}]
    else:
        assert messages[0] == {"role": "system", "content": expected}


def test_user_blocks_text_images_documents() -> None:
    content = [
        {"type": "text", "text": "<system-reminder>x</system-reminder>"},
        {"type": "text", "text": "Describe these.", "cache_control": {"type": "ephemeral"}},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
        {
            "type": "document",
            "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="},
            "title": "r.pdf",
        },
        {
            "type": "document",
            "source": {"type": "text", "media_type": "text/plain", "data": "plain"},
        },
    ]
    assert to_openai(messages=[{"role": "user", "content": content}])["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "<system-reminder>x</system-reminder>"},
                {"type": "text", "text": "Describe these."},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
                {
                    "type": "file",
                    "file": {
                        "file_data": "data:application/pdf;base64,JVBERi0=",
                        "filename": "r.pdf",
                    },
                },
                {"type": "text", "text": "plain"},
            ],
        }
    ]


def test_text_only_user_blocks_become_one_string() -> None:
    content = [{"type": "text", "text": "<reminder/>"}, {"type": "text", "text": "Fix the bug."}]
    assert to_openai(messages=[{"role": "user", "content": content}])["messages"] == [
        {"role": "user", "content": "<reminder/>\n\nFix the bug."}
    ]


def test_tool_use_and_results_become_tool_calls_and_tool_messages() -> None:
    messages = [
        A_USER,
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                {"type": "text", "text": "Checking."},
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                },
                {"type": "tool_use", "id": "toolu_2", "name": "screenshot", "input": {}},
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_1",
                    "content": "18C",
                    "is_error": False,
                },
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_2",
                    "content": [
                        {"type": "text", "text": "captured"},
                        {
                            "type": "image",
                            "source": {"type": "base64", "media_type": "image/png", "data": PNG},
                        },
                    ],
                    "is_error": True,
                },
                {"type": "text", "text": "And tomorrow?"},
            ],
        },
    ]
    assert to_openai(messages=messages)["messages"] == [
        {"role": "user", "content": "Hi"},
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {
                    "id": "toolu_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                },
                {
                    "id": "toolu_2",
                    "type": "function",
                    "function": {"name": "screenshot", "arguments": "{}"},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "18C"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": "captured"},
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                {"type": "text", "text": "And tomorrow?"},
            ],
        },
    ]


def test_assistant_turns_of_only_thinking_or_server_tools_vanish() -> None:
    messages = [
        A_USER,
        {"role": "assistant", "content": [{"type": "redacted_thinking", "data": "x"}]},
        {"role": "user", "content": "again"},
        {
            "role": "assistant",
            "content": [{"type": "server_tool_use", "id": "s", "name": "web_search", "input": {}}],
        },
    ]
    assert to_openai(messages=messages)["messages"] == [
        {"role": "user", "content": "Hi"},
        {"role": "user", "content": "again"},
    ]


def test_tools_and_server_tools() -> None:
    tools = [
        A_WEATHER_TOOL,
        {"type": "web_search_20250305", "name": "web_search", "max_uses": 5},
        {"type": "custom", **A_WEATHER_TOOL, "name": "w2"},
    ]
    out = to_openai(tools=tools)
    assert out["tools"] == [
        WEATHER_TOOL,
        {"type": "function", "function": {**WEATHER_TOOL["function"], "name": "w2"}},
    ]


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ({"type": "auto"}, {"tool_choice": "auto"}),
        ({"type": "none"}, {"tool_choice": "none"}),
        ({"type": "any"}, {"tool_choice": "required"}),
        (
            {"type": "tool", "name": "get_weather"},
            {"tool_choice": {"type": "function", "function": {"name": "get_weather"}}},
        ),
        (
            {"type": "auto", "disable_parallel_tool_use": True},
            {"tool_choice": "auto", "parallel_tool_calls": False},
        ),
        ({"type": "any", "disable_parallel_tool_use": False}, {"tool_choice": "required"}),
    ],
)
def test_anthropic_tool_choice(choice: dict[str, Any], expected: dict[str, Any]) -> None:
    out = to_openai(tools=[A_WEATHER_TOOL], tool_choice=choice)
    assert {
        key: out[key] for key in ("tool_choice", "parallel_tool_calls") if key in out
    } == expected


def test_tool_choice_without_usable_tools_is_dropped() -> None:
    out = to_openai(tools=[{"type": "bash_20250124", "name": "bash"}], tool_choice={"type": "any"})
    assert not {"tools", "tool_choice"} & out.keys()


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"stop_sequences": ["a", "b"]}, {"stop": ["a", "b"]}),
        ({"stop_sequences": ["1", "2", "3", "4", "5"]}, {"stop": ["1", "2", "3", "4"]}),
        ({"temperature": 0.7, "top_p": 0.9, "top_k": 40}, {"temperature": 0.7, "top_p": 0.9}),
        ({"metadata": {"user_id": "u-1"}}, {"user": "u-1"}),
        ({"stream": True}, {"stream": True, "stream_options": {"include_usage": True}}),
        ({"thinking": {"type": "enabled", "budget_tokens": 1024}}, {"reasoning_effort": "low"}),
        ({"thinking": {"type": "enabled", "budget_tokens": 2048}}, {"reasoning_effort": "low"}),
        ({"thinking": {"type": "enabled", "budget_tokens": 8192}}, {"reasoning_effort": "medium"}),
        ({"thinking": {"type": "enabled", "budget_tokens": 31999}}, {"reasoning_effort": "high"}),
        ({"thinking": {"type": "adaptive"}}, {}),
        ({"thinking": {"type": "disabled"}}, {}),
        ({"output_config": {"effort": "medium"}}, {"reasoning_effort": "medium"}),
        ({"output_config": {"effort": "max"}}, {"reasoning_effort": "high"}),
        (
            {"output_config": {"format": {"type": "json_schema", "schema": {"type": "object"}}}},
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {
                        "name": "response",
                        "schema": {"type": "object"},
                        "strict": True,
                    },
                }
            },
        ),
        (
            {
                "service_tier": "auto",
                "container": "c",
                "mcp_servers": [],
                "context_management": {},
                "inference_geo": "us",
            },
            {},
        ),
    ],
)
def test_anthropic_parameters(fields: dict[str, Any], expected: dict[str, Any]) -> None:
    base = {
        "model": "gpt-x",
        "messages": [{"role": "user", "content": "Hi"}],
        "max_completion_tokens": 100,
    }
    assert to_openai(**fields) == {**base, **expected}


@pytest.mark.parametrize(
    ("messages", "param"),
    [
        ("Hi", "messages"),
        ([{"role": "tool", "content": "x"}], "messages[0].role"),
        ([{"role": "user", "content": 3}], "messages[0].content"),
        (
            [
                {
                    "role": "user",
                    "content": [{"type": "image", "source": {"type": "file", "file_id": "f"}}],
                }
            ],
            "messages[0].content[0]",
        ),
        (
            [
                {
                    "role": "user",
                    "content": [
                        {"type": "document", "source": {"type": "url", "url": "https://x/a.pdf"}}
                    ],
                }
            ],
            "messages[0].content[0]",
        ),
        (
            [
                {
                    "role": "user",
                    "content": [
                        {"type": "search_result", "source": "x", "title": "t", "content": []}
                    ],
                }
            ],
            "messages[0].content[0]",
        ),
        (
            [{"role": "user", "content": [{"type": "tool_result", "content": "x"}]}],
            "messages[0].content[0]",
        ),
        (
            [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "t",
                            "content": [{"type": "document"}],
                        }
                    ],
                }
            ],
            "messages[0].content[0].content[0]",
        ),
        (
            [{"role": "assistant", "content": [{"type": "tool_use", "input": {}}]}],
            "messages[0].content[0]",
        ),
        ([{"role": "assistant", "content": [{"type": "mystery"}]}], "messages[0].content[0]"),
    ],
)
def test_anthropic_refusals(messages: Any, param: str) -> None:
    with pytest.raises(TranslationError) as caught:
        to_openai(messages=messages)
    assert caught.value.param == param
    status, body = TO_OPENAI.refusal(caught.value)
    assert status == 400
    assert json.loads(body) == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": f"{param}: {caught.value.message}"},
    }


# --- round trips ----------------------------------------------------------------------------

NAMES = st.sampled_from(["get_weather", "get_time", "search"])
TEXT = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=20)
ARGS = st.dictionaries(st.sampled_from(["city", "n", "q"]), st.integers() | TEXT, max_size=3)


@st.composite
def openai_conversations(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Conversations in the form both APIs hold alike: text turns, tool calls, their results."""
    messages: list[dict[str, Any]] = (
        [{"role": "system", "content": draw(TEXT)}] if draw(st.booleans()) else []
    )
    messages.append({"role": "user", "content": draw(TEXT)})
    for turn in range(draw(st.integers(0, 3))):
        calls = [
            {
                "id": f"call_{turn}_{k}",
                "type": "function",
                "function": {
                    "name": draw(NAMES),
                    "arguments": json.dumps(draw(ARGS), separators=(",", ":"), ensure_ascii=False),
                },
            }
            for k in range(draw(st.integers(0, 2)))
        ]
        assistant: dict[str, Any] = {
            "role": "assistant",
            "content": draw(st.none() | TEXT) if calls else draw(TEXT),
        }
        if calls:
            assistant["tool_calls"] = calls
        messages.append(assistant)
        messages.extend(
            {"role": "tool", "tool_call_id": call["id"], "content": draw(TEXT)} for call in calls
        )
        if not calls:
            messages.append({"role": "user", "content": draw(TEXT)})
    return messages


@settings(max_examples=150, derandomize=True, deadline=None)
@given(
    messages=openai_conversations(),
    effort=st.sampled_from([None, "low", "medium", "high"]),
    stop=st.lists(TEXT, max_size=4),
    temperature=st.none() | st.floats(0, 1),
)
def test_openai_requests_survive_a_round_trip(
    messages: list[dict[str, Any]], effort: str | None, stop: list[str], temperature: float | None
) -> None:
    body: dict[str, Any] = {
        "model": "m",
        "messages": messages,
        "tools": [WEATHER_TOOL],
        "tool_choice": "auto",
        "max_tokens": 50000,
    }
    if stop:
        body["stop"] = stop
    if effort:
        body["reasoning_effort"] = effort
    elif temperature is not None:
        body["temperature"] = temperature
    back = TO_OPENAI.request(TO_ANTHROPIC.request(body, "claude"), "m")
    expected = {**body, "max_completion_tokens": 50000}
    del expected["max_tokens"]
    assistants = [message for message in messages if message["role"] == "assistant"]
    if effort and assistants and "tool_calls" in assistants[-1]:
        del expected["reasoning_effort"]  # no thinking_blocks were sent back: thinking is off
    assert back == expected


@settings(max_examples=150, derandomize=True, deadline=None)
@given(messages=openai_conversations())
def test_anthropic_requests_survive_a_round_trip(messages: list[dict[str, Any]]) -> None:
    body = TO_ANTHROPIC.request({"messages": messages, "tools": [WEATHER_TOOL]}, "claude")
    back = TO_ANTHROPIC.request(TO_OPENAI.request(body, "gpt"), "claude")
    assert back == body


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=12,
)
KEYS = [
    "role",
    "content",
    "type",
    "text",
    "tool_calls",
    "function",
    "arguments",
    "name",
    "id",
    "tool_call_id",
    "image_url",
    "url",
    "source",
    "tool_use_id",
    "input",
    "thinking_blocks",
    "file",
    "file_data",
]


@st.composite
def hostile_bodies(draw: st.DrawFn) -> dict[str, Any]:
    """Request-shaped JSON with anything at all in the places the translators read."""
    message = st.dictionaries(
        st.sampled_from(KEYS),
        JSONISH
        | st.sampled_from(
            ["user", "assistant", "tool", "system", "text", "image_url", "tool_use", "tool_result"]
        ),
        max_size=5,
    )
    return draw(
        st.fixed_dictionaries(
            {"messages": st.lists(message, max_size=4) | JSONISH},
            optional={
                key: JSONISH
                for key in [
                    "tools",
                    "tool_choice",
                    "stop",
                    "max_tokens",
                    "temperature",
                    "reasoning_effort",
                    "response_format",
                    "system",
                    "thinking",
                    "stop_sequences",
                    "metadata",
                    "output_config",
                    "n",
                    "parallel_tool_calls",
                ]
            },
        )
    )


@settings(max_examples=300, derandomize=True, deadline=None)
@given(body=hostile_bodies())
def test_any_request_translates_or_is_refused(body: dict[str, Any]) -> None:
    for pair in (TO_ANTHROPIC, TO_OPENAI):
        try:
            out = pair.request(body, "m")
        except TranslationError as exc:
            status, reply = pair.refusal(exc)
            assert status == 400
            json.loads(reply)
        else:
            assert out["model"] == "m"
            json.dumps(out)


def test_a_system_role_message_in_messages_stays_a_system_message() -> None:
    # Claude Code sends its environment as a system-role message after the user's turn.
    body = {
        "model": "m",
        "max_tokens": 10,
        "system": "You are Claude Code.",
        "messages": [
            {"role": "user", "content": "fix the bug"},
            {"role": "system", "content": [{"type": "text", "text": "Today is Sunday."}]},
            {"role": "system", "content": ""},
        ],
    }
    pair = translator("anthropic", "openai")
    assert pair is not None
    out = pair.request(body, "gpt-5.2")
    assert out["messages"] == [
        {"role": "system", "content": "You are Claude Code."},
        {"role": "user", "content": "fix the bug"},
        {"role": "system", "content": "Today is Sunday."},
    ]
