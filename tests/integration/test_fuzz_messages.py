"""Generated Anthropic Messages requests thrown at a real gateway (Envoy + the ext_proc server)
in front of an Anthropic-native provider (FakeAnthropic) and an OpenAI-interface one
(FakeOpenAI), as an adversarial Anthropic client would: valid-ish bodies of every block kind,
broken JSON, odd encodings, model names of every kind, query strings, anthropic-version and
anthropic-beta headers, wrong methods and paths, and ``/v1/messages/count_tokens`` too.

Whatever is sent, the gateway must answer with a status it documents (200, 400, 404, 405,
413), or with the status the provider itself gave a request it refused, always in
Anthropic's error shape (valid UTF-8 JSON, a non-empty message); a 200 must be a valid
``message`` (or ``{"input_tokens"}`` for a count), a streamed 200 a valid event sequence; a
provider must get strict JSON on its own path under its own credential only (never the
client's), and the gateway's log must stay free of tracebacks and ``envoy_bug``.

The fakes refuse what the real APIs refuse, so a translated request the real API would
refuse shows up as the provider's 400. One property goes further: a body that FakeAnthropic
itself accepts, translated for the OpenAI-interface provider, must be accepted there too.

Seeded and bounded: ``make test`` runs a few hundred examples in about a minute;
``PLANO_FUZZ_EXAMPLES=5000`` runs as many (per test) by hand.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st

from tests.api_vocabulary import (
    ANTHROPIC_ERROR_TYPES,
    SCALARS,
    STOP_REASONS,
    json_values,
    sse_events,
)
from tests.fake_providers import FakeAnthropic, FakeOpenAI, _ApiError, thinking_signature

from .conftest import KEYS, Gateway, listener_yaml, start_gateway

pytestmark = pytest.mark.integration

EXAMPLES = int(os.environ.get("PLANO_FUZZ_EXAMPLES", "200"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,  # the same examples every run: CI is reproducible
    suppress_health_check=list(HealthCheck),
    database=None,
)
SMALL = settings(FUZZ, max_examples=max(1, EXAMPLES // 2))

OPENAI_KEY, ANTHROPIC_KEY = KEYS["FAKE_OPENAI_KEY"], KEYS["FAKE_ANTHROPIC_KEY"]
CLIENT_SECRET = "client-secret-never-forwarded"
GPT, CLAUDE = "gpt-5.2", "claude-sonnet-4-5"
NATIVE, TRANSLATED = f"anthropic/{CLAUDE}", f"openai/{GPT}"
MODEL_ID = {NATIVE: CLAUDE, TRANSLATED: GPT}
MAX_BODY = 256 * 1024
GATEWAY_VERSION = "2023-06-01"  # what the gateway sends when the client sends none
KNOWN_VERSIONS = ("2023-06-01", "2023-01-01", "2026-10-21")

# Names the gateway resolves without the router, and the provider each one reaches.
DIRECT = {
    NATIVE: NATIVE,
    TRANSLATED: TRANSLATED,
    GPT: TRANSLATED,
    "smart-model": NATIVE,
    "fast-model": TRANSLATED,
}
# Sent through the preference router (routing.route_named_models: claude-*): either
# provider may serve them, the named one (or the default) when no route fits.
ROUTED = (CLAUDE, "claude-haiku-4-5", "claude-sonnet-4-5-20250929", "claude-3-opus-20240229")
AUTO = ("", "auto", "plano/auto", " auto ")
# What the gateway answers itself; a provider's own refusal keeps the provider's status.
DOCUMENTED = {200, 400, 404, 405, 413}

PNG = base64.b64encode(
    bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
        "1f15c4890000000d49444154789c6360000002000105e927de0000000049454e44ae426082"
    )
).decode()
PDF = base64.b64encode(b"%PDF-1.4\n%fuzz\n").decode()


# ---------------------------------------------------------------------------------------------
# Fakes that remember what they answered


@dataclass
class _Answered:
    statuses: list[int] = field(default_factory=list)
    crashes: list[str] = field(default_factory=list)  # a bug of the fake, not the gateway
    lock: threading.Lock = field(default_factory=threading.Lock)


# What the fakes answer a body nested too deeply for them to read (below).
TOO_DEEP = "The request nests too deeply for this fake provider to read."


class _Remembering:
    """The status of every answer a fake sent (errors and JSON through ``_send``, streams
    through ``_start_stream``), and any exception of its own."""

    answered: _Answered

    def _send(self, handler: Any, status: int, *args: Any, **kwargs: Any) -> None:
        with self.answered.lock:
            self.answered.statuses.append(status)
        super()._send(handler, status, *args, **kwargs)  # type: ignore[misc]

    def _start_stream(self, *args: Any) -> Any:
        with self.answered.lock:
            self.answered.statuses.append(200)
        return super()._start_stream(*args)  # type: ignore[misc]

    def _answer(self, *args: Any) -> None:
        try:
            super()._answer(*args)  # type: ignore[misc]
        except RecursionError:
            # The fakes read and walk JSON with Python's recursion, which nesting some 900
            # levels deep exhausts in their threads: such a body is refused, as an API
            # refuses a body it cannot read, rather than dropping the connection.
            raise _ApiError(400, "invalid_request_error", TOO_DEEP) from None
        except Exception as exc:
            if type(exc).__name__ not in ("_ApiError", "_InjectedError", "_StreamEnded"):
                with self.answered.lock:
                    self.answered.crashes.append(repr(exc))
            raise


class Anthropic(_Remembering, FakeAnthropic):
    pass


class OpenAI(_Remembering, FakeOpenAI):
    pass


@pytest.fixture(scope="module")
def ant() -> Iterator[Anthropic]:
    fake = Anthropic("fuzz-anthropic", api_key=ANTHROPIC_KEY)
    fake.answered = _Answered()
    with fake:
        yield fake


@pytest.fixture(scope="module")
def oai() -> Iterator[OpenAI]:
    fake = OpenAI("fuzz-openai", api_key=OPENAI_KEY)
    fake.answered = _Answered()
    with fake:
        yield fake


@dataclass
class Watched:
    gateway: Gateway
    read: int = 0  # how much of the log the examples before this one checked

    def new_log(self) -> str:
        data = self.gateway.log.read_bytes()
        new, self.read = data[self.read :], len(data)
        return new.decode("utf-8", "replace")


@pytest.fixture(scope="module")
def gw(ant: Anthropic, oai: OpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Watched]:
    config = (
        listener_yaml(f"{MAX_BODY // 1024}KiB")
        + f"""llm_providers:
  - model: {NATIVE}
    access_key: $FAKE_ANTHROPIC_KEY
    base_url: {ant.base_url()}
    default: true
    routing_preferences:
      - name: code_review
        description: reviewing, explaining and debugging existing code
  - model: {TRANSLATED}
    access_key: $FAKE_OPENAI_KEY
    base_url: {oai.base_url()}
    routing_preferences:
      - name: code_generation
        description: writing new code, functions, scripts or programs from a specification
model_aliases:
  smart-model:
    target: {CLAUDE}
  fast-model:
    target: {GPT}
  claude-haiku-4-5:
    target: {GPT}
routing:
  route_named_models: ["claude-*"]
"""
    )
    gateway = start_gateway(config, tmp_path_factory.mktemp("fuzz-messages"))
    watched = Watched(gateway)
    yield watched
    gateway.stop()
    log = watched.new_log()  # what no test checked: the shutdown's
    assert "Traceback" not in log, log[-3000:]
    assert "envoy_bug" not in log, log[-3000:]


# ---------------------------------------------------------------------------------------------
# Strategies: what an Anthropic client (or an attacker) sends

JSON_VALUES = json_values(max_leaves=10)
WORDS = st.sampled_from(
    ["Write a poem about the sea", "Review this function for bugs", "hi", "Grüße 日本語 🎉",
     "write a python script that sorts a list", "What is 2+2?", " ", ""]
)  # fmt: skip
TEXT = WORDS | WORDS | st.text(max_size=80)
NONEMPTY = WORDS.filter(bool) | st.text(min_size=1, max_size=60)
TOOL_NAMES = ("get_weather", "get_time", "Bash", "read-file")
TOOL_ID = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_", min_size=4, max_size=12).map(
    lambda s: "toolu_" + s
)
CACHE = st.sampled_from([{"type": "ephemeral"}, {"type": "ephemeral", "ttl": "1h"}])


def weighted(*choices: tuple[int, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """One of the strategies, each ``weight`` times as likely as a weight of 1 (one_of's
    choice of a branch is far from uniform once branches differ in size)."""
    options = [strategy for weight, strategy in choices for _ in range(weight)]
    return st.sampled_from(range(len(options))).flatmap(lambda i: options[i])


def _rare(draw: st.DrawFn, odds: int) -> bool:
    """True one time in ``odds``; the simplest example (what Hypothesis tries first and
    shrinks to) is the common case."""
    return draw(st.integers(0, odds - 1)) == odds - 1


def _with_optional(block: dict[str, Any], draw: st.DrawFn, **optional: Any) -> dict[str, Any]:
    for key, strategy in optional.items():
        if _rare(draw, 4):
            block[key] = draw(strategy)
    return block


@st.composite
def text_block(draw: st.DrawFn) -> dict[str, Any]:
    block = {"type": "text", "text": draw(TEXT if _rare(draw, 10) else NONEMPTY)}
    return _with_optional(block, draw, cache_control=CACHE)


@st.composite
def image_block(draw: st.DrawFn) -> dict[str, Any]:
    source = draw(
        weighted(
            (
                6,
                st.sampled_from(
                    [
                        {"type": "base64", "media_type": "image/png", "data": PNG},
                        {"type": "base64", "media_type": "image/jpeg", "data": PNG},
                        {"type": "url", "url": "https://example.com/cat.png"},
                    ]
                ),
            ),
            (
                1,
                st.sampled_from(
                    [
                        {"type": "file", "file_id": "file_011CNha8iCJcU1wXNR6q4V8w"},
                        {"type": "base64", "media_type": "image/bmp", "data": PNG},
                    ]
                ),
            ),
            (1, st.fixed_dictionaries({"type": st.just("base64")}, optional={"data": SCALARS})),
        )
    )
    return _with_optional({"type": "image", "source": source}, draw, cache_control=CACHE)


@st.composite
def document_block(draw: st.DrawFn) -> dict[str, Any]:
    source = draw(
        weighted(
            (
                4,
                st.sampled_from(
                    [
                        {"type": "base64", "media_type": "application/pdf", "data": PDF},
                        {"type": "text", "media_type": "text/plain", "data": "A plain document."},
                        {"type": "content", "content": [{"type": "text", "text": "Part one."}]},
                    ]
                ),
            ),
            (1, st.just({"type": "url", "url": "https://example.com/paper.pdf"})),
        )
    )
    return _with_optional({"type": "document", "source": source}, draw, title=st.text(max_size=10))


@st.composite
def tool_result_block(draw: st.DrawFn, tool_use_id: str) -> dict[str, Any]:
    content = draw(
        weighted(
            (1, st.none()),
            (3, TEXT),
            (2, st.lists(text_block(), max_size=2)),
            (1, st.lists(text_block() | image_block(), max_size=2)),
            (1, st.lists(document_block(), min_size=1, max_size=1)),
        )
    )
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": tool_use_id}
    if content is not None:
        block["content"] = content
    return _with_optional(block, draw, is_error=st.booleans(), cache_control=CACHE)


def tool_use_block(tool_use_id: str, name: str, tool_input: Any) -> dict[str, Any]:
    return {"type": "tool_use", "id": tool_use_id, "name": name, "input": tool_input}


@st.composite
def thinking_block(draw: st.DrawFn) -> dict[str, Any]:
    thinking = draw(NONEMPTY)
    if draw(st.booleans()):
        return {"type": "redacted_thinking", "data": draw(st.text(min_size=1, max_size=20))}
    signature = draw(st.text()) if _rare(draw, 5) else thinking_signature(thinking)
    return {"type": "thinking", "thinking": thinking, "signature": signature}


ODD_BLOCKS: list[dict[str, Any]] = [
    {"type": "search_result", "source": "https://x", "title": "t", "content": []},
    {"type": "container_upload", "file_id": "file_1"},
    {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {}},
    {"type": "mystery"},
    {"text": "no type"},
]
ODD_BLOCK = st.sampled_from(ODD_BLOCKS) | st.dictionaries(
    st.sampled_from(["type", "text", "id", "source"]), JSON_VALUES, max_size=3
)


@st.composite
def conversation(draw: st.DrawFn) -> tuple[list[dict[str, Any]], set[str]]:
    """Alternating turns that a real client would send (tool calls answered in the next user
    turn), with now and then an odd block; and the tool names it used."""
    messages: list[dict[str, Any]] = []
    used: set[str] = set()
    pending: list[str] = []
    turns = draw(st.sampled_from([1, 1, 1, 2, 2, 3, 4]))
    for t in range(turns):
        blocks = [draw(tool_result_block(call_id)) for call_id in pending]
        pending = []
        extra = weighted(
            (12, text_block()), (2, image_block()), (1, document_block()), (1, ODD_BLOCK)
        )
        blocks += draw(st.lists(extra, min_size=0 if blocks else 1, max_size=3))
        if len(blocks) == 1 and blocks[0].keys() == {"type", "text"} and draw(st.booleans()):
            messages.append({"role": "user", "content": blocks[0]["text"]})
        else:
            messages.append({"role": "user", "content": blocks})
        if t == turns - 1:
            break
        answer: list[dict[str, Any]] = []
        if _rare(draw, 4):
            answer.append(draw(thinking_block()))
        answer += draw(st.lists(text_block(), max_size=2))
        for _ in range(draw(st.integers(0, 2))):
            call_id = draw(TOOL_ID)
            if call_id in pending:
                continue
            name = draw(st.sampled_from(TOOL_NAMES))
            tool_input = draw(
                weighted(
                    (5, st.dictionaries(st.text(max_size=6), JSON_VALUES, max_size=3)),
                    (1, JSON_VALUES),
                )
            )
            answer.append(tool_use_block(call_id, name, tool_input))
            pending.append(call_id)
            used.add(name)
        if _rare(draw, 10):
            answer.append(draw(ODD_BLOCK))
        messages.append({"role": "assistant", "content": answer if answer else draw(NONEMPTY)})
    if _rare(draw, 6):  # a prefilled answer for the model to continue
        messages.append({"role": "assistant", "content": draw(NONEMPTY)})
    return messages, used


RANDOM_MESSAGE = st.fixed_dictionaries(
    {
        "role": st.sampled_from(["user", "assistant", "system", "tool"]) | st.text(max_size=8),
        "content": TEXT | st.lists(text_block() | ODD_BLOCK, max_size=3) | JSON_VALUES,
    },
    optional={"name": st.text(max_size=5)},
)


def tool_definition(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "description": f"The {name} tool",
        "input_schema": {
            "type": "object",
            "properties": {"arg": {"type": "string"}},
            "required": [],
        },
    }


TOOL_CHOICE = weighted(
    (3, st.sampled_from([{"type": "auto"}, {"type": "any"}, {"type": "none"}])),
    (1, st.builds(lambda n: {"type": "tool", "name": n}, st.sampled_from(TOOL_NAMES))),
    (
        1,
        st.builds(
            lambda kind, flag: {"type": kind, "disable_parallel_tool_use": flag},
            st.sampled_from(["auto", "any"]),
            st.booleans(),
        ),
    ),
    (1, JSON_VALUES),
)
MODEL = weighted(
    *[(2, st.just(name)) for name in sorted(DIRECT)],
    *[(1, st.just(name)) for name in ROUTED],
    (1, st.sampled_from(AUTO)),
    (1, st.sampled_from(["gpt-4o", "openai/nope", "anthropic/claude-nope", "nope", "\udc80",
                         "fast-model\x00", "SMART-MODEL", "anthropic/", "/"])),
    (1, st.text(max_size=30)),
    (1, JSON_VALUES.filter(lambda v: not isinstance(v, str))),
)  # fmt: skip
ABSENT = object()


def _maybe(draw: st.DrawFn, body: dict[str, Any], key: str, strategy: Any, odds: int = 3) -> None:
    """Sets ``body[key]`` one time in ``odds``."""
    if _rare(draw, odds):
        body[key] = draw(strategy)


@st.composite
def messages_value(draw: st.DrawFn, count_tokens: bool) -> dict[str, Any]:
    """A Messages body as a JSON value: mostly one a client would send, some wrong."""
    body: dict[str, Any] = {}
    model = draw(weighted((8, MODEL), (1, st.just(ABSENT))))
    if model is not ABSENT:
        body["model"] = model
    used: set[str] = set()
    if not _rare(draw, 12):
        if not _rare(draw, 5):
            messages, used = draw(conversation())
            body["messages"] = messages
        else:
            body["messages"] = draw(
                weighted((3, st.lists(RANDOM_MESSAGE, min_size=1, max_size=4)), (1, JSON_VALUES))
            )
    if not count_tokens or _rare(draw, 4):
        if not _rare(draw, 10):
            body["max_tokens"] = draw(st.integers(1, 8192))
        elif draw(st.booleans()):
            body["max_tokens"] = draw(
                weighted(
                    (3, st.sampled_from([0, -1, 2**70, 1.5, "100", True, None])), (1, JSON_VALUES)
                )
            )
    if used or _rare(draw, 4):
        names = sorted(used | set(draw(st.sets(st.sampled_from(TOOL_NAMES), max_size=2))))
        tools: Any = [tool_definition(name) for name in names]
        if _rare(draw, 6):
            tools.append({"type": "web_search_20250305", "name": "web_search", "max_uses": 2})
        if _rare(draw, 8):
            tools = draw(JSON_VALUES)
        body["tools"] = tools
        _maybe(draw, body, "tool_choice", TOOL_CHOICE)
    _maybe(
        draw,
        body,
        "system",
        weighted((4, TEXT), (4, st.lists(text_block(), max_size=3)), (1, JSON_VALUES)),
        odds=2,
    )
    _maybe(
        draw,
        body,
        "stream",
        weighted((4, st.just(True)), (2, st.just(False)), (1, JSON_VALUES)),
        odds=2,
    )
    _maybe(
        draw,
        body,
        "stop_sequences",
        weighted((4, st.lists(st.text(max_size=6), max_size=6)), (1, JSON_VALUES)),
    )
    _maybe(draw, body, "temperature", weighted((4, st.floats(0, 1)), (1, SCALARS)))
    _maybe(draw, body, "top_p", weighted((3, st.floats(0, 1)), (1, SCALARS)), odds=4)
    _maybe(draw, body, "top_k", weighted((3, st.integers(0, 500)), (1, SCALARS)), odds=4)
    _maybe(
        draw,
        body,
        "metadata",
        weighted((4, st.fixed_dictionaries({"user_id": st.text(max_size=20)})), (1, JSON_VALUES)),
        odds=4,
    )
    _maybe(
        draw,
        body,
        "thinking",
        weighted(
            (
                4,
                st.sampled_from(
                    [
                        {"type": "enabled", "budget_tokens": 1024},
                        {"type": "enabled", "budget_tokens": 4000},
                        {"type": "adaptive"},
                        {"type": "disabled"},
                        {"type": "enabled"},
                    ]
                ),
            ),
            (1, JSON_VALUES),
        ),
        odds=6,
    )
    _maybe(
        draw,
        body,
        "output_config",
        weighted(
            (
                3,
                st.sampled_from(
                    [
                        {"effort": "low"},
                        {"effort": "max"},
                        {"format": {"type": "json_schema", "schema": {"type": "object"}}},
                    ]
                ),
            ),
            (1, JSON_VALUES),
        ),
        odds=8,
    )
    for key, value in draw(
        st.dictionaries(
            st.sampled_from(["service_tier", "container", "mcp_servers", "context_management",
                             "inference_geo", "x", "n", "stream_options"])
            | st.text(max_size=10),
            JSON_VALUES,
            max_size=3,
        )
    ).items():  # fmt: skip
        body.setdefault(key, value)
    return body


MUTATIONS = ["none"] * 30 + [
    "truncate", "bom", "utf16", "duplicate_model", "huge_number", "nan", "infinity", "deep",
    "garbage", "not_object", "trailing", "lone_escape", "lone_surrogate_utf8",
    "invalid_utf8", "big", "empty",
]  # fmt: skip
DEPTHS = weighted(
    (3, st.sampled_from([100, 600, 900, 940, 960, 970, 975, 980, 985, 990, 1000, 3000])),
    (1, st.integers(min_value=50, max_value=5000)),
)
# Where a deep value goes: a field nobody reads, one the translator copies (a tool's schema),
# one the token estimate reads (the messages' text), one the router reads.
DEEP_PLACES = ["top", "metadata", "tool_schema", "tool_input", "content", "system"]


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def _deep(raw: bytes, depth: int, place: str) -> bytes:
    nested = _nested(depth)
    if place == "metadata":
        return raw.replace(b"{", b'{"metadata": {"user_id": "u", "x": ' + nested + b"}, ", 1)
    if place == "tool_schema":
        tool = b'{"name": "deep", "input_schema": {"type": "object", "x": ' + nested + b"}}"
        return raw.replace(b"{", b'{"tools": [' + tool + b"], ", 1)
    if place == "tool_input":
        turn = (
            b'{"role": "user", "content": "hi"}, {"role": "assistant", "content": '
            b'[{"type": "tool_use", "id": "toolu_deep", "name": "deep", "input": {"x": '
            + nested
            + b'}}]}, {"role": "user", "content": [{"type": "tool_result", '
            b'"tool_use_id": "toolu_deep", "content": "ok"}]}'
        )
        tool = b'{"name": "deep", "input_schema": {"type": "object"}}'
        return raw.replace(b"{", b'{"tools": [' + tool + b'], "messages": [' + turn + b"], ", 1)
    if place == "content":
        return raw.replace(
            b"{",
            b'{"messages": [{"role": "user", "content": [{"type": "text", "text": "x", '
            b'"citations": ' + nested + b"}]}], ",
            1,
        )
    if place == "system":
        return raw.replace(b"{", b'{"system": [{"type": "text", "text": "s", "x": ' + nested
                           + b"}], ", 1)  # fmt: skip
    return raw.replace(b"{", b'{"x": ' + nested + b", ", 1)


@st.composite
def messages_bodies(draw: st.DrawFn, count_tokens: bool = False) -> bytes:
    body = draw(messages_value(count_tokens))
    text = json.dumps(
        body,
        ensure_ascii=draw(st.booleans()),
        indent=draw(st.sampled_from([None, 0, 2])),
        separators=draw(st.sampled_from([None, (",", ":"), (" , ", " : ")])),
    )
    raw = text.encode("utf-8", "surrogatepass")
    mutation = draw(st.sampled_from(MUTATIONS))
    if mutation == "truncate":
        raw = raw[: draw(st.integers(min_value=0, max_value=max(0, len(raw) - 1)))]
    elif mutation == "bom":
        raw = b"\xef\xbb\xbf" + raw
    elif mutation == "utf16":
        raw = text.encode("utf-16", "surrogatepass")
    elif mutation == "duplicate_model":
        model = draw(st.sampled_from(sorted(DIRECT)))
        raw = f'{{"model": "{model}", '.encode() + raw[1:] if raw.startswith(b"{") else raw
    elif mutation == "huge_number":
        key = draw(st.sampled_from([b"temperature", b"max_tokens", b"top_k", b"top_p"]))
        number = draw(st.sampled_from([b"1e999", b"-1e999", b"1" + b"0" * 5000, b"1e-999"]))
        raw = raw.replace(b"{", b'{"' + key + b'": ' + number + b", ", 1)
    elif mutation == "nan":
        raw = raw.replace(b"{", b'{"top_p": NaN, ', 1)
    elif mutation == "infinity":
        raw = raw.replace(b"{", b'{"temperature": -Infinity, ', 1)
    elif mutation == "deep":
        raw = _deep(raw, draw(DEPTHS), draw(st.sampled_from(DEEP_PLACES)))
    elif mutation == "garbage":
        raw = draw(st.binary(max_size=200))
    elif mutation == "not_object":
        raw = json.dumps(draw(JSON_VALUES)).encode()
    elif mutation == "trailing":
        raw = raw + draw(st.sampled_from([b" ", b"\n", b"x", b"}", b",{}"]))
    elif mutation == "lone_escape":
        where = draw(st.sampled_from([b'"system": ', b'"x": ', b'"metadata": {"user_id": ']))
        close = b"}" if b"metadata" in where else b""
        raw = raw.replace(b"{", b"{" + where + b'"\\udc80\\ud800x"' + close + b", ", 1)
    elif mutation == "lone_surrogate_utf8":
        raw = raw.replace(b"{", b'{"system": "\xed\xb2\x80", ', 1)  # CESU-style, not UTF-8
    elif mutation == "invalid_utf8":
        raw = raw.replace(b"{", b'{"system": "\xff\xfe\xc3", ', 1)
    elif mutation == "big":
        size = draw(st.sampled_from([200 * 1024, MAX_BODY - 10, MAX_BODY + 1, 400 * 1024]))
        raw = raw.replace(b"{", b'{"pad": "' + b"p" * size + b'", ', 1)
    elif mutation == "empty":
        raw = b""
    return raw


HEADER_TEXT = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=30)


@st.composite
def client_headers(draw: st.DrawFn) -> dict[str, str]:
    headers: dict[str, str] = {}
    credential = draw(st.sampled_from(["x-api-key", "authorization", "both"]))
    if credential in ("x-api-key", "both"):
        headers["x-api-key"] = CLIENT_SECRET
    if credential in ("authorization", "both"):
        headers["authorization"] = f"Bearer {CLIENT_SECRET}"
    version = draw(
        weighted(
            (4, st.sampled_from([None, GATEWAY_VERSION, GATEWAY_VERSION, "2026-10-21"])),
            (1, st.sampled_from(["2099-01-01", "", "2023-06-01,2023-06-01"]) | HEADER_TEXT),
        )
    )
    if version is not None:
        headers["anthropic-version"] = version
    beta = draw(
        weighted(
            (4, st.sampled_from(
                [None, None, "prompt-caching-2024-07-31",
                 "interleaved-thinking-2025-05-14,fine-grained-tool-streaming-2025-05-14",
                 "claude-code-20250219"]
            )),
            (1, HEADER_TEXT),
        )
    )  # fmt: skip
    if beta is not None:
        headers["anthropic-beta"] = beta
    content_type = draw(
        st.sampled_from(["application/json"] * 6 + ["text/plain", "application/x-www-form", ""])
    )
    if content_type:
        headers["content-type"] = content_type
    for name, value in draw(
        st.dictionaries(
            st.sampled_from(["x-plano-model", "x-plano-route", "cookie", "proxy-authorization",
                             "api-key", "x-request-id", "anthropic-dangerous-direct-browser-access",
                             "accept", "x-stainless-lang"]),
            HEADER_TEXT,
            max_size=3,
        )
    ).items():  # fmt: skip
        headers.setdefault(name, value)
    return headers


QUERIES = st.sampled_from(["", "", "", "?beta=true", "?beta=true", "?beta=false&x=1", "?", "?%ff"])


# ---------------------------------------------------------------------------------------------
# What a client may get back


def _refuse(name: str) -> None:
    raise ValueError(name)


@contextlib.contextmanager
def _deep_recursion() -> Iterator[None]:
    """Room for these checks to read and compare bodies nested as deep as the gateway
    accepts: the test runner's own stack is deeper than the gateway's."""
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 20_000))
    try:
        yield
    finally:
        sys.setrecursionlimit(limit)


def _strict(raw: bytes) -> Any:
    """What a provider or a client got, as strict JSON: ValueError for NaN/Infinity (1e999
    is JSON; Python reads it as infinity), bytes that are not UTF-8, or anything else
    json.loads refuses."""
    with _deep_recursion():
        return json.loads(raw.decode("utf-8"), parse_constant=_refuse)


def _client_json(raw: bytes) -> Any:
    """What a client sent, read as the gateway documents: JSON in UTF-8 (a byte-order mark
    allowed), UTF-16 or UTF-32, strictly decoded (no encoded surrogates); no NaN/Infinity."""
    with _deep_recursion():
        return json.loads(raw.decode(json.detect_encoding(raw)), parse_constant=_refuse)


# Below this depth of nested arrays and objects the gateway must read a body; from about
# here on its parser may give up (Python's recursion limit), and refuse it with a 400.
PARSER_DEPTH = 900


def _depth(value: Any) -> int:
    """How deep arrays and objects nest in a JSON value (without recursion)."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            level += 1
            deepest = max(deepest, level)
            stack.extend(
                (child, level) for child in (item.values() if isinstance(item, dict) else item)
            )
    return deepest


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_error(response: httpx.Response) -> dict[str, Any]:
    """Anthropic's error shape, valid UTF-8 JSON, a non-empty message."""
    assert response.headers.get("content-type", "").startswith("application/json"), response.headers
    body: dict[str, Any] = _strict(response.content)
    assert body["type"] == "error", body
    error = body["error"]
    assert isinstance(error, dict) and error["type"] in ANTHROPIC_ERROR_TYPES, body
    assert isinstance(error["message"], str) and error["message"].strip(), body
    if response.status_code < 500:
        assert error["type"] not in ("api_error", "overloaded_error", "timeout_error"), body
    return body


def check_message(body: Any) -> None:
    """A non-streamed Messages response, as the Anthropic SDK reads it."""
    assert isinstance(body, dict), body
    assert body["type"] == "message" and body["role"] == "assistant", body
    assert isinstance(body["id"], str) and isinstance(body["model"], str), body
    assert isinstance(body["content"], list), body
    for block in body["content"]:
        assert isinstance(block, dict) and isinstance(block.get("type"), str), block
        if block["type"] == "text":
            assert isinstance(block["text"], str), block
        elif block["type"] == "tool_use":
            assert isinstance(block["id"], str) and block["id"], block
            assert isinstance(block["name"], str) and isinstance(block["input"], dict), block
        elif block["type"] == "thinking":
            assert isinstance(block["thinking"], str) and isinstance(block["signature"], str)
    assert body["stop_reason"] in STOP_REASONS, body
    assert body.get("stop_sequence") is None or isinstance(body["stop_sequence"], str), body
    usage = body["usage"]
    for key in ("input_tokens", "output_tokens"):
        assert _is_int(usage[key]) and usage[key] >= 0, usage


def check_stream(raw: bytes) -> str:
    """A streamed Messages response: message_start first, then well-nested content blocks,
    then message_delta and message_stop, or an ``error`` event that ends it. Returns how it
    ended."""
    parsed = []
    for name, data in sse_events(raw):
        value = json.loads(data, parse_constant=_refuse)
        assert isinstance(value, dict) and value.get("type") == name, (name, data)
        if name != "ping":
            parsed.append(value)
    assert parsed, raw[:300]
    kinds = [value["type"] for value in parsed]
    if kinds[-1] == "error":
        error = parsed[-1]["error"]
        assert error["type"] in ANTHROPIC_ERROR_TYPES and error["message"], parsed[-1]
        assert "message_stop" not in kinds, kinds
        parsed, kinds = parsed[:-1], kinds[:-1]
        ended = "error"
        if not kinds:
            return ended
    else:
        assert kinds[-2:] == ["message_delta", "message_stop"], kinds
        ended = "message_stop"
    assert kinds[0] == "message_start", kinds
    start = parsed[0]["message"]
    assert start["role"] == "assistant" and start["content"] == [], start
    assert kinds.count("message_start") == 1, kinds
    open_index: int | None = None
    next_index = 0
    for value in parsed[1:]:
        kind = value["type"]
        if kind == "content_block_start":
            assert open_index is None and value["index"] == next_index, (kinds, value)
            open_index, next_index = value["index"], next_index + 1
            assert isinstance(value["content_block"]["type"], str), value
        elif kind == "content_block_delta":
            assert value["index"] == open_index, (kinds, value)
            assert isinstance(value["delta"]["type"], str), value
        elif kind == "content_block_stop":
            assert value["index"] == open_index, (kinds, value)
            open_index = None
        elif kind == "message_delta":
            assert open_index is None, kinds
            assert value["delta"]["stop_reason"] in STOP_REASONS, value
            assert _is_int(value["usage"]["output_tokens"]), value
        elif kind == "message_stop":
            pass
        else:
            raise AssertionError(f"unexpected event {kind} in {kinds}")
    return ended


# ---------------------------------------------------------------------------------------------
# What the provider got


def _expected_provider(client: Any, count_tokens: bool) -> str | None:
    """The provider a body must reach ("*": the router or the default decides), or None when
    the gateway must refuse it."""
    if not isinstance(client, dict):
        return None
    messages = client.get("messages")
    if not isinstance(messages, list) or not messages:
        return None
    model = client.get("model")
    if model is None or (isinstance(model, str) and model.strip() in AUTO):
        return NATIVE if count_tokens else "*"  # the default (a count never asks the router)
    if not isinstance(model, str):
        return None
    if model in DIRECT:
        return DIRECT[model]
    if model == CLAUDE:
        return NATIVE if count_tokens else "*"
    if model == "claude-haiku-4-5":
        return TRANSLATED if count_tokens else "*"
    if model.startswith("claude-"):
        # A name route_named_models sends through the router that no provider serves goes
        # to the default (NATIVE here), its token counts too.
        return NATIVE if count_tokens else "*"
    return None


def _anthropic_accepts(client: Any, count_tokens: bool, version: str) -> bool:
    """Whether FakeAnthropic (the real API's rules) takes this body as it is."""
    if not isinstance(client, dict) or version not in KNOWN_VERSIONS:
        return False
    try:
        FakeAnthropic("judge")._validate(client, count_tokens, version)
    except Exception:  # its _ApiError: refused
        return False
    return True


@dataclass
class Sent:
    path: str
    raw: bytes
    headers: dict[str, str]
    count_tokens: bool


def check_provider_requests(
    sent: Sent, ant: Anthropic, oai: OpenAI, client: Any
) -> tuple[str | None, Any]:
    """Every request a provider got: its own path, strict JSON, its own credential only.
    Returns the provider that got the request (None: none did) and the body it got."""
    received = [(NATIVE, got) for got in ant.received] + [(TRANSLATED, got) for got in oai.received]
    assert len(received) <= 1, received
    if not received:
        return None, None
    provider, got = received[0]
    assert got.method == "POST", got
    if provider == NATIVE:
        expected = "/v1/messages/count_tokens" if sent.count_tokens else "/v1/messages"
    else:
        assert not sent.count_tokens, "a token count went to a provider that cannot count"
        expected = "/v1/chat/completions"
    assert got.route == expected, (got.path, sent.path)
    forwarded = _strict(got.raw_body)  # never NaN, Infinity or broken JSON to a provider
    assert isinstance(forwarded, dict), got.raw_body[:300]
    assert forwarded.get("model") == MODEL_ID[provider], (forwarded.get("model"), provider)
    for name, value in got.raw_headers:
        assert CLIENT_SECRET not in value, (name, value)
    assert not [name for name in got.headers if name.startswith("x-plano-")], got.headers
    assert "cookie" not in got.headers and "proxy-authorization" not in got.headers
    assert "api-key" not in got.headers
    if "content-length" in got.headers:
        assert got.headers["content-length"] == str(len(got.raw_body))
    if provider == NATIVE:
        assert got.headers["x-api-key"] == ANTHROPIC_KEY, got.headers
        assert "authorization" not in got.headers, got.headers
        version = sent.headers.get("anthropic-version")
        assert got.headers.get("anthropic-version") == (
            GATEWAY_VERSION if version is None else version
        ), got.headers
        if isinstance(client, dict):
            # The client's own body, only its model changed.
            mine = dict(client)
            mine.pop("model", None)
            forwarded.pop("model")
            with _deep_recursion():
                assert forwarded == mine
    else:
        assert got.headers["authorization"] == f"Bearer {OPENAI_KEY}", got.headers
        assert "x-api-key" not in got.headers, got.headers
        assert not [name for name in got.headers if name.startswith("anthropic-")], got.headers
        assert isinstance(forwarded.get("messages"), list), forwarded
        if isinstance(client, dict):
            assert (forwarded.get("stream") is True) == (client.get("stream") is True)
    return provider, forwarded


def post(gateway: Gateway, sent: Sent) -> httpx.Response:
    return httpx.post(gateway.url + sent.path, content=sent.raw, headers=sent.headers, timeout=30)


def _fresh(ant: Anthropic, oai: OpenAI) -> None:
    for fake in (ant, oai):
        fake.reset()
        with fake.answered.lock:
            fake.answered.statuses.clear()


def check_exchange(
    gw: Watched,
    ant: Anthropic,
    oai: OpenAI,
    sent: Sent,
    response: httpx.Response,
    generated: bool = True,
) -> None:
    status = response.status_code
    record = event if generated else (lambda _: None)
    if generated:
        note(f"answer: {status} {response.headers} {response.content[:600]!r}")
    record(f"status {status}")
    log = gw.new_log()
    assert "Traceback" not in log, log[-4000:]
    assert "envoy_bug" not in log, log[-4000:]
    for fake in (ant, oai):
        assert not fake.answered.crashes, fake.answered.crashes  # a bug of the fake itself
    try:
        client: Any = _client_json(sent.raw)
        strict = True
    except (ValueError, RecursionError):
        client, strict = None, False
    provider, forwarded = check_provider_requests(sent, ant, oai, client if strict else None)
    record(f"provider {provider}")
    if provider is not None:
        fake = ant if provider == NATIVE else oai
        (upstream_status,) = fake.answered.statuses
        # A provider's refusal keeps its status (the translator maps 503 to 529 alone).
        expected = 529 if provider == TRANSLATED and upstream_status == 503 else upstream_status
        assert status == expected, (status, upstream_status)
    else:
        assert status in DOCUMENTED, (status, response.content[:600])
    if status != 200:
        error = check_error(response)
        if len(sent.raw) > MAX_BODY:
            assert status == 413 and error["error"]["type"] == "request_too_large", error
        version = sent.headers.get("anthropic-version", GATEWAY_VERSION)
        if (
            provider == TRANSLATED
            and error["error"]["message"] != TOO_DEEP
            and _anthropic_accepts(client, sent.count_tokens, version)
        ):
            raise AssertionError(
                "the OpenAI-interface provider refused the translation of a body the "
                f"Messages API accepts: {error} for {forwarded}"
            )
        expected_provider = _expected_provider(client, sent.count_tokens) if strict else None
        if (
            expected_provider == NATIVE
            and provider is None
            and len(sent.raw) <= MAX_BODY
            and _depth(client) < PARSER_DEPTH
        ):
            raise AssertionError(f"refused a body for the native provider: {error}")
        return
    assert len(sent.raw) <= MAX_BODY
    assert strict, "a 200 for a body that is not strict JSON"
    assert _expected_provider(client, sent.count_tokens) is not None, client
    if sent.count_tokens:
        assert response.headers["content-type"].startswith("application/json"), response.headers
        body = _strict(response.content)
        assert set(body) >= {"input_tokens"} and _is_int(body["input_tokens"]), body
        assert body["input_tokens"] >= 0, body
        return
    assert provider is not None, "a 200 that no provider made"
    assert response.headers.get("x-plano-model") == provider, response.headers
    if client.get("stream") is True:
        assert response.headers["content-type"].startswith("text/event-stream"), response.headers
        record(f"stream ended by {check_stream(response.content)}")
    else:
        assert response.headers["content-type"].startswith("application/json"), response.headers
        check_message(_strict(response.content))


# ---------------------------------------------------------------------------------------------
# The properties


@FUZZ
@given(
    raw=messages_bodies(),
    headers=client_headers(),
    query=QUERIES,
    slash=st.sampled_from(["", "", "", "", "/"]),
)
def test_fuzzed_messages(
    gw: Watched,
    ant: Anthropic,
    oai: OpenAI,
    raw: bytes,
    headers: dict[str, str],
    query: str,
    slash: str,
) -> None:
    _fresh(ant, oai)
    sent = Sent(f"/v1/messages{slash}{query}", raw, headers, count_tokens=False)
    check_exchange(gw, ant, oai, sent, post(gw.gateway, sent))


@SMALL
@given(
    raw=messages_bodies(count_tokens=True),
    headers=client_headers(),
    query=QUERIES,
)
def test_fuzzed_count_tokens(
    gw: Watched,
    ant: Anthropic,
    oai: OpenAI,
    raw: bytes,
    headers: dict[str, str],
    query: str,
) -> None:
    _fresh(ant, oai)
    sent = Sent(f"/v1/messages/count_tokens{query}", raw, headers, count_tokens=True)
    check_exchange(gw, ant, oai, sent, post(gw.gateway, sent))


METHODS = st.sampled_from(["GET", "PUT", "DELETE", "PATCH", "OPTIONS"])
ODD_PATHS = st.sampled_from(
    ["/v1/messages/batches", "/v1/messages/count_tokens/x", "/v1/messages//",
     "/v1/messages/msg_01", "/v1/messages/%2e%2e/models", "/v1/messages/count_tokens?beta=true",
     "/v1/messages?beta=true", "/v1/messages/", "/v1/messages/count_tokens"]
)  # fmt: skip


@SMALL
@given(
    method=METHODS | st.just("POST"),
    path=ODD_PATHS,
    raw=st.one_of(st.just(b""), messages_bodies()),
    headers=client_headers(),
)
def test_fuzzed_methods_and_paths(
    gw: Watched,
    ant: Anthropic,
    oai: OpenAI,
    method: str,
    path: str,
    raw: bytes,
    headers: dict[str, str],
) -> None:
    """Wrong methods on the Messages paths are 405s, paths below /v1/messages that are not
    served 404s, all in Anthropic's shape; a POST to a served one is checked as above."""
    _fresh(ant, oai)
    response = httpx.request(
        method, gw.gateway.url + path, content=raw, headers=headers, timeout=30
    )
    route = path.partition("?")[0].rstrip("/")
    served = route in ("/v1/messages", "/v1/messages/count_tokens") and not path.endswith("//")
    if method == "POST" and served:
        sent = Sent(path, raw, headers, count_tokens=route.endswith("count_tokens"))
        check_exchange(gw, ant, oai, sent, response)
        return
    event(f"{method} status {response.status_code}")
    log = gw.new_log()
    assert "Traceback" not in log and "envoy_bug" not in log, log[-4000:]
    assert not ant.received and not oai.received
    expected = 405 if served else 404
    # A body over the limit may be refused for its size first, wherever it was sent.
    allowed = {expected, 413} if len(raw) > MAX_BODY else {expected}
    assert response.status_code in allowed, (response.status_code, response.content[:300])
    error = check_error(response)
    if response.status_code == 404:
        assert error["error"]["type"] == "not_found_error", error


def test_plain_requests_reach_both_providers(gw: Watched, ant: Anthropic, oai: OpenAI) -> None:
    """The checks above pass what they should: a plain request reaches each provider,
    streamed and not, and comes back as the client's API expects."""
    body = {"max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}
    for model, stream in [
        ("smart-model", False),
        ("smart-model", True),
        ("fast-model", False),
        ("fast-model", True),
    ]:
        _fresh(ant, oai)
        raw = json.dumps({**body, "model": model, "stream": stream}).encode()
        sent = Sent("/v1/messages?beta=true", raw, {"x-api-key": CLIENT_SECRET}, False)
        response = post(gw.gateway, sent)
        assert response.status_code == 200, response.content
        check_exchange(gw, ant, oai, sent, response, generated=False)
    _fresh(ant, oai)


NEAR_THE_LIMIT = range(950, 991)


@pytest.mark.parametrize(
    ("path", "model", "place"),
    [
        # The translation nests two levels deeper (tools[].function.parameters), and the
        # token estimate writes the tools back: a body the parser read must not fail there.
        ("/v1/messages", "fast-model", "tool_schema"),
        ("/v1/messages/count_tokens", "claude-haiku-4-5", "tool_schema"),
        ("/v1/messages", "smart-model", "tool_schema"),
        ("/v1/messages", "fast-model", "content"),
        ("/v1/messages", "fast-model", "system"),
        ("/v1/messages/count_tokens", "claude-haiku-4-5", "content"),
    ],
)
def test_nesting_near_the_parser_limit(
    gw: Watched, ant: Anthropic, oai: OpenAI, path: str, model: str, place: str
) -> None:
    """Every depth around where the parser gives up (the fuzzer draws a few at random): read
    and routed, or refused with a 400, never a 500 or a traceback."""
    base = {"model": model, "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}
    for depth in NEAR_THE_LIMIT:
        _fresh(ant, oai)
        raw = _deep(json.dumps(base).encode(), depth, place)
        sent = Sent(path, raw, {"x-api-key": CLIENT_SECRET}, path.endswith("count_tokens"))
        response = post(gw.gateway, sent)
        try:
            check_exchange(gw, ant, oai, sent, response, generated=False)
        except AssertionError as failed:
            raise AssertionError(f"at depth {depth}: {failed}") from None
    _fresh(ant, oai)
