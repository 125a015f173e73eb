"""Upstream replies for the translation tests, written from the two APIs' references, and
the offline SDK clients that read what the translators make of them."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import anthropic
import openai

from plano_extproc.translate import TranslationError, Translator, wants_stream

try:  # the SDKs' own HTTP client: httpx2 in current releases, httpx before
    import httpx2 as http
except ImportError:  # pragma: no cover
    import httpx as http  # type: ignore[no-redef]


def sse(*events: tuple[str | None, Any]) -> bytes:
    """Events on the wire as an upstream writes them (``event:`` line only when named)."""
    out = []
    for name, data in events:
        text = data if isinstance(data, str) else json.dumps(data)
        out.append((f"event: {name}\n" if name else "") + f"data: {text}\n\n")
    return "".join(out).encode()


# --- Anthropic ------------------------------------------------------------------------------

ANTHROPIC_MESSAGE = {
    "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-5-20250929",
    "content": [
        {"type": "thinking", "thinking": "The user wants weather.", "signature": "EqQBCgIYAhIM"},
        {"type": "text", "text": "Let me check the weather in Paris."},
        {
            "type": "tool_use",
            "id": "toolu_01A09q90qw90lq917835lq9",
            "name": "get_weather",
            "input": {"location": "Paris", "unit": "celsius"},
        },
    ],
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 472,
        "output_tokens": 91,
        "cache_creation_input_tokens": 10,
        "cache_read_input_tokens": 100,
    },
}


def _anthropic_stream_events() -> list[tuple[str | None, Any]]:
    start = {
        "type": "message_start",
        "message": {
            "id": "msg_014p7gG3wDgGV9EUtLvnow3U",
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-4-5-20250929",
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {
                "input_tokens": 472,
                "output_tokens": 2,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 128,
            },
        },
    }

    def delta(index: int, body: dict[str, Any]) -> tuple[str, Any]:
        return "content_block_delta", {"type": "content_block_delta", "index": index, "delta": body}

    def block(index: int, body: dict[str, Any]) -> tuple[str, Any]:
        return "content_block_start", {
            "type": "content_block_start",
            "index": index,
            "content_block": body,
        }

    def stop(index: int) -> tuple[str, Any]:
        return "content_block_stop", {"type": "content_block_stop", "index": index}

    return [
        ("message_start", start),
        block(0, {"type": "thinking", "thinking": "", "signature": ""}),
        delta(0, {"type": "thinking_delta", "thinking": "The user asks about "}),
        delta(0, {"type": "thinking_delta", "thinking": "Paris weather — café?"}),
        delta(0, {"type": "signature_delta", "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3h"}),
        stop(0),
        ("ping", {"type": "ping"}),
        block(1, {"type": "text", "text": ""}),
        delta(1, {"type": "text_delta", "text": "Okay, let's check "}),
        delta(1, {"type": "text_delta", "text": "the weather in Paris 日本."}),
        stop(1),
        block(
            2,
            {
                "type": "tool_use",
                "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
                "name": "get_weather",
                "input": {},
            },
        ),
        delta(2, {"type": "input_json_delta", "partial_json": ""}),
        delta(2, {"type": "input_json_delta", "partial_json": '{"location": "Pa'}),
        delta(2, {"type": "input_json_delta", "partial_json": 'ris", "unit": "celsius"}'}),
        stop(2),
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                "usage": {"output_tokens": 89},
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]


ANTHROPIC_STREAM_EVENTS = _anthropic_stream_events()
ANTHROPIC_STREAM = sse(*ANTHROPIC_STREAM_EVENTS)
# The same stream cut: inside the tool's JSON; after message_delta (no message_stop).
ANTHROPIC_STREAM_CUT_MID_EVENT = ANTHROPIC_STREAM[: ANTHROPIC_STREAM.index(b'ris\\", ') + 3]
ANTHROPIC_STREAM_CUT_BEFORE_STOP = ANTHROPIC_STREAM[
    : ANTHROPIC_STREAM.index(b"event: message_stop")
]

ANTHROPIC_OVERLOADED_MID_STREAM = sse(
    *ANTHROPIC_STREAM_EVENTS[:9],
    ("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
)

ANTHROPIC_ERROR_BODIES: dict[str, tuple[int, dict[str, Any]]] = {
    "invalid": (
        400,
        {
            "type": "error",
            "error": {"type": "invalid_request_error", "message": "max_tokens: Field required"},
            "request_id": "req_011CSHoEeqs5C35K2UUqR7Fy",
        },
    ),
    "auth": (
        401,
        {
            "type": "error",
            "error": {"type": "authentication_error", "message": "invalid x-api-key"},
        },
    ),
    "rate": (429, {"type": "error", "error": {"type": "rate_limit_error", "message": "Slow down"}}),
    "overloaded": (
        529,
        {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
    ),
}


# --- OpenAI ---------------------------------------------------------------------------------

OPENAI_COMPLETION = {
    "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
    "object": "chat.completion",
    "created": 1741569952,
    "model": "gpt-4.1-2025-04-14",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "I'll look both up.",
                "refusal": None,
                "tool_calls": [
                    {
                        "id": "call_abc123",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"location":"Paris"}'},
                    },
                    {
                        "id": "call_def456",
                        "type": "function",
                        "function": {"name": "get_time", "arguments": '{"tz":"Europe/Paris"}'},
                    },
                ],
            },
            "logprobs": None,
            "finish_reason": "tool_calls",
        }
    ],
    "usage": {
        "prompt_tokens": 82,
        "completion_tokens": 17,
        "total_tokens": 99,
        "prompt_tokens_details": {"cached_tokens": 64, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    },
    "service_tier": "default",
}


def _openai_stream_chunks() -> list[Any]:
    base = {
        "id": "chatcmpl-7QyqpwdfhqwajicIEznoc6Q47XAyW",
        "object": "chat.completion.chunk",
        "created": 1694268190,
        "model": "gpt-4o-mini-2024-07-18",
        "system_fingerprint": "fp_44709d6fcb",
    }

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            **base,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }

    def call(index: int, **fields: Any) -> dict[str, Any]:
        return {"tool_calls": [{"index": index, **fields}]}

    return [
        chunk({"role": "assistant", "content": "", "refusal": None}),
        chunk({"content": "Checking "}),
        chunk({"content": "both — ünïcode."}),
        chunk(
            call(
                0,
                id="call_abc123",
                type="function",
                function={"name": "get_weather", "arguments": ""},
            )
        ),
        chunk(call(0, function={"arguments": '{"loc'})),
        chunk(call(0, function={"arguments": 'ation": "Paris"}'})),
        chunk(
            call(
                1, id="call_def456", type="function", function={"name": "get_time", "arguments": ""}
            )
        ),
        chunk(call(1, function={"arguments": '{"tz": "Europe/Paris"}'})),
        chunk({}, "tool_calls"),
        {
            **base,
            "choices": [],
            "usage": {
                "prompt_tokens": 82,
                "completion_tokens": 17,
                "total_tokens": 99,
                "prompt_tokens_details": {"cached_tokens": 64},
            },
        },
        "[DONE]",
    ]


OPENAI_STREAM_CHUNKS = _openai_stream_chunks()
OPENAI_STREAM = sse(*[(None, chunk) for chunk in OPENAI_STREAM_CHUNKS])
# DeepSeek / vLLM style: reasoning_content deltas before the answer; no usage, no [DONE].
OPENAI_REASONING_STREAM = sse(
    *[
        (
            None,
            {
                "id": "r1",
                "object": "chat.completion.chunk",
                "created": 1,
                "model": "deepseek-reasoner",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            },
        )
        for delta, finish in [
            ({"role": "assistant", "content": None, "reasoning_content": ""}, None),
            ({"reasoning_content": "Two plus two "}, None),
            ({"reasoning_content": "is four."}, None),
            ({"content": "4"}, None),
            ({}, "stop"),
        ]
    ]
)
OPENAI_STREAM_CUT_MID_EVENT = OPENAI_STREAM[: OPENAI_STREAM.index(b'ation\\": ') + 4]

OPENAI_ERROR_BODIES: dict[str, tuple[int, dict[str, Any]]] = {
    "invalid": (
        400,
        {
            "error": {
                "message": "This model's maximum context length is 128000 tokens.",
                "type": "invalid_request_error",
                "param": "messages",
                "code": "context_length_exceeded",
            }
        },
    ),
    "auth": (
        401,
        {
            "error": {
                "message": "Incorrect API key provided.",
                "type": "invalid_request_error",
                "param": None,
                "code": "invalid_api_key",
            }
        },
    ),
    "quota": (
        429,
        {
            "error": {
                "message": "You exceeded your current quota.",
                "type": "insufficient_quota",
                "param": None,
                "code": "insufficient_quota",
            }
        },
    ),
    "overloaded": (
        503,
        {
            "error": {
                "message": "The engine is currently overloaded.",
                "type": "server_error",
                "param": None,
                "code": None,
            }
        },
    ),
}


# --- the gateway, offline -------------------------------------------------------------------

JSON_TYPE = "application/json"
SSE_TYPE = "text/event-stream"
UPSTREAM_MODEL = "upstream-model"


@dataclass
class Gateway:
    """What the ext_proc wiring will do with a translator, as an SDK's HTTP transport.

    The client's request is translated (and kept in ``upstream_requests``); the canned
    upstream reply is translated back: an error status through ``error``, a streamed reply
    fed ``chunk_size`` bytes at a time, a whole one through ``response_bytes``.
    """

    translator: Translator
    status: int
    body: bytes
    chunk_size: int = 7
    upstream_requests: list[dict[str, Any]] = field(default_factory=list)

    def handle(self, request: Any) -> Any:
        client_body = json.loads(request.content)
        try:
            self.upstream_requests.append(self.translator.request(client_body, UPSTREAM_MODEL))
        except TranslationError as exc:
            status, body = self.translator.refusal(exc)
            return http.Response(status, content=body, headers={"content-type": JSON_TYPE})
        if self.status != 200:
            status, body = self.translator.error(self.status, self.body)
        elif wants_stream(client_body):
            stream = self.translator.stream(client_body)
            pieces = [
                self.body[i : i + self.chunk_size]
                for i in range(0, len(self.body), self.chunk_size)
            ]
            out = b"".join(stream.feed(piece) for piece in pieces) + stream.finish()
            return http.Response(200, content=out, headers={"content-type": SSE_TYPE})
        else:
            status, body = self.translator.response_bytes(self.status, self.body)
        return http.Response(status, content=body, headers={"content-type": JSON_TYPE})

    def openai(self) -> openai.OpenAI:
        client = http.Client(transport=http.MockTransport(self.handle))
        return openai.OpenAI(api_key="x", base_url="http://t/v1", max_retries=0, http_client=client)

    def anthropic(self) -> anthropic.Anthropic:
        client = http.Client(transport=http.MockTransport(self.handle))
        return anthropic.Anthropic(
            api_key="x", base_url="http://t", max_retries=0, http_client=client
        )


def as_json(value: Any) -> bytes:
    return json.dumps(value).encode()
