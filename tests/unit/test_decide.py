"""The decision sequence for each client API (decide.py), and the answers ``Processor`` builds
from a decision: the client's body with the model spliced in, a translated body, the
server's own token count, or an error in the client's shape."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

import pytest
from google.protobuf import json_format
from hypothesis import given, settings
from hypothesis import strategies as st

from plano_extproc._proto import ext_proc_pb2 as pb
from plano_extproc.apis import ANTHROPIC_MESSAGES, COUNT_TOKENS, OPENAI_CHAT, ClientApi
from plano_extproc.apis.anthropic_messages import estimate_input_tokens
from plano_extproc.config import Config, parse_config
from plano_extproc.decide import Decided, Pending, begin, conclude, decide
from plano_extproc.errors import ErrorReply
from plano_extproc.extproc.processor import Processor
from plano_extproc.resolve import ChatRequest, Decision, parse_chat_request
from plano_extproc.router.base import OTHER, RouteChoice

pytestmark = pytest.mark.unit

CONFIG = """
llm_providers:
  - model: openai/gpt-5.2
    access_key: $OPENAI_API_KEY
    default: true
  - model: openai/gpt-5
    access_key: $OPENAI_API_KEY
    routing_preferences:
      - name: complex_reasoning
        description: deep analysis and complex problem solving
  - model: anthropic/claude-sonnet-4-5
    access_key: $ANTHROPIC_API_KEY
    routing_preferences:
      - name: creative_tasks
        description: creative writing and content generation
  - model: groq/shared
  - model: mistral/shared
  - model: local/llama
    base_url: http://127.0.0.1:8000/v1
model_aliases:
  fast-model:
    target: gpt-5.2
  creative-model:
    target: claude-sonnet-4-5
  claude-haiku-4-5:
    target: gpt-5.2
routing:
  route_named_models: ["claude-*", "local/*"]
  min_confidence: 0.5
"""
ENV = {"OPENAI_API_KEY": "sk-o", "ANTHROPIC_API_KEY": "sk-a"}
GENERATING = [OPENAI_CHAT, ANTHROPIC_MESSAGES]
ALL_APIS = [OPENAI_CHAT, ANTHROPIC_MESSAGES, COUNT_TOKENS]


def make(text: str = CONFIG, env: dict[str, str] | None = None) -> Config:
    return parse_config(text, "t.yaml", ENV if env is None else env)


@pytest.fixture(scope="module")
def config() -> Config:
    return make()


def body(api: ClientApi, model: str | None = None, **fields: Any) -> bytes:
    """A request of ``api`` as its SDK sends it."""
    value: dict[str, Any] = {} if model is None else {"model": model}
    if api is OPENAI_CHAT:
        value["messages"] = [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Write a poem about the sea."},
        ]
    else:
        value["system"] = [{"type": "text", "text": "Be brief."}]
        value["messages"] = [
            {"role": "user", "content": [{"type": "text", "text": "Write a poem about the sea."}]}
        ]
        if api is ANTHROPIC_MESSAGES:
            value["max_tokens"] = 1024
    value.update(fields)
    return json.dumps(value).encode()


def begin_for(api: ClientApi, config: Config, model: str | None, **fields: Any) -> Any:
    return begin(parse_chat_request(body(api, model, **fields)), api, config)


def choice(route: str, confidence: float = 0.9) -> RouteChoice:
    return RouteChoice(route, confidence, {route: confidence})


def named(outcome: object) -> tuple[str, str, str | None]:
    assert isinstance(outcome, Decision), outcome
    return outcome.provider.name, outcome.routing, outcome.route


# --- begin: decided at once, or Pending on the router ---------------------------------------


@pytest.mark.parametrize("api", ALL_APIS, ids=lambda a: a.metadata)
@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("fast-model", ("openai/gpt-5.2", "alias", None)),
        ("creative-model", ("anthropic/claude-sonnet-4-5", "alias", None)),
        ("openai/gpt-5", ("openai/gpt-5", "direct", None)),
        ("gpt-5", ("openai/gpt-5", "direct", None)),
        # provider/model is exact even where its model id matches a route_named_models glob
        ("anthropic/claude-sonnet-4-5", ("anthropic/claude-sonnet-4-5", "direct", None)),
        ("groq/shared", ("groq/shared", "direct", None)),
    ],
)
def test_a_named_model_is_decided_at_once(
    api: ClientApi, model: str, expected: tuple[str, str, None], config: Config
) -> None:
    assert named(begin_for(api, config, model)) == expected


@pytest.mark.parametrize("api", ALL_APIS, ids=lambda a: a.metadata)
@pytest.mark.parametrize(
    ("model", "code"), [("shared", "model_ambiguous"), ("gpt-9", "model_not_found")]
)
def test_an_unservable_model_is_a_400(
    api: ClientApi, model: str, code: str, config: Config
) -> None:
    outcome = begin_for(api, config, model)
    assert isinstance(outcome, ErrorReply)
    assert (outcome.status, outcome.code, outcome.param) == (400, code, "model")


@pytest.mark.parametrize("api", GENERATING, ids=lambda a: a.metadata)
@pytest.mark.parametrize("model", [None, "", "auto", "plano/auto"])
def test_no_model_with_routes_waits_for_the_router(
    api: ClientApi, model: str | None, config: Config
) -> None:
    pending = begin_for(api, config, model)
    assert isinstance(pending, Pending)
    assert pending.api is api
    assert pending.ask.fallback is None
    assert isinstance(pending.request, ChatRequest) and pending.request.model is None
    # What the router will read: the request's messages as sent.
    assert pending.request.messages == json.loads(body(api, model))["messages"]


@pytest.mark.parametrize("api", GENERATING, ids=lambda a: a.metadata)
@pytest.mark.parametrize(
    "model", ["claude-sonnet-4-5", "claude-opus-4-1-20250805", "claude-haiku-4-5", "local/llama"]
)
def test_route_named_models_wait_for_the_router_with_the_named_fallback(
    api: ClientApi, model: str, config: Config
) -> None:
    pending = begin_for(api, config, model)
    assert isinstance(pending, Pending)
    assert pending.ask.fallback == model


@pytest.mark.parametrize(
    "model",
    [None, "auto", "claude-sonnet-4-5", "claude-haiku-4-5", "claude-opus-4-1-20250805"],
)
def test_a_token_count_never_waits_for_the_router(model: str | None, config: Config) -> None:
    outcome = begin_for(COUNT_TOKENS, config, model)
    assert not isinstance(outcome, Pending)
    expected = {
        None: ("openai/gpt-5.2", "default", None),
        "auto": ("openai/gpt-5.2", "default", None),
        "claude-sonnet-4-5": ("anthropic/claude-sonnet-4-5", "direct", None),
        "claude-haiku-4-5": ("openai/gpt-5.2", "alias", None),
        # A routed name no provider serves: the default, as its generations (a coding agent
        # counts the tokens of the conversation it then sends).
        "claude-opus-4-1-20250805": ("openai/gpt-5.2", "default", None),
    }
    assert named(outcome) == expected[model]


@pytest.mark.parametrize("api", ALL_APIS, ids=lambda a: a.metadata)
def test_no_routes_no_router(api: ClientApi) -> None:
    off = make(CONFIG.replace("routing:\n", "routing:\n  router: none\n"))
    assert off.routes == ()
    assert named(begin_for(api, off, None)) == ("openai/gpt-5.2", "default", None)
    # A route_named_models model is then just a model.
    assert named(begin_for(api, off, "claude-sonnet-4-5"))[:2] == (
        "anthropic/claude-sonnet-4-5",
        "direct",
    )


@pytest.mark.parametrize("api", ALL_APIS, ids=lambda a: a.metadata)
def test_an_unreadable_body_is_passed_on_as_its_error(api: ClientApi, config: Config) -> None:
    error = parse_chat_request(b'{"model": "gpt-5"}')
    assert isinstance(error, ErrorReply)
    assert begin(error, api, config) is error


# --- conclude: the router's choice, or the fallback ---------------------------------------


def pending(config: Config, model: str | None, api: ClientApi = OPENAI_CHAT) -> Pending:
    step = begin_for(api, config, model)
    assert isinstance(step, Pending)
    return step


@pytest.mark.parametrize("model", [None, "claude-sonnet-4-5", "claude-haiku-4-5"])
def test_a_confident_choice_is_its_routes_provider(model: str | None, config: Config) -> None:
    outcome = conclude(pending(config, model), choice("complex_reasoning", 0.8), config)
    assert named(outcome) == ("openai/gpt-5", "preference", "complex_reasoning")
    outcome = conclude(pending(config, model), choice("creative_tasks", 0.5), config)
    assert named(outcome) == ("anthropic/claude-sonnet-4-5", "preference", "creative_tasks")


NO_ROUTE = [None, choice(OTHER, 0.99), choice("creative_tasks", 0.49)]


@pytest.mark.parametrize("answer", NO_ROUTE, ids=["failed", "other", "unsure"])
@pytest.mark.parametrize(
    ("model", "expected"),
    [
        (None, ("openai/gpt-5.2", "default", None)),
        ("claude-sonnet-4-5", ("anthropic/claude-sonnet-4-5", "direct", None)),
        ("claude-haiku-4-5", ("openai/gpt-5.2", "alias", None)),  # the alias still applies
        ("local/llama", ("local/llama", "direct", None)),
    ],
)
def test_without_a_fitting_route_the_fallback_serves(
    answer: RouteChoice | None,
    model: str | None,
    expected: tuple[str, str, None],
    config: Config,
) -> None:
    for api in GENERATING:
        assert named(conclude(pending(config, model, api), answer, config)) == expected


def test_a_fallback_nobody_serves_goes_to_the_default(config: Config) -> None:
    # A coding agent's dated model name, sent through the router: no route fits, and the
    # config does not serve it, so the default does.
    step = pending(config, "claude-opus-4-1-20250805")
    assert named(conclude(step, None, config)) == ("openai/gpt-5.2", "default", None)
    # A route that fits serves it all the same.
    assert named(conclude(step, choice("creative_tasks"), config))[1] == "preference"


def test_a_fallback_nobody_serves_without_a_default_is_a_400(config: Config) -> None:
    no_default = make(CONFIG.replace("    default: true\n", ""))
    assert no_default.default is None
    outcome = conclude(pending(no_default, "claude-opus-4-1-20250805"), None, no_default)
    assert isinstance(outcome, ErrorReply)
    assert (outcome.status, outcome.code) == (400, "model_not_found")


def test_a_route_unknown_to_the_config_falls_back(config: Config) -> None:
    outcome = conclude(pending(config, None), choice("no_such_route", 1.0), config)
    assert named(outcome) == ("openai/gpt-5.2", "default", None)


# --- decide: both halves, the router in between ---------------------------------------------


class FakeRouter:
    """What decide() needs of a RouterService: ``choose``, awaited."""

    def __init__(self, answer: RouteChoice | None) -> None:
        self.answer = answer
        self.asked: list[Sequence[object]] = []

    async def choose(self, messages: Sequence[object]) -> RouteChoice | None:
        self.asked.append(messages)
        return self.answer


def run_decide(raw: bytes, api: ClientApi, config: Config, router: Any) -> Decided:
    return asyncio.run(decide(raw, api, config, router))


@pytest.mark.parametrize("api", GENERATING, ids=lambda a: a.metadata)
def test_decide_asks_the_router_when_begin_says_so(api: ClientApi, config: Config) -> None:
    router = FakeRouter(choice("creative_tasks"))
    decided = run_decide(body(api, "claude-haiku-4-5"), api, config, router)
    assert decided.asked_router and decided.choice == router.answer
    assert named(decided.outcome) == ("anthropic/claude-sonnet-4-5", "preference", "creative_tasks")
    assert decided.request is not None and decided.request.model == "claude-haiku-4-5"
    assert router.asked == [json.loads(body(api))["messages"]]


@pytest.mark.parametrize("api", ALL_APIS, ids=lambda a: a.metadata)
def test_decide_leaves_the_router_alone_for_a_named_model(api: ClientApi, config: Config) -> None:
    router = FakeRouter(choice("creative_tasks"))
    decided = run_decide(body(api, "fast-model"), api, config, router)
    assert not decided.asked_router and decided.choice is None
    assert named(decided.outcome) == ("openai/gpt-5.2", "alias", None)
    assert router.asked == []


def test_decide_never_asks_the_router_for_a_token_count(config: Config) -> None:
    router = FakeRouter(choice("creative_tasks"))
    for model in (None, "claude-sonnet-4-5"):
        decided = run_decide(body(COUNT_TOKENS, model), COUNT_TOKENS, config, router)
        assert not decided.asked_router
    assert router.asked == []


@pytest.mark.parametrize("api", GENERATING, ids=lambda a: a.metadata)
def test_decide_without_a_router_uses_the_fallback(api: ClientApi, config: Config) -> None:
    decided = run_decide(body(api, "claude-sonnet-4-5"), api, config, None)
    assert decided.asked_router and decided.choice is None
    assert named(decided.outcome) == ("anthropic/claude-sonnet-4-5", "direct", None)
    decided = run_decide(body(api), api, config, FakeRouter(None))
    assert named(decided.outcome) == ("openai/gpt-5.2", "default", None)


@pytest.mark.parametrize("api", ALL_APIS, ids=lambda a: a.metadata)
def test_decide_on_a_bad_body_is_its_error(api: ClientApi, config: Config) -> None:
    router = FakeRouter(choice("creative_tasks"))
    decided = run_decide(b"[1, 2]", api, config, router)
    assert decided.request is None and not decided.asked_router
    assert isinstance(decided.outcome, ErrorReply) and decided.outcome.code == "invalid_body"


# --- Processor: the answer for a decision ---------------------------------------------------


@pytest.fixture(scope="module")
def processor(config: Config) -> Processor:
    return Processor(config)


def answer_of(processor: Processor, raw: bytes, api: ClientApi) -> pb.ProcessingResponse:
    answer = processor.on_request_body(raw, api)
    if isinstance(answer, Pending):
        answer = processor.on_route_choice(answer, None)
    assert isinstance(answer, pb.ProcessingResponse), answer
    return answer


def routed(answer: pb.ProcessingResponse) -> tuple[dict[str, Any], bytes | None]:
    """The decision's metadata (by namespace) and the new body (None: unchanged)."""
    assert answer.WhichOneof("response") == "request_body", answer
    common = answer.request_body.response
    assert common.clear_route_cache and common.HasField("header_mutation")
    metadata = json_format.MessageToDict(answer.dynamic_metadata)
    new = common.body_mutation.body if common.HasField("body_mutation") else None
    return metadata, new


def immediate(answer: pb.ProcessingResponse) -> tuple[int, Any]:
    assert answer.WhichOneof("response") == "immediate_response", answer
    reply = answer.immediate_response
    headers = {h.header.key: h.header.raw_value for h in reply.headers.set_headers}
    assert headers == {"content-type": b"application/json"}
    assert reply.details == "plano_extproc_reply"
    reply.body.decode("utf-8")  # valid UTF-8
    return reply.status.code, json.loads(reply.body)


def strict_json(raw: bytes) -> Any:
    """JSON as any upstream parses it: no NaN or Infinity, valid UTF-8."""

    def refuse(name: str) -> None:
        raise ValueError(name)

    return json.loads(raw.decode("utf-8"), parse_constant=refuse)


def test_same_api_splices_the_model_into_the_clients_own_bytes(processor: Processor) -> None:
    raw = (
        b'{"model": "creative-model", "max_tokens": 1E3, "messages": '
        b'[{"role": "user", "content": "h\\u00e9"}], "stream": true}'
    )
    metadata, new = routed(answer_of(processor, raw, ANTHROPIC_MESSAGES))
    assert metadata == {
        "plano": {
            "provider": "anthropic/claude-sonnet-4-5",
            "model": "anthropic/claude-sonnet-4-5",
            "routing": "alias",
            "auth": "sk-a",  # x-api-key takes the bare key
            "api": "anthropic",  # the client's API and stream flag, for the access log
            "stream": True,
        }
    }  # and no plano_response: the response is not translated
    assert new == raw.replace(b'"creative-model"', b'"claude-sonnet-4-5"')
    raw = body(OPENAI_CHAT, "fast-model", temperature=0.20)
    metadata, new = routed(answer_of(processor, raw, OPENAI_CHAT))
    assert metadata["plano"]["auth"] == "Bearer sk-o"
    assert new == raw.replace(b'"fast-model"', b'"gpt-5.2"')


def test_an_openai_request_for_an_anthropic_provider_is_translated(processor: Processor) -> None:
    raw = body(OPENAI_CHAT, "creative-model", stream=True, stream_options={"include_usage": True})
    metadata, new = routed(answer_of(processor, raw, OPENAI_CHAT))
    assert metadata["plano"]["model"] == "anthropic/claude-sonnet-4-5"
    # What the response's translator needs, in the namespace Envoy forwards to it.
    assert metadata["plano_response"] == {"include_usage": True}
    assert new is not None
    sent = strict_json(new)
    assert sent == {
        "model": "claude-sonnet-4-5",
        "max_tokens": 4096,
        "system": "Be brief.",
        "messages": [{"role": "user", "content": "Write a poem about the sea."}],
        "stream": True,
    }


def test_an_anthropic_request_for_an_openai_provider_is_translated(processor: Processor) -> None:
    raw = body(ANTHROPIC_MESSAGES, "fast-model", stream=True, temperature=0.5)
    metadata, new = routed(answer_of(processor, raw, ANTHROPIC_MESSAGES))
    decision = {
        "provider": "openai/gpt-5.2",
        "model": "openai/gpt-5.2",
        "routing": "alias",
        "auth": "Bearer sk-o",
        "api": "anthropic",  # the client's API and stream flag, for the access log
        "stream": True,
    }
    assert metadata["plano"] == decision
    assert metadata["plano_response"] == {"include_usage": False}  # not an OpenAI client's ask
    assert new is not None
    sent = strict_json(new)
    assert sent["model"] == "gpt-5.2"
    assert sent["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Write a poem about the sea."},
    ]
    assert sent["max_completion_tokens"] == 1024 and sent["temperature"] == 0.5
    # The upstream is asked for usage: Anthropic's stream always reports it.
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}


def test_a_translated_request_not_streamed_sends_no_response_metadata(
    processor: Processor,
) -> None:
    metadata, new = routed(answer_of(processor, body(OPENAI_CHAT, "creative-model"), OPENAI_CHAT))
    assert list(metadata) == ["plano"]
    assert new is not None and "stream" not in strict_json(new)


def test_a_routed_messages_request_is_translated_for_the_chosen_provider(
    processor: Processor,
) -> None:
    # Claude Code names a Claude model; the router sends it to GPT.
    raw = body(ANTHROPIC_MESSAGES, "claude-sonnet-4-5")
    step = processor.on_request_body(raw, ANTHROPIC_MESSAGES)
    assert isinstance(step, Pending)
    answer = processor.on_route_choice(step, choice("complex_reasoning"))
    metadata, new = routed(answer)  # type: ignore[arg-type]
    assert metadata["plano"]["route"] == "complex_reasoning"
    assert new is not None and strict_json(new)["model"] == "gpt-5"
    # No route: the named Claude model, in the client's own bytes.
    metadata, new = routed(processor.on_route_choice(step, None))  # type: ignore[arg-type]
    assert metadata["plano"]["model"] == "anthropic/claude-sonnet-4-5"
    assert new is None  # already named as the provider names it


@pytest.mark.parametrize(
    ("model", "provider"),
    [
        (None, "openai/gpt-5.2"),
        ("fast-model", "openai/gpt-5.2"),
        ("gpt-5", "openai/gpt-5"),
        ("local/llama", "local/llama"),
    ],
)
def test_the_server_counts_tokens_for_a_provider_that_cannot(
    processor: Processor, model: str | None, provider: str
) -> None:
    raw = body(COUNT_TOKENS, model)
    answer = answer_of(processor, raw, COUNT_TOKENS)
    status, reply = immediate(answer)
    assert status == 200
    assert reply == {"input_tokens": estimate_input_tokens(json.loads(raw))}
    assert reply["input_tokens"] > 0
    # With the decision, for the decision headers, as on any routed response.
    decision = json_format.MessageToDict(answer.dynamic_metadata)["plano"]
    assert decision["model"] == provider


def test_an_anthropic_provider_counts_its_own_tokens(processor: Processor) -> None:
    metadata, new = routed(answer_of(processor, body(COUNT_TOKENS, "creative-model"), COUNT_TOKENS))
    assert metadata["plano"]["model"] == "anthropic/claude-sonnet-4-5"
    assert new is not None and strict_json(new)["model"] == "claude-sonnet-4-5"


@pytest.mark.parametrize(
    ("api", "model", "fields", "param"),
    [
        (OPENAI_CHAT, "creative-model", {"n": 2}, "n"),
        (OPENAI_CHAT, "creative-model", {"functions": [{"name": "f"}]}, "functions"),
        (
            ANTHROPIC_MESSAGES,
            "fast-model",
            {"messages": [{"role": "bot", "content": "x"}]},
            "messages[0].role",
        ),
        (
            ANTHROPIC_MESSAGES,
            "fast-model",
            {"messages": [{"role": "user", "content": [{"type": "tool_result"}]}]},
            "messages[0].content[0]",
        ),
    ],
)
def test_a_request_the_upstream_cannot_be_asked_is_a_4xx_in_the_clients_shape(
    processor: Processor, api: ClientApi, model: str, fields: dict[str, Any], param: str
) -> None:
    status, reply = immediate(answer_of(processor, body(api, model, **fields), api))
    assert 400 <= status < 500
    if api is OPENAI_CHAT:
        assert set(reply) == {"error"}
        assert reply["error"]["type"] == "invalid_request_error"
        assert reply["error"]["param"] == param
    else:
        assert reply["type"] == "error"
        assert set(reply["error"]) == {"type", "message"}
        assert reply["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    ("api", "model", "fields"),
    [
        (ANTHROPIC_MESSAGES, "fast-model", {"temperature": "1e999"}),
        (ANTHROPIC_MESSAGES, "fast-model", {"top_p": "-1e999"}),
        (
            ANTHROPIC_MESSAGES,
            "fast-model",
            {"tools": [{"name": "f", "input_schema": {"type": "number", "maximum": "1e999"}}]},
        ),
        (
            OPENAI_CHAT,
            "creative-model",
            {
                "tools": [
                    {
                        "type": "function",
                        "function": {"name": "f", "parameters": {"maximum": "1e999"}},
                    }
                ]
            },
        ),
        (OPENAI_CHAT, "creative-model", {"top_p": "1e999"}),
    ],
)
def test_a_number_out_of_range_in_a_translated_request_is_a_400(
    processor: Processor, api: ClientApi, model: str, fields: dict[str, Any]
) -> None:
    # "1e999" is valid JSON, read as infinity, which JSON cannot write back.
    raw = body(api, model, **fields)
    for key in ("1e999", "-1e999"):
        raw = raw.replace(f'"{key}"'.encode(), key.encode())
    answer = answer_of(processor, raw, api)
    if answer.WhichOneof("response") == "request_body":  # the translator left it out
        _, new = routed(answer)
        assert new is not None
        strict_json(new)
        return
    status, reply = immediate(answer)
    assert status == 400
    if api is OPENAI_CHAT:
        assert reply["error"]["type"] == "invalid_request_error"
    else:
        assert reply == {
            "type": "error",
            "error": {
                "type": "invalid_request_error",
                "message": "The request has a number out of range.",
            },
        }


def test_an_error_after_the_router_is_answered_in_the_clients_shape() -> None:
    processor = Processor(make(CONFIG.replace("    default: true\n", "")))
    step = processor.on_request_body(
        body(ANTHROPIC_MESSAGES, "claude-opus-4-1-20250805"), ANTHROPIC_MESSAGES
    )
    assert isinstance(step, Pending)
    status, reply = immediate(processor.on_route_choice(step, None))  # type: ignore[arg-type]
    assert status == 400
    assert reply["type"] == "error" and reply["error"]["type"] == "invalid_request_error"
    assert "claude-opus-4-1-20250805" in reply["error"]["message"]


@pytest.mark.parametrize(
    ("api", "model"), [(OPENAI_CHAT, "creative-model"), (ANTHROPIC_MESSAGES, "fast-model")]
)
def test_a_lone_surrogate_in_a_translated_request_is_forwarded(
    processor: Processor, api: ClientApi, model: str
) -> None:
    # Forwarded as it is when not translated (the client's own bytes); a translated body
    # can carry it escaped, as JSON allows.
    raw = body(api, model).replace(b"the sea.", b"the sea \\udc80")
    _, new = routed(answer_of(processor, raw, api))
    assert new is not None
    assert "\udc80" in json.dumps(strict_json(new), ensure_ascii=False)


TEXT = st.text(st.characters(codec="utf-8"), max_size=40)


@settings(max_examples=150, derandomize=True, deadline=None)
@given(
    to_anthropic=st.booleans(),
    text=TEXT,
    temperature=st.one_of(st.none(), st.floats(allow_nan=False), st.integers()),
    max_tokens=st.one_of(st.none(), st.integers(-5, 10**6), st.floats(allow_nan=False)),
    stream=st.booleans(),
)
def test_a_translated_answer_is_valid_json_for_the_upstream_or_a_4xx(
    processor: Processor,
    to_anthropic: bool,
    text: str,
    temperature: float | int | None,
    max_tokens: float | int | None,
    stream: bool,
) -> None:
    api, model = (OPENAI_CHAT, "creative-model") if to_anthropic else (ANTHROPIC_MESSAGES, "gpt-5")
    value = json.loads(body(api, model, stream=stream))
    value["messages"][-1]["content"] = text or "x"
    for key, field in (("temperature", temperature), ("max_tokens", max_tokens)):
        if field is not None:
            value[key] = field
        else:
            value.pop(key, None)
    raw = json.dumps(value, allow_nan=True).encode()  # floats may be infinite: 1e999 on the wire
    raw = raw.replace(b"-Infinity", b"-1e999").replace(b"Infinity", b"1e999")
    answer = answer_of(processor, raw, api)
    if answer.WhichOneof("response") == "immediate_response":
        status, reply = immediate(answer)
        assert 400 <= status < 500
        assert ("error" in reply) and (("type" in reply) is (api is ANTHROPIC_MESSAGES))
        return
    _, new = routed(answer)
    assert new is not None
    sent = strict_json(new)
    if to_anthropic:
        assert sent["model"] == "claude-sonnet-4-5"
        assert isinstance(sent["max_tokens"], int) and sent["messages"]
        assert {m["role"] for m in sent["messages"]} <= {"user", "assistant"}
    else:
        assert sent["model"] == "gpt-5"
        assert sent["messages"][0] == {"role": "system", "content": "Be brief."}
    assert sent.get("stream", False) is stream


def test_a_token_count_the_gateway_estimates_needs_no_key() -> None:
    # No key variable is set: an OpenAI-compatible provider's count is the gateway's own
    # estimate (nothing reaches the provider), an Anthropic provider's count is forwarded.
    keyless = make(env={})
    estimated = begin_for(COUNT_TOKENS, keyless, "gpt-5.2")
    assert named(estimated) == ("openai/gpt-5.2", "direct", None)
    forwarded = begin_for(COUNT_TOKENS, keyless, "claude-sonnet-4-5")
    assert isinstance(forwarded, ErrorReply) and forwarded.code == "missing_api_key"
    generated = begin_for(ANTHROPIC_MESSAGES, keyless, "gpt-5.2")
    assert isinstance(generated, ErrorReply) and generated.code == "missing_api_key"
