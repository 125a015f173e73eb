"""ext_proc messages in, mutations out: what Envoy is told to do with each request."""

from __future__ import annotations

import json

import pytest

from plano_extproc._proto import ext_proc_pb2 as pb
from plano_extproc.config import parse_config
from plano_extproc.processor import Processor

pytestmark = pytest.mark.unit

CONFIG = """
llm_providers:
  - model: openai/gpt-5.2
    access_key: $OPENAI_API_KEY
    default: true
  - model: anthropic/claude-sonnet-4-5
    access_key: ${ANTHROPIC_API_KEY}
  - model: ollama/llama3
  - model: groq/llama-3.3-70b
    access_key: $GROQ_KEY
model_aliases:
  fast-model:
    target: gpt-5.2
"""


@pytest.fixture
def processor() -> Processor:
    env = {"OPENAI_API_KEY": "sk-o", "ANTHROPIC_API_KEY": "sk-a"}
    return Processor(parse_config(CONFIG, "t.yaml", env))


def headers_msg(method: str, path: str, end_of_stream: bool = False) -> pb.ProcessingRequest:
    return pb.ProcessingRequest(
        request_headers=pb.HttpHeaders(
            headers=pb.HeaderMap(
                headers=[
                    pb.HeaderValue(key=":method", raw_value=method.encode()),
                    pb.HeaderValue(key=":path", raw_value=path.encode()),
                    pb.HeaderValue(key="authorization", raw_value=b"Bearer client"),
                ]
            ),
            end_of_stream=end_of_stream,
        )
    )


def body_msg(body: object) -> pb.ProcessingRequest:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return pb.ProcessingRequest(request_body=pb.HttpBody(body=raw, end_of_stream=True))


def routed(
    processor: Processor, body: object, path: str = "/v1/chat/completions"
) -> tuple[dict[str, str], list[str], dict[str, object]]:
    exchange = processor.exchange()
    first = exchange.handle(headers_msg("POST", path))
    assert first.WhichOneof("response") == "request_headers"
    assert list(first.request_headers.response.header_mutation.remove_headers) == [
        "x-plano-cluster",
        "x-plano-model",
        "x-plano-routing",
        "x-plano-route",
    ]
    second = exchange.handle(body_msg(body))
    assert second.WhichOneof("response") == "request_body", second
    common = second.request_body.response
    assert common.clear_route_cache
    set_headers = {
        h.header.key: h.header.raw_value.decode() for h in common.header_mutation.set_headers
    }
    assert all(
        h.append_action == pb.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
        for h in common.header_mutation.set_headers
    )
    new_body = common.body_mutation.body
    assert set_headers["content-length"] == str(len(new_body))
    return set_headers, list(common.header_mutation.remove_headers), json.loads(new_body)


def immediate(response: pb.ProcessingResponse) -> tuple[int, dict[str, object]]:
    assert response.WhichOneof("response") == "immediate_response"
    reply = response.immediate_response
    content_type = {h.header.key: h.header.raw_value for h in reply.headers.set_headers}
    assert content_type["content-type"] == b"application/json"
    return reply.status.code, json.loads(reply.body)


def test_alias_rewrites_model_and_sets_route_and_credentials(processor: Processor) -> None:
    body = {
        "model": "fast-model",
        "messages": [{"role": "user", "content": "héllo"}],
        "temperature": 0.2,
        "stream": True,
    }
    headers, removed, new_body = routed(processor, body)
    assert headers["x-plano-cluster"] == "provider_openai"
    assert headers["x-plano-model"] == "openai/gpt-5.2"
    assert headers["x-plano-routing"] == "alias"
    assert headers["authorization"] == "Bearer sk-o"
    assert headers[":path"] == "/v1/chat/completions"
    assert "x-plano-route" not in headers
    assert removed == ["x-api-key", "api-key"]
    assert new_body == {**body, "model": "gpt-5.2"}


def test_direct_route_keeps_query_and_uses_provider_path(processor: Processor) -> None:
    body = {"model": "anthropic/claude-sonnet-4-5", "messages": [{"role": "user", "content": "x"}]}
    headers, _, new_body = routed(processor, body, "/v1/chat/completions?trace=1")
    assert headers[":path"] == "/v1/chat/completions?trace=1"
    assert headers["authorization"] == "Bearer sk-a"
    assert headers["x-plano-routing"] == "direct"
    assert new_body["model"] == "claude-sonnet-4-5"


def test_keyless_provider_gets_no_auth_and_client_auth_is_removed(processor: Processor) -> None:
    headers, removed, _ = routed(processor, {"model": "llama3", "messages": [{"role": "user"}]})
    assert "authorization" not in headers
    assert removed == ["authorization", "x-api-key", "api-key"]
    assert headers["x-plano-cluster"] == "provider_ollama"


def test_default_when_no_model(processor: Processor) -> None:
    headers, _, new_body = routed(processor, {"messages": [{"role": "user", "content": "x"}]})
    assert headers["x-plano-routing"] == "default"
    assert new_body["model"] == "gpt-5.2"


def test_missing_key_is_a_500_naming_the_variable(processor: Processor) -> None:
    exchange = processor.exchange()
    exchange.handle(headers_msg("POST", "/v1/chat/completions"))
    status, payload = immediate(
        exchange.handle(
            body_msg(
                {"model": "groq/llama-3.3-70b", "messages": [{"role": "user", "content": "x"}]}
            )
        )
    )
    assert status == 500
    assert "GROQ_KEY" in payload["error"]["message"]  # type: ignore[index]


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{oops", 400, "invalid_json"),
        ([1], 400, "invalid_body"),
        ({"model": "fast-model"}, 400, "missing_required_parameter"),
        (
            {"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]},
            400,
            "model_not_found",
        ),
    ],
)
def test_bad_requests_are_answered_with_openai_errors(
    processor: Processor, body: object, status: int, code: str
) -> None:
    exchange = processor.exchange()
    exchange.handle(headers_msg("POST", "/v1/chat/completions"))
    got_status, payload = immediate(exchange.handle(body_msg(body)))
    assert got_status == status
    assert payload["error"]["code"] == code  # type: ignore[index]


def test_models_list(processor: Processor) -> None:
    status, payload = immediate(
        processor.exchange().handle(headers_msg("GET", "/v1/models", end_of_stream=True))
    )
    assert status == 200 and payload["object"] == "list"
    ids = [m["id"] for m in payload["data"]]  # type: ignore[attr-defined]
    assert ids == [
        "openai/gpt-5.2",
        "anthropic/claude-sonnet-4-5",
        "ollama/llama3",
        "groq/llama-3.3-70b",
        "fast-model",
    ]


def test_model_retrieve(processor: Processor) -> None:
    status, payload = immediate(
        processor.exchange().handle(headers_msg("GET", "/v1/models/fast-model", end_of_stream=True))
    )
    assert status == 200 and payload["id"] == "fast-model"
    status, payload = immediate(
        processor.exchange().handle(headers_msg("GET", "/v1/models/nope", end_of_stream=True))
    )
    assert status == 404


@pytest.mark.parametrize(
    ("method", "path", "eos", "status"),
    [
        ("GET", "/v1/chat/completions", True, 405),
        ("POST", "/v1/chat/completions", True, 400),
        ("POST", "/v1/embeddings", False, 404),
        ("GET", "/", True, 404),
        ("POST", "/v1/models", False, 405),
    ],
)
def test_header_phase_answers(
    processor: Processor, method: str, path: str, eos: bool, status: int
) -> None:
    got, payload = immediate(processor.exchange().handle(headers_msg(method, path, eos)))
    assert got == status
    assert payload["error"]["message"]  # type: ignore[index]
