"""ext_proc messages in, mutations out: what Envoy is told to do with each request."""

from __future__ import annotations

import json

import pytest
from google.protobuf import json_format

from plano_extproc._proto import ext_proc_pb2 as pb
from plano_extproc.config import parse_config
from plano_extproc.decide import Pending
from plano_extproc.errors import ErrorReply
from plano_extproc.extproc.processor import Processor, SplicedAnswer, request_body_span
from plano_extproc.resolve import attach_body, read_chat_request
from plano_extproc.router.conversation import reading_for
from tests.configs import TWO_PROVIDERS

pytestmark = pytest.mark.unit

CONFIG = (
    TWO_PROVIDERS
    + """  - model: ollama/llama3
  - model: groq/llama-3.3-70b
    access_key: $GROQ_KEY
model_aliases:
  fast-model:
    target: gpt-5.2
"""
)


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
        "provider": "openai/gpt-5.2",
        "model": "openai/gpt-5.2",
        "routing": "alias",
        "auth": "Bearer sk-o",
        # For the access log: the client's API and its stream flag.
        "api": "openai",
        "stream": True,
    }
    # Only the model changed: the client's spelling of everything else is kept.
    assert new_body == raw.replace(b'"fast-model"', b'"gpt-5.2"')


def test_direct_route_names_the_provider(processor: Processor) -> None:
    body = {"model": "anthropic/claude-sonnet-4-5", "messages": [{"role": "user", "content": "x"}]}
    decision, new_body = routed(processor, body)
    assert decision == {
        "provider": "anthropic/claude-sonnet-4-5",
        "model": "anthropic/claude-sonnet-4-5",
        "routing": "direct",
        "auth": "sk-a",  # Anthropic's native API takes the bare key (in x-api-key)
        "api": "openai",
        "stream": False,
    }
    # Translated for Anthropic's Messages API, which requires max_tokens.
    assert new_body is not None
    assert json.loads(new_body) == {
        "model": "claude-sonnet-4-5",
        "messages": [{"role": "user", "content": "x"}],
        "max_tokens": 4096,
    }


def test_a_body_already_naming_the_providers_model_is_not_replaced(processor: Processor) -> None:
    decision, new_body = routed(processor, {"model": "gpt-5.2", "messages": [{"role": "user"}]})
    assert decision["model"] == "openai/gpt-5.2"
    assert new_body is None


def test_keyless_provider_gets_no_credential(processor: Processor) -> None:
    decision, _ = routed(processor, {"model": "llama3", "messages": [{"role": "user"}]})
    assert decision == {
        "provider": "ollama/llama3",
        "model": "ollama/llama3",
        "routing": "direct",
        "api": "openai",
        "stream": False,
    }


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


def refuse(name: str) -> object:
    raise AssertionError(f"{name} is not JSON")


@pytest.mark.parametrize(
    "raw",
    [
        b'{"messages": [{"role": "user"}], "x": ' + b"[" * 2000 + b"]" * 2000 + b"}",
        b"[" * 100_000,
        b'{"model": "\\udc80", "messages": [{"role": "user", "content": "x"}]}',
        b'{"model": "\\ud83d", "messages": [{"role": "user", "content": "x"}]}',
        b'{"model": "fast-model", "messages": [{"role": "user", "content": "\xed\xb2\x80"}]}',
        '\ufeff{"model": "\\udc80", "messages": [{}]}'.encode(),
    ],
)
def test_client_input_is_a_400_never_a_500(processor: Processor, raw: bytes) -> None:
    response = processor.handle(body_msg(raw))
    assert isinstance(response, pb.ProcessingResponse)
    reply = response.immediate_response
    assert reply.status.code == 400
    error = json.loads(reply.body.decode("utf-8"), parse_constant=refuse)["error"]
    assert error["code"] in ("invalid_json", "model_not_found")
    error["message"].encode("utf-8")  # no lone surrogate left in it


def test_what_is_forwarded_is_always_json(processor: Processor) -> None:
    raw = (
        '\ufeff{"model": "fast-model", "temperature": 1e999, "model": "fast-model",'
        ' "messages": [{"role": "user", "content": "\\udc80 ünï"}]}'
    ).encode()
    _, new_body = routed(processor, raw)
    assert new_body is not None
    text = new_body.decode("utf-8")
    assert "1e999" in text and '"\\udc80 ünï"' in text
    assert json.loads(text, parse_constant=refuse) == {
        **json.loads(raw),
        "model": "gpt-5.2",
    }


SAMPLES = [
    b'{"model": "fast-model", "messages": [{"role": "user", "content": "h\\u00e9llo"}]}',
    b'{"model": "gpt-5.2", "messages": [{"role": "user"}]}',
    b'{"messages": [{"role": "user", "content": "x"}]}',
    '{"model": "anthropic/claude-sonnet-4-5", "messages": ["日本"], "x": 1}'.encode("utf-16"),
    b'{"model": "a", "messages": [{}], "model": "fast-model"}',
    b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]}',
    b'{"model": "groq/llama-3.3-70b", "messages": [{"role": "user", "content": "x"}]}',
    b"{oops",
    b'{"messages": []}',
]


@pytest.mark.parametrize("raw", SAMPLES)
def test_a_body_read_by_a_helper_gets_the_same_answer(processor: Processor, raw: bytes) -> None:
    here = processor.on_request_body(raw)
    read = read_chat_request(raw, reading_for(processor.config.router))
    answer = processor.decide(read if isinstance(read, ErrorReply) else attach_body(read, raw))
    assert isinstance(here, pb.ProcessingResponse) and not isinstance(answer, Pending)
    there = pb.ProcessingResponse.FromString(answer.SerializeToString())
    if here.request_body.response.HasField("body_mutation") or here.HasField("immediate_response"):
        assert there == here
    else:  # the body as sent: a helper's answer writes it out in full
        assert there.request_body.response.body_mutation.body == raw
        there.request_body.response.ClearField("body_mutation")
        assert there == here


@pytest.mark.parametrize(
    "message",
    [
        body_msg(b'{"messages": []}'),
        pb.ProcessingRequest(
            request_body=pb.HttpBody(body=b"x" * 300, end_of_stream=True), observability_mode=True
        ),
        pb.ProcessingRequest(observability_mode=True, request_body=pb.HttpBody(body=b"\x00\x80")),
    ],
)
def test_the_body_is_found_in_the_message_without_parsing_it(
    message: pb.ProcessingRequest,
) -> None:
    payload = message.SerializeToString()
    span = request_body_span(payload)
    assert span is not None
    assert payload[span[0] : span[1]] == message.request_body.body


@pytest.mark.parametrize(
    "payload",
    [
        pb.ProcessingRequest(request_headers=pb.HttpHeaders()).SerializeToString(),
        pb.ProcessingRequest(request_body=pb.HttpBody(end_of_stream=True)).SerializeToString(),
        body_msg(b"{}").SerializeToString() + body_msg(b"{}").SerializeToString(),  # twice
        body_msg(b"{}").SerializeToString()[:-1],  # truncated
        b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",
        b"\x0b",  # a group
    ],
)
def test_anything_else_is_left_to_the_protobuf_parser(payload: bytes) -> None:
    assert request_body_span(payload) is None


@pytest.mark.parametrize("length", [0, 1, 127, 128, 16_383, 16_384, 2_097_152])
def test_a_spliced_answer_reads_as_the_message_with_its_body(
    processor: Processor, length: int
) -> None:
    body = bytes(range(256)) * (length // 256) + b"x" * (length % 256)
    routed = processor.on_request_body(b'{"model": "fast-model", "messages": [{}]}')
    assert isinstance(routed, pb.ProcessingResponse)
    routed.request_body.response.ClearField("body_mutation")
    head = pb.ProcessingResponse()
    head.CopyFrom(routed)
    spliced = SplicedAnswer(head, [body[:3], memoryview(body)[3:]])
    routed.request_body.response.body_mutation.body = body
    assert pb.ProcessingResponse.FromString(spliced.SerializeToString()) == routed
