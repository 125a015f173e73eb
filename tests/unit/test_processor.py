"""ext_proc messages in, mutations out: what Envoy is told to do with each request."""

from __future__ import annotations

import json

import pytest
from google.protobuf import json_format

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


def body_msg(body: object) -> pb.ProcessingRequest:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return pb.ProcessingRequest(request_body=pb.HttpBody(body=raw, end_of_stream=True))


def routed(processor: Processor, body: object) -> tuple[dict[str, object], bytes | None]:
    """The decision's metadata and the new body (None: the body goes unchanged)."""
    response = processor.handle(body_msg(body))
    assert isinstance(response, pb.ProcessingResponse)
    assert response.WhichOneof("response") == "request_body", response
    common = response.request_body.response
    # Envoy clears its route cache only for an answer with a header mutation (see processor).
    assert common.clear_route_cache and common.HasField("header_mutation")
    assert not common.header_mutation.set_headers  # nothing Envoy would have to apply
    metadata = json_format.MessageToDict(response.dynamic_metadata)
    assert list(metadata) == ["plano"]
    new_body = common.body_mutation.body if common.HasField("body_mutation") else None
    return metadata["plano"], new_body


def immediate(response: object) -> tuple[int, dict[str, object]]:
    assert isinstance(response, pb.ProcessingResponse)
    assert response.WhichOneof("response") == "immediate_response"
    reply = response.immediate_response
    content_type = {h.header.key: h.header.raw_value for h in reply.headers.set_headers}
    assert content_type["content-type"] == b"application/json"
    return reply.status.code, json.loads(reply.body)


def test_alias_rewrites_model_in_place_and_sends_the_decision(processor: Processor) -> None:
    raw = (
        b'{"model": "fast-model", "messages": [{"role": "user", "content": "h\\u00e9llo"}],'
        b' "temperature": 0.20, "n": 1E0, "stream": true}'
    )
    decision, new_body = routed(processor, raw)
    assert decision == {
        "model": "openai/gpt-5.2",
        "routing": "alias",
        "auth": "Bearer sk-o",
    }
    # Only the model changed: the client's spelling of everything else is kept.
    assert new_body == raw.replace(b'"fast-model"', b'"gpt-5.2"')


def test_direct_route_names_the_provider(processor: Processor) -> None:
    body = {"model": "anthropic/claude-sonnet-4-5", "messages": [{"role": "user", "content": "x"}]}
    decision, new_body = routed(processor, body)
    assert decision == {
        "model": "anthropic/claude-sonnet-4-5",
        "routing": "direct",
        "auth": "Bearer sk-a",
    }
    assert new_body is not None and json.loads(new_body)["model"] == "claude-sonnet-4-5"


def test_a_body_already_naming_the_providers_model_is_not_replaced(processor: Processor) -> None:
    decision, new_body = routed(processor, {"model": "gpt-5.2", "messages": [{"role": "user"}]})
    assert decision["model"] == "openai/gpt-5.2"
    assert new_body is None


def test_keyless_provider_gets_no_credential(processor: Processor) -> None:
    decision, _ = routed(processor, {"model": "llama3", "messages": [{"role": "user"}]})
    assert decision == {"model": "ollama/llama3", "routing": "direct"}


def test_default_when_no_model_adds_it(processor: Processor) -> None:
    raw = b'{"messages": [{"role": "user", "content": "x"}]}'
    decision, new_body = routed(processor, raw)
    assert decision["routing"] == "default"
    assert new_body == b'{"model":"gpt-5.2","messages": [{"role": "user", "content": "x"}]}'


def test_answers_are_independent_copies(processor: Processor) -> None:
    _, first = routed(processor, {"model": "fast-model", "messages": [{"content": "a"}]})
    _, again = routed(processor, {"model": "fast-model", "messages": [{"content": "b"}]})
    assert first is not None and again is not None
    assert json.loads(first)["messages"] == [{"content": "a"}]
    assert json.loads(again)["messages"] == [{"content": "b"}]


def test_missing_key_is_a_500_naming_the_variable(processor: Processor) -> None:
    status, payload = immediate(
        processor.handle(
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
    got_status, payload = immediate(processor.handle(body_msg(body)))
    assert got_status == status
    assert payload["error"]["code"] == code  # type: ignore[index]


def test_a_phase_we_did_not_ask_for_passes_unchanged(processor: Processor) -> None:
    message = pb.ProcessingRequest(request_headers=pb.HttpHeaders())
    response = processor.handle(message)
    assert isinstance(response, pb.ProcessingResponse)
    assert response == pb.ProcessingResponse(
        request_headers=pb.HeadersResponse(response=pb.CommonResponse())
    )
