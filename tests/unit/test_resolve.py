"""The routing decision, as a pure function of (request, config)."""

from __future__ import annotations

import json

import pytest

from plano_extproc.config import Config, parse_config
from plano_extproc.errors import ErrorReply, invalid_request
from plano_extproc.resolve import (
    ChatRequest,
    Decision,
    attach_body,
    parse_chat_request,
    read_chat_request,
    resolve,
)
from plano_extproc.router.conversation import Reading

pytestmark = pytest.mark.unit

CONFIG = """
llm_providers:
  - model: openai/gpt-5.2
    access_key: $OPENAI_API_KEY
    default: true
  - model: openai/gpt-5
    access_key: $OPENAI_API_KEY
  - model: anthropic/claude-sonnet-4-5
    access_key: $ANTHROPIC_API_KEY
  - model: groq/shared-model
  - model: mistral/shared-model
  - model: together/meta-llama/Llama-3-70b
model_aliases:
  fast-model:
    target: gpt-5.2
  creative-model:
    target: anthropic/claude-sonnet-4-5
"""


@pytest.fixture
def config() -> Config:
    return parse_config(CONFIG, "t.yaml", {"OPENAI_API_KEY": "o", "ANTHROPIC_API_KEY": "a"})


def decide(model: str | None, config: Config) -> tuple[str, str]:
    decision = resolve(model, config)
    assert isinstance(decision, Decision), decision
    return decision.provider.name, decision.routing


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("fast-model", ("openai/gpt-5.2", "alias")),
        ("creative-model", ("anthropic/claude-sonnet-4-5", "alias")),
        ("openai/gpt-5", ("openai/gpt-5", "direct")),
        ("anthropic/claude-sonnet-4-5", ("anthropic/claude-sonnet-4-5", "direct")),
        ("gpt-5", ("openai/gpt-5", "direct")),
        ("claude-sonnet-4-5", ("anthropic/claude-sonnet-4-5", "direct")),
        ("groq/shared-model", ("groq/shared-model", "direct")),
        ("meta-llama/Llama-3-70b", ("together/meta-llama/Llama-3-70b", "direct")),
        ("together/meta-llama/Llama-3-70b", ("together/meta-llama/Llama-3-70b", "direct")),
        (None, ("openai/gpt-5.2", "default")),
    ],
)
def test_resolution_order(model: str | None, expected: tuple[str, str], config: Config) -> None:
    assert decide(model, config) == expected


def test_alias_wins_over_a_model_id_of_the_same_name() -> None:
    config = parse_config(
        "llm_providers:\n  - model: openai/a\n  - model: groq/fast\n"
        "model_aliases:\n  fast:\n    target: openai/a\n",
        "t",
        {},
    )
    assert decide("fast", config) == ("openai/a", "alias")


def test_unknown_model_lists_what_may_be_used(config: Config) -> None:
    error = resolve("gpt-4o", config)
    assert isinstance(error, ErrorReply)
    assert (error.status, error.type, error.param, error.code) == (
        400,
        "invalid_request_error",
        "model",
        "model_not_found",
    )
    assert error.message == (
        "The model 'gpt-4o' is not served by this gateway. Use one of: openai/gpt-5.2, "
        "openai/gpt-5, anthropic/claude-sonnet-4-5, groq/shared-model, mistral/shared-model, "
        "together/meta-llama/Llama-3-70b, fast-model, creative-model."
    )


def test_unknown_provider_prefix_is_not_guessed(config: Config) -> None:
    error = resolve("azure/gpt-5", config)
    assert isinstance(error, ErrorReply) and error.code == "model_not_found"


def test_ambiguous_bare_model(config: Config) -> None:
    error = resolve("shared-model", config)
    assert isinstance(error, ErrorReply)
    assert error.code == "model_ambiguous" and "groq/shared-model, mistral/shared-model" in (
        error.message
    )


def test_no_model_and_no_default() -> None:
    config = parse_config("llm_providers:\n  - model: openai/a\n", "t", {})
    error = resolve(None, config)
    assert isinstance(error, ErrorReply)
    assert error.status == 400 and error.message == (
        "No model was named and no default provider is configured. Name one of: openai/a."
    )


def test_missing_key_variable_names_it() -> None:
    config = parse_config(
        "llm_providers:\n  - model: openai/a\n    access_key: ${KEY_A}\n  - model: openai/b\n",
        "t",
        {},
    )
    error = resolve("openai/a", config)
    assert isinstance(error, ErrorReply)
    assert (error.status, error.type, error.code) == (500, "server_error", "missing_api_key")
    assert "KEY_A" in error.message and "openai/a" in error.message
    assert decide("openai/b", config) == ("openai/b", "direct")  # keyless provider still works


def chat(body: object) -> ChatRequest | ErrorReply:
    return parse_chat_request(json.dumps(body).encode())


@pytest.mark.parametrize("model", [None, "", " ", "auto", "plano/auto"])
def test_auto_names_mean_no_model(model: str | None) -> None:
    body: dict[str, object] = {"messages": [{"role": "user", "content": "hi"}]}
    if model is not None:
        body["model"] = model
    request = chat(body)
    assert isinstance(request, ChatRequest) and request.model is None


@pytest.mark.parametrize(
    ("raw", "code", "param"),
    [
        (b"{not json", "invalid_json", None),
        (b'{"messages": [{"role": "user"}], "temperature": NaN}', "invalid_json", None),
        (b'{"messages": [{"role": "user"}], "top_p": -Infinity}', "invalid_json", None),
        (b"\xff\xfe", "invalid_json", None),
        (b"[1, 2]", "invalid_body", None),
        (b'"text"', "invalid_body", None),
        (b'{"model": "gpt-5"}', "missing_required_parameter", "messages"),
        (b'{"model": "gpt-5", "messages": []}', "invalid_type", "messages"),
        (b'{"model": "gpt-5", "messages": "hi"}', "invalid_type", "messages"),
        (b'{"model": 5, "messages": [{"role": "user", "content": "x"}]}', "invalid_type", "model"),
        (b'{"messages": [{"role": "user"}], "x": ' + b"[" * 5000 + b"}", "invalid_json", None),
        (b'{"messages": ["\xed\xb2\x80"]}', "invalid_json", None),  # an encoded surrogate
    ],
)
def test_bad_bodies(raw: bytes, code: str, param: str | None) -> None:
    error = parse_chat_request(raw)
    assert isinstance(error, ErrorReply)
    assert (error.status, error.code, error.param) == (400, code, param)
    payload = json.loads(error.body())
    assert set(payload["error"]) == {"message", "type", "param", "code"}


def test_nesting_too_deep_says_so() -> None:
    error = parse_chat_request(b'{"messages": [' + b'{"a": ' * 5000 + b"]}")
    assert isinstance(error, ErrorReply)
    assert error.message == "The request body nests arrays and objects too deeply to be read."


def test_a_lone_surrogate_model_is_a_400_with_a_utf8_body(config: Config) -> None:
    request = parse_chat_request(b'{"model": "\\udc80", "messages": [{"role": "user"}]}')
    assert isinstance(request, ChatRequest) and request.model == "\udc80"
    error = resolve(request.model, config)
    assert isinstance(error, ErrorReply)
    assert (error.status, error.code) == (400, "model_not_found")
    message = json.loads(error.body().decode("utf-8"))["error"]["message"]
    assert message.startswith("The model '\ufffd' is not served by this gateway.")


def test_any_error_body_is_utf8_json() -> None:
    body = invalid_request("bad \ud800 and \udfff and \U0001f600", param="\udc80").body()
    assert json.loads(body.decode("utf-8"))["error"] == {
        "message": "bad \ufffd and \ufffd and \U0001f600",
        "type": "invalid_request_error",
        "param": "\ufffd",
        "code": None,
    }


def test_error_messages_quote_a_long_model_cut(config: Config) -> None:
    error = resolve("x" * 10_000, config)
    assert isinstance(error, ErrorReply)
    assert error.message.startswith("The model '" + "x" * 100 + "…' is not served by")
    assert len(error.message) < 500


READING = Reading(context_turns=2, turn_chars=50, context_chars=1000)


@pytest.mark.parametrize(
    "raw",
    [
        b"{not json",
        b"[1]",
        b'{"model": "gpt-5"}',
        b'{"model": 5, "messages": [{"role": "user", "content": "x"}]}',
        b'{"messages": [' + b"[" * 5000 + b"]}",
    ],
)
def test_a_helper_reads_bad_bodies_as_the_server_does(raw: bytes) -> None:
    assert read_chat_request(raw, READING) == parse_chat_request(raw)


def test_a_helper_sends_back_only_what_routing_reads() -> None:
    messages = [
        {"role": "system", "content": "be brief"},
        *({"role": "user", "content": f"question {i}"} for i in range(1000)),
        {"role": "user", "content": "  the last one, " + "long " * 100},
        {"role": "tool", "content": "42"},
    ]
    raw = json.dumps({"model": "auto", "messages": messages}).encode()
    request = read_chat_request(raw, READING)
    assert isinstance(request, ChatRequest) and request.model is None
    assert request.messages == [
        {"role": "user", "content": "question 998"},
        {"role": "user", "content": "question 999"},
        {"role": "user", "content": "the last one, long long\nlong long long long long"},
    ]
    assert request.wire.value is None and request.wire.text is None  # the server has the text
    whole = attach_body(request, raw).wire
    assert whole.text == raw


def test_a_number_python_will_not_read_is_named_plainly() -> None:
    error = parse_chat_request(b'{"messages": [{"role": "user"}], "n": ' + b"1" * 5000 + b"}")
    assert isinstance(error, ErrorReply) and error.code == "invalid_json"
    assert error.message == "The request body has a number longer than 4300 digits."
