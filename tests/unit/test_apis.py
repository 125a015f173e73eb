"""The client APIs (apis/): each one's error shape, the token estimate count_tokens answers
with, and which API a stream's gRPC metadata names."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plano_extproc.apis import (
    ANTHROPIC_MESSAGES,
    API_METADATA,
    CLIENT_APIS,
    COUNT_TOKENS,
    OPENAI_CHAT,
    ClientApi,
    client_api,
)
from plano_extproc.apis.anthropic_messages import (
    CHARS_PER_TOKEN,
    IMAGE_TOKENS,
    MESSAGE_OVERHEAD_TOKENS,
    estimate_input_tokens,
)
from plano_extproc.errors import ErrorReply, too_large

pytestmark = pytest.mark.unit

ANTHROPIC_APIS = [ANTHROPIC_MESSAGES, COUNT_TOKENS]


# --- error bodies -------------------------------------------------------------------------


def parsed(raw: bytes) -> Any:
    return json.loads(raw.decode("utf-8"))  # strict: valid UTF-8, or this raises


@pytest.mark.parametrize(
    "error",
    [
        ErrorReply(400, "bad", param="model", code="model_not_found"),
        ErrorReply(500, "no key", type="server_error", code="missing_api_key"),
        too_large(1024),
    ],
    ids=lambda e: str(e.status),
)
def test_openai_chat_errors_are_openais_shape(error: ErrorReply) -> None:
    assert parsed(OPENAI_CHAT.error_body(error)) == {
        "error": {
            "message": error.message,
            "type": error.type,
            "param": error.param,
            "code": error.code,
        }
    }
    # OpenAI's shape is the default of every ErrorReply.
    assert OPENAI_CHAT.error_body(error) == error.body()


@pytest.mark.parametrize("api", ANTHROPIC_APIS, ids=lambda a: a.metadata)
@pytest.mark.parametrize(
    ("status", "anthropic_type"),
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (402, "billing_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (405, "invalid_request_error"),
        (413, "request_too_large"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (502, "api_error"),
        (503, "overloaded_error"),
        (504, "timeout_error"),
        (529, "overloaded_error"),
    ],
)
def test_anthropic_errors_name_the_category_of_the_status(
    api: ClientApi, status: int, anthropic_type: str
) -> None:
    # OpenAI's type, param and code have no place in Anthropic's shape: the status says it.
    error = ErrorReply(status, "What went wrong.", "server_error", "model", "some_code")
    assert parsed(api.error_body(error)) == {
        "type": "error",
        "error": {"type": anthropic_type, "message": "What went wrong."},
    }


def test_each_api_renders_the_gateways_413_its_way() -> None:
    error = too_large(2 * 1024 * 1024)
    assert parsed(OPENAI_CHAT.error_body(error))["error"]["code"] == "request_too_large"
    for api in ANTHROPIC_APIS:
        assert parsed(api.error_body(error))["error"] == {
            "type": "request_too_large",
            "message": error.message,
        }


SURROGATES = st.integers(0xD800, 0xDFFF).map(chr)  # lone, as a client's "\udc80" escape
TEXT = st.text(st.one_of(st.characters(), SURROGATES), max_size=60)


@settings(max_examples=300, derandomize=True, deadline=None)
@given(
    api=st.sampled_from(CLIENT_APIS),
    status=st.integers(400, 599),
    message=TEXT,
    param=st.one_of(st.none(), TEXT),
    code=st.one_of(st.none(), TEXT),
)
def test_any_error_body_is_valid_utf8_json_whatever_it_quotes(
    api: ClientApi, status: int, message: str, param: str | None, code: str | None
) -> None:
    raw = api.error_body(ErrorReply(status, message, "invalid_request_error", param, code))
    body = parsed(raw)
    # Each character stays, but a lone surrogate (no UTF-8 spelling) becomes U+FFFD.
    if api is OPENAI_CHAT:
        quoted = body["error"]["message"]
        assert set(body["error"]) == {"message", "type", "param", "code"}
    else:
        quoted = body["error"]["message"]
        assert body["type"] == "error" and set(body["error"]) == {"type", "message"}
    assert len(quoted) == len(message)
    for got, sent in zip(quoted, message, strict=True):
        assert got == ("\ufffd" if 0xD800 <= ord(sent) <= 0xDFFF else sent)


def test_non_ascii_is_written_as_itself() -> None:
    error = ErrorReply(404, "Le modèle « 日本 » 🙂 n'existe pas.")
    for api in CLIENT_APIS:
        raw = api.error_body(error)
        assert "Le modèle « 日本 » 🙂".encode() in raw  # not \\u escapes
        assert b"\\u" not in raw


@pytest.mark.parametrize("api", CLIENT_APIS, ids=lambda a: a.metadata)
def test_a_lone_surrogate_becomes_the_replacement_character(api: ClientApi) -> None:
    raw = api.error_body(ErrorReply(400, "The model 'x\udc80y\ud83d' is not served."))
    assert "The model 'x\ufffdy\ufffd' is not served.".encode() in raw
    parsed(raw)


# --- estimate_input_tokens ----------------------------------------------------------------


def request(text: str = "", **fields: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": text}], **fields}


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"messages": []},
        {"messages": "nope"},
        {"messages": [None, 3, "x"]},
        request(""),
        {"system": None, "tools": None, "messages": [{"role": "user"}]},
    ],
    ids=str,
)
def test_the_estimate_is_never_zero(body: dict[str, Any]) -> None:
    assert estimate_input_tokens(body) >= 1


def test_the_estimate_is_characters_over_the_ratio_plus_overheads() -> None:
    text = "x" * 35
    assert estimate_input_tokens(request(text)) == MESSAGE_OVERHEAD_TOKENS + math.ceil(
        35 / CHARS_PER_TOKEN
    )
    two = {"messages": [{"role": "user", "content": text}, {"role": "assistant", "content": text}]}
    assert estimate_input_tokens(two) == 2 * MESSAGE_OVERHEAD_TOKENS + math.ceil(
        70 / CHARS_PER_TOKEN
    )


@settings(max_examples=200, derandomize=True, deadline=None)
@given(
    base=st.text(max_size=300),
    more=st.text(min_size=1, max_size=300),
    where=st.sampled_from(["string", "block", "system", "system_blocks", "tool_result"]),
)
def test_the_estimate_grows_with_the_text(base: str, more: str, where: str) -> None:
    def body(text: str) -> dict[str, Any]:
        if where == "string":
            return request(text)
        if where == "block":
            return request(messages=[{"role": "user", "content": [
                {"type": "text", "text": text}]}])  # fmt: skip
        if where == "system":
            return request("hi", system=text)
        if where == "system_blocks":
            return request("hi", system=[{"type": "text", "text": text}])
        return request(messages=[{"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "t", "content": text}]}])  # fmt: skip

    smaller, larger = estimate_input_tokens(body(base)), estimate_input_tokens(body(base + more))
    assert 1 <= smaller <= larger
    # Every CHARS_PER_TOKEN characters more is a token more.
    extra = len(more)
    assert larger - smaller >= int(extra // CHARS_PER_TOKEN) - 1


KILO = "word " * 700  # 3,500 characters: 1,000 tokens


@pytest.mark.parametrize(
    "field",
    [
        {"system": KILO},
        {"system": [{"type": "text", "text": KILO, "cache_control": {"type": "ephemeral"}}]},
        {"tools": [{"name": "read", "description": KILO, "input_schema": {"type": "object"}}]},
    ],
    ids=["system", "system_blocks", "tools"],
)
def test_system_and_tools_are_counted(field: dict[str, Any]) -> None:
    without = estimate_input_tokens(request("hi"))
    assert estimate_input_tokens(request("hi", **field)) - without >= 1000


def test_tool_results_and_tool_uses_are_counted() -> None:
    turns = [
        {"role": "user", "content": "Read the file."},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "t1", "name": "read", "input": {"p": KILO}}],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "t1", "content": KILO},
                {
                    "type": "tool_result",
                    "tool_use_id": "t2",
                    "content": [{"type": "text", "text": KILO}],
                },
            ],
        },
    ]
    base = estimate_input_tokens({"messages": turns[:1]})
    assert estimate_input_tokens({"messages": turns}) - base >= 3000


IMAGE = {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                    "data": "iVBORw0KGgo" * 10_000}}  # fmt: skip
DOCUMENT = {"type": "document", "source": {"type": "base64", "media_type": "application/pdf",
                                           "data": "JVBERi0" * 10_000}}  # fmt: skip


@pytest.mark.parametrize("media", [IMAGE, DOCUMENT], ids=["image", "document"])
def test_an_image_or_document_costs_a_fixed_amount(media: dict[str, Any]) -> None:
    text = {"type": "text", "text": "What is this?"}
    without = estimate_input_tokens({"messages": [{"role": "user", "content": [text]}]})
    once = estimate_input_tokens({"messages": [{"role": "user", "content": [media, text]}]})
    twice = estimate_input_tokens({"messages": [{"role": "user", "content": [media, media, text]}]})
    # Its base64 data is not read as text: the cost is the same whatever its size.
    assert once - without == IMAGE_TOKENS
    assert twice - without == 2 * IMAGE_TOKENS
    # Inside a tool result too (a screenshot a tool returned).
    result = {"type": "tool_result", "tool_use_id": "t", "content": [media, text]}
    in_result = estimate_input_tokens({"messages": [{"role": "user", "content": [result]}]})
    assert in_result - without == IMAGE_TOKENS


# --- client_api ---------------------------------------------------------------------------


def test_client_api_reads_each_apis_metadata() -> None:
    assert API_METADATA == "x-plano-api"
    assert client_api("openai") is OPENAI_CHAT
    assert client_api("anthropic") is ANTHROPIC_MESSAGES
    assert client_api("anthropic-count-tokens") is COUNT_TOKENS
    for api in CLIENT_APIS:
        assert client_api(api.metadata) is api
    assert len({api.metadata for api in CLIENT_APIS}) == len(CLIENT_APIS)


def test_client_api_without_metadata_is_openais_chat() -> None:
    # An Envoy config of the user's own that says nothing: the API the gateway began with.
    assert client_api(None) is OPENAI_CHAT


@pytest.mark.parametrize("value", ["", "OpenAI", "anthropic ", "gemini", "x" * 1000])
def test_client_api_of_an_unknown_value_is_none(value: str) -> None:
    assert client_api(value) is None


def test_each_api_is_served_where_its_clients_call_it() -> None:
    assert [(api.path, api.route_prefix) for api in CLIENT_APIS] == [
        ("/v1/chat/completions", "chat"),
        ("/v1/messages", "messages"),
        ("/v1/messages/count_tokens", "messages_count_tokens"),
    ]
    assert [api.generates for api in CLIENT_APIS] == [True, True, False]
    assert OPENAI_CHAT.upstream_paths == {
        "openai": "/chat/completions",
        "anthropic": "/messages",
    }
    assert ANTHROPIC_MESSAGES.upstream_paths == {
        "anthropic": "/messages",
        "openai": "/chat/completions",
    }
    # Only Anthropic's native API counts tokens: the server estimates for the rest.
    assert COUNT_TOKENS.upstream_paths == {"anthropic": "/messages/count_tokens"}
