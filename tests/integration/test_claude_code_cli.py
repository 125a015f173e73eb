"""The real Claude Code CLI (`claude -p`, headless).

First against a minimal private Messages server, no gateway: what it sends (so the gateway's
tests know the shape) and that it takes minimal SSE replies, a tool loop included. Then
through the real gateway (Envoy + the ext_proc server) to the provider fakes of
tests/fake_providers.py: natively to an Anthropic provider, and translated to an
OpenAI-compatible one through an alias, a tool loop included. Skipped, saying why, when
Node.js or the CLI is not installed (`make claude-code`)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.claude_code import ClaudeRun, require_cli, run_claude
from tests.fake_providers import FakeAnthropic, FakeOpenAI, Recorded, Reply, ToolCall

from .conftest import KEYS, Gateway, start_gateway

pytestmark = pytest.mark.integration

KEY = "sk-ant-test-claude-code"
MODEL = "plano-test-model"


@dataclass
class Seen:
    path: str
    headers: dict[str, str]  # lower-cased names
    body: dict[str, Any]
    size: int


@dataclass
class FakeMessages:
    """A few dozen lines of Anthropic Messages: answers each POST with the next scripted reply
    (a str is a text reply, a dict a tool_use block) as the minimal SSE sequence; records every
    request."""

    replies: list[str | dict[str, Any]] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    port: int = 0
    _server: ThreadingHTTPServer | None = None

    def start(self) -> FakeMessages:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("content-length", "0")))
                headers = {k.lower(): v for k, v in self.headers.items()}
                fake.seen.append(Seen(self.path, headers, json.loads(raw), len(raw)))
                n = len(fake.seen) - 1
                reply = fake.replies[n] if n < len(fake.replies) else "no more replies"
                data = b"".join(_sse(e) for e in _events(n, fake.seen[-1].body["model"], reply))
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                fake.seen.append(Seen(self.path, dict(self.headers.items()), {}, 0))
                self.send_error(404)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


def _sse(event: dict[str, Any]) -> bytes:
    return f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()


def _events(n: int, model: str, reply: str | dict[str, Any]) -> list[dict[str, Any]]:
    usage = {"input_tokens": 10, "output_tokens": 1}
    message = {"id": f"msg_fake_{n}", "type": "message", "role": "assistant", "model": model}
    start = {"type": "message_start", "message": message | {"content": [], "usage": usage}}
    if isinstance(reply, str):
        block: dict[str, Any] = {"type": "text", "text": ""}
        delta = {"type": "text_delta", "text": reply}
        stop_reason = "end_turn"
    else:
        block = {"type": "tool_use", "id": reply["id"], "name": reply["name"], "input": {}}
        delta = {"type": "input_json_delta", "partial_json": json.dumps(reply["input"])}
        stop_reason = "tool_use"
    return [
        start,
        {"type": "content_block_start", "index": 0, "content_block": block},
        {"type": "content_block_delta", "index": 0, "delta": delta},
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason},
            "usage": {"output_tokens": 5},
        },
        {"type": "message_stop"},
    ]


@pytest.fixture
def fake() -> Iterator[FakeMessages]:
    require_cli()  # skip before starting anything
    server = FakeMessages().start()
    try:
        yield server
    finally:
        server.stop()


def _texts(content: str | list[dict[str, Any]]) -> list[str]:
    if isinstance(content, str):
        return [content]
    return [b["text"] for b in content if b.get("type") == "text"]


def test_say_hi(fake: FakeMessages) -> None:
    fake.replies = ["Hi from the fake Messages server"]
    run = run_claude("say hi", base_url=fake.url, api_key=KEY, model=MODEL)

    assert run.returncode == 0, run.describe()
    assert "Hi from the fake Messages server" in run.stdout, run.describe()
    assert len(fake.seen) == 1, [s.path for s in fake.seen]
    seen = fake.seen[0]
    url = urlsplit(seen.path)
    assert url.path == "/v1/messages"
    assert parse_qs(url.query).get("beta") == ["true"]
    assert seen.headers["x-api-key"] == KEY
    assert seen.headers["anthropic-version"] == "2023-06-01"
    assert "anthropic-beta" in seen.headers
    assert seen.body["stream"] is True
    assert seen.body["model"] == MODEL
    assert isinstance(seen.body["system"], list)
    assert any(t["name"] == "Bash" for t in seen.body["tools"])
    # The typed prompt is the last text block of the last user message, after the context
    # blocks Claude Code adds. (A "system" role message may follow that user message.)
    last_user = [m for m in seen.body["messages"] if m["role"] == "user"][-1]
    texts = _texts(last_user["content"])
    assert texts[-1] == "say hi"
    assert texts[:-1], "no <system-reminder> blocks before the prompt"
    assert all(t.lstrip().startswith("<system-reminder>") for t in texts[:-1]), texts[:-1]


def test_tool_loop(fake: FakeMessages) -> None:
    command = {"command": "echo hello", "description": "Print hello"}
    fake.replies = [
        {"id": "toolu_fake_01", "name": "Bash", "input": command},
        "The command printed hello",
    ]
    run = run_claude(
        "run echo hello",
        base_url=fake.url,
        api_key=KEY,
        model=MODEL,
        allowed_tools=["Bash(echo:*)"],
        max_turns=3,
        output_format="json",
    )

    assert run.returncode == 0, run.describe()
    assert run.json()["result"] == "The command printed hello", run.describe()
    assert len(fake.seen) == 2, [s.path for s in fake.seen]
    first, second = (s.body for s in fake.seen)
    assert "Bash" in [t["name"] for t in first["tools"]]
    assert second["model"] == MODEL
    # The second request replays the assistant's tool_use, then a user turn holding only the
    # tool_result for that id, with the command's output.
    assistant, user = second["messages"][-2:]
    assert assistant["role"] == "assistant"
    assert [b["type"] for b in assistant["content"]] == ["tool_use"]
    assert assistant["content"][0]["id"] == "toolu_fake_01"
    assert assistant["content"][0]["input"]["command"] == "echo hello"
    assert user["role"] == "user"
    assert [b["type"] for b in user["content"]] == ["tool_result"], user["content"]
    result = user["content"][0]
    assert result["tool_use_id"] == "toolu_fake_01"
    assert not result.get("is_error")
    output = result["content"]
    assert "hello" in (output if isinstance(output, str) else json.dumps(output))


# ---------------------------------------------------------------------------------------------
# Through the gateway

# The provider's dated snapshot, which Claude Code reaches by the short name it knows.
HAIKU_SNAPSHOT = "claude-haiku-4-5-20251001"
# Aliases of the OpenAI-compatible provider. Claude Code knows the first name (it sends its
# usual request); for a name it does not know (the second), and for its newest Opus, it adds
# mid-conversation-tool-changes to anthropic-beta and a {"role": "system"} message
# (environment, date) after the user turn.
KNOWN_ALIAS = "claude-sonnet-4-6"
CUSTOM_ALIAS = "coder"
# A name the preference router reads (routing.route_named_models), itself the fallback.
ROUTED_NAME = "claude-opus-4-1"


@dataclass
class Upstreams:
    gateway: Gateway
    anthropic: FakeAnthropic
    openai: FakeOpenAI


@pytest.fixture(scope="module")
def upstreams(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstreams]:
    require_cli()  # skip before starting anything
    anthropic_fake = FakeAnthropic("anthropic", api_key=KEYS["FAKE_ANTHROPIC_KEY"]).start()
    openai_fake = FakeOpenAI("openai", api_key=KEYS["FAKE_OPENAI_KEY"]).start()
    config = f"""
listeners:
  egress_traffic:
    address: 127.0.0.1
    port: {{port}}
    timeout: 20s
llm_providers:
  - model: anthropic/{HAIKU_SNAPSHOT}
    access_key: $FAKE_ANTHROPIC_KEY
    base_url: {anthropic_fake.base_url()}
  - model: anthropic/{ROUTED_NAME}
    access_key: $FAKE_ANTHROPIC_KEY
    base_url: {anthropic_fake.base_url()}
  - model: openai/gpt-5.2
    access_key: $FAKE_OPENAI_KEY
    base_url: {openai_fake.base_url()}
    default: true
    routing_preferences:
      - name: creative_writing
        description: creative writing such as poems, short stories, song lyrics and fiction
routing:
  timeout: 5s  # a loaded test machine must not turn a route into a fallback
  route_named_models: ["claude-opus-*"]
model_aliases:
  claude-haiku-4-5:
    target: anthropic/{HAIKU_SNAPSHOT}
  {KNOWN_ALIAS}:
    target: openai/gpt-5.2
  {CUSTOM_ALIAS}:
    target: openai/gpt-5.2
"""
    try:
        gateway = start_gateway(config, tmp_path_factory.mktemp("claude-code-gateway"))
    except BaseException:
        anthropic_fake.stop()
        openai_fake.stop()
        raise
    try:
        yield Upstreams(gateway, anthropic_fake, openai_fake)
    finally:
        gateway.stop()
        anthropic_fake.stop()
        openai_fake.stop()


@pytest.fixture
def through(upstreams: Upstreams) -> Upstreams:
    upstreams.anthropic.reset()
    upstreams.openai.reset()
    return upstreams


def claude_via_gateway(up: Upstreams, prompt: str, model: str, **kwargs: Any) -> ClaudeRun:
    # The client's key is the gateway's business: it must never reach a provider.
    return run_claude(
        prompt,
        base_url=up.gateway.url,
        api_key=KEY,
        model=model,
        # Claude Code's small/fast model (background requests) resolves too.
        extra_env={"ANTHROPIC_DEFAULT_HAIKU_MODEL": model, "ANTHROPIC_SMALL_FAST_MODEL": model},
        **kwargs,
    )


def _no_client_secrets(got: Recorded) -> None:
    assert KEY not in json.dumps(got.headers), got.headers
    assert not any(name.startswith("x-plano") for name in got.headers), got.headers


def test_via_gateway_to_native_anthropic(through: Upstreams) -> None:
    through.anthropic.script(Reply(text="Hi from the Anthropic provider, through the gateway"))
    run = claude_via_gateway(through, "say hi", "claude-haiku-4-5")

    assert run.returncode == 0, run.describe()
    assert run.stdout.strip() == "Hi from the Anthropic provider, through the gateway"
    assert not through.openai.received
    assert len(through.anthropic.received) == 1, [r.path for r in through.anthropic.received]
    got = through.anthropic.received[0]
    assert got.method == "POST"
    assert got.path == "/v1/messages?beta=true"  # the query kept
    assert got.headers["x-api-key"] == KEYS["FAKE_ANTHROPIC_KEY"]  # the provider's key
    assert "authorization" not in got.headers
    _no_client_secrets(got)
    assert got.headers["anthropic-version"] == "2023-06-01"
    assert "claude-code-20250219" in got.headers["anthropic-beta"].split(",")  # passed through
    assert got.headers["x-app"] == "cli"
    body = got.json
    assert body["model"] == HAIKU_SNAPSHOT  # the alias resolved, the body rewritten
    assert body["stream"] is True
    assert "Bash" in [t["name"] for t in body["tools"]]
    assert isinstance(body["system"], list) and body["system"]
    assert "thinking" in body and "metadata" in body  # the rest of the body untouched
    assert _texts(body["messages"][-1]["content"])[-1] == "say hi"


def _via_gateway_to_openai(through: Upstreams, alias: str) -> None:
    through.openai.script(Reply(text="Hi from the OpenAI provider, through the gateway"))
    run = claude_via_gateway(through, "say hi", alias)

    assert run.returncode == 0, run.describe()
    assert run.stdout.strip() == "Hi from the OpenAI provider, through the gateway"
    assert not through.anthropic.received
    assert len(through.openai.received) == 1, [r.path for r in through.openai.received]
    got = through.openai.received[0]
    assert got.route == "/v1/chat/completions"
    assert got.headers["authorization"] == f"Bearer {KEYS['FAKE_OPENAI_KEY']}"
    assert "x-api-key" not in got.headers
    assert not [name for name in got.headers if name.startswith("anthropic-")], got.headers
    _no_client_secrets(got)
    # A valid chat-completions request (the fake refuses anything else): the system blocks
    # as a system message, the user turn as one message, the tools as functions.
    body = got.json
    assert body["model"] == "gpt-5.2"
    assert body["stream"] is True
    roles = [m["role"] for m in body["messages"]]
    assert roles[0] == "system" and "user" in roles, roles
    assert set(roles) <= {"system", "user"}, roles
    user = [m for m in body["messages"] if m["role"] == "user"][-1]
    content = user["content"]
    text = content if isinstance(content, str) else "\n".join(_texts(content))
    assert text.rstrip().endswith("say hi"), text[-200:]
    assert body["tools"], body.keys()
    assert all(t["type"] == "function" for t in body["tools"])
    bash = next(t["function"] for t in body["tools"] if t["function"]["name"] == "Bash")
    assert bash["parameters"]["type"] == "object"
    assert "command" in bash["parameters"]["properties"]
    for name in ("system", "thinking", "metadata", "context_management", "max_tokens"):
        assert name not in body, name  # Anthropic's fields translated, not passed on


def test_via_gateway_to_openai_by_alias(through: Upstreams) -> None:
    _via_gateway_to_openai(through, KNOWN_ALIAS)


# Claude Code's newest Opus sends the system message too: sent through the router (it matches
# route_named_models, the config does not serve it), it reaches the OpenAI default. The
# system-role message becomes an OpenAI system message where it stands.
@pytest.mark.parametrize("model", [CUSTOM_ALIAS, "claude-opus-4-8"])
def test_via_gateway_to_openai_names_claude_code_does_not_know(
    through: Upstreams, model: str
) -> None:
    _via_gateway_to_openai(through, model)


def test_tool_loop_via_gateway_to_openai(through: Upstreams) -> None:
    command = {"command": "echo plano-tool-loop-ok", "description": "Print a marker"}
    through.openai.script(
        Reply(tool_calls=[ToolCall("Bash", command, id="call_plano_bash_01")]),
        Reply(text="The command printed plano-tool-loop-ok"),
    )
    run = claude_via_gateway(
        through,
        "run echo plano-tool-loop-ok",
        KNOWN_ALIAS,
        allowed_tools=["Bash(echo:*)"],
        max_turns=3,
        output_format="json",
    )

    assert run.returncode == 0, run.describe()
    assert run.json()["result"] == "The command printed plano-tool-loop-ok", run.describe()
    assert not through.anthropic.received
    assert len(through.openai.received) == 2, [r.path for r in through.openai.received]
    first, second = (r.json for r in through.openai.received)
    assert "Bash" in [t["function"]["name"] for t in first["tools"]]
    # The second request: the conversation so far, with the assistant's tool call (translated
    # back from Claude Code's tool_use) and its result as a tool message.
    assert second["messages"][: len(first["messages"])] == first["messages"]
    assistant, tool = second["messages"][-2:]
    assert assistant["role"] == "assistant"
    (call,) = assistant["tool_calls"]
    assert call["id"] == "call_plano_bash_01"
    assert call["type"] == "function"
    assert call["function"]["name"] == "Bash"
    assert json.loads(call["function"]["arguments"])["command"] == "echo plano-tool-loop-ok"
    assert tool["role"] == "tool"
    assert tool["tool_call_id"] == "call_plano_bash_01"
    output = tool["content"]
    output = output if isinstance(output, str) else "\n".join(_texts(output))
    assert "plano-tool-loop-ok" in output
    assert "needs approval" not in output


def test_agent_turn_routed_by_what_the_person_typed(through: Upstreams) -> None:
    """route_named_models with the real CLI: its request carries ~80 KB of system prompt,
    tools and <system-reminder> blocks, and the router reads only the typed prompt; both
    requests of the tool loop go to the route the prompt fits (the creative one, on the
    OpenAI provider), not to the named Opus model."""
    command = {"command": "echo the moon lies still", "description": "Print the poem"}
    through.openai.script(
        Reply(tool_calls=[ToolCall("Bash", command, id="call_plano_poem_01")]),
        Reply(text="The poem is printed"),
    )
    run = claude_via_gateway(
        through,
        "Write a short poem about the autumn moon over a quiet lake, and print it with echo.",
        ROUTED_NAME,
        allowed_tools=["Bash(echo:*)"],
        max_turns=3,
        output_format="json",
    )

    assert run.returncode == 0, run.describe()
    assert run.json()["result"] == "The poem is printed", run.describe()
    assert not through.anthropic.received, [r.json["model"] for r in through.anthropic.received]
    assert [r.json["model"] for r in through.openai.received] == ["gpt-5.2", "gpt-5.2"]
    tool = through.openai.received[1].json["messages"][-1]
    assert tool["role"] == "tool" and "the moon lies still" in str(tool["content"])


def test_agent_turn_no_route_fits_falls_back_to_the_named_model(through: Upstreams) -> None:
    through.anthropic.script(Reply(text="Hello from Opus"))
    run = claude_via_gateway(through, "say hi", ROUTED_NAME)

    assert run.returncode == 0, run.describe()
    assert run.stdout.strip() == "Hello from Opus"
    assert not through.openai.received
    assert [r.json["model"] for r in through.anthropic.received] == [ROUTED_NAME]
