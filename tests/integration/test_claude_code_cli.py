"""The real Claude Code CLI against a fake Anthropic Messages server, no gateway: what it sends
(so the gateway's tests know the shape) and that it takes our minimal SSE replies, a tool loop
included. Skipped, saying why, when the CLI is not installed (`make claude-code`)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.claude_code import require_cli, run_claude

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
