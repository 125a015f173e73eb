"""The four paths through the gateway, end to end through real Envoy, with the official SDKs:
OpenAI client -> OpenAI provider, Anthropic -> Anthropic, OpenAI -> Anthropic and
Anthropic -> OpenAI, each streamed and not.

One gateway serves the module: an OpenAI-interface provider on a FakeOpenAI, an
Anthropic-native provider on a FakeAnthropic (both check the provider's key), an alias for
each, and one provider of each interface on a port where nothing listens. The fakes answer
in their API's exact wire format and refuse what the real API refuses, so a translation the
real API would reject fails here. Streams can be re-cut (``split``) so that the chunk
boundaries the gateway reads fall anywhere: mid-line, mid-UTF-8 character, several events in
one chunk.
"""

from __future__ import annotations

import base64
import itertools
import json
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, cast

import anthropic
import httpx
import openai
import pytest
from anthropic.types import ImageBlockParam, MessageParam, ThinkingConfigParam, ToolParam
from openai.types.chat import ChatCompletionMessageParam

from tests.api_vocabulary import sse_events
from tests.fake_providers import (
    Failure,
    FakeAnthropic,
    FakeOpenAI,
    Recorded,
    Reply,
    ToolCall,
    _Stream,  # the fakes' SSE writer, re-cut below
    estimate_input_tokens,
    thinking_signature,
)
from tests.fakes import free_port

from .conftest import KEYS, Gateway, listener_yaml, start_gateway

pytestmark = pytest.mark.integration

OPENAI, ANTHROPIC = "openai", "anthropic"
OPENAI_KEY, ANTHROPIC_KEY = KEYS["FAKE_OPENAI_KEY"], KEYS["FAKE_ANTHROPIC_KEY"]
CLIENT_KEY = "client-key-never-forwarded"
TIMEOUT = 20.0
GPT, CLAUDE = "gpt-5.2", "claude-sonnet-4-5"
PROVIDER = {OPENAI: f"openai/{GPT}", ANTHROPIC: f"anthropic/{CLAUDE}"}
MODEL = {OPENAI: GPT, ANTHROPIC: CLAUDE}
ALIAS = {OPENAI: "fast-model", ANTHROPIC: "smart-model"}
UPSTREAM_PATH = {OPENAI: "/v1/chat/completions", ANTHROPIC: "/v1/messages"}
# What the gateway sends a translated Anthropic upstream; the 2.x SDK's own default differs.
GATEWAY_ANTHROPIC_VERSION = "2023-06-01"
SDK_ANTHROPIC_VERSION = "2026-10-21"
MAX_BODY = 256 * 1024

# Non-ASCII in every streamed text, so a re-cut stream splits UTF-8 characters too.
TEXT = "Grüße aus Zürich — 日本語 🎉 and some plain words"
# A 1x1 PNG.
PNG = base64.b64encode(
    bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
        "1f15c4890000000d49444154789c6360000002000105e927de0000000049454e44ae426082"
    )
).decode()
OPENAI_TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    },
    {
        "type": "function",
        "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}},
    },
]
CLAUDE_TOOLS: list[ToolParam] = [
    {
        "name": "get_weather",
        "description": "Weather in a city",
        "input_schema": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
    {"name": "get_time", "input_schema": {"type": "object", "properties": {}}},
]


# ---------------------------------------------------------------------------------------------
# Fakes whose streams can be re-cut


class _Recut(_Stream):
    """Writes a stream's bytes as HTTP chunks of ``sizes`` (cycled) instead of one per event,
    with a short gap after each so that Envoy reads them one by one."""

    def __init__(self, *args: Any, sizes: tuple[int, ...], gap_s: float) -> None:
        super().__init__(*args)
        self.gap_s = gap_s
        self.sizes = itertools.cycle(sizes)
        self.next_size = next(self.sizes)
        self.held = bytearray()

    def _chunk(self, data: bytes) -> None:
        if not data:  # the end of the stream: what is held, then the last chunk
            if self.held:
                super()._chunk(bytes(self.held))
                self.held.clear()
            super()._chunk(b"")
            return
        self.held += data
        while len(self.held) >= self.next_size:
            piece = bytes(self.held[: self.next_size])
            del self.held[: self.next_size]
            super()._chunk(piece)
            self.fake.recut_chunks += 1  # type: ignore[attr-defined]
            if self.gap_s:
                time.sleep(self.gap_s)
            self.next_size = next(self.sizes)


class _Recutting:
    split: tuple[int, ...] | None = None  # chunk sizes to re-cut streams into; None: per event
    split_gap_s = 0.002  # after each re-cut chunk
    recut_chunks = 0  # chunks written re-cut, to see that the re-cutting took place

    def _start_stream(self, handler: Any, failure: Failure | None, pause: float) -> _Stream:
        stream: _Stream = super()._start_stream(handler, failure, pause)  # type: ignore[misc]
        if self.split is None:
            return stream
        return _Recut(self, handler, failure, pause, sizes=self.split, gap_s=self.split_gap_s)


class RecutOpenAI(_Recutting, FakeOpenAI):
    pass


class RecutAnthropic(_Recutting, FakeAnthropic):
    pass


# One byte per chunk, written back to back (a gap after each of thousands would be slow).
BYTEWISE = (1,)
# Cuts that land everywhere: single bytes (inside "data:", inside a multi-byte character),
# a few bytes, and chunks holding several events.
SPLITS = (1, 2, 3, 5, 7, 1, 13, 64, 1, 3, 300, 2, 9)


# ---------------------------------------------------------------------------------------------
# The gateway


@pytest.fixture(scope="module")
def oai() -> Iterator[RecutOpenAI]:
    with RecutOpenAI("fake-openai", api_key=OPENAI_KEY) as fake:
        yield fake


@pytest.fixture(scope="module")
def ant() -> Iterator[RecutAnthropic]:
    with RecutAnthropic("fake-anthropic", api_key=ANTHROPIC_KEY) as fake:
        yield fake


@pytest.fixture(scope="module")
def gateway(
    oai: RecutOpenAI, ant: RecutAnthropic, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    config = (
        listener_yaml(f"{MAX_BODY // 1024}KiB")
        + f"""llm_providers:
  - model: openai/{GPT}
    access_key: $FAKE_OPENAI_KEY
    base_url: {oai.base_url()}
    default: true
  - model: anthropic/{CLAUDE}
    access_key: $FAKE_ANTHROPIC_KEY
    base_url: {ant.base_url()}
  - model: openai/gpt-down
    access_key: $FAKE_OPENAI_KEY
    base_url: http://127.0.0.1:{free_port()}/v1
  - model: anthropic/claude-down
    access_key: $FAKE_ANTHROPIC_KEY
    base_url: http://127.0.0.1:{free_port()}/v1
model_aliases:
  {ALIAS[OPENAI]}:
    target: {GPT}
  {ALIAS[ANTHROPIC]}:
    target: {CLAUDE}
"""
    )
    gw = start_gateway(config, tmp_path_factory.mktemp("four-paths"))
    yield gw
    gw.stop()


@pytest.fixture(autouse=True)
def _fresh(oai: RecutOpenAI, ant: RecutAnthropic) -> Iterator[None]:
    for fake in (oai, ant):
        fake.reset()
        fake.split = None
        fake.split_gap_s = 0.002
        fake.recut_chunks = 0
        fake.event_pause_s = 0.0
    yield


def oc(gateway: Gateway) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{gateway.url}/v1", api_key=CLIENT_KEY, max_retries=0, timeout=TIMEOUT
    )


def ac(gateway: Gateway, **kwargs: Any) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=gateway.url, api_key=CLIENT_KEY, max_retries=0, timeout=TIMEOUT, **kwargs
    )


@dataclass(frozen=True)
class Path:
    client: str
    upstream: str

    def __str__(self) -> str:
        return f"{self.client}->{self.upstream}"

    @property
    def translated(self) -> bool:
        return self.client != self.upstream


FOUR = [
    Path(OPENAI, OPENAI),
    Path(ANTHROPIC, ANTHROPIC),
    Path(OPENAI, ANTHROPIC),
    Path(ANTHROPIC, OPENAI),
]


def fake_for(path: Path, oai: RecutOpenAI, ant: RecutAnthropic) -> RecutOpenAI | RecutAnthropic:
    return oai if path.upstream == OPENAI else ant


def other_fake(path: Path, oai: RecutOpenAI, ant: RecutAnthropic) -> RecutOpenAI | RecutAnthropic:
    return ant if path.upstream == OPENAI else oai


def only_request(
    fake: RecutOpenAI | RecutAnthropic, other: RecutOpenAI | RecutAnthropic
) -> Recorded:
    assert not other.received, f"{other.name} was called: {other.received}"
    assert len(fake.received) == 1, fake.received
    return fake.received[0]


def check_upstream_request(got: Recorded, path: Path, stream: bool) -> None:
    """The provider got its own endpoint, its own credential only, its own model id."""
    assert got.method == "POST"
    assert got.route == UPSTREAM_PATH[path.upstream]
    assert got.json["model"] == MODEL[path.upstream]
    for name, value in got.raw_headers:
        assert CLIENT_KEY not in value, (name, value)
    assert not [name for name in got.headers if name.startswith("x-plano-")]
    assert "cookie" not in got.headers
    if path.upstream == OPENAI:
        assert got.headers["authorization"] == f"Bearer {OPENAI_KEY}"
        assert "x-api-key" not in got.headers
        # Anthropic's own headers mean nothing to an OpenAI-compatible provider.
        assert not [name for name in got.headers if name.startswith("anthropic-")]
    else:
        assert got.headers["x-api-key"] == ANTHROPIC_KEY
        assert "authorization" not in got.headers
        expected = SDK_ANTHROPIC_VERSION if path.client == ANTHROPIC else GATEWAY_ANTHROPIC_VERSION
        assert got.headers["anthropic-version"] == expected
    assert got.headers["content-length"] == str(len(got.raw_body))
    assert (got.json.get("stream") is True) == stream


def check_decision(headers: Any, path: Path, routing: str) -> None:
    assert headers["x-plano-model"] == PROVIDER[path.upstream]
    assert headers["x-plano-routing"] == routing


# ---------------------------------------------------------------------------------------------
# Raw server-sent events


def sse(response: httpx.Response) -> list[tuple[str | None, str]]:
    """(event name, data) per event of a streamed response, read whole."""
    return sse_events(response.read(), complete=False)


def anthropic_events(events: list[tuple[str | None, str]]) -> list[dict[str, Any]]:
    """Checks an Anthropic event stream's order; returns each content block with its deltas."""
    parsed = [(name, json.loads(data)) for name, data in events]
    assert all(name == data["type"] for name, data in parsed), parsed
    names = [name for name, _ in parsed if name != "ping"]
    assert names[0] == "message_start", names
    assert names[-2:] == ["message_delta", "message_stop"], names
    start = parsed[0][1]["message"]
    assert start["role"] == "assistant" and start["content"] == [] and start["stop_reason"] is None
    blocks: list[dict[str, Any]] = []
    open_index: int | None = None
    for name, data in parsed[1:-2]:
        if name == "ping":
            continue
        if name == "content_block_start":
            assert open_index is None, f"block {data['index']} opened inside {open_index}"
            assert data["index"] == len(blocks), data
            open_index = data["index"]
            blocks.append({"start": data["content_block"], "deltas": []})
        elif name == "content_block_delta":
            assert data["index"] == open_index, data
            blocks[-1]["deltas"].append(data["delta"])
        elif name == "content_block_stop":
            assert data["index"] == open_index, data
            open_index = None
        else:
            raise AssertionError(f"unexpected event {name} in {names}")
    assert open_index is None, "a block was never stopped"
    delta = parsed[-2][1]
    assert delta["delta"]["stop_reason"] is not None
    assert delta["usage"]["output_tokens"] > 0
    return blocks


def openai_chunks(
    events: list[tuple[str | None, str]], include_usage: bool
) -> list[dict[str, Any]]:
    """Checks an OpenAI chunk stream: chunks, one finish reason last, the usage chunk only
    when asked for, ``[DONE]``. Returns the chunks (without the usage one)."""
    assert all(name is None for name, _ in events), events
    assert events[-1][1] == "[DONE]"
    chunks = [json.loads(data) for _, data in events[:-1]]
    assert all(chunk["object"] == "chat.completion.chunk" for chunk in chunks)
    assert len({chunk["id"] for chunk in chunks}) == 1
    if include_usage:
        usage = chunks.pop()
        assert usage["choices"] == [] and usage["usage"]["completion_tokens"] > 0
    assert all(chunk.get("usage") is None for chunk in chunks)
    assert all(len(chunk["choices"]) == 1 for chunk in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    finishes = [c["choices"][0]["finish_reason"] for c in chunks]
    assert finishes[-1] is not None and all(f is None for f in finishes[:-1]), finishes
    return chunks


def raw_post(
    gateway: Gateway, client: str, body: dict[str, Any], **kwargs: Any
) -> AbstractContextManager[httpx.Response]:
    """An httpx stream of a request in ``client``'s API, with the client's own key."""
    if client == OPENAI:
        url, headers = "/v1/chat/completions", {"authorization": f"Bearer {CLIENT_KEY}"}
    else:
        url = "/v1/messages"
        headers = {"x-api-key": CLIENT_KEY, "anthropic-version": GATEWAY_ANTHROPIC_VERSION}
    headers.update(kwargs.pop("headers", {}))
    return httpx.stream(
        "POST", gateway.url + url, json=body, headers=headers, timeout=TIMEOUT, **kwargs
    )


# ---------------------------------------------------------------------------------------------
# One request through any path, as the client's SDK sees it


@dataclass
class Answer:
    """What a client got, in its own API's terms."""

    headers: Any
    text: str
    finish: str | None  # finish_reason or stop_reason
    usage: dict[str, Any] | None
    message: Any  # the SDK's completion or (final) message; None for an OpenAI stream
    chunks: list[Any]  # an OpenAI stream's chunks


def ask_openai(
    gateway: Gateway,
    model: str,
    messages: list[dict[str, Any]],
    mode: str = "whole",
    **kwargs: Any,
) -> Answer:
    """mode: whole | stream | stream_usage (stream_options.include_usage)."""
    client = oc(gateway)
    # The tests' messages are plain dicts, some of shapes the SDK's types do not admit.
    sent = cast(list[ChatCompletionMessageParam], messages)
    if mode == "whole":
        raw = client.chat.completions.with_raw_response.create(model=model, messages=sent, **kwargs)
        completion = raw.parse()
        choice = completion.choices[0]
        usage = completion.usage.model_dump() if completion.usage else None
        return Answer(
            raw.headers, choice.message.content or "", choice.finish_reason, usage, completion, []
        )
    if mode == "stream_usage":
        kwargs["stream_options"] = {"include_usage": True}
    raw_stream = client.chat.completions.with_raw_response.create(
        model=model, messages=sent, stream=True, **kwargs
    )
    chunks = list(raw_stream.parse())
    with_choices = [chunk for chunk in chunks if chunk.choices]
    text = "".join(chunk.choices[0].delta.content or "" for chunk in with_choices)
    finish = with_choices[-1].choices[0].finish_reason
    usage_chunks = [chunk for chunk in chunks if chunk.usage is not None]
    if mode == "stream_usage":
        assert usage_chunks == [chunks[-1]] and chunks[-1].choices == []
    else:
        assert not usage_chunks, usage_chunks
    usage = usage_chunks[0].usage.model_dump() if usage_chunks else None
    return Answer(raw_stream.headers, text, finish, usage, None, chunks)


def ask_anthropic(
    gateway: Gateway,
    model: str,
    messages: list[dict[str, Any]],
    mode: str = "whole",
    max_tokens: int = 1000,
    **kwargs: Any,
) -> Answer:
    client = ac(gateway)
    # The tests' messages are plain dicts, some of shapes the SDK's types do not admit.
    sent = cast(list[MessageParam], messages)
    pieces: list[str] | None = None
    if mode == "whole":
        raw = client.messages.with_raw_response.create(
            model=model, max_tokens=max_tokens, messages=sent, **kwargs
        )
        headers, message = raw.headers, raw.parse()
    else:
        with client.messages.stream(
            model=model, max_tokens=max_tokens, messages=sent, **kwargs
        ) as stream:
            headers = stream.response.headers
            pieces = list(stream.text_stream)
            message = stream.get_final_message()
    text = "".join(block.text for block in message.content if block.type == "text")
    if pieces is not None:  # the stream helper's text deltas make up the final text
        assert "".join(pieces) == text
    return Answer(headers, text, message.stop_reason, message.usage.model_dump(), message, [])


def ask(gateway: Gateway, path: Path, model: str, prompt: str, mode: str, **kwargs: Any) -> Answer:
    messages = [{"role": "user", "content": prompt}]
    if path.client == OPENAI:
        return ask_openai(gateway, model, messages, mode, **kwargs)
    return ask_anthropic(gateway, model, messages, mode, **kwargs)


MODES = {OPENAI: ("whole", "stream", "stream_usage"), ANTHROPIC: ("whole", "stream")}
PATH_MODES = [
    pytest.param(path, mode, id=f"{path}-{mode}") for path in FOUR for mode in MODES[path.client]
]


# ---------------------------------------------------------------------------------------------
# Text replies on every path


@pytest.mark.parametrize("naming", ["direct", "alias"])
@pytest.mark.parametrize(("path", "mode"), PATH_MODES)
def test_text_reply(
    gateway: Gateway,
    oai: RecutOpenAI,
    ant: RecutAnthropic,
    path: Path,
    mode: str,
    naming: str,
) -> None:
    fake, other = fake_for(path, oai, ant), other_fake(path, oai, ant)
    if mode != "whole":
        fake.split = SPLITS
    fake.script(Reply(text=TEXT, input_tokens=100, output_tokens=9, cache_read_input_tokens=20))
    model = MODEL[path.upstream] if naming == "direct" else ALIAS[path.upstream]
    answer = ask(gateway, path, model, "Say hello", mode)

    assert answer.text == TEXT
    check_decision(answer.headers, path, naming)
    got = only_request(fake, other)
    check_upstream_request(got, path, stream=mode != "whole")
    # Usage as the provider reported it, in the client's terms: OpenAI's prompt tokens
    # count the cached ones, Anthropic's input tokens do not.
    if path.client == OPENAI:
        assert answer.finish == "stop"
        if mode == "stream":
            # Not asked for: no usage chunk, though an Anthropic upstream always reports it.
            assert answer.usage is None
        else:
            assert answer.usage is not None
            assert answer.usage["prompt_tokens"] == 120
            assert answer.usage["completion_tokens"] == 9
            assert answer.usage["total_tokens"] == 129
            assert answer.usage["prompt_tokens_details"]["cached_tokens"] == 20
    else:
        assert answer.finish == "end_turn"
        assert answer.usage is not None
        assert answer.usage["input_tokens"] == 100
        assert answer.usage["cache_read_input_tokens"] == 20
        assert answer.usage["output_tokens"] == 9


@pytest.mark.parametrize(("path", "mode"), PATH_MODES)
def test_default_reply_names_the_provider(
    gateway: Gateway, oai: RecutOpenAI, ant: RecutAnthropic, path: Path, mode: str
) -> None:
    """Unscripted: each fake answers with its name and the prompt; the usage is its estimate."""
    fake = fake_for(path, oai, ant)
    answer = ask(gateway, path, MODEL[path.upstream], "What is up?", mode)
    assert answer.text == f"from {fake.name}: What is up?"
    got = fake.received[0]
    if not (path.client == OPENAI and mode == "stream"):
        assert answer.usage is not None
        prompt = answer.usage.get("prompt_tokens", answer.usage.get("input_tokens"))
        assert prompt == estimate_input_tokens(got.json)


# ---------------------------------------------------------------------------------------------
# Anthropic -> Anthropic: a pass-through but for the model and the credential


ODD_BODY = (
    '{ "max_tokens" : 64 ,\n  "model":  "smart-model",\n'
    '  "messages": [{"role": "user", "content": "caf\\u00e9 \u2615 \\ud83c\\udf89"}],\n'
    '  "x_unknown": {"n": 1.50, "big": 123456789012345678901234567890, "e": 1E2,'
    ' "esc": "\\/\\t", "deep": [[[{}]]], "null": null},\n'
    '  "context_management": {"edits": [{"type": "clear_tool_uses_20250919"}]},\n'
    '  "metadata": {"user_id": "u-1"}, "stream": STREAM }'
)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_anthropic_passthrough_is_byte_for_byte(
    gateway: Gateway, oai: RecutOpenAI, ant: RecutAnthropic, stream: bool
) -> None:
    body = ODD_BODY.replace("STREAM", "true" if stream else "false").encode()
    headers = {
        "content-type": "application/json",
        "x-api-key": CLIENT_KEY,
        "authorization": f"Bearer {CLIENT_KEY}",
        "anthropic-version": "2023-01-01",  # not the gateway's own: it must pass untouched
        "anthropic-beta": "context-management-2025-06-27,interleaved-thinking-2025-05-14",
        "cookie": "session=client",
    }
    with httpx.stream(
        "POST",
        f"{gateway.url}/v1/messages?beta=true",
        content=body,
        headers=headers,
        timeout=TIMEOUT,
    ) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["x-plano-model"] == PROVIDER[ANTHROPIC]
        assert response.headers["x-plano-routing"] == "alias"
        if stream:
            assert response.headers["content-type"].startswith("text/event-stream")
            blocks = anthropic_events(sse(response))
            text = "".join(d["text"] for d in blocks[0]["deltas"])
        else:
            response.read()
            text = response.json()["content"][0]["text"]
    assert text == "from fake-anthropic: café ☕ 🎉"
    got = only_request(ant, oai)
    assert got.path == "/v1/messages?beta=true"
    assert got.raw_body == body.replace(b'"smart-model"', b'"claude-sonnet-4-5"')
    assert got.headers["anthropic-version"] == "2023-01-01"
    assert got.headers["anthropic-beta"] == headers["anthropic-beta"]
    assert got.headers["x-api-key"] == ANTHROPIC_KEY
    assert "authorization" not in got.headers and "cookie" not in got.headers


def test_anthropic_passthrough_with_the_sdk_beta_client(
    gateway: Gateway, oai: RecutOpenAI, ant: RecutAnthropic
) -> None:
    extra = {
        "context_management": {"edits": [{"type": "clear_tool_uses_20250919"}]},
        "output_config": {"effort": "high"},
        "some_future_field": {"kept": [1, 2.5, "three"]},
    }
    message = ac(gateway).beta.messages.create(
        model=CLAUDE,
        max_tokens=2048,
        messages=[{"role": "user", "content": "Hello"}],
        betas=["context-management-2025-06-27", "interleaved-thinking-2025-05-14"],
        thinking={"type": "enabled", "budget_tokens": 1024},
        extra_query={"beta": "true"},
        extra_body=extra,
    )
    thinking, text = message.content
    assert thinking.type == "thinking" and text.type == "text"
    # The signature the provider gave reaches the client unchanged.
    assert thinking.signature == thinking_signature(thinking.thinking)
    assert text.text == "from fake-anthropic: Hello"
    got = only_request(ant, oai)
    assert got.path == "/v1/messages?beta=true"
    assert got.headers["anthropic-version"] == SDK_ANTHROPIC_VERSION
    assert got.headers["anthropic-beta"] == (
        "context-management-2025-06-27,interleaved-thinking-2025-05-14"
    )
    for name, value in extra.items():
        assert got.json[name] == value


def test_anthropic_passthrough_tool_loop_and_thinking_signatures(
    gateway: Gateway, oai: RecutOpenAI, ant: RecutAnthropic
) -> None:
    """The provider verifies its thinking signatures: the gateway must not alter them."""
    ant.script(
        Reply(thinking="Weather first.", tool_calls=[ToolCall("get_weather", {"city": "Oslo"})])
    )
    client = ac(gateway)
    thinking: ThinkingConfigParam = {"type": "enabled", "budget_tokens": 1024}
    question: MessageParam = {"role": "user", "content": "Weather in Oslo?"}
    with client.messages.stream(
        model=CLAUDE, max_tokens=2048, messages=[question], tools=CLAUDE_TOOLS, thinking=thinking
    ) as stream:
        first = stream.get_final_message()
    assert first.stop_reason == "tool_use"
    call = first.content[-1]
    assert call.type == "tool_use"
    # The blocks sent back as the SDK dumps them (a plain dict each, so cast to their params).
    assistant = cast(
        MessageParam,
        {"role": "assistant", "content": [block.model_dump() for block in first.content]},
    )
    answered = client.messages.create(
        model=CLAUDE,
        max_tokens=2048,
        tools=CLAUDE_TOOLS,
        thinking=thinking,
        messages=[
            question,
            assistant,
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "4C"}],
            },
        ],
    )
    assert answered.stop_reason == "end_turn"
    assert len(ant.received) == 2 and not oai.received


# ---------------------------------------------------------------------------------------------
# Translated requests: what the provider receives


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_openai_request_as_anthropic(
    gateway: Gateway, oai: RecutOpenAI, ant: RecutAnthropic, stream: bool
) -> None:
    ant.script(Reply(text="A red dot.", stop="stop_sequence", stop_sequence="END"))
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "You are terse."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is in this picture?"},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
            ],
        },
        {"role": "developer", "content": "Answer in English."},
    ]
    answer = ask_openai(
        gateway,
        ALIAS[ANTHROPIC],
        messages,
        "stream" if stream else "whole",
        stop=["END", "HALT"],
        temperature=1.6,  # OpenAI's 0-2: clamped to Anthropic's 0-1
        top_p=0.9,
        max_completion_tokens=300,
        user="user-7",
        seed=7,  # no Anthropic equivalent: dropped
        frequency_penalty=0.5,
        logprobs=True,
    )
    assert answer.text == "A red dot."
    assert answer.finish == "stop"
    got = only_request(ant, oai)
    check_upstream_request(got, Path(OPENAI, ANTHROPIC), stream)
    expected: dict[str, Any] = {
        "model": CLAUDE,
        "max_tokens": 300,
        "system": [
            {"type": "text", "text": "You are terse."},
            {"type": "text", "text": "Answer in English."},
        ],
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in this picture?"},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": PNG},
                    },
                ],
            }
        ],
        "temperature": 1.0,
        "top_p": 0.9,
        "stop_sequences": ["END", "HALT"],
        "metadata": {"user_id": "user-7"},
    }
    if stream:
        expected["stream"] = True
    assert got.json == expected


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_anthropic_request_as_openai(
    gateway: Gateway, oai: RecutOpenAI, ant: RecutAnthropic, stream: bool
) -> None:
    oai.script(Reply(text="A red dot."))
    answer = ask_anthropic(
        gateway,
        ALIAS[OPENAI],
        [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in this picture?"},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": PNG},
                    },
                ],
            }
        ],
        "stream" if stream else "whole",
        max_tokens=300,
        system=[
            {"type": "text", "text": "You are terse."},
            {"type": "text", "text": "Answer in English.", "cache_control": {"type": "ephemeral"}},
        ],
        stop_sequences=["END", "HALT"],
        metadata={"user_id": "user-7"},
        # Not in the 2.x SDK's signature (its API version dropped them); an older client's.
        extra_body={"temperature": 0.4, "top_p": 0.7, "top_k": 5},
        extra_headers={"anthropic-beta": "prompt-caching-2024-07-31"},
    )
    assert answer.text == "A red dot."
    assert answer.finish == "end_turn"
    got = only_request(oai, ant)
    check_upstream_request(got, Path(ANTHROPIC, OPENAI), stream)
    expected: dict[str, Any] = {
        "model": GPT,
        "messages": [
            {"role": "system", "content": "You are terse.\n\nAnswer in English."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in this picture?"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                ],
            },
        ],
        "max_completion_tokens": 300,
        "temperature": 0.4,
        "top_p": 0.7,
        "stop": ["END", "HALT"],
        "user": "user-7",
    }
    if stream:
        expected |= {"stream": True, "stream_options": {"include_usage": True}}
    assert got.json == expected


@pytest.mark.parametrize(
    ("kwargs", "max_tokens"),
    [
        ({}, 4096),  # Anthropic requires max_tokens: the gateway's default
        ({"max_tokens": 55}, 55),
        ({"max_completion_tokens": 77}, 77),
    ],
    ids=["absent", "max_tokens", "max_completion_tokens"],
)
def test_openai_max_tokens_to_anthropic(
    gateway: Gateway, ant: RecutAnthropic, kwargs: dict[str, Any], max_tokens: int
) -> None:
    ask_openai(gateway, CLAUDE, [{"role": "user", "content": "hi"}], **kwargs)
    assert ant.received[0].json["max_tokens"] == max_tokens


@pytest.mark.parametrize(
    ("sampling", "expected"),
    [
        ({"temperature": 0.3, "top_p": 0.8}, {"temperature": 0.3, "top_p": 0.8}),
        ({"temperature": 2.0, "top_p": 1}, {"temperature": 1.0}),  # top_p 1 means "off"
        ({"temperature": 0}, {"temperature": 0.0}),
        ({}, {}),
    ],
)
def test_openai_sampling_to_anthropic(
    gateway: Gateway, ant: RecutAnthropic, sampling: dict[str, Any], expected: dict[str, Any]
) -> None:
    ask_openai(gateway, CLAUDE, [{"role": "user", "content": "hi"}], **sampling)
    got = ant.received[0].json
    assert {k: got[k] for k in ("temperature", "top_p") if k in got} == expected


def test_anthropic_sampling_to_openai(gateway: Gateway, oai: RecutOpenAI) -> None:
    ask_anthropic(
        gateway,
        GPT,
        [{"role": "user", "content": "hi"}],
        max_tokens=10,
        extra_body={"temperature": 0, "top_p": 1},
    )
    got = oai.received[0].json
    assert (got["temperature"], got["top_p"], got["max_completion_tokens"]) == (0, 1, 10)
    ask_anthropic(gateway, GPT, [{"role": "user", "content": "hi"}])
    assert "temperature" not in oai.received[1].json and "top_p" not in oai.received[1].json


# ---------------------------------------------------------------------------------------------
# Tools: definitions, choices, calls and results, round trip


@pytest.mark.parametrize(
    ("choice", "parallel", "expected"),
    [
        (None, None, None),
        ("auto", None, {"type": "auto"}),
        ("none", None, {"type": "none"}),
        ("required", None, {"type": "any"}),
        (
            {"type": "function", "function": {"name": "get_time"}},
            None,
            {"type": "tool", "name": "get_time"},
        ),
        ("auto", False, {"type": "auto", "disable_parallel_tool_use": True}),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
    ],
)
def test_openai_tools_and_tool_choice_to_anthropic(
    gateway: Gateway, ant: RecutAnthropic, choice: Any, parallel: Any, expected: Any
) -> None:
    kwargs: dict[str, Any] = {"tools": OPENAI_TOOLS}
    if choice is not None:
        kwargs["tool_choice"] = choice
    if parallel is not None:
        kwargs["parallel_tool_calls"] = parallel
    ask_openai(gateway, CLAUDE, [{"role": "user", "content": "hi"}], **kwargs)
    got = ant.received[0].json
    assert got["tools"] == CLAUDE_TOOLS
    assert got.get("tool_choice") == expected


@pytest.mark.parametrize(
    ("choice", "expected", "parallel"),
    [
        (None, None, None),
        ({"type": "auto"}, "auto", None),
        ({"type": "none"}, "none", None),
        ({"type": "any"}, "required", None),
        (
            {"type": "tool", "name": "get_time"},
            {"type": "function", "function": {"name": "get_time"}},
            None,
        ),
        ({"type": "auto", "disable_parallel_tool_use": True}, "auto", False),
    ],
)
def test_anthropic_tools_and_tool_choice_to_openai(
    gateway: Gateway, oai: RecutOpenAI, choice: Any, expected: Any, parallel: Any
) -> None:
    kwargs: dict[str, Any] = {"tools": CLAUDE_TOOLS}
    if choice is not None:
        kwargs["tool_choice"] = choice
    ask_anthropic(gateway, GPT, [{"role": "user", "content": "hi"}], **kwargs)
    got = oai.received[0].json
    assert got["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": CLAUDE_TOOLS[0]["input_schema"],
                "description": "Weather in a city",
            },
        },
        {
            "type": "function",
            "function": {"name": "get_time", "parameters": CLAUDE_TOOLS[1]["input_schema"]},
        },
    ]
    assert got.get("tool_choice") == expected
    assert got.get("parallel_tool_calls") == parallel


def _openai_tool_calls(answer: Answer, mode: str) -> tuple[str | None, list[dict[str, Any]]]:
    """(content, tool calls) of an OpenAI answer, rebuilt from the deltas when streamed."""
    if mode == "whole":
        message = answer.message.choices[0].message
        calls = [call.model_dump(include={"id", "type", "function"}) for call in message.tool_calls]
        return message.content, calls
    calls_by_index: dict[int, dict[str, Any]] = {}
    for chunk in answer.chunks:
        for delta in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            call = calls_by_index.setdefault(
                delta.index, {"id": None, "type": None, "function": {"name": "", "arguments": ""}}
            )
            if delta.id:
                assert call["id"] is None, "a call's id came twice"
                call["id"], call["type"] = delta.id, delta.type
            if delta.function and delta.function.name:
                call["function"]["name"] += delta.function.name
            if delta.function and delta.function.arguments:
                call["function"]["arguments"] += delta.function.arguments
    return answer.text or None, [calls_by_index[i] for i in sorted(calls_by_index)]


@pytest.mark.parametrize("mode", ["whole", "stream"])
def test_openai_tool_loop_through_anthropic(
    gateway: Gateway, oai: RecutOpenAI, ant: RecutAnthropic, mode: str
) -> None:
    if mode == "stream":
        ant.split = SPLITS
    ant.script(
        Reply(
            text="Let me look.",
            tool_calls=[
                ToolCall("get_weather", {"city": "Zürich", "days": [1, 2]}, id="toolu_w1"),
                ToolCall("get_time", {}, id="toolu_t2"),
            ],
        ),
        Reply(text="Sunny, 18 degrees, 10:00."),
    )
    question = {"role": "user", "content": "Weather and time in Zürich?"}
    first = ask_openai(gateway, CLAUDE, [question], mode, tools=OPENAI_TOOLS)
    assert first.finish == "tool_calls"
    content, calls = _openai_tool_calls(first, mode)
    assert content == "Let me look."
    assert [(c["id"], c["type"], c["function"]["name"]) for c in calls] == [
        ("toolu_w1", "function", "get_weather"),
        ("toolu_t2", "function", "get_time"),
    ]
    assert json.loads(calls[0]["function"]["arguments"]) == {"city": "Zürich", "days": [1, 2]}
    assert json.loads(calls[1]["function"]["arguments"]) == {}

    history: list[dict[str, Any]] = [
        question,
        {"role": "assistant", "content": content, "tool_calls": calls},
        {"role": "tool", "tool_call_id": "toolu_w1", "content": "Sunny, 18C"},
        {
            "role": "tool",
            "tool_call_id": "toolu_t2",
            "content": [{"type": "text", "text": "10:00"}],
        },
    ]
    second = ask_openai(gateway, CLAUDE, history, mode, tools=OPENAI_TOOLS)
    assert second.text == "Sunny, 18 degrees, 10:00."
    assert second.finish == "stop"
    got = ant.received[1].json
    assert got["messages"] == [
        {"role": "user", "content": "Weather and time in Zürich?"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Let me look."},
                {
                    "type": "tool_use",
                    "id": "toolu_w1",
                    "name": "get_weather",
                    "input": {"city": "Zürich", "days": [1, 2]},
                },
                {"type": "tool_use", "id": "toolu_t2", "name": "get_time", "input": {}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_w1", "content": "Sunny, 18C"},
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_t2",
                    "content": [{"type": "text", "text": "10:00"}],
                },
            ],
        },
    ]


@pytest.mark.parametrize("mode", ["whole", "stream"])
def test_anthropic_tool_loop_through_openai(
    gateway: Gateway, oai: RecutOpenAI, ant: RecutAnthropic, mode: str
) -> None:
    if mode == "stream":
        oai.split = SPLITS
    oai.script(
        Reply(
            text="Let me look.",
            tool_calls=[
                ToolCall("get_weather", {"city": "Zürich", "days": [1, 2]}, id="call_w1"),
                ToolCall("get_time", {}, id="call_t2"),
            ],
        ),
        Reply(text="Sunny, 18 degrees, 10:00."),
    )
    question = {"role": "user", "content": "Weather and time in Zürich?"}
    first = ask_anthropic(gateway, GPT, [question], mode, tools=CLAUDE_TOOLS)
    assert first.finish == "tool_use"
    blocks = [block.model_dump(exclude_none=True) for block in first.message.content]
    for block in blocks:
        block.pop("caller", None)
    assert blocks == [
        {"type": "text", "text": "Let me look."},
        {
            "type": "tool_use",
            "id": "call_w1",
            "name": "get_weather",
            "input": {"city": "Zürich", "days": [1, 2]},
        },
        {"type": "tool_use", "id": "call_t2", "name": "get_time", "input": {}},
    ]
    history: list[dict[str, Any]] = [
        question,
        {"role": "assistant", "content": blocks},
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "call_w1", "content": "Sunny, 18C"},
                {
                    "type": "tool_result",
                    "tool_use_id": "call_t2",
                    "content": [{"type": "text", "text": "10:00"}],
                    "is_error": False,
                },
                {"type": "text", "text": "Thanks!"},
            ],
        },
    ]
    second = ask_anthropic(gateway, GPT, history, mode, tools=CLAUDE_TOOLS)
    assert second.text == "Sunny, 18 degrees, 10:00."
    assert second.finish == "end_turn"
    got = oai.received[1].json
    arguments = got["messages"][1]["tool_calls"][0]["function"]["arguments"]
    assert got["messages"] == [
        {"role": "user", "content": "Weather and time in Zürich?"},
        {
            "role": "assistant",
            "content": "Let me look.",
            "tool_calls": [
                {
                    "id": "call_w1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": arguments},
                },
                {
                    "id": "call_t2",
                    "type": "function",
                    "function": {"name": "get_time", "arguments": "{}"},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_w1", "content": "Sunny, 18C"},
        {"role": "tool", "tool_call_id": "call_t2", "content": "10:00"},
        {"role": "user", "content": "Thanks!"},
    ]
    assert json.loads(arguments) == {"city": "Zürich", "days": [1, 2]}


# ---------------------------------------------------------------------------------------------
# Finish and stop reasons


TOOL_REPLY = Reply(tool_calls=[ToolCall("get_time", {"tz": "UTC"})])


@pytest.mark.parametrize("mode", ["whole", "stream"])
@pytest.mark.parametrize(
    ("reply", "finish"),
    [
        (Reply(text="Done."), "stop"),
        (Reply(text="Cut short", stop="max_tokens"), "length"),
        (Reply(text="Up to the", stop="stop_sequence", stop_sequence="END"), "stop"),
        (TOOL_REPLY, "tool_calls"),
        (Reply(text="I can't help with that.", stop="refusal"), "content_filter"),
    ],
    ids=["end_turn", "max_tokens", "stop_sequence", "tool_use", "refusal"],
)
def test_anthropic_stop_reasons_as_finish_reasons(
    gateway: Gateway, ant: RecutAnthropic, reply: Reply, finish: str, mode: str
) -> None:
    ant.script(reply)
    answer = ask_openai(
        gateway,
        CLAUDE,
        [{"role": "user", "content": "hi"}],
        mode,
        tools=OPENAI_TOOLS,
        stop=["END"],
    )
    assert answer.finish == finish
    assert answer.text == (reply.text or "")


@pytest.mark.parametrize("mode", ["whole", "stream"])
@pytest.mark.parametrize(
    ("reply", "stop"),
    [
        (Reply(text="Done."), "end_turn"),
        (Reply(text="Cut short", stop="length"), "max_tokens"),
        # OpenAI does not say whether a stop sequence matched.
        (Reply(text="Up to the", stop="stop"), "end_turn"),
        (TOOL_REPLY, "tool_use"),
        (Reply(text="I can't help with that.", stop="content_filter"), "refusal"),
    ],
    ids=["stop", "length", "stop_sequence", "tool_calls", "content_filter"],
)
def test_openai_finish_reasons_as_stop_reasons(
    gateway: Gateway, oai: RecutOpenAI, reply: Reply, stop: str, mode: str
) -> None:
    oai.script(reply)
    answer = ask_anthropic(
        gateway,
        GPT,
        [{"role": "user", "content": "hi"}],
        mode,
        tools=CLAUDE_TOOLS,
        stop_sequences=["END"],
    )
    assert answer.finish == stop
    assert answer.message.stop_sequence is None
    assert answer.text == (reply.text or "")


@pytest.mark.parametrize(("path", "mode"), PATH_MODES)
def test_max_tokens_cut(
    gateway: Gateway, oai: RecutOpenAI, ant: RecutAnthropic, path: Path, mode: str
) -> None:
    """A reply longer than the client's limit is cut by the provider: length / max_tokens."""
    fake = fake_for(path, oai, ant)
    fake.script(Reply(text="a long answer that will never fit in two tokens"))
    limit = {"max_tokens": 2}
    answer = ask(gateway, path, MODEL[path.upstream], "hi", mode, **limit)
    assert answer.text == "a long a"
    assert answer.finish == ("length" if path.client == OPENAI else "max_tokens")
    got = fake.received[0].json
    assert got.get("max_tokens", got.get("max_completion_tokens")) == 2


# ---------------------------------------------------------------------------------------------
# Usage


@pytest.mark.parametrize("mode", ["whole", "stream_usage"])
def test_anthropic_cache_usage_as_openai(gateway: Gateway, ant: RecutAnthropic, mode: str) -> None:
    ant.script(
        Reply(
            text="ok",
            input_tokens=50,
            output_tokens=3,
            cache_read_input_tokens=400,
            cache_creation_input_tokens=25,
        )
    )
    answer = ask_openai(gateway, CLAUDE, [{"role": "user", "content": "hi"}], mode)
    assert answer.usage is not None
    assert answer.usage["prompt_tokens"] == 475  # OpenAI counts the cached ones in
    assert answer.usage["completion_tokens"] == 3
    assert answer.usage["total_tokens"] == 478
    assert answer.usage["prompt_tokens_details"]["cached_tokens"] == 400


# ---------------------------------------------------------------------------------------------
# Thinking / reasoning


@pytest.mark.parametrize("mode", ["whole", "stream"])
def test_openai_reasoning_effort_to_anthropic_thinking_and_back(
    gateway: Gateway, ant: RecutAnthropic, mode: str
) -> None:
    if mode == "stream":
        ant.split = SPLITS
    ant.script(
        Reply(
            thinking="Need the weather first.",
            tool_calls=[ToolCall("get_weather", {"city": "Oslo"})],
        )
    )
    question = {"role": "user", "content": "Weather in Oslo?"}
    first = ask_openai(
        gateway, CLAUDE, [question], mode, reasoning_effort="low", tools=OPENAI_TOOLS
    )
    sent = ant.received[0].json
    assert sent["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert sent["max_tokens"] == 4096 + 2048
    signature = thinking_signature("Need the weather first.")
    if mode == "whole":
        message = first.message.choices[0].message.model_dump()
        reasoning, thinking_blocks = message["reasoning_content"], message["thinking_blocks"]
    else:
        deltas = [chunk.choices[0].delta.model_dump() for chunk in first.chunks if chunk.choices]
        reasoning = "".join(d.get("reasoning_content") or "" for d in deltas)
        thinking_blocks = [entry for d in deltas for entry in d.get("thinking_blocks") or []]
        assert [entry.pop("index") for entry in thinking_blocks] == [0]
    assert reasoning == "Need the weather first."
    assert thinking_blocks == [
        {"type": "thinking", "thinking": "Need the weather first.", "signature": signature}
    ]
    _, calls = _openai_tool_calls(first, mode)
    # The thinking goes back with the call; the provider checks its signature.
    history = [
        question,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": calls,
            "thinking_blocks": thinking_blocks,
        },
        {"role": "tool", "tool_call_id": calls[0]["id"], "content": "4C"},
    ]
    second = ask_openai(gateway, CLAUDE, history, mode, reasoning_effort="low", tools=OPENAI_TOOLS)
    assert second.text.startswith("from fake-anthropic")
    replayed = ant.received[1].json
    assert replayed["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert replayed["messages"][1]["content"][0] == {
        "type": "thinking",
        "thinking": "Need the weather first.",
        "signature": signature,
    }


@pytest.mark.parametrize(
    ("budget", "effort"), [(1024, "low"), (2048, "low"), (5000, "medium"), (20000, "high")]
)
def test_anthropic_thinking_budget_to_reasoning_effort(
    gateway: Gateway, oai: RecutOpenAI, budget: int, effort: str
) -> None:
    ask_anthropic(
        gateway,
        GPT,
        [{"role": "user", "content": "hi"}],
        max_tokens=budget + 1000,
        thinking={"type": "enabled", "budget_tokens": budget},
    )
    assert oai.received[0].json["reasoning_effort"] == effort


@pytest.mark.parametrize("mode", ["whole", "stream"])
def test_openai_reasoning_content_as_anthropic_thinking(
    gateway: Gateway, oai: RecutOpenAI, mode: str
) -> None:
    if mode == "stream":
        oai.split = SPLITS
    oai.script(Reply(thinking="Thinking it through: 日本語.", text=TEXT))
    answer = ask_anthropic(
        gateway,
        GPT,
        [{"role": "user", "content": "hi"}],
        mode,
        max_tokens=4000,
        thinking={"type": "enabled", "budget_tokens": 2048},
    )
    thinking, text = answer.message.content
    assert (thinking.type, thinking.thinking, thinking.signature) == (
        "thinking",
        "Thinking it through: 日本語.",
        "",
    )
    assert (text.type, text.text) == ("text", TEXT)
    # Thinking blocks sent back are dropped: an OpenAI-compatible server has nowhere for them.
    history: list[dict[str, Any]] = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": [block.model_dump() for block in answer.message.content]},
        {"role": "user", "content": "and then?"},
    ]
    ask_anthropic(gateway, GPT, history, mode, max_tokens=4000)
    assert oai.received[1].json["messages"] == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": TEXT},
        {"role": "user", "content": "and then?"},
    ]


# ---------------------------------------------------------------------------------------------
# Streams, raw: the event sequence each client API expects, whatever the upstream's cuts


@pytest.mark.parametrize("split", [None, SPLITS, BYTEWISE], ids=["per-event", "recut", "bytewise"])
@pytest.mark.parametrize("path", [p for p in FOUR if p.client == ANTHROPIC], ids=str)
def test_raw_anthropic_event_stream(
    gateway: Gateway, oai: RecutOpenAI, ant: RecutAnthropic, path: Path, split: Any
) -> None:
    fake = fake_for(path, oai, ant)
    fake.split = split
    if split == BYTEWISE:
        fake.split_gap_s = 0.0
    fake.script(
        Reply(
            thinking="Hmm, 考える.",
            text=TEXT,
            tool_calls=[ToolCall("get_weather", {"city": "Zürich"}, id="toolu_1")],
            input_tokens=30,
            output_tokens=20,
        )
    )
    body = {
        "model": MODEL[path.upstream],
        "max_tokens": 4000,
        "stream": True,
        "messages": [{"role": "user", "content": "hi"}],
        "tools": CLAUDE_TOOLS,
        "thinking": {"type": "enabled", "budget_tokens": 2048},
    }
    with raw_post(gateway, ANTHROPIC, body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert "content-length" not in response.headers
        check_decision(response.headers, path, "direct")
        events = sse(response)
    # Re-cut: many more chunks than events (a chunk may hold several events, or a byte).
    assert (fake.recut_chunks > 2 * len(events)) == (split is not None), fake.recut_chunks
    blocks = anthropic_events(events)
    assert [b["start"]["type"] for b in blocks] == ["thinking", "text", "tool_use"]
    thinking, text, tool = blocks
    assert "".join(d["thinking"] for d in thinking["deltas"] if d["type"] == "thinking_delta") == (
        "Hmm, 考える."
    )
    assert "".join(d["text"] for d in text["deltas"]) == TEXT
    assert {d["type"] for d in text["deltas"]} == {"text_delta"}
    assert (tool["start"]["id"], tool["start"]["name"], tool["start"]["input"]) == (
        "toolu_1",
        "get_weather",
        {},
    )
    partial = "".join(d["partial_json"] for d in tool["deltas"])
    assert json.loads(partial) == {"city": "Zürich"}
    delta = json.loads(events[-2][1])
    assert delta["delta"]["stop_reason"] == "tool_use"
    assert delta["usage"]["output_tokens"] == 20
    assert delta["usage"]["input_tokens"] == 30


@pytest.mark.parametrize("include_usage", [False, True], ids=["no-usage", "usage"])
@pytest.mark.parametrize("split", [None, SPLITS, BYTEWISE], ids=["per-event", "recut", "bytewise"])
@pytest.mark.parametrize("path", [p for p in FOUR if p.client == OPENAI], ids=str)
def test_raw_openai_chunk_stream(
    gateway: Gateway,
    oai: RecutOpenAI,
    ant: RecutAnthropic,
    path: Path,
    split: Any,
    include_usage: bool,
) -> None:
    fake = fake_for(path, oai, ant)
    fake.split = split
    if split == BYTEWISE:
        fake.split_gap_s = 0.0
    fake.script(
        Reply(
            text=TEXT,
            tool_calls=[ToolCall("get_weather", {"city": "Zürich"}, id="toolu_1")],
            input_tokens=30,
            output_tokens=20,
        )
    )
    body: dict[str, Any] = {
        "model": MODEL[path.upstream],
        "stream": True,
        "messages": [{"role": "user", "content": "hi"}],
        "tools": OPENAI_TOOLS,
    }
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    with raw_post(gateway, OPENAI, body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        check_decision(response.headers, path, "direct")
        events = sse(response)
    # Re-cut: many more chunks than events (a chunk may hold several events, or a byte).
    assert (fake.recut_chunks > 2 * len(events)) == (split is not None), fake.recut_chunks
    chunks = openai_chunks(events, include_usage)
    deltas = [chunk["choices"][0]["delta"] for chunk in chunks]
    assert "".join(d.get("content") or "" for d in deltas) == TEXT
    calls = [call for d in deltas for call in d.get("tool_calls") or []]
    assert [(c["index"], c["id"], c["function"]["name"]) for c in calls if c.get("id")] == [
        (0, "toolu_1", "get_weather")
    ]
    assert json.loads("".join(c["function"].get("arguments", "") for c in calls)) == {
        "city": "Zürich"
    }
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    if include_usage:
        usage = json.loads(events[-2][1])["usage"]
        assert (usage["prompt_tokens"], usage["completion_tokens"]) == (30, 20)


@pytest.mark.parametrize("path", [Path(OPENAI, ANTHROPIC), Path(ANTHROPIC, OPENAI)], ids=str)
def test_translated_streams_are_not_buffered(
    gateway: Gateway, oai: RecutOpenAI, ant: RecutAnthropic, path: Path
) -> None:
    fake = fake_for(path, oai, ant)
    fake.script(Reply(text="one two three four", pause_s=0.2))
    start = time.monotonic()
    arrivals: list[float] = []
    if path.client == OPENAI:
        stream = oc(gateway).chat.completions.create(
            model=CLAUDE, messages=[{"role": "user", "content": "hi"}], stream=True
        )
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                arrivals.append(time.monotonic() - start)
    else:
        with ac(gateway).messages.stream(
            model=GPT, max_tokens=100, messages=[{"role": "user", "content": "hi"}]
        ) as s:
            for _ in s.text_stream:
                arrivals.append(time.monotonic() - start)
    total = time.monotonic() - start
    assert len(arrivals) == 4
    # The fake pauses 0.2 s between events: each word arrives as it is sent.
    assert total >= 1.0, total
    assert arrivals[0] < total - 0.5, (arrivals, total)
    assert all(b - a >= 0.1 for a, b in itertools.pairwise(arrivals)), arrivals


# ---------------------------------------------------------------------------------------------
# Provider errors, in the client's shape


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize(
    ("status", "client_status", "error", "openai_type", "code"),
    [
        (529, 503, openai.InternalServerError, "server_error", "overloaded_error"),
        (429, 429, openai.RateLimitError, "rate_limit_error", "rate_limit_error"),
        (500, 500, openai.InternalServerError, "server_error", "api_error"),
        (401, 401, openai.AuthenticationError, "authentication_error", "authentication_error"),
        (400, 400, openai.BadRequestError, "invalid_request_error", "invalid_request_error"),
        (402, 402, openai.APIStatusError, "insufficient_quota", "billing_error"),
    ],
)
def test_anthropic_provider_errors_for_openai_clients(
    gateway: Gateway,
    ant: RecutAnthropic,
    status: int,
    client_status: int,
    error: type[openai.APIStatusError],
    openai_type: str,
    code: str,
    stream: bool,
) -> None:
    ant.fail(Failure.error(status, message=f"upstream said {status}", retry_after=7))
    with pytest.raises(error) as raised:
        oc(gateway).chat.completions.create(
            model=CLAUDE, messages=[{"role": "user", "content": "hi"}], stream=stream
        )
    assert raised.value.status_code == client_status
    assert raised.value.body == {
        "message": f"upstream said {status}",
        "type": openai_type,
        "param": None,
        "code": code,
    }
    response = raised.value.response
    assert response.headers["content-type"] == "application/json"
    assert response.headers["retry-after"] == "7"
    check_decision(response.headers, Path(OPENAI, ANTHROPIC), "direct")


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize(
    ("status", "client_status", "error", "anthropic_type"),
    [
        (429, 429, anthropic.RateLimitError, "rate_limit_error"),
        (503, 529, anthropic.OverloadedError, "overloaded_error"),
        (500, 500, anthropic.InternalServerError, "api_error"),
        (401, 401, anthropic.AuthenticationError, "authentication_error"),
        (400, 400, anthropic.BadRequestError, "invalid_request_error"),
        (404, 404, anthropic.NotFoundError, "not_found_error"),
    ],
)
def test_openai_provider_errors_for_anthropic_clients(
    gateway: Gateway,
    oai: RecutOpenAI,
    status: int,
    client_status: int,
    error: type[anthropic.APIStatusError],
    anthropic_type: str,
    stream: bool,
) -> None:
    oai.fail(Failure.error(status, message=f"upstream said {status}", retry_after=7))
    with pytest.raises(error) as raised:
        if stream:
            with ac(gateway).messages.stream(
                model=GPT, max_tokens=10, messages=[{"role": "user", "content": "hi"}]
            ) as s:
                s.get_final_message()
        else:
            ac(gateway).messages.create(
                model=GPT, max_tokens=10, messages=[{"role": "user", "content": "hi"}]
            )
    assert raised.value.status_code == client_status
    assert raised.value.body == {
        "type": "error",
        "error": {"type": anthropic_type, "message": f"upstream said {status}"},
    }
    response = raised.value.response
    assert response.headers["content-type"] == "application/json"
    assert response.headers["retry-after"] == "7"
    check_decision(response.headers, Path(ANTHROPIC, OPENAI), "direct")


def test_insufficient_quota_is_a_billing_error(gateway: Gateway, oai: RecutOpenAI) -> None:
    oai.fail(Failure.error(429, error_type="insufficient_quota", message="No credit."))
    with pytest.raises(anthropic.RateLimitError) as raised:
        ac(gateway).messages.create(
            model=GPT, max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )
    assert raised.value.body == {
        "type": "error",
        "error": {"type": "billing_error", "message": "No credit."},
    }


def test_untranslated_provider_errors_pass_as_they_are(
    gateway: Gateway, oai: RecutOpenAI, ant: RecutAnthropic
) -> None:
    ant.fail(Failure.error(529))
    with pytest.raises(anthropic.OverloadedError) as overloaded:
        ac(gateway).messages.create(
            model=CLAUDE, max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )
    body = overloaded.value.body
    assert isinstance(body, dict)
    assert body["error"] == {"type": "overloaded_error", "message": "Overloaded"}
    assert body["request_id"].startswith("req_")  # the provider's own body, whole
    check_decision(overloaded.value.response.headers, Path(ANTHROPIC, ANTHROPIC), "direct")

    oai.fail(Failure.error(429, retry_after=3))
    with pytest.raises(openai.RateLimitError) as limited:
        oc(gateway).chat.completions.create(model=GPT, messages=[{"role": "user", "content": "hi"}])
    assert limited.value.code == "rate_limit_exceeded"
    assert limited.value.response.headers["retry-after"] == "3"
    check_decision(limited.value.response.headers, Path(OPENAI, OPENAI), "direct")


def test_anthropic_error_mid_stream_for_openai_client(
    gateway: Gateway, ant: RecutAnthropic
) -> None:
    ant.fail(Failure.stream_error(5, message="Overloaded mid-stream"))
    ant.script(Reply(text="one two three four five six"))
    got: list[str] = []
    with pytest.raises(openai.APIError) as raised:
        for chunk in oc(gateway).chat.completions.create(
            model=CLAUDE, messages=[{"role": "user", "content": "hi"}], stream=True
        ):
            got.append(chunk.choices[0].delta.content or "")
    assert "Overloaded mid-stream" in raised.value.message
    assert "".join(got) == "one two "  # what came before the error


def test_openai_error_mid_stream_for_anthropic_client(gateway: Gateway, oai: RecutOpenAI) -> None:
    # OpenAI's in-stream error has no status; the gateway reads it as a 500: api_error.
    oai.fail(Failure.stream_error(3, message="Broke mid-stream"))
    oai.script(Reply(text="one two three four five six"))
    with (
        pytest.raises(anthropic.APIStatusError) as raised,
        ac(gateway).messages.stream(
            model=GPT, max_tokens=100, messages=[{"role": "user", "content": "hi"}]
        ) as stream,
    ):
        stream.get_final_message()
    assert raised.value.body == {
        "type": "error",
        "error": {"type": "api_error", "message": "Broke mid-stream"},
    }


@pytest.mark.parametrize("path", FOUR, ids=str)
def test_stream_cut_midway_ends_in_an_error_not_a_clean_end(
    gateway: Gateway, oai: RecutOpenAI, ant: RecutAnthropic, path: Path
) -> None:
    """The provider drops the connection after a few events (paused, so the client already
    has its 200 and the first events): the client must see its stream fail, never end well."""
    fake = fake_for(path, oai, ant)
    fake.fail(Failure.cut(4))
    fake.script(Reply(text="one two three four five six", pause_s=0.1))
    body = {
        "model": MODEL[path.upstream],
        "max_tokens": 100,
        "stream": True,
        "messages": [{"role": "user", "content": "hi"}],
    }
    received = b""
    broken = False
    with raw_post(gateway, path.client, body) as response:
        assert response.status_code == 200
        check_decision(response.headers, path, "direct")
        try:
            for piece in response.iter_bytes():
                received += piece
        except httpx.HTTPError:  # the reset is passed on: an incomplete chunked body
            broken = True
    text = received.decode()
    assert "[DONE]" not in text and "message_stop" not in text and 'finish_reason":"' not in text
    if broken:
        return
    # Or the client's stream is closed with an error in its own shape.
    last = text.rstrip().rsplit("\n\n", 1)[-1]
    if path.client == OPENAI:
        assert last.startswith("data: ") and "error" in json.loads(last[len("data: ") :])
    else:
        assert last.startswith("event: error\n")


# Bug: on a translated route, Envoy's own replies are made in the wrong API's shape or are
# translated again as if the provider had sent them (see the reasons).


@pytest.mark.parametrize("path", [Path(OPENAI, ANTHROPIC), Path(ANTHROPIC, OPENAI)], ids=str)
def test_translated_whole_reply_cut_short_never_ends_cleanly(
    gateway: Gateway, oai: RecutOpenAI, ant: RecutAnthropic, path: Path
) -> None:
    """A provider that sends half a body and drops the connection: Envoy answers 502 in the
    client's shape when the client has no headers yet (the response filter's answer to the
    headers had not come back), else the client's response is cut short, as on an
    untranslated route. Never a complete, clean response."""
    fake = fake_for(path, oai, ant)
    fake.fail(Failure.cut(0))
    body = {
        "model": MODEL[path.upstream],
        "max_tokens": 100,
        "messages": [{"role": "user", "content": "hi"}],
    }
    with raw_post(gateway, path.client, body) as response:
        try:
            response.read()
        except httpx.RemoteProtocolError:
            assert response.status_code == 200
            return
    if path.client == OPENAI:
        _openai_error(response, 502)
    else:
        _anthropic_error(response, 502, "api_error")


# ---------------------------------------------------------------------------------------------
# The gateway's own errors, in each client API's shape


def _anthropic_error(response: httpx.Response, status: int, type_: str) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["type"] == "error" and body["error"]["type"] == type_, body
    assert set(body) == {"type", "error"} and set(body["error"]) == {"type", "message"}
    assert body["error"]["message"]
    return str(body["error"]["message"])


def _openai_error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    return dict(error)


ANTHROPIC_HEADERS = {"x-api-key": CLIENT_KEY, "anthropic-version": GATEWAY_ANTHROPIC_VERSION}


@pytest.mark.parametrize(
    "url", ["/v1/messages", "/v1/messages/count_tokens", "/v1/messages?beta=true"]
)
def test_unknown_model_on_messages(
    gateway: Gateway, oai: RecutOpenAI, ant: RecutAnthropic, url: str
) -> None:
    response = httpx.post(
        gateway.url + url,
        headers=ANTHROPIC_HEADERS,
        json={"model": "gpt-4o", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]},
        timeout=TIMEOUT,
    )
    message = _anthropic_error(response, 400, "invalid_request_error")
    assert "gpt-4o" in message and ALIAS[ANTHROPIC] in message
    assert not oai.received and not ant.received


def test_unknown_model_with_the_anthropic_sdk(gateway: Gateway) -> None:
    with pytest.raises(anthropic.BadRequestError) as raised:
        ac(gateway).messages.create(
            model="nope", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
    body = raised.value.body
    assert isinstance(body, dict) and body["error"]["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError) as info:
        oc(gateway).chat.completions.create(
            model="nope", messages=[{"role": "user", "content": "x"}]
        )
    assert info.value.code == "model_not_found"


@pytest.mark.parametrize(
    "content",
    [b"", b"{not json", b"[1, 2]", b'{"model": "gpt-5.2"}'],
    ids=["empty", "not-json", "not-object", "no-messages"],
)
@pytest.mark.parametrize("client", [OPENAI, ANTHROPIC])
def test_bad_bodies(
    gateway: Gateway, oai: RecutOpenAI, ant: RecutAnthropic, client: str, content: bytes
) -> None:
    url = "/v1/chat/completions" if client == OPENAI else "/v1/messages"
    response = httpx.post(
        gateway.url + url,
        content=content,
        headers={"content-type": "application/json", **ANTHROPIC_HEADERS},
        timeout=TIMEOUT,
    )
    if client == OPENAI:
        assert _openai_error(response, 400)["type"] == "invalid_request_error"
    else:
        _anthropic_error(response, 400, "invalid_request_error")
    assert not oai.received and not ant.received


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
@pytest.mark.parametrize("client", [OPENAI, ANTHROPIC])
def test_wrong_method(gateway: Gateway, client: str, method: str) -> None:
    url = "/v1/chat/completions" if client == OPENAI else "/v1/messages"
    response = httpx.request(method, gateway.url + url, headers=ANTHROPIC_HEADERS, timeout=TIMEOUT)
    if client == OPENAI:
        _openai_error(response, 405)
    else:
        _anthropic_error(response, 405, "invalid_request_error")


@pytest.mark.parametrize("size", [MAX_BODY + 1024, 4 * MAX_BODY], ids=["just-over", "far-over"])
@pytest.mark.parametrize(
    "url", ["/v1/chat/completions", "/v1/messages", "/v1/messages/count_tokens"]
)
def test_body_over_max_body_size(
    gateway: Gateway, oai: RecutOpenAI, ant: RecutAnthropic, url: str, size: int
) -> None:
    body = {
        "model": CLAUDE,
        "max_tokens": 5,
        "messages": [{"role": "user", "content": "x" * size}],
    }
    response = httpx.post(gateway.url + url, json=body, headers=ANTHROPIC_HEADERS, timeout=TIMEOUT)
    if url == "/v1/chat/completions":
        assert _openai_error(response, 413)["code"] == "request_too_large"
    else:
        _anthropic_error(response, 413, "request_too_large")
    assert not oai.received and not ant.received


DOWN = [
    pytest.param(OPENAI, "openai/gpt-down", id="openai->openai"),
    pytest.param(ANTHROPIC, "anthropic/claude-down", id="anthropic->anthropic"),
    pytest.param(OPENAI, "anthropic/claude-down", id="openai->anthropic"),
    pytest.param(ANTHROPIC, "openai/gpt-down", id="anthropic->openai"),
]


@pytest.mark.parametrize(("client", "down"), DOWN)
def test_provider_down_with_the_sdks(gateway: Gateway, client: str, down: str) -> None:
    """Nothing listens at the provider's address: a quick 503 in the client's shape, the same
    whichever API the provider speaks."""
    start = time.monotonic()
    if client == OPENAI:
        with pytest.raises(openai.InternalServerError) as raised:
            oc(gateway).chat.completions.create(
                model=down, messages=[{"role": "user", "content": "x"}]
            )
        assert raised.value.status_code == 503
        assert isinstance(raised.value.body, dict)
        assert raised.value.body["type"] == "server_error"
        assert raised.value.body["code"] == "upstream_unavailable"
    else:
        with pytest.raises(anthropic.InternalServerError) as raised_a:
            ac(gateway).messages.create(
                model=down, max_tokens=5, messages=[{"role": "user", "content": "x"}]
            )
        assert raised_a.value.status_code == 503
        body = raised_a.value.body
        assert isinstance(body, dict) and body["type"] == "error"
        assert body["error"]["type"] == "api_error"
        assert "could not be reached" in body["error"]["message"]
    assert time.monotonic() - start < 6


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize(("client", "down"), DOWN)
def test_provider_down_raw(gateway: Gateway, client: str, down: str, stream: bool) -> None:
    """The same, read raw: the client's shape and the decision headers, streamed or not."""
    body = {
        "model": down,
        "max_tokens": 5,
        "stream": stream,
        "messages": [{"role": "user", "content": "x"}],
    }
    with raw_post(gateway, client, body) as response:
        response.read()
    if client == OPENAI:
        assert _openai_error(response, 503)["code"] == "upstream_unavailable"
    else:
        _anthropic_error(response, 503, "api_error")
    assert response.headers["x-plano-model"] == down
    assert response.headers["x-plano-routing"] == "direct"


# ---------------------------------------------------------------------------------------------
# count_tokens


def test_count_tokens_forwarded_to_anthropic(
    gateway: Gateway, oai: RecutOpenAI, ant: RecutAnthropic
) -> None:
    raw = ac(gateway).messages.with_raw_response.count_tokens(
        model=ALIAS[ANTHROPIC],
        system="Be brief.",
        tools=CLAUDE_TOOLS,
        messages=[{"role": "user", "content": "count these words please"}],
    )
    counted = raw.parse()
    got = only_request(ant, oai)
    assert got.path == "/v1/messages/count_tokens"
    assert got.json["model"] == CLAUDE
    assert got.headers["x-api-key"] == ANTHROPIC_KEY and "authorization" not in got.headers
    assert counted.input_tokens == estimate_input_tokens(got.json)  # the provider's own count
    assert raw.headers["x-plano-model"] == PROVIDER[ANTHROPIC]
    assert raw.headers["x-plano-routing"] == "alias"


def test_count_tokens_beta_query_and_headers_kept(
    gateway: Gateway, oai: RecutOpenAI, ant: RecutAnthropic
) -> None:
    # httpx, not the SDK: the 2.x SDK's beta count_tokens sends each beta twice.
    response = httpx.post(
        f"{gateway.url}/v1/messages/count_tokens?beta=true",
        headers={
            "x-api-key": CLIENT_KEY,
            "anthropic-version": SDK_ANTHROPIC_VERSION,
            "anthropic-beta": "token-counting-2024-11-01",
        },
        json={"model": CLAUDE, "messages": [{"role": "user", "content": "hello"}]},
        timeout=TIMEOUT,
    )
    assert response.status_code == 200, response.text
    got = only_request(ant, oai)
    assert got.path == "/v1/messages/count_tokens?beta=true"
    assert got.headers["anthropic-beta"] == "token-counting-2024-11-01"
    assert got.headers["anthropic-version"] == SDK_ANTHROPIC_VERSION
    assert got.headers["x-api-key"] == ANTHROPIC_KEY
    assert response.json() == {"input_tokens": estimate_input_tokens(got.json)}
    check_decision(response.headers, Path(ANTHROPIC, ANTHROPIC), "direct")


def test_count_tokens_estimated_for_an_openai_provider(
    gateway: Gateway, oai: RecutOpenAI, ant: RecutAnthropic
) -> None:
    client = ac(gateway)

    def count(text: str, **kwargs: Any) -> tuple[int, Any]:
        raw = client.messages.with_raw_response.count_tokens(
            model=GPT, messages=[{"role": "user", "content": text}], **kwargs
        )
        return raw.parse().input_tokens, raw.headers

    short, headers = count("hello")
    longer, _ = count("hello " * 200)
    with_system, _ = count("hello", system="You are a very careful assistant. " * 20)
    with_tools, _ = count("hello", tools=CLAUDE_TOOLS)
    assert 0 < short < longer
    assert with_system > short and with_tools > short
    assert not oai.received and not ant.received  # OpenAI has no such endpoint
    assert headers["content-type"] == "application/json"


def test_count_tokens_estimate_for_a_nested_conversation(gateway: Gateway) -> None:
    """Blocks, images and tool results all count; an image costs a fixed amount."""
    client = ac(gateway)
    plain = client.messages.count_tokens(
        model=ALIAS[OPENAI], messages=[{"role": "user", "content": "What is this?"}]
    ).input_tokens
    image: ImageBlockParam = {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": PNG},
    }
    with_image = client.messages.count_tokens(
        model=ALIAS[OPENAI],
        messages=[{"role": "user", "content": [{"type": "text", "text": "What is this?"}, image]}],
    ).input_tokens
    assert with_image > plain


def test_count_tokens_estimate_carries_the_decision(gateway: Gateway) -> None:
    raw = ac(gateway).messages.with_raw_response.count_tokens(
        model=GPT, messages=[{"role": "user", "content": "hello"}]
    )
    assert raw.parse().input_tokens > 0
    check_decision(raw.headers, Path(ANTHROPIC, OPENAI), "direct")


# ---------------------------------------------------------------------------------------------
# Requests a translation cannot put to the other API: the client's 400


def _refused_by_translation(gateway: Gateway, client: str) -> httpx.Response:
    if client == OPENAI:  # Anthropic returns one message: n > 1 would be a silent lie
        body: dict[str, Any] = {
            "model": CLAUDE,
            "n": 2,
            "messages": [{"role": "user", "content": "x"}],
        }
    else:  # a PDF by URL: OpenAI-compatible servers take inline files only
        document = {"type": "document", "source": {"type": "url", "url": "https://x.test/a.pdf"}}
        body = {
            "model": GPT,
            "max_tokens": 5,
            "messages": [{"role": "user", "content": [document, {"type": "text", "text": "x"}]}],
        }
    with raw_post(gateway, client, body) as response:
        response.read()
    return response


@pytest.mark.parametrize("client", [OPENAI, ANTHROPIC])
def test_refused_translation_is_a_400_in_the_client_shape(
    gateway: Gateway, oai: RecutOpenAI, ant: RecutAnthropic, client: str
) -> None:
    response = _refused_by_translation(gateway, client)
    if client == OPENAI:
        assert _openai_error(response, 400)["param"] == "n"
    else:
        message = _anthropic_error(response, 400, "invalid_request_error")
        assert "messages[0].content[0]" in message
    assert not oai.received and not ant.received


@pytest.mark.parametrize("client", [OPENAI, ANTHROPIC])
def test_refused_translation_carries_the_decision(gateway: Gateway, client: str) -> None:
    response = _refused_by_translation(gateway, client)
    assert response.status_code == 400
    path = Path(client, ANTHROPIC if client == OPENAI else OPENAI)
    check_decision(response.headers, path, "direct")
