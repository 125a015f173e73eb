"""Agent turns through the real gateway: one routing decision per human message.

A coding agent names a model on every request (Claude Code: ``claude-sonnet-4-5``-like
names) and re-sends the whole conversation on every step of its tool loop. With
``routing.route_named_models: ["claude-*"]`` such a request goes through the preference
router, which reads only what the person typed: not the system prompt, not the agent's
``<system-reminder>`` blocks, not tool calls or tool results, and nothing after the last
human message. So every request of one agent turn (a human message, then tool calls and
their results) goes where its first request went, and the next human message is routed
afresh. The routes below are far apart on purpose, and the noise the router must not read
(system prompt, reminders, tool results, the agent's own words) fits the *other* route.

Real Envoy, the ext_proc server with the embedded router (`make models`), the real
``anthropic`` and ``openai`` SDKs, faithful provider fakes (tests/fake_providers.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import anthropic
import openai
import pytest

from tests.fake_providers import FakeAnthropic, FakeOpenAI, Reply, ToolCall

from .conftest import KEYS, Gateway, listener_yaml, start_gateway

pytestmark = pytest.mark.integration

NAMED = "claude-sonnet-4-5"  # what the agent names; served when no route fits
CODE_ROUTE, CODE_MODEL = "code_generation", "anthropic/claude-opus-4-1"  # route A: native
POEM_ROUTE, POEM_MODEL = "creative_writing", "openai/gpt-5.2"  # route B: translated
DEFAULT_MODEL = "openai/gpt-4o-mini"
CLIENT_KEY = "client-key-never-forwarded"
TIMEOUT_S = 20.0
LOOP_STEPS = 10  # tool calls in one agent turn: 11 requests

# What a person types. Each is routed with a wide margin by the embedded router
# (`plano-extproc route --explain`: ~0.95 and ~0.99).
ASK_CODE = (
    "Fix the failing unit test in tests/test_parser.py: the tokenizer raises IndexError on "
    "empty input. Run the test suite until it passes."
)
ASK_POEM = "Now write a short poem about the autumn moon over a quiet lake."
SMALL_TALK = "thanks, that's all"

# The noise, each fitting the route the turn is NOT on.
POETIC = (
    "Write a poem about the autumn moon over a quiet lake. Compose a sonnet about the ocean "
    "at dawn. Draft song lyrics for a love ballad, and a short story about a dragon who "
    "learns to paint. Creative writing, poems, stories, lyrics and fiction."
)
CODY = (
    "Traceback (most recent call last):\n"
    '  File "tests/test_parser.py", line 42, in test_empty_input\n'
    "    tokens = tokenize('')\n"
    '  File "parser/tokenizer.py", line 17, in tokenize\n'
    "    first = text[0]\n"
    "IndexError: string index out of range\n"
    "FAILED tests/test_parser.py::test_empty_input - fix the failing unit test, debug and "
    "refactor the source code, then run pytest again"
)
# A system prompt the size of a coding agent's (~47 KB), all about creative writing.
SYSTEM_PROMPT = "\n".join(
    f"Guideline {i}: you are a gifted poet and novelist. {POETIC}" for i in range(160)
)


def reminder(text: str) -> str:
    return f"<system-reminder>\n{text}\n</system-reminder>"


# ---------------------------------------------------------------------------------------------
# Fakes and gateways


@dataclass
class Fakes:
    anthropic: FakeAnthropic  # serves NAMED and CODE_MODEL (told apart by the body's model)
    openai: FakeOpenAI  # serves POEM_MODEL
    default: FakeOpenAI  # serves DEFAULT_MODEL

    def reset(self) -> None:
        for fake in (self.anthropic, self.openai, self.default):
            fake.reset()

    def models(self) -> list[str]:
        """The model each provider request carried, in arrival order per fake."""
        return [
            f"{name}:{r.json['model']}"
            for name, fake in (
                ("anthropic", self.anthropic),
                ("openai", self.openai),
                ("default", self.default),
            )
            for r in fake.received
        ]


def gateway_config(fakes: Fakes, routing: str) -> str:
    return (
        listener_yaml()
        + f"""llm_providers:
  - model: anthropic/{NAMED}
    access_key: $FAKE_ANTHROPIC_KEY
    base_url: {fakes.anthropic.base_url()}
  - model: {CODE_MODEL}
    access_key: $FAKE_ANTHROPIC_KEY
    base_url: {fakes.anthropic.base_url()}
    routing_preferences:
      - name: {CODE_ROUTE}
        description: writing, debugging and refactoring source code, fixing failing tests
          and compiler errors in a software project
  - model: {POEM_MODEL}
    access_key: $FAKE_OPENAI_KEY
    base_url: {fakes.openai.base_url()}
    routing_preferences:
      - name: {POEM_ROUTE}
        description: creative writing such as poems, short stories, song lyrics and fiction
  - model: {DEFAULT_MODEL}
    access_key: $FAKE_OPENAI_KEY
    base_url: {fakes.default.base_url()}
    default: true
{routing}
"""
    )


@pytest.fixture(scope="module")
def fakes() -> Iterator[Fakes]:
    started = Fakes(
        FakeAnthropic("anthropic", api_key=KEYS["FAKE_ANTHROPIC_KEY"]).start(),
        FakeOpenAI("openai", api_key=KEYS["FAKE_OPENAI_KEY"]).start(),
        FakeOpenAI("default", api_key=KEYS["FAKE_OPENAI_KEY"]).start(),
    )
    yield started
    for fake in (started.anthropic, started.openai, started.default):
        fake.stop()


@pytest.fixture(autouse=True)
def _fresh(fakes: Fakes) -> None:
    fakes.reset()


def _gateway(fakes: Fakes, routing: str, tmp: pytest.TempPathFactory) -> Iterator[Gateway]:
    gw = start_gateway(gateway_config(fakes, routing), tmp.mktemp("gateway"))
    try:
        yield gw
    finally:
        gw.stop()


@pytest.fixture(scope="module")
def routed(fakes: Fakes, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """Named claude-* models go through the router. (A generous deadline: a decision takes
    ~15 ms, but a loaded test machine must not turn a route into a fallback.)"""
    routing = 'routing:\n  timeout: 5s\n  route_named_models: ["claude-*"]'
    yield from _gateway(fakes, routing, tmp_path_factory)


@pytest.fixture(scope="module")
def exact(fakes: Fakes, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """The same providers and routes, no route_named_models: a named model is served as is."""
    yield from _gateway(fakes, "", tmp_path_factory)


@pytest.fixture(scope="module")
def router_too_slow(fakes: Fakes, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """Every decision misses its deadline (the encoder takes ~10 ms, the deadline is 1 ms):
    the router fails every time."""
    routing = 'routing:\n  timeout: 1ms\n  route_named_models: ["claude-*"]'
    yield from _gateway(fakes, routing, tmp_path_factory)


def anthropic_client(gw: Gateway) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=gw.url, api_key=CLIENT_KEY, max_retries=0, timeout=TIMEOUT_S
    )


def openai_client(gw: Gateway) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{gw.url}/v1", api_key=CLIENT_KEY, max_retries=0, timeout=TIMEOUT_S
    )


# ---------------------------------------------------------------------------------------------
# What the providers script: an agent turn of tool calls, then a closing text


def tool_step(i: int, kind: str) -> Reply:
    """The i-th tool call of a turn on ``kind`` ("code" or "poem"). The agent's own words
    before each call fit the other route: they come after the human message, unread."""
    if kind == "code":
        calls = [
            ToolCall("Bash", {"command": "pytest -q tests/test_parser.py", "description": "Run"}),
            ToolCall("Read", {"file_path": "parser/tokenizer.py"}),
            ToolCall("Read", {"file_path": "notes/poems.md"}),
        ]
        said = "Meanwhile, here is a little poem about the moon and the sea."
    else:
        calls = [
            ToolCall("Read", {"file_path": "drafts/moon.md"}),
            ToolCall("Bash", {"command": "wc -w drafts/moon.md", "description": "Count"}),
        ]
        said = "Let me debug the Python traceback and refactor the tokenizer code."
    call = calls[i % len(calls)]
    prefix = "toolu" if kind == "code" else "call"
    return Reply(
        text=said if i % 2 else None,
        tool_calls=[ToolCall(call.name, call.arguments, id=f"{prefix}_{kind}_{i:02d}")],
    )


def tool_output(kind: str, i: int) -> str:
    """What a tool printed: it fits the route the turn is not on."""
    return f"[step {i}]\n{POETIC if kind == 'code' else CODY}"


ANTHROPIC_TOOLS = [
    {
        "name": "Bash",
        "description": "Run a shell command.",
        "input_schema": {
            "type": "object",
            "properties": {"command": {"type": "string"}, "description": {"type": "string"}},
            "required": ["command"],
        },
    },
    {
        "name": "Read",
        "description": "Read a file.",
        "input_schema": {
            "type": "object",
            "properties": {"file_path": {"type": "string"}},
            "required": ["file_path"],
        },
    },
]
OPENAI_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": t["name"],
            "description": t["description"],
            "parameters": t["input_schema"],
        },
    }
    for t in ANTHROPIC_TOOLS
]


@dataclass
class Step:
    routing: str
    route: str | None
    model: str


def step_of(headers: Any) -> Step:
    return Step(
        headers.get("x-plano-routing"), headers.get("x-plano-route"), headers.get("x-plano-model")
    )


# ---------------------------------------------------------------------------------------------
# The Anthropic SDK's agent loop (Claude Code's shape)


def human_turn(text: str, noise: str) -> dict[str, Any]:
    """A user turn as Claude Code sends it: reminder blocks first, the typed text last."""
    return {
        "role": "user",
        "content": [
            {"type": "text", "text": reminder(f"Context from the user's notes:\n{noise}")},
            {"type": "text", "text": reminder("Today's date is 2026-12-06.")},
            {"type": "text", "text": text},
        ],
    }


def anthropic_request(
    client: anthropic.Anthropic, messages: list[dict[str, Any]], stream: bool
) -> tuple[Step, list[dict[str, Any]], str | None]:
    """One request of the loop: the route headers, the reply's blocks (as the client sends
    them back) and its stop reason."""
    params: dict[str, Any] = {
        "model": NAMED,
        "max_tokens": 4096,
        "system": [
            {"type": "text", "text": "You are Claude Code."},
            {"type": "text", "text": SYSTEM_PROMPT, "cache_control": {"type": "ephemeral"}},
        ],
        "tools": ANTHROPIC_TOOLS,
        "messages": messages,
    }
    if stream:
        with client.messages.stream(**params) as events:
            message = events.get_final_message()
            headers = events.response.headers
    else:
        raw = client.messages.with_raw_response.create(**params)
        message, headers = raw.parse(), raw.headers
    blocks: list[dict[str, Any]] = []
    for block in message.content:
        if block.type == "text":
            if block.text:
                blocks.append({"type": "text", "text": block.text})
        elif block.type == "tool_use":
            blocks.append(
                {"type": "tool_use", "id": block.id, "name": block.name, "input": block.input}
            )
        else:
            raise AssertionError(f"unexpected block {block}")
    return step_of(headers), blocks, message.stop_reason


def anthropic_agent_turn(
    client: anthropic.Anthropic, messages: list[dict[str, Any]], kind: str, steps: int
) -> list[Step]:
    """Runs one agent turn from the human message at the end of ``messages`` until the model
    stops calling tools (``messages`` grows with it); every request's route."""
    seen: list[Step] = []
    for i in range(steps + 2):  # one more than the script, to see that it stops
        step, blocks, stop = anthropic_request(client, messages, stream=i % 2 == 1)
        seen.append(step)
        messages.append({"role": "assistant", "content": blocks})
        calls = [b for b in blocks if b["type"] == "tool_use"]
        if stop != "tool_use":
            assert not calls, blocks
            return seen
        assert len(calls) == 1, blocks
        messages.append(
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": calls[0]["id"],
                        "content": [{"type": "text", "text": tool_output(kind, i)}],
                        "cache_control": {"type": "ephemeral"},
                    }
                ],
            }
        )
    raise AssertionError(f"the agent turn did not end after {steps} tool calls: {seen}")


def script_turn(fake: FakeAnthropic | FakeOpenAI, kind: str, steps: int, last: str) -> None:
    fake.script(*[tool_step(i, kind) for i in range(steps)], Reply(text=last))


def test_anthropic_sdk_agent_turns_keep_their_route(routed: Gateway, fakes: Fakes) -> None:
    client = anthropic_client(routed)
    on_code = Step("preference", CODE_ROUTE, CODE_MODEL)
    on_poem = Step("preference", POEM_ROUTE, POEM_MODEL)

    # Turn 1: a coding request; its tool results, reminders, system prompt and the agent's
    # words all read like creative writing.
    script_turn(fakes.anthropic, "code", LOOP_STEPS, "The parser test passes now.")
    messages = [human_turn(ASK_CODE, POETIC)]
    seen = anthropic_agent_turn(client, messages, "code", LOOP_STEPS)

    assert seen == [on_code] * (LOOP_STEPS + 1)
    assert fakes.models() == [f"anthropic:{CODE_MODEL.split('/')[1]}"] * (LOOP_STEPS + 1)
    assert messages[-1]["content"] == [{"type": "text", "text": "The parser test passes now."}]
    received = fakes.anthropic.received
    # Native: the client's path, the provider's key (never the client's), the whole body.
    for i, got in enumerate(received):
        assert got.route == "/v1/messages"
        assert got.headers["x-api-key"] == KEYS["FAKE_ANTHROPIC_KEY"]
        assert CLIENT_KEY not in json.dumps(got.headers)
        assert not any(name.startswith("x-plano") for name in got.headers)
        assert len(got.json["messages"]) == 1 + 2 * i
        assert got.json["system"][1]["text"] == SYSTEM_PROMPT
        assert got.json.get("stream", False) is (i % 2 == 1)
    assert fakes.anthropic.pending() == (0, 0)

    # Turn 2: a creative request after all that code; the tool results now read like code.
    fakes.reset()
    script_turn(fakes.openai, "poem", 5, "Here is your poem: the moon lies still on the lake.")
    messages.append(human_turn(ASK_POEM, CODY))
    seen = anthropic_agent_turn(client, messages, "poem", 5)

    assert seen == [on_poem] * 6
    assert fakes.models() == [f"openai:{POEM_MODEL.split('/')[1]}"] * 6
    # Translated: the tool loop reached the OpenAI provider as tool_calls and tool messages.
    last = fakes.openai.received[-1].json
    tool_messages = [m for m in last["messages"] if m["role"] == "tool"]
    assert len(tool_messages) == LOOP_STEPS + 5
    assert tool_messages[-1]["tool_call_id"] == "call_poem_04"
    assert CODY in tool_messages[-1]["content"]
    assert {t["function"]["name"] for t in last["tools"]} == {"Bash", "Read"}
    for got in fakes.openai.received:
        assert got.headers["authorization"] == f"Bearer {KEYS['FAKE_OPENAI_KEY']}"
        assert not any(name.startswith(("anthropic-", "x-api-key")) for name in got.headers)


# ---------------------------------------------------------------------------------------------
# The OpenAI SDK's agent loop (assistant tool_calls, then role "tool" messages)


def openai_agent_turn(
    client: openai.OpenAI, messages: list[dict[str, Any]], kind: str, steps: int
) -> list[Step]:
    seen: list[Step] = []
    for i in range(steps + 2):
        stream = i % 2 == 1
        raw = client.chat.completions.with_raw_response.create(
            model=NAMED,
            messages=messages,  # type: ignore[arg-type]
            tools=OPENAI_TOOLS,  # type: ignore[arg-type]
            stream=stream,
        )
        seen.append(step_of(raw.headers))
        parsed: Any = raw.parse()  # a Stream of chunks, or a ChatCompletion
        finish: str | None = None
        tool_calls: list[dict[str, Any]]
        if stream:
            text, calls = "", dict[int, dict[str, str]]()
            for chunk in parsed:
                for choice in chunk.choices:
                    text += choice.delta.content or ""
                    for call in choice.delta.tool_calls or []:
                        got = calls.setdefault(call.index, {"id": "", "name": "", "args": ""})
                        got["id"] += call.id or ""
                        got["name"] += (call.function and call.function.name) or ""
                        got["args"] += (call.function and call.function.arguments) or ""
                    finish = choice.finish_reason or finish
            tool_calls = [
                {
                    "id": c["id"],
                    "type": "function",
                    "function": {"name": c["name"], "arguments": c["args"]},
                }
                for _, c in sorted(calls.items())
            ]
        else:
            choice = parsed.choices[0]
            text, finish = choice.message.content or "", choice.finish_reason
            tool_calls = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.function.name, "arguments": c.function.arguments},
                }
                for c in choice.message.tool_calls or []
            ]
        assistant: dict[str, Any] = {"role": "assistant", "content": text or None}
        if tool_calls:
            assistant["tool_calls"] = tool_calls
        messages.append(assistant)
        if finish != "tool_calls":
            assert not tool_calls, assistant
            return seen
        assert len(tool_calls) == 1, assistant
        json.loads(tool_calls[0]["function"]["arguments"])  # whole JSON, however streamed
        messages.append(
            {"role": "tool", "tool_call_id": tool_calls[0]["id"], "content": tool_output(kind, i)}
        )
    raise AssertionError(f"the agent turn did not end after {steps} tool calls: {seen}")


def openai_human(text: str, noise: str) -> dict[str, Any]:
    return {
        "role": "user",
        "content": [
            {"type": "text", "text": reminder(f"Context from the user's notes:\n{noise}")},
            {"type": "text", "text": text},
        ],
    }


def test_openai_sdk_agent_turns_keep_their_route(routed: Gateway, fakes: Fakes) -> None:
    client = openai_client(routed)
    script_turn(fakes.anthropic, "code", LOOP_STEPS, "The parser test passes now.")
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": SYSTEM_PROMPT},
        openai_human(ASK_CODE, POETIC),
    ]
    seen = openai_agent_turn(client, messages, "code", LOOP_STEPS)

    assert seen == [Step("preference", CODE_ROUTE, CODE_MODEL)] * (LOOP_STEPS + 1)
    assert fakes.models() == [f"anthropic:{CODE_MODEL.split('/')[1]}"] * (LOOP_STEPS + 1)
    assert messages[-1] == {"role": "assistant", "content": "The parser test passes now."}
    # Translated to Messages: tool_calls became tool_use blocks, tool messages tool_result
    # blocks in user turns; the system message became the system parameter.
    last = fakes.anthropic.received[-1]
    assert last.route == "/v1/messages"
    assert last.headers["x-api-key"] == KEYS["FAKE_ANTHROPIC_KEY"]
    assert "authorization" not in last.headers
    body = last.json
    system = body["system"]
    assert (system if isinstance(system, str) else system[0]["text"]) == SYSTEM_PROMPT
    uses = [b for m in body["messages"] for b in m["content"] if b["type"] == "tool_use"]
    results = [b for m in body["messages"] for b in m["content"] if b["type"] == "tool_result"]
    assert [u["id"] for u in uses] == [f"toolu_code_{i:02d}" for i in range(LOOP_STEPS)]
    assert [r["tool_use_id"] for r in results] == [u["id"] for u in uses]
    assert {t["name"] for t in body["tools"]} == {"Bash", "Read"}

    fakes.reset()
    script_turn(fakes.openai, "poem", 5, "Here is your poem: the moon lies still on the lake.")
    messages.append(openai_human(ASK_POEM, CODY))
    seen = openai_agent_turn(client, messages, "poem", 5)

    assert seen == [Step("preference", POEM_ROUTE, POEM_MODEL)] * 6
    assert fakes.models() == [f"openai:{POEM_MODEL.split('/')[1]}"] * 6
    # Native OpenAI: the conversation arrives as the client wrote it, the model rewritten.
    last = fakes.openai.received[-1].json
    assert last["model"] == "gpt-5.2"
    assert last["messages"] == messages[:-1]


@pytest.mark.parametrize(
    ("noise", "step"),
    [
        (POETIC, Step("preference", POEM_ROUTE, POEM_MODEL)),
        (CODY, Step("preference", CODE_ROUTE, CODE_MODEL)),
        (SYSTEM_PROMPT[:2000], Step("preference", POEM_ROUTE, POEM_MODEL)),
    ],
    ids=["poetic-tool-output", "cody-tool-output", "system-prompt"],
)
def test_the_noise_typed_by_a_person_would_fit_the_other_route(
    routed: Gateway, fakes: Fakes, noise: str, step: Step
) -> None:
    """The control for the tests above: what the router must not read, typed as a human
    message, is routed to the route the agent turn is not on."""
    raw = anthropic_client(routed).messages.with_raw_response.create(
        model=NAMED, max_tokens=256, messages=[{"role": "user", "content": noise}]
    )
    assert step_of(raw.headers) == step


# ---------------------------------------------------------------------------------------------
# Named models without routing, and the fallback to the named model


def ask_anthropic(gw: Gateway, model: str, text: str) -> tuple[Step, str]:
    raw = anthropic_client(gw).messages.with_raw_response.create(
        model=model,
        max_tokens=256,
        system=SYSTEM_PROMPT,
        messages=[human_turn(text, POETIC)],  # type: ignore[list-item]
    )
    message = raw.parse()
    assert message.content[0].type == "text"
    return step_of(raw.headers), message.content[0].text


@pytest.mark.parametrize(
    ("model", "served"), [(NAMED, f"anthropic/{NAMED}"), (CODE_MODEL, CODE_MODEL)]
)
def test_without_route_named_models_a_named_model_is_served_as_named(
    exact: Gateway, fakes: Fakes, model: str, served: str
) -> None:
    # A request that fits the creative-writing route exactly: not read, not rerouted.
    step, text = ask_anthropic(exact, model, ASK_POEM)
    assert step == Step("direct", None, served)
    assert text.startswith("from anthropic: ") and text.endswith(ASK_POEM), text
    assert fakes.models() == [f"anthropic:{served.split('/')[1]}"]


def test_the_router_reads_an_unnamed_request_as_before(routed: Gateway, fakes: Fakes) -> None:
    # route_named_models changes nothing for a request that names no model, or a model that
    # does not match: "auto" is routed, gpt-4o-mini is served as named.
    raw = openai_client(routed).chat.completions.with_raw_response.create(
        model="auto",
        messages=[openai_human(ASK_POEM, CODY)],  # type: ignore[list-item]
    )
    assert step_of(raw.headers) == Step("preference", POEM_ROUTE, POEM_MODEL)
    raw = openai_client(routed).chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=[openai_human(ASK_CODE, POETIC)],  # type: ignore[list-item]
    )
    assert step_of(raw.headers) == Step("direct", None, DEFAULT_MODEL)
    assert fakes.models() == ["openai:gpt-5.2", "default:gpt-4o-mini"]


def test_no_route_fits_falls_back_to_the_named_model(routed: Gateway, fakes: Fakes) -> None:
    # Small talk is "other": the model the agent named serves it, not the default provider.
    step, text = ask_anthropic(routed, NAMED, SMALL_TALK)
    assert step.route is None and step.routing != "preference", step
    assert step.model == f"anthropic/{NAMED}"
    assert text.startswith("from anthropic: ") and text.endswith(SMALL_TALK), text
    # Without a named model the same "other" goes to the default provider.
    raw = openai_client(routed).chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": SMALL_TALK}]
    )
    assert step_of(raw.headers) == Step("default", None, DEFAULT_MODEL)
    assert fakes.models() == [f"anthropic:{NAMED}", "default:gpt-4o-mini"]


def test_a_routed_name_the_config_does_not_serve(
    routed: Gateway, exact: Gateway, fakes: Fakes
) -> None:
    # Claude Code's dated model names: routed by what was typed; when no route fits, the
    # default provider serves it (there is no named model to fall back to), not a 400.
    dated = "claude-sonnet-4-5-20250929"
    step, _ = ask_anthropic(routed, dated, ASK_CODE)
    assert step == Step("preference", CODE_ROUTE, CODE_MODEL)
    step, text = ask_anthropic(routed, dated, SMALL_TALK)
    assert step == Step("default", None, DEFAULT_MODEL)
    assert text.startswith("from default: ") and text.endswith(SMALL_TALK), text
    assert fakes.models() == [f"anthropic:{CODE_MODEL.split('/')[1]}", "default:gpt-4o-mini"]
    # Without route_named_models the same name is what it is: not served, a 400.
    with pytest.raises(anthropic.BadRequestError) as refused:
        ask_anthropic(exact, dated, ASK_CODE)
    assert refused.value.status_code == 400
    assert dated in str(refused.value.body)


def test_router_failure_falls_back_to_the_named_model(
    router_too_slow: Gateway, fakes: Fakes
) -> None:
    # A request that plainly fits a route, but the router cannot answer in time: the named
    # model serves it, for each step of a tool loop alike (a failure is never remembered).
    script_turn(fakes.anthropic, "code", 2, "done")
    messages = [human_turn(ASK_CODE, POETIC)]
    seen = anthropic_agent_turn(anthropic_client(router_too_slow), messages, "code", 2)
    assert [s.model for s in seen] == [f"anthropic/{NAMED}"] * 3, seen
    assert all(s.route is None and s.routing != "preference" for s in seen), seen
    assert fakes.models() == [f"anthropic:{NAMED}"] * 3
