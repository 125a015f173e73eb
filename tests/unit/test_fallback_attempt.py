"""One fallback attempt: the messages of a fail-over chain's upstream ext_proc filter, as
Envoy sends them for a member other than the primary, and what ``FallbackAttempt`` answers.

The request it gets is the one the primary's route left (its path, its key, its
content-length, its API's headers) with the body the decision wrote for the primary; what
comes out must be a request for the member alone, and the member's response in the primary's
API."""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plano_extproc._proto import ext_proc_pb2 as pb
from plano_extproc.config import Chain, Config, Target, parse_config
from plano_extproc.extproc.fallback import FallbackAttempt
from plano_extproc.extproc.h2grpc import FinalAnswer
from plano_extproc.extproc.processor import Processor
from plano_extproc.extproc.response_translation import TranslatedResponse
from plano_extproc.extproc.server import ExtProcService
from plano_extproc.translate import OpenAIToAnthropic
from plano_extproc.wire import (
    FALLBACK_METADATA,
    HOST_TARGET_HEADER,
    INCLUDE_USAGE_KEY,
    RESPONSE_NAMESPACE,
    SERVER_REPLY_DETAILS,
)
from tests.api_vocabulary import ANTHROPIC_ERROR_TYPES, json_values, sse_events
from tests.fake_providers import FakeAnthropic, _validate_chat
from tests.translate_fixtures import (
    ANTHROPIC_ERROR_BODIES,
    ANTHROPIC_MESSAGE,
    ANTHROPIC_STREAM,
    OPENAI_COMPLETION,
    OPENAI_ERROR_BODIES,
    OPENAI_STREAM,
    as_json,
)

pytestmark = pytest.mark.unit

CONFIG = """
llm_providers:
  - model: openai/gpt-5.2
    access_key: $OPENAI_API_KEY
    default: true
  - model: openai/gpt-5-mini
    access_key: $OPENAI_MINI_KEY
  - model: anthropic/claude-sonnet-4-5
    access_key: $ANTHROPIC_API_KEY
  - model: azure_openai/gpt-4o
    base_url: https://res.openai.azure.com/base
    access_key: $AZURE_KEY
  - model: groq/llama-3.3-70b
    access_key: $GROQ_KEY
  - model: litellm/m
    base_url: http://127.0.0.1:4000/v1
    passthrough_auth: true
  - model: claude-proxy/m
    base_url: http://127.0.0.1:4001/v1
    provider_interface: anthropic
    passthrough_auth: true
  - model: corp/m
    base_url: https://llm.corp.example/v1
    access_key: sk-corp
    headers:
      X-Org: corp
"""
# GROQ_KEY is left unset: groq's member has a missing key.
ENV = {
    "OPENAI_API_KEY": "sk-o",
    "OPENAI_MINI_KEY": "sk-m",
    "ANTHROPIC_API_KEY": "sk-a",
    "AZURE_KEY": "az-key",
}
BASE = parse_config(CONFIG, "t.yaml", ENV)
GPT, MINI, CLAUDE = "openai/gpt-5.2", "openai/gpt-5-mini", "anthropic/claude-sonnet-4-5"
AZURE, GROQ, LITELLM, CLAUDE_PROXY, CORP = (
    "azure_openai/gpt-4o",
    "groq/llama-3.3-70b",
    "litellm/m",
    "claude-proxy/m",
    "corp/m",
)
# The credential each keyed member is sent, as its header carries it.
KEYS = {
    GPT: ("authorization", "Bearer sk-o"),
    MINI: ("authorization", "Bearer sk-m"),
    CLAUDE: ("x-api-key", "sk-a"),
    AZURE: ("api-key", "az-key"),
    CORP: ("authorization", "Bearer sk-corp"),
}
CREDENTIAL_HEADERS = ("authorization", "x-api-key", "api-key")


def chained(*names: str, chain_id: str = "chain_1") -> tuple[Config, Chain]:
    """The test config with one chain of ``names`` (the first its primary). Made here: the
    config parser names chains from ``fallbacks``, which these tests need not depend on."""
    members = tuple(Target(BASE.by_name[n], BASE.by_name[n].model_id) for n in names)
    chain = Chain(chain_id, members)
    return dataclasses.replace(BASE, chains={chain.id: chain}), chain


def attempt(*names: str) -> FallbackAttempt:
    return FallbackAttempt(*chained(*names))


# --- the messages Envoy sends ---------------------------------------------------------------


def request_headers(
    target: str | None, extra: Sequence[tuple[str, str]] = (), end: bool = False
) -> pb.ProcessingRequest:
    """The request headers as the primary's route left them (an OpenAI primary's unless
    ``extra`` says otherwise), with the member's name set by the filter before."""
    headers = [
        (":method", "POST"),
        (":path", "/v1/chat/completions"),
        (":authority", "api.openai.com"),
        ("content-type", "application/json"),
        ("content-length", "999"),
        ("x-envoy-attempt-count", "2"),
        *extra,
    ]
    if target is not None:
        headers.append((HOST_TARGET_HEADER, target))
    values = [pb.HeaderValue(key=k, raw_value=v.encode()) for k, v in headers]
    return pb.ProcessingRequest(
        request_headers=pb.HttpHeaders(headers=pb.HeaderMap(headers=values), end_of_stream=end)
    )


OPENAI_PRIMARY_HEADERS = (("authorization", "Bearer sk-o"),)
ANTHROPIC_PRIMARY_HEADERS = (
    (":path", "/v1/messages?beta=true"),
    ("x-api-key", "sk-a"),
    ("anthropic-version", "2023-06-01"),
    ("anthropic-beta", "interleaved-thinking-2025-05-14"),
)


def request_body(body: object) -> pb.ProcessingRequest:
    raw = body if isinstance(body, bytes) else json.dumps(body, ensure_ascii=False).encode()
    return pb.ProcessingRequest(request_body=pb.HttpBody(body=raw, end_of_stream=True))


def response_headers(status: int, content_type: str) -> pb.ProcessingRequest:
    headers = [
        pb.HeaderValue(key=":status", raw_value=str(status).encode()),
        pb.HeaderValue(key="content-type", raw_value=content_type.encode()),
        pb.HeaderValue(key="content-length", raw_value=b"1234"),
    ]
    return pb.ProcessingRequest(
        response_headers=pb.HttpHeaders(headers=pb.HeaderMap(headers=headers))
    )


def response_body(data: bytes, end: bool) -> pb.ProcessingRequest:
    return pb.ProcessingRequest(response_body=pb.HttpBody(body=data, end_of_stream=end))


# --- reading the answers ----------------------------------------------------------------------


Sets = dict[str, tuple[str, int]]


def header_answer(answer: pb.ProcessingResponse) -> tuple[Sets, set[str]]:
    """A request headers answer's mutation: the headers set (value, append action), and
    those removed; never one header both ways."""
    assert answer.WhichOneof("response") == "request_headers", answer
    mutation = answer.request_headers.response.header_mutation
    sets: Sets = {}
    for option in mutation.set_headers:
        assert option.header.key not in sets
        assert not option.header.value  # raw_value: Envoy 1.40 applies a value as empty
        sets[option.header.key] = (option.header.raw_value.decode(), option.append_action)
    removed = set(mutation.remove_headers)
    assert not removed & sets.keys()
    return sets, removed


OVERWRITE = pb.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD


def body_answer(answer: pb.ProcessingResponse, raw: bytes) -> bytes:
    """The body a request body answer sends on (``raw`` when it leaves it), checked against
    the content-length the same answer sets."""
    assert answer.WhichOneof("response") == "request_body", answer
    common = answer.request_body.response
    new = common.body_mutation.body if common.body_mutation.HasField("body") else raw
    (length,) = common.header_mutation.set_headers
    assert (length.header.key, length.append_action) == ("content-length", OVERWRITE)
    assert length.header.raw_value == str(len(new)).encode()
    return new


def immediate(answer: pb.ProcessingResponse) -> tuple[int, Any]:
    assert answer.WhichOneof("response") == "immediate_response", answer
    reply = answer.immediate_response
    assert reply.details == SERVER_REPLY_DETAILS  # Envoy's local-reply mappers leave it
    content_type = {h.header.key: h.header.raw_value for h in reply.headers.set_headers}
    assert content_type == {"content-type": b"application/json"}
    return reply.status.code, json.loads(reply.body)


def response_chunk(answer: pb.ProcessingResponse) -> bytes:
    assert answer.WhichOneof("response") == "response_body", answer
    mutation = answer.response_body.response.body_mutation
    return b"" if mutation.WhichOneof("mutation") == "clear_body" else mutation.body


def through(
    handler: FallbackAttempt, status: int, content_type: str, pieces: Sequence[bytes]
) -> tuple[int, str, bytes]:
    """A member's response through the attempt, once its request was readied: the status
    and content type it is answered with, and the body the primary's side gets."""
    answer, last = handler.handle(response_headers(status, content_type))
    assert not last
    assert answer.WhichOneof("response") == "response_headers"
    mutation = answer.response_headers.response.header_mutation
    assert "content-length" in mutation.remove_headers  # a translated body has its own
    sets = {h.header.key: h.header.raw_value.decode() for h in mutation.set_headers}
    out = b""
    for i, piece in enumerate(pieces):
        end = i == len(pieces) - 1
        answer, last = handler.handle(response_body(piece, end))
        assert last is end  # the last answer ends the stream, no other
        out += response_chunk(answer)
    return int(sets.get(":status", status)), sets.get("content-type", content_type), out


def ready(
    handler: FallbackAttempt, target: str, extra: Sequence[tuple[str, str]], body: object
) -> tuple[pb.ProcessingResponse, bytes, bool]:
    """Both request messages of an attempt: the headers answer, and the body sent on."""
    headers_answer, last = handler.handle(request_headers(target, extra))
    assert not last
    message = request_body(body)
    answer, last = handler.handle(message)
    return headers_answer, body_answer(answer, message.request_body.body), last


QUESTION = [{"role": "user", "content": "Weather in Paris? Grüße 日本"}]
OPENAI_BODY = {"model": "gpt-5.2", "messages": QUESTION, "max_completion_tokens": 300}
ANTHROPIC_BODY = {"model": "claude-sonnet-4-5", "max_tokens": 300, "messages": QUESTION}


def anthropic_refuses(body: dict[str, Any]) -> str | None:
    try:
        FakeAnthropic("judge", verify_signatures=False)._validate(body, False, "2023-06-01")
    except Exception as refused:  # its _ApiError
        return str(refused)
    return None


def openai_refuses(body: dict[str, Any]) -> str | None:
    try:
        _validate_chat(body)
    except Exception as refused:  # its _ApiError
        return str(refused)
    return None


# --- OpenAI primary, OpenAI member: the model, the path, the key; no translation -------------


def test_an_openai_member_of_an_openai_primary_gets_its_model_path_and_key() -> None:
    handler = attempt(GPT, MINI)
    raw = (
        b'{"model": "gpt-5.2", "messages": [{"role": "user", "content": "h\\u00e9llo"}],'
        b' "temperature": 0.20, "n": 1E0, "stream": true}'
    )
    answer, last = handler.handle(request_headers(MINI, OPENAI_PRIMARY_HEADERS))
    assert not last
    sets, removed = header_answer(answer)
    assert sets == {
        ":path": ("/v1/chat/completions", OVERWRITE),
        "authorization": ("Bearer sk-m", OVERWRITE),  # the member's key, over the primary's
    }
    assert {"x-api-key", "api-key", "content-length"} <= removed
    # No translation: the response goes to the client as the member sends it, unseen.
    mode = answer.mode_override
    assert (mode.request_header_mode, mode.request_body_mode) == (
        pb.ProcessingMode.SEND,
        pb.ProcessingMode.BUFFERED,  # restated: left at NONE it hangs the request
    )
    assert (mode.response_header_mode, mode.response_body_mode) == (
        pb.ProcessingMode.SKIP,
        pb.ProcessingMode.NONE,
    )
    answer, last = handler.handle(request_body(raw))
    assert last  # nothing more comes: the call ends with this answer
    new = body_answer(answer, raw)
    # Only the model changes; the primary's text (numbers, escapes) is kept as it is.
    assert new == raw.replace(b'"gpt-5.2"', b'"gpt-5-mini"')


def test_the_primary_on_a_later_attempt_gets_its_own_path_and_key_back() -> None:
    # An attempt starts from the one before: a primary tried after a member gets that
    # member's key, path and content-length, which must all be its own again.
    handler = attempt(GPT, CLAUDE)
    left_by_claude = (
        (":path", "/v1/messages"),
        ("x-api-key", "sk-a"),
        ("anthropic-version", "2023-06-01"),
    )
    raw = json.dumps(OPENAI_BODY).encode()
    headers_answer, body, last = ready(handler, GPT, left_by_claude, raw)
    sets, removed = header_answer(headers_answer)
    assert sets == {
        ":path": ("/v1/chat/completions", OVERWRITE),
        "authorization": ("Bearer sk-o", OVERWRITE),
    }
    assert {"x-api-key", "api-key", "anthropic-version", "content-length"} <= removed
    assert body == raw and last  # the body is the primary's already: only its length set


def test_a_member_of_a_primary_with_no_model_in_its_body_gets_one() -> None:
    handler = attempt(GPT, MINI)
    _, body, _ = ready(handler, MINI, OPENAI_PRIMARY_HEADERS, b'{"messages": []}')
    assert json.loads(body) == {"model": "gpt-5-mini", "messages": []}


# --- OpenAI primary, Anthropic member: translated both ways ---------------------------------


def test_an_anthropic_member_of_an_openai_primary_gets_a_messages_request() -> None:
    handler = attempt(GPT, CLAUDE)
    body = {
        **OPENAI_BODY,
        "stream": True,
        "stream_options": {"include_usage": True},
        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}],
    }
    headers_answer, new, last = ready(handler, CLAUDE, OPENAI_PRIMARY_HEADERS, body)
    sets, removed = header_answer(headers_answer)
    assert sets == {
        ":path": ("/v1/messages", OVERWRITE),
        "x-api-key": ("sk-a", OVERWRITE),
        "anthropic-version": ("2023-06-01", OVERWRITE),  # written for our translation
    }
    assert {"authorization", "api-key", "content-length"} <= removed  # the primary's key
    mode = headers_answer.mode_override
    assert (mode.request_header_mode, mode.request_body_mode) == (
        pb.ProcessingMode.SEND,
        pb.ProcessingMode.BUFFERED,
    )
    assert (mode.response_header_mode, mode.response_body_mode) == (
        pb.ProcessingMode.SEND,
        pb.ProcessingMode.STREAMED,
    )
    assert not last  # the response comes through this stream too
    forwarded = json.loads(new)
    assert forwarded["model"] == "claude-sonnet-4-5" and forwarded["stream"] is True
    assert anthropic_refuses(forwarded) is None, anthropic_refuses(forwarded)


def _without_created(raw: bytes) -> list[Any]:
    return [
        data if data == "[DONE]" else {**json.loads(data), "created": 0}
        for _, data in sse_events(raw)
    ]


@pytest.mark.parametrize("include_usage", [True, False])
def test_an_anthropic_stream_reaches_an_openai_primary_as_chunks(include_usage: bool) -> None:
    handler = attempt(GPT, CLAUDE)
    body = {**OPENAI_BODY, "stream": True, "stream_options": {"include_usage": include_usage}}
    ready(handler, CLAUDE, OPENAI_PRIMARY_HEADERS, body)
    pieces = [ANTHROPIC_STREAM[i : i + 37] for i in range(0, len(ANTHROPIC_STREAM), 37)]
    status, content_type, out = through(handler, 200, "text/event-stream", pieces)
    assert (status, content_type) == (200, "text/event-stream")
    # Exactly what a translated provider route makes of it, include_usage from the body.
    expected = OpenAIToAnthropic().stream({"stream_options": {"include_usage": include_usage}})
    direct = expected.feed(ANTHROPIC_STREAM) + expected.finish()
    assert _without_created(out) == _without_created(direct)
    chunks = _without_created(out)
    assert chunks[-1] == "[DONE]"
    usage = [c for c in chunks[:-1] if c.get("usage")]
    assert len(usage) == (1 if include_usage else 0)
    text = "".join(
        c["choices"][0]["delta"].get("content") or "" for c in chunks[:-1] if c["choices"]
    )
    assert text == "Okay, let's check the weather in Paris 日本."


def test_a_whole_anthropic_message_reaches_an_openai_primary_as_a_completion() -> None:
    handler = attempt(GPT, CLAUDE)
    ready(handler, CLAUDE, OPENAI_PRIMARY_HEADERS, OPENAI_BODY)
    raw = as_json(ANTHROPIC_MESSAGE)
    status, content_type, out = through(handler, 200, "application/json", [raw[:50], raw[50:]])
    assert (status, content_type) == (200, "application/json")
    completion = json.loads(out)
    assert completion["object"] == "chat.completion"
    message = completion["choices"][0]["message"]
    assert message["content"] == "Let me check the weather in Paris."
    (call,) = message["tool_calls"]
    assert json.loads(call["function"]["arguments"]) == {"location": "Paris", "unit": "celsius"}
    assert completion["choices"][0]["finish_reason"] == "tool_calls"


def test_an_anthropic_529_reaches_an_openai_primary_as_a_503() -> None:
    # Still a 5xx: the route retries it on the next member, as it would the primary's 503.
    handler = attempt(GPT, CLAUDE, MINI)
    ready(handler, CLAUDE, OPENAI_PRIMARY_HEADERS, OPENAI_BODY)
    status, raw = ANTHROPIC_ERROR_BODIES["overloaded"]
    got, content_type, out = through(handler, status, "application/json", [as_json(raw)])
    assert (got, content_type) == (503, "application/json")
    error = json.loads(out)["error"]
    assert error["message"] == "Overloaded"
    assert set(error) == {"message", "type", "param", "code"}


# --- Anthropic primary, OpenAI member -------------------------------------------------------


def test_an_openai_member_of_an_anthropic_primary_loses_the_anthropic_headers() -> None:
    handler = attempt(CLAUDE, GPT)
    body = {**ANTHROPIC_BODY, "stream": True, "system": "Be brief."}
    headers_answer, new, last = ready(handler, GPT, ANTHROPIC_PRIMARY_HEADERS, body)
    sets, removed = header_answer(headers_answer)
    # The query (Claude Code's ?beta=true) is the primary's: not kept.
    assert sets == {
        ":path": ("/v1/chat/completions", OVERWRITE),
        "authorization": ("Bearer sk-o", OVERWRITE),
    }
    assert {
        "x-api-key",
        "api-key",
        "anthropic-version",
        "anthropic-beta",
        "anthropic-dangerous-direct-browser-access",
        "content-length",
    } <= removed
    assert not last
    forwarded = json.loads(new)
    assert forwarded["model"] == "gpt-5.2"
    assert forwarded["messages"][0] == {"role": "system", "content": "Be brief."}
    assert openai_refuses(forwarded) is None, openai_refuses(forwarded)


def test_an_openai_stream_reaches_an_anthropic_primary_as_messages_events() -> None:
    handler = attempt(CLAUDE, GPT)
    ready(handler, GPT, ANTHROPIC_PRIMARY_HEADERS, {**ANTHROPIC_BODY, "stream": True})
    pieces = [OPENAI_STREAM[i : i + 5] for i in range(0, len(OPENAI_STREAM), 5)]
    status, _, out = through(handler, 200, "text/event-stream", pieces)
    assert status == 200
    names = [name for name, _ in sse_events(out)]
    assert names[0] == "message_start" and names[-1] == "message_stop"


def test_a_whole_openai_completion_and_error_reach_an_anthropic_primary_in_its_shape() -> None:
    handler = attempt(CLAUDE, GPT)
    ready(handler, GPT, ANTHROPIC_PRIMARY_HEADERS, ANTHROPIC_BODY)
    _, _, out = through(handler, 200, "application/json", [as_json(OPENAI_COMPLETION)])
    assert json.loads(out)["type"] == "message"
    handler = attempt(CLAUDE, GPT)
    ready(handler, GPT, ANTHROPIC_PRIMARY_HEADERS, ANTHROPIC_BODY)
    status, raw = OPENAI_ERROR_BODIES["overloaded"]
    got, _, out = through(handler, status, "application/json", [as_json(raw)])
    error = json.loads(out)
    assert got == 529 and error["type"] == "error"
    assert error["error"]["type"] == "overloaded_error"


def test_an_anthropic_member_of_an_anthropic_primary_keeps_the_clients_headers() -> None:
    handler = attempt(CLAUDE, CLAUDE_PROXY)
    # A passthrough member behind a keyed primary: the primary's route removed the client's
    # credential, and the gateway's own key must not go to it either.
    headers_answer, body, last = ready(
        handler, CLAUDE_PROXY, ANTHROPIC_PRIMARY_HEADERS, ANTHROPIC_BODY
    )
    sets, removed = header_answer(headers_answer)
    # The client's anthropic-version and anthropic-beta stand, for the same API.
    assert sets == {":path": ("/v1/messages", OVERWRITE)}
    assert "x-api-key" in removed  # the primary's key
    assert not {"anthropic-version", "anthropic-beta"} & removed
    assert json.loads(body)["model"] == "m" and last


def test_an_anthropic_version_an_earlier_attempt_removed_is_set_again() -> None:
    # An attempt at an OpenAI member removed the anthropic-* headers; the next Anthropic
    # member needs a version. (The client's anthropic-beta is lost: nothing can restore it.)
    handler = attempt(CLAUDE, GPT, CLAUDE_PROXY)
    left_by_gpt = ((":path", "/v1/chat/completions"), ("authorization", "Bearer sk-o"))
    sets, removed = header_answer(handler.handle(request_headers(CLAUDE_PROXY, left_by_gpt))[0])
    assert sets["anthropic-version"] == ("2023-06-01", OVERWRITE)
    assert "authorization" in removed


# --- Azure OpenAI: the deployment path and api-version --------------------------------------


def test_an_azure_member_gets_the_deployment_path_and_api_version() -> None:
    handler = attempt(GPT, AZURE)
    extra = (*OPENAI_PRIMARY_HEADERS, (":path", "/v1/chat/completions?foo=bar"))
    headers_answer, body, _ = ready(handler, AZURE, extra, OPENAI_BODY)
    sets, removed = header_answer(headers_answer)
    assert sets == {
        ":path": (
            "/base/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21",
            OVERWRITE,
        ),
        "api-key": ("az-key", OVERWRITE),
    }
    assert {"authorization", "x-api-key", "content-length"} <= removed
    assert json.loads(body)["model"] == "gpt-4o"


def test_an_azure_primarys_api_version_does_not_reach_another_member() -> None:
    handler = attempt(AZURE, GPT)
    left = (
        (":path", "/base/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"),
        ("api-key", "az-key"),
    )
    sets, removed = header_answer(handler.handle(request_headers(GPT, left))[0])
    assert sets[":path"] == ("/v1/chat/completions", OVERWRITE)
    assert "api-key" in removed


# --- refusals: in the primary's shape, the last message of the stream ------------------------


@pytest.mark.parametrize(
    "headers",
    [
        request_headers(None, OPENAI_PRIMARY_HEADERS),
        request_headers("openai/not-in-the-chain", OPENAI_PRIMARY_HEADERS),
        request_headers(CORP, OPENAI_PRIMARY_HEADERS),  # configured, but not this chain's
        request_headers(MINI, ((HOST_TARGET_HEADER, MINI),)),  # named twice
    ],
    ids=["absent", "unknown", "another-chains", "twice"],
)
def test_an_unknown_member_is_a_502_in_an_openai_primarys_shape(
    headers: pb.ProcessingRequest,
) -> None:
    answer, last = attempt(GPT, MINI).handle(headers)
    assert last
    status, body = immediate(answer)
    assert status == 502
    assert body["error"]["code"] == "fallback_target_unknown"
    assert body["error"]["type"] == "server_error"


def test_an_unknown_member_is_a_502_in_an_anthropic_primarys_shape() -> None:
    answer, last = attempt(CLAUDE, GPT).handle(request_headers("x/y", ANTHROPIC_PRIMARY_HEADERS))
    status, body = immediate(answer)
    assert (status, last) == (502, True)
    assert body["type"] == "error" and body["error"]["type"] == "api_error"
    assert body["error"]["type"] in ANTHROPIC_ERROR_TYPES


def test_a_body_with_no_headers_phase_before_it_is_a_502() -> None:
    answer, last = attempt(GPT, MINI).handle(request_body(OPENAI_BODY))
    assert last and immediate(answer)[0] == 502


@pytest.mark.parametrize(
    ("names", "shape"), [((GPT, GROQ), "openai"), ((CLAUDE, GROQ), "anthropic")]
)
def test_a_member_without_its_key_is_a_500_missing_api_key(
    names: tuple[str, str], shape: str
) -> None:
    # Decided: an immediate 500 that names the unset variable, like the decision's own for
    # a model it chose, rather than a request without a key (the provider's 401, no clue
    # why). Neither is retried, so the chain ends at this member either way.
    extra = OPENAI_PRIMARY_HEADERS if shape == "openai" else ANTHROPIC_PRIMARY_HEADERS
    answer, last = attempt(*names).handle(request_headers(GROQ, extra))
    status, body = immediate(answer)
    assert (status, last) == (500, True)
    if shape == "openai":
        assert body["error"]["code"] == "missing_api_key"
        assert "GROQ_KEY" in body["error"]["message"]
    else:
        assert body["type"] == "error" and "GROQ_KEY" in body["error"]["message"]


def test_a_request_the_member_api_cannot_take_is_refused_in_the_primarys_shape() -> None:
    handler = attempt(GPT, CLAUDE)
    handler.handle(request_headers(CLAUDE, OPENAI_PRIMARY_HEADERS))
    answer, last = handler.handle(request_body({**OPENAI_BODY, "n": 2}))
    status, body = immediate(answer)
    assert (status, last) == (400, True)
    assert body["error"]["param"] == "n"


@pytest.mark.parametrize(
    ("raw", "code"),
    [(b"not json", "invalid_json"), (b"[1]", "invalid_body"), (b"[" * 5000, "invalid_json")],
    ids=["garbage", "array", "deep"],
)
def test_a_body_that_is_no_request_is_a_400(raw: bytes, code: str) -> None:
    handler = attempt(GPT, MINI)
    handler.handle(request_headers(MINI, OPENAI_PRIMARY_HEADERS))
    answer, last = handler.handle(request_body(raw))
    status, body = immediate(answer)
    assert (status, last, body["error"]["code"]) == (400, True, code)


def test_a_translated_number_past_a_double_is_refused() -> None:
    handler = attempt(GPT, CLAUDE)
    handler.handle(request_headers(CLAUDE, OPENAI_PRIMARY_HEADERS))
    tool = b'{"type": "function", "function": {"name": "f", "parameters": {"maximum": 1e999}}}'
    raw = json.dumps(OPENAI_BODY).encode()[:-1] + b', "tools": [' + tool + b"]}"
    answer, last = handler.handle(request_body(raw))
    assert last and immediate(answer)[0] == 400


def test_a_translated_body_past_envoys_buffer_is_a_413() -> None:
    config, chain = chained(GPT, CLAUDE)
    small = dataclasses.replace(
        config, listener=dataclasses.replace(config.listener, max_body_bytes=10)
    )
    handler = FallbackAttempt(small, chain)
    handler.handle(request_headers(CLAUDE, OPENAI_PRIMARY_HEADERS))
    big = {**OPENAI_BODY, "messages": [{"role": "user", "content": "x" * 70_000}]}
    answer, last = handler.handle(request_body(big))
    assert last and immediate(answer)[0] == 413


# --- content-length, credentials and configured headers, every pair -------------------------


def test_content_length_counts_bytes_not_characters() -> None:
    for names in ((GPT, MINI), (GPT, CLAUDE), (CLAUDE, GPT)):
        handler = attempt(*names)
        body = OPENAI_BODY if names[0] == GPT else ANTHROPIC_BODY
        _, new, _ = ready(handler, names[1], (), body)  # body_answer checks the length
        assert len(new) > len(new.decode())  # the question's non-ASCII text


KEYED = [GPT, MINI, CLAUDE, AZURE, CORP]
PASSTHROUGH = [LITELLM, CLAUDE_PROXY]


@pytest.mark.parametrize(
    ("primary", "member"),
    [(a, b) for a in KEYED + PASSTHROUGH for b in KEYED + PASSTHROUGH if a != b],
)
def test_no_key_but_the_members_own_reaches_it(primary: str, member: str) -> None:
    handler = attempt(primary, member)
    # Whatever credentials the headers hold: the gateway's keys (an earlier attempt's, the
    # primary's) and a client's own (a passthrough primary passed it).
    left = [(name, value) for name, value in KEYS.values()]
    left += [("authorization", "Bearer client-token"), ("x-api-key", "client-key")]
    answer, _ = handler.handle(request_headers(member, left))
    sets, removed = header_answer(answer)
    provider = BASE.by_name[member]
    for name in CREDENTIAL_HEADERS:
        if name in sets:
            assert (name, sets[name][0]) == KEYS[member]
        elif provider.passthrough_auth:
            # The client's own credential stays; every one of the gateway's keys goes.
            sent = [value for key, value in left if key == name]
            if any((name, value) in KEYS.values() for value in sent):
                assert name in removed
            else:
                assert name not in removed
        else:
            assert name in removed
    if member in KEYS:
        assert KEYS[member][0] in sets


def test_configured_headers_reach_their_member_only() -> None:
    handler = attempt(CORP, GPT)
    answer, _ = handler.handle(request_headers(GPT, (("x-org", "corp"),)))
    _, removed = header_answer(answer)
    assert "x-org" in removed
    handler = attempt(GPT, CORP)
    answer, _ = handler.handle(request_headers(CORP, OPENAI_PRIMARY_HEADERS))
    sets, _ = header_answer(answer)
    assert sets["x-org"] == ("corp", OVERWRITE)
    assert sets["authorization"] == ("Bearer sk-corp", OVERWRITE)


def test_an_anthropic_version_an_earlier_attempt_set_does_not_reach_an_openai_member() -> None:
    handler = attempt(GPT, CLAUDE, MINI)
    left = (("x-api-key", "sk-a"), ("anthropic-version", "2023-06-01"))
    _, removed = header_answer(handler.handle(request_headers(MINI, left))[0])
    assert {"anthropic-version", "x-api-key"} <= removed


# --- the response translator's include_usage, from the handler ------------------------------


def test_an_include_usage_given_wins_over_the_forwarded_metadata() -> None:
    pair = OpenAIToAnthropic()
    message = response_headers(200, "text/event-stream")
    message.metadata_context.filter_metadata[RESPONSE_NAMESPACE].update({INCLUDE_USAGE_KEY: True})

    def usage_chunks(response: TranslatedResponse) -> int:
        response.handle(message)
        out = response_chunk(response.handle(response_body(ANTHROPIC_STREAM, True))[0])
        return sum(1 for data in _without_created(out) if data != "[DONE]" and data.get("usage"))

    assert usage_chunks(TranslatedResponse(pair)) == 1  # from the metadata, as before
    assert usage_chunks(TranslatedResponse(pair, include_usage=False)) == 0


# --- the server: a stream per attempt -------------------------------------------------------


def test_the_server_answers_a_fallback_stream_and_ends_it_with_the_last_answer() -> None:
    config, _ = chained(GPT, CLAUDE, chain_id="chain_7")
    service = ExtProcService(Processor(config), None)
    handle = service.open_stream({FALLBACK_METADATA: "chain_7"})
    first = handle(request_headers(CLAUDE, OPENAI_PRIMARY_HEADERS).SerializeToString())
    assert isinstance(first, bytes) and not isinstance(first, FinalAnswer)
    sets, _ = header_answer(pb.ProcessingResponse.FromString(first))
    assert sets["x-api-key"] == ("sk-a", OVERWRITE)
    second = handle(request_body(OPENAI_BODY).SerializeToString())
    assert not isinstance(second, FinalAnswer)  # the response comes through it too
    handle(response_headers(200, "application/json").SerializeToString())
    last = handle(response_body(as_json(ANTHROPIC_MESSAGE), True).SerializeToString())
    assert isinstance(last, FinalAnswer)
    reply = json.loads(response_chunk(pb.ProcessingResponse.FromString(last)))
    assert reply["object"] == "chat.completion"
    # A member of the primary's API: the body's answer is the last.
    handle = service.open_stream({FALLBACK_METADATA: "chain_7"})
    answer = handle(request_headers(GPT, OPENAI_PRIMARY_HEADERS).SerializeToString())
    assert not isinstance(answer, FinalAnswer)
    assert isinstance(handle(request_body(OPENAI_BODY).SerializeToString()), FinalAnswer)
    # Every attempt is a stream of its own, with state of its own.
    assert service.open_stream({FALLBACK_METADATA: "chain_7"}) is not handle


def test_the_server_refuses_a_stream_for_an_unknown_chain(
    caplog: pytest.LogCaptureFixture,
) -> None:
    config, _ = chained(GPT, CLAUDE)
    service = ExtProcService(Processor(config), None)
    with caplog.at_level(logging.WARNING, "plano_extproc.server"):
        handle = service.open_stream({FALLBACK_METADATA: "chain_99"})
    assert [r.getMessage() for r in caplog.records] == [
        "a fallback stream for an unknown chain 'chain_99'"
    ]
    answer = handle(request_headers(GPT, OPENAI_PRIMARY_HEADERS).SerializeToString())
    assert isinstance(answer, FinalAnswer)
    status, body = immediate(pb.ProcessingResponse.FromString(answer))
    assert status == 500 and body["error"]["code"] == "internal_error"


def test_the_server_answers_a_message_that_is_no_processing_request() -> None:
    config, _ = chained(GPT, CLAUDE)
    handle = ExtProcService(Processor(config), None).open_stream({FALLBACK_METADATA: "chain_1"})
    answer = handle(b"\xff\xff\xff")
    assert isinstance(answer, FinalAnswer)
    assert immediate(pb.ProcessingResponse.FromString(answer))[0] == 500


# --- whatever comes in: only ProcessingResponses ---------------------------------------------

CHAINS = [(GPT, MINI), (GPT, CLAUDE), (CLAUDE, GPT), (CLAUDE, CLAUDE_PROXY), (GPT, AZURE, CLAUDE)]
ANSWER_KIND = {
    kind: kind
    for kind in (
        "request_headers",
        "request_body",
        "response_headers",
        "response_body",
        "request_trailers",
        "response_trailers",
    )
}
OTHER_TARGETS = st.sampled_from([None, "x/y", GROQ, CORP, ""])
STREAMS = {GPT: OPENAI_STREAM, CLAUDE: ANTHROPIC_STREAM}
WHOLE = {GPT: OPENAI_COMPLETION, CLAUDE: ANTHROPIC_MESSAGE}


def _dumped(value: object) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")


@st.composite
def primary_bodies(draw: st.DrawFn, primary: str) -> bytes:
    """A body as the decision wrote it for the primary, a few of its fields replaced by
    anything; now and then anything at all."""
    choice = draw(st.integers(0, 9))
    if choice == 0:
        return draw(st.binary(max_size=40))
    if choice == 1:
        return _dumped(draw(json_values()))
    body: dict[str, Any] = dict(OPENAI_BODY if primary == GPT else ANTHROPIC_BODY)
    if draw(st.booleans()):
        body["stream"] = True
        if primary == GPT:
            body["stream_options"] = {"include_usage": draw(st.booleans())}
    keys = ["model", "messages", "stream", "n", "max_tokens", "tools", "system", "temperature"]
    for key in draw(st.lists(st.sampled_from(keys), max_size=3)):
        body[key] = draw(json_values(6))
    return _dumped(body)


@st.composite
def replies(draw: st.DrawFn, member_api: str) -> tuple[int, str, bytes]:
    """A member's response: its own API's stream or message, an error, or anything."""
    streamed = draw(st.booleans())
    content_type = "text/event-stream" if streamed else "application/json"
    choice = draw(st.integers(0, 5))
    key = GPT if member_api == "openai" else CLAUDE
    if choice <= 2:
        body = STREAMS[key] if streamed else as_json(WHOLE[key])
        return 200, content_type, body
    if choice == 3:
        status, error = (OPENAI_ERROR_BODIES if key == GPT else ANTHROPIC_ERROR_BODIES)[
            draw(st.sampled_from(["invalid", "auth", "overloaded"]))
        ]
        return status, "application/json", as_json(error)
    status = draw(st.sampled_from([200, 400, 429, 500, 503, 529]) | st.integers(100, 999))
    return status, draw(st.sampled_from([content_type, ""])), draw(st.binary(max_size=200))


@settings(
    max_examples=300,
    deadline=None,
    derandomize=True,  # the same examples every run
    suppress_health_check=list(HealthCheck),
    database=None,
)
@given(data=st.data(), names=st.sampled_from(CHAINS))
def test_any_attempt_is_answered_message_by_message(
    data: st.DataObject, names: tuple[str, ...]
) -> None:
    """A member of the chain (now and then another name, or none), a body shaped like the
    primary's or not, the member's reply in any chunking, and phases never asked for: each
    message gets its own kind of answer (or an immediate one), never an exception."""
    handler = attempt(*names)
    primary = names[0]
    target = data.draw(
        st.sampled_from(names[1:]) if data.draw(st.integers(0, 7)) else OTHER_TARGETS
    )
    extra = (
        OPENAI_PRIMARY_HEADERS
        if BASE.by_name[primary].interface == "openai"
        else ANTHROPIC_PRIMARY_HEADERS
    )
    member_api = (
        BASE.by_name[target].interface
        if target is not None and target in BASE.by_name
        else "openai"
    )
    status, content_type, reply = data.draw(replies(member_api))
    cuts = data.draw(st.lists(st.integers(0, len(reply)), max_size=6))
    bounds = sorted({0, len(reply), *cuts})
    pieces = [reply[a:b] for a, b in itertools.pairwise(bounds)] or [b""]
    messages = [request_headers(target, extra), request_body(data.draw(primary_bodies(primary)))]
    messages.append(response_headers(status, content_type))
    messages += [response_body(p, i == len(pieces) - 1) for i, p in enumerate(pieces)]
    unasked = st.sampled_from(["request_trailers", "response_trailers", "request_headers"])
    for kind in data.draw(st.lists(unasked, max_size=2)):
        empty: dict[str, Any] = {kind: {}}  # that phase's message, with nothing in it
        messages.insert(data.draw(st.integers(1, len(messages))), pb.ProcessingRequest(**empty))
    for message in messages:
        answer, last = handler.handle(message)
        assert isinstance(answer, pb.ProcessingResponse)
        assert isinstance(last, bool)
        kind = answer.WhichOneof("response")
        assert kind in (ANSWER_KIND[str(message.WhichOneof("request"))], "immediate_response")
        answer.SerializeToString()  # a valid message
        if last:
            break


def test_a_failure_of_an_anthropic_primarys_attempt_is_a_500_in_its_shape(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(self: FallbackAttempt, request: pb.ProcessingRequest) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(FallbackAttempt, "handle", broken)
    config, _ = chained(CLAUDE, GPT)
    handle = ExtProcService(Processor(config), None).open_stream({FALLBACK_METADATA: "chain_1"})
    answer = handle(request_headers(GPT, ANTHROPIC_PRIMARY_HEADERS).SerializeToString())
    assert isinstance(answer, FinalAnswer)
    status, body = immediate(pb.ProcessingResponse.FromString(answer))
    assert status == 500 and body["type"] == "error"
