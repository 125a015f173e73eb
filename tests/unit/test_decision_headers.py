"""The decision as request headers (serve --decision-headers): what the server tells a mesh
ingress to do with each request, message by message."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable

import pytest
from google.protobuf import json_format

from plano_extproc._proto import ext_proc_pb2 as pb
from plano_extproc.config import parse_config
from plano_extproc.decide import Pending
from plano_extproc.errors import ErrorReply
from plano_extproc.extproc.decision_headers import (
    DecisionHeadersProcessor,
    DecisionHeaderStreams,
    upstream_name,
)
from plano_extproc.extproc.h2grpc import FinalAnswer
from plano_extproc.extproc.processor import Processor, SplicedAnswer
from plano_extproc.extproc.server import ExtProcService
from plano_extproc.resolve import attach_body, read_chat_request
from plano_extproc.router.base import RouteChoice
from plano_extproc.router.conversation import reading_for

pytestmark = pytest.mark.unit

CONFIG = """
version: v0.3.0
model_providers:
  - model: openai/gpt-5.2
    access_key: $OPENAI_API_KEY
    default: true
  - model: openai/gpt-5
    access_key: $OPENAI_API_KEY
    fallbacks: [openai/gpt-5.2]
  - model: anthropic/claude-sonnet-4-5
    access_key: $ANTHROPIC_API_KEY
  - model: openai/*
    access_key: $OPENAI_API_KEY
  - model: vllm/qwen3
    base_url: http://vllm.internal:8000/v1
    headers: {x-tenant: team-a}
  - model: litellm/gpt-4o
    base_url: https://litellm.internal/v1
    passthrough_auth: true
  - model: azure_openai/prod-gpt
    base_url: https://res.openai.azure.com
    access_key: $AZURE_KEY
model_aliases:
  fast-model:
    target: gpt-5.2
"""
ENV = {"OPENAI_API_KEY": "sk-o", "ANTHROPIC_API_KEY": "sk-a", "AZURE_KEY": "az-k"}
CLIENT_ONLY = {"authorization", "x-api-key", "api-key", "cookie", "proxy-authorization"}


@pytest.fixture
def processor() -> DecisionHeadersProcessor:
    return DecisionHeadersProcessor(parse_config(CONFIG, "t.yaml", ENV))


def headers_msg(
    path: str, method: str = "POST", end: bool = False, /, **headers: str
) -> pb.ProcessingRequest:
    """A request's headers: ``headers`` are header names (``_`` for ``-``), never the
    positional-only method and end of stream."""
    pairs = [(":method", method), (":path", path), (":authority", "llm.example")]
    pairs += [(k.replace("_", "-"), v) for k, v in headers.items()]
    return pb.ProcessingRequest(
        request_headers=pb.HttpHeaders(
            headers=pb.HeaderMap(
                headers=[pb.HeaderValue(key=k, raw_value=v.encode()) for k, v in pairs]
            ),
            end_of_stream=end,
        )
    )


def body_msg(body: object) -> pb.ProcessingRequest:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return pb.ProcessingRequest(request_body=pb.HttpBody(body=raw, end_of_stream=True))


def chat(model: str | None, text: str = "hi") -> dict[str, object]:
    body: dict[str, object] = {"messages": [{"role": "user", "content": text}]}
    if model is not None:
        body["model"] = model
    return body


def sets(mutation: pb.HeaderMutation) -> dict[str, str]:
    out = {h.header.key: h.header.raw_value.decode() for h in mutation.set_headers}
    assert len(out) == len(mutation.set_headers), "a header set twice"
    assert all(
        h.append_action == pb.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
        for h in mutation.set_headers
    )
    assert not set(out) & set(mutation.remove_headers), "a header both set and removed"
    return out


def decided(answer: object) -> tuple[dict[str, str], set[str], dict[str, object], bytes | None]:
    """The headers set, the headers removed, the metadata and the new body (None: as sent)."""
    assert isinstance(answer, pb.ProcessingResponse), answer
    assert answer.WhichOneof("response") == "request_body", answer
    common = answer.request_body.response
    assert common.clear_route_cache  # the ingress picks its route again from the headers
    metadata = json_format.MessageToDict(answer.dynamic_metadata)["plano"]
    body = common.body_mutation.body if common.HasField("body_mutation") else None
    return sets(common.header_mutation), set(common.header_mutation.remove_headers), metadata, body


def immediate(answer: object) -> tuple[int, dict[str, object]]:
    assert isinstance(answer, pb.ProcessingResponse), answer
    assert answer.WhichOneof("response") == "immediate_response", answer
    return answer.immediate_response.status.code, json.loads(answer.immediate_response.body)


# --- the request headers phase ---------------------------------------------------------------


def test_the_headers_answer_names_the_api_and_removes_the_clients_own_headers(
    processor: DecisionHeadersProcessor,
) -> None:
    msg = headers_msg(
        "/v1/chat/completions", authorization="Bearer client", x_plano_provider="openai/gpt-5"
    )
    api, answer = processor.on_request_headers(msg.request_headers)
    assert api is not None and api.path == "/v1/chat/completions"
    mutation = answer.request_headers.response.header_mutation
    # A client's selector could pose as the decision to the ingress's rules.
    assert list(mutation.remove_headers) == ["x-plano-provider"]
    assert not mutation.set_headers  # OpenAI's API requires nothing


@pytest.mark.parametrize(
    ("path", "sent", "added"),
    [
        ("/v1/messages", {}, {"anthropic-version": "2023-06-01"}),
        ("/v1/messages?beta=true", {"anthropic_version": "2024-10-22"}, {}),
        ("/v1/messages/count_tokens", {}, {"anthropic-version": "2023-06-01"}),
    ],
)
def test_an_anthropic_client_gets_a_version_only_when_it_sent_none(
    processor: DecisionHeadersProcessor, path: str, sent: dict[str, str], added: dict[str, str]
) -> None:
    api, answer = processor.on_request_headers(headers_msg(path, **sent).request_headers)
    assert api is not None and api.path == path.partition("?")[0]
    assert sets(answer.request_headers.response.header_mutation) == added


@pytest.mark.parametrize(
    ("path", "method", "end", "status", "code", "shape"),
    [
        ("/v1/models", "GET", True, 404, "unknown_url", "openai"),
        ("/v1/embeddings", "POST", False, 404, "unknown_url", "openai"),
        ("/v1/messages/batches", "POST", False, 404, "unknown_url", "anthropic"),
        ("/v1/chat/completions", "GET", True, 405, "method_not_allowed", "openai"),
        ("/v1/messages", "PUT", False, 405, "method_not_allowed", "anthropic"),
        ("/v1/chat/completions", "POST", True, 400, "missing_body", "openai"),
        ("/v1/messages/", "POST", True, 400, "missing_body", "anthropic"),
    ],
)
def test_what_our_routes_answer_is_answered_at_the_headers(
    processor: DecisionHeadersProcessor,
    path: str,
    method: str,
    end: bool,
    status: int,
    code: str,
    shape: str,
) -> None:
    api, answer = processor.on_request_headers(headers_msg(path, method, end).request_headers)
    assert api is None
    got, body = immediate(answer)
    assert got == status
    if shape == "openai":
        assert body["error"]["code"] == code  # type: ignore[index]
    else:
        assert body["type"] == "error" and body["error"]["message"]  # type: ignore[index]


# --- the body phase --------------------------------------------------------------------------


def test_a_named_model_is_sent_with_the_selectors_and_the_providers_key(
    processor: DecisionHeadersProcessor,
) -> None:
    set_, removed, metadata, body = decided(processor.handle(body_msg(chat("gpt-5.2"))))
    assert set_ == {
        "x-plano-provider": "openai/gpt-5.2",
        "x-plano-upstream": "api.openai.com",
        "authorization": "Bearer sk-o",
    }
    assert removed == CLIENT_ONLY - {"authorization"}
    assert body is None  # the body as sent, and so its content-length
    # The key travels in the header only: not in the ingress's metadata (nor its logs).
    assert metadata == {
        "provider": "openai/gpt-5.2",
        "model": "openai/gpt-5.2",
        "routing": "direct",
        "api": "openai",
        "stream": False,
    }


def test_an_alias_rewrites_the_model_and_sets_the_new_length(
    processor: DecisionHeadersProcessor,
) -> None:
    set_, _, metadata, body = decided(processor.handle(body_msg(chat("fast-model"))))
    assert body is not None and json.loads(body)["model"] == "gpt-5.2"
    assert set_["content-length"] == str(len(body))
    assert set_["x-plano-provider"] == "openai/gpt-5.2" and metadata["routing"] == "alias"


def test_an_anthropic_model_gets_its_own_key_header(processor: DecisionHeadersProcessor) -> None:
    from plano_extproc.apis import ANTHROPIC_MESSAGES

    body = {"model": "claude-sonnet-4-5", "max_tokens": 10, **chat(None)}
    set_, removed, _, _ = decided(processor.handle(body_msg(body), ANTHROPIC_MESSAGES))
    assert set_["x-api-key"] == "sk-a" and "authorization" not in set_
    assert set_["x-plano-upstream"] == "api.anthropic.com"
    assert removed == CLIENT_ONLY - {"x-api-key"}


def test_a_wildcard_names_its_entry_and_rewrites_nothing_it_need_not(
    processor: DecisionHeadersProcessor,
) -> None:
    set_, _, metadata, body = decided(processor.handle(body_msg(chat("openai/gpt-4.1"))))
    assert set_["x-plano-provider"] == "openai/*"
    assert metadata["model"] == "openai/gpt-4.1" and metadata["model_id"] == "gpt-4.1"
    assert body is not None and json.loads(body)["model"] == "gpt-4.1"
    assert set_["content-length"] == str(len(body))


def test_configured_headers_and_a_port_in_the_upstream(
    processor: DecisionHeadersProcessor,
) -> None:
    set_, removed, _, _ = decided(processor.handle(body_msg(chat("vllm/qwen3"))))
    assert set_["x-plano-upstream"] == "vllm.internal:8000"
    assert set_["x-tenant"] == "team-a"
    assert "authorization" not in set_ and removed == CLIENT_ONLY  # no key: no credential


def test_passthrough_auth_keeps_the_clients_credential_and_sets_no_key(
    processor: DecisionHeadersProcessor,
) -> None:
    set_, removed, _, _ = decided(processor.handle(body_msg(chat("litellm/gpt-4o"))))
    assert not {"authorization", "x-api-key", "api-key"} & (set(set_) | removed)
    assert removed == {"cookie", "proxy-authorization"}


def test_azure_gets_its_deployment_path(processor: DecisionHeadersProcessor) -> None:
    set_, _, _, _ = decided(processor.handle(body_msg(chat("azure_openai/prod-gpt"))))
    assert set_[":path"] == "/openai/deployments/prod-gpt/chat/completions?api-version=2024-10-21"
    assert set_["api-key"] == "az-k"
    assert set_["x-plano-upstream"] == "res.openai.azure.com"


def test_a_chains_primary_serves_alone(processor: DecisionHeadersProcessor) -> None:
    set_, _, metadata, _ = decided(processor.handle(body_msg(chat("openai/gpt-5"))))
    assert set_["x-plano-provider"] == "openai/gpt-5" and metadata["chain"]


@pytest.mark.parametrize(
    ("model", "api_name", "shape_key"),
    [("claude-sonnet-4-5", "openai", "error"), ("gpt-5.2", "anthropic", "type")],
)
def test_a_provider_of_the_other_api_is_refused_never_sent(
    processor: DecisionHeadersProcessor, model: str, api_name: str, shape_key: str
) -> None:
    from plano_extproc.apis import ANTHROPIC_MESSAGES, OPENAI_CHAT

    api = OPENAI_CHAT if api_name == "openai" else ANTHROPIC_MESSAGES
    body = {"model": model, "max_tokens": 10, **chat(None)}
    status, error = immediate(processor.handle(body_msg(body), api))
    assert status == 400 and shape_key in error
    message = json.dumps(error)
    assert "translation_unavailable" in message or api_name == "anthropic"
    assert "does not translate" in message


def test_a_token_count_for_an_openai_provider_is_estimated_here(
    processor: DecisionHeadersProcessor,
) -> None:
    from plano_extproc.apis import COUNT_TOKENS

    status, body = immediate(processor.handle(body_msg(chat("gpt-5.2")), COUNT_TOKENS))
    assert status == 200 and body["input_tokens"] > 0  # type: ignore[operator]


def test_errors_are_the_same_as_in_the_metadata_mode(processor: DecisionHeadersProcessor) -> None:
    plain = Processor(processor.config)
    for body in ({"model": 5, **chat(None)}, b"{oops", {"messages": []}, chat(None)["messages"]):
        assert processor.handle(body_msg(body)) == plain.handle(body_msg(body))


def test_a_big_body_read_by_a_helper_gets_the_same_answer(
    processor: DecisionHeadersProcessor,
) -> None:
    raw = json.dumps(chat("fast-model", "x" * 5000)).encode()
    here = processor.on_request_body(raw)
    read = read_chat_request(raw, reading_for(processor.config.router))
    assert not isinstance(read, ErrorReply)
    answer = processor.decide(attach_body(read, raw))
    assert isinstance(answer, SplicedAnswer)
    assert pb.ProcessingResponse.FromString(answer.SerializeToString()) == here


def test_the_metadata_mode_is_unchanged() -> None:
    plain = Processor(parse_config(CONFIG, "t.yaml", ENV))
    answer = plain.handle(body_msg(chat("fast-model")))
    assert isinstance(answer, pb.ProcessingResponse)
    assert not answer.request_body.response.header_mutation.set_headers
    metadata = json_format.MessageToDict(answer.dynamic_metadata)["plano"]
    assert metadata["auth"] == "Bearer sk-o"


@pytest.mark.parametrize(
    ("scheme_port", "expected"),
    [("https://h.example", "h.example"), ("http://h.example:80", "h.example"),
     ("https://h.example:8443", "h.example:8443"), ("http://10.0.0.5:8080", "10.0.0.5:8080")],
)  # fmt: skip
def test_upstream_names(scheme_port: str, expected: str) -> None:
    config = parse_config(f"llm_providers:\n  - model: x/m\n    base_url: {scheme_port}\n", "t", {})
    assert upstream_name(config.providers[0].endpoint) == expected


# --- a stream: headers, then body ------------------------------------------------------------


def run(answer: bytes | Awaitable[bytes]) -> bytes:
    if isinstance(answer, bytes):
        return answer

    async def wait() -> bytes:
        return await answer

    return asyncio.run(wait())


def stream(processor: DecisionHeadersProcessor, *messages: pb.ProcessingRequest) -> list[bytes]:
    handler = DecisionHeaderStreams(ExtProcService(processor, None), processor).open_stream({})
    return [run(handler(m.SerializeToString())) for m in messages]


def test_a_stream_decides_on_the_body_in_the_api_its_headers_named(
    processor: DecisionHeadersProcessor,
) -> None:
    headers, body = stream(
        processor,
        headers_msg("/v1/messages"),
        body_msg({"model": "mistral/x", "max_tokens": 5, **chat(None)}),
    )
    assert not isinstance(headers, FinalAnswer) and isinstance(body, FinalAnswer)
    status, error = immediate(pb.ProcessingResponse.FromString(body))
    assert status == 400 and error["type"] == "error"  # Anthropic's shape: the path said so


def test_no_model_goes_to_the_default_with_its_headers(
    processor: DecisionHeadersProcessor,
) -> None:
    _, body = stream(processor, headers_msg("/v1/chat/completions"), body_msg(chat("auto")))
    set_, _, metadata, _ = decided(pb.ProcessingResponse.FromString(body))
    assert set_["x-plano-provider"] == "openai/gpt-5.2" and metadata["routing"] == "default"


def test_a_body_without_the_headers_phase_is_refused(processor: DecisionHeadersProcessor) -> None:
    (answer,) = stream(processor, body_msg(chat("gpt-5.2")))
    assert isinstance(answer, FinalAnswer)
    status, error = immediate(pb.ProcessingResponse.FromString(answer))
    assert status == 500 and error["error"]["code"] == "router_misconfigured"  # type: ignore[index]


def test_an_answer_at_the_headers_ends_the_stream(processor: DecisionHeadersProcessor) -> None:
    (answer,) = stream(processor, headers_msg("/v1/models", "GET", True))
    assert isinstance(answer, FinalAnswer)


def test_preference_routing_waits_for_the_router_then_sets_the_headers() -> None:
    config = parse_config(
        CONFIG.replace(
            "    fallbacks: [openai/gpt-5.2]\n",
            "    routing_preferences:\n      - {name: reasoning, description: hard problems}\n",
        ),
        "t.yaml",
        ENV,
    )
    processor = DecisionHeadersProcessor(config)
    pending = processor.handle(body_msg(chat(None, "prove it")))
    assert isinstance(pending, Pending)
    choice = RouteChoice("reasoning", 0.9, {"reasoning": 0.9, "other": 0.1})
    set_, _, metadata, body = decided(processor.on_route_choice(pending, choice))
    assert set_["x-plano-provider"] == "openai/gpt-5" and metadata["route"] == "reasoning"
    assert body is not None and set_["content-length"] == str(len(body))
