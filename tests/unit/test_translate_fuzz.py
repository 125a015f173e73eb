"""Generated input for both translation pairs and the response filter, as a hostile or broken
client or upstream would send it: whatever comes in, nothing but the documented outcomes.

- ``request`` on any JSON object: a body the processor can write as strict JSON (or refuse
  with a 400 by its own rule, for a number past a double's range), or ``TranslationError``;
  never another exception. A body the real API accepts (the fakes' rules) comes out as one
  the other API accepts, or is refused with a TranslationError.
- ``response_bytes`` on any status and bytes: never raises; a status 200-599 and strict
  UTF-8 JSON (no NaN or Infinity, whatever the upstream sent) in the client's shape (its
  response, or its error).
- ``stream``: any bytes in any chunking, real upstream streams split anywhere and mangled:
  never raises; the client gets well-formed SSE in its own API's event grammar, the same
  bytes whatever the chunking, and after a complete upstream stream a complete client one
  (``data: [DONE]`` last for an OpenAI client, ``message_stop`` for an Anthropic one).
- ``TranslatedResponse``: any sequence of ext_proc messages (headers of any status and
  content type, body chunks, trailers, phases it never asked for): never raises, and
  answers each message with its own kind of answer.

Bounded and repeatable (derandomized, at most 300 examples each);
``PLANO_FUZZ_EXAMPLES=20000`` runs a long one by hand.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from plano_extproc._proto import ext_proc_pb2 as pb
from plano_extproc.extproc.processor import json_bytes as processor_json
from plano_extproc.extproc.response_translation import TranslatedResponse
from plano_extproc.translate import (
    AnthropicToOpenAI,
    OpenAIToAnthropic,
    TranslationError,
    Translator,
    translator,
)
from plano_extproc.translate.sse import dumps as sse_dumps
from plano_extproc.wire import INCLUDE_USAGE_KEY, LOCAL_REPLY_HEADER, RESPONSE_NAMESPACE
from tests.api_vocabulary import ANTHROPIC_ERROR_TYPES, FINISH_REASONS, STOP_REASONS
from tests.fake_providers import FakeAnthropic, _validate_chat
from tests.translate_fixtures import (
    ANTHROPIC_ERROR_BODIES,
    ANTHROPIC_MESSAGE,
    ANTHROPIC_STREAM,
    ANTHROPIC_STREAM_EVENTS,
    OPENAI_COMPLETION,
    OPENAI_ERROR_BODIES,
    OPENAI_REASONING_STREAM,
    OPENAI_STREAM,
    OPENAI_STREAM_CHUNKS,
    sse,
)

pytestmark = pytest.mark.unit

EXAMPLES = int(os.environ.get("PLANO_FUZZ_EXAMPLES", "300"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,  # the same examples every run
    suppress_health_check=list(HealthCheck),
    database=None,
)
CREATED = 1700000000
MODEL_ID = "upstream-model"


# The pairs as the server builds them (translate.translator), and the variants a config or a
# test makes: OpenAI's older max_tokens field, a fixed clock (so outputs can be compared).
def _pair(client_api: str, upstream_api: str) -> Translator:
    found = translator(client_api, upstream_api)
    assert found is not None
    return found


TO_OPENAI_CLIENT = _pair("openai", "anthropic")  # an OpenAI client, an Anthropic upstream
TO_ANTHROPIC_CLIENT = _pair("anthropic", "openai")  # the other way round
FIXED_CLOCK = OpenAIToAnthropic(clock=lambda: CREATED)
MAX_TOKENS_FIELD = AnthropicToOpenAI(max_tokens_field="max_tokens")
PAIRS = [TO_OPENAI_CLIENT, TO_ANTHROPIC_CLIENT, FIXED_CLOCK, MAX_TOKENS_FIELD]
PAIR = st.sampled_from(PAIRS)


def _record(value: str) -> None:
    """Hypothesis' event(), also callable outside a generated test (where it raises)."""
    with contextlib.suppress(InvalidArgument):
        event(value)


def weighted(*choices: tuple[int, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """One of the strategies, each ``weight`` times as likely as a weight of 1 (one_of's
    choice of a branch is far from uniform once branches differ in size)."""
    options = [strategy for weight, strategy in choices for _ in range(weight)]
    return st.sampled_from(range(len(options))).flatmap(lambda i: options[i])


# --- JSON, as a client's body parses -------------------------------------------------------

SURROGATES = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
TEXT = weighted(
    (4, st.text(max_size=20)),
    (1, st.sampled_from(["", " ", "hi", "Grüße 日本語 🎉", "data:image/png;base64,iVBOR"])),
    (1, st.text(st.characters() | SURROGATES, max_size=6)),  # a \udc80 escape parses so
)
SCALARS = weighted(
    (1, st.none()),
    (1, st.booleans()),
    (2, st.integers(min_value=-(2**70), max_value=2**70)),
    (1, st.floats(allow_nan=False, allow_infinity=False)),
    (1, st.sampled_from([0, 1, -1, 0.5, 2, 1024, 4096, 1e308])),
    (3, TEXT),
)
# What 1e999 parses to: rare, as the processor's parser reads it but cannot write it back.
NON_FINITE = st.sampled_from([math.inf, -math.inf])
JSON_VALUES = st.recursive(
    weighted((12, SCALARS), (1, NON_FINITE)),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)

# Every field either API reads, so that generated bodies reach the code that reads them.
REQUEST_KEYS = [
    "model", "messages", "system", "max_tokens", "max_completion_tokens", "temperature",
    "top_p", "top_k", "stop", "stop_sequences", "stream", "stream_options", "tools",
    "tool_choice", "parallel_tool_calls", "metadata", "user", "safety_identifier", "thinking",
    "output_config", "reasoning_effort", "response_format", "n", "functions", "function_call",
    "seed", "logprobs", "service_tier",
]  # fmt: skip
BLOCK_TYPES = [
    "text", "image", "document", "tool_use", "tool_result", "thinking", "redacted_thinking",
    "search_result", "server_tool_use", "web_search_tool_result", "image_url", "input_audio",
    "file", "refusal", "function", "custom", "tool", "auto", "any", "none", "enabled",
    "adaptive", "json_schema", "json_object", "base64", "url", "content",
]  # fmt: skip
BLOCK_KEYS = [
    "type", "text", "source", "media_type", "data", "url", "image_url", "file", "file_data",
    "file_id", "filename", "title", "id", "name", "input", "tool_use_id", "content",
    "is_error", "thinking", "signature", "cache_control", "citations", "function",
    "arguments", "parameters", "input_schema", "description", "index", "detail", "refusal",
    "budget_tokens", "effort", "format", "schema", "json_schema", "strict",
]  # fmt: skip
ROLES = ["user", "assistant", "system", "developer", "tool", "function"]


def shaped(depth: int = 2) -> st.SearchStrategy[Any]:
    """Objects with the keys and type values the translators look at, any values."""
    leaf = weighted((3, JSON_VALUES), (2, st.sampled_from(BLOCK_TYPES)))
    if depth == 0:
        return leaf
    inner = shaped(depth - 1)
    block = st.builds(
        lambda kind, fields: {"type": kind, **fields},
        st.sampled_from(BLOCK_TYPES),
        st.dictionaries(
            st.sampled_from(BLOCK_KEYS[1:]),
            weighted((3, inner), (1, st.lists(inner, max_size=2))),
            max_size=4,
        ),
    )
    return weighted((3, block), (1, st.lists(block, max_size=3)), (1, leaf))


SHAPED = shaped()
MESSAGE = st.builds(
    lambda role, content, fields: {"role": role, "content": content, **fields},
    weighted((6, st.sampled_from(ROLES)), (1, JSON_VALUES)),
    weighted((3, TEXT), (3, st.lists(SHAPED, max_size=3)), (1, JSON_VALUES)),
    st.dictionaries(
        st.sampled_from(
            ["tool_calls", "tool_call_id", "thinking_blocks", "reasoning_content", "name",
             "function_call"]
        ),
        weighted((2, st.lists(SHAPED, max_size=2)), (2, TEXT), (1, JSON_VALUES)),
        max_size=2,
    ),
)  # fmt: skip
SHAPED_BODIES = st.builds(
    lambda messages, fields: {"messages": messages, **fields},
    weighted((5, st.lists(MESSAGE, min_size=1, max_size=4)), (1, JSON_VALUES)),
    st.dictionaries(
        st.sampled_from(REQUEST_KEYS[2:]), weighted((2, SHAPED), (2, JSON_VALUES)), max_size=6
    ),
)
ANY_OBJECTS = st.dictionaries(
    weighted((3, st.sampled_from(REQUEST_KEYS)), (1, st.text(max_size=10))), JSON_VALUES
)


def _finite(value: Any) -> bool:
    """No infinity in it (what the processor cannot write as JSON)."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    return True


def _has_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        return any(0xD800 <= ord(c) <= 0xDFFF for c in value)
    if isinstance(value, dict):
        return any(_has_surrogate(k) or _has_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_surrogate(v) for v in value)
    return False


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# --- the client's shapes --------------------------------------------------------------------


def _client_is_openai(pair: Translator) -> bool:
    return pair.client_api == "openai"


def check_error(pair: Translator, body: Any) -> None:
    """The client API's error shape."""
    if _client_is_openai(pair):
        assert isinstance(body, dict) and set(body) == {"error"}, body
        error = body["error"]
        assert set(error) == {"message", "type", "param", "code"}, error
        assert isinstance(error["message"], str), error
        assert isinstance(error["type"], str) and error["type"], error
    else:
        assert isinstance(body, dict) and body.get("type") == "error", body
        error = body["error"]
        assert isinstance(error, dict) and set(error) == {"type", "message"}, body
        assert error["type"] in ANTHROPIC_ERROR_TYPES, error
        assert isinstance(error["message"], str), error


def check_response(pair: Translator, body: Any) -> None:
    """The client API's non-streamed response, as its SDK reads it (no NaN or Infinity in
    the tool-call arguments either)."""
    assert isinstance(body, dict), body
    if _client_is_openai(pair):
        assert body["object"] == "chat.completion" and isinstance(body["id"], str), body
        assert _is_int(body["created"]) and isinstance(body["model"], str), body
        (choice,) = body["choices"]
        assert choice["index"] == 0 and choice["finish_reason"] in FINISH_REASONS, choice
        message = choice["message"]
        assert message["role"] == "assistant", message
        assert message["content"] is None or isinstance(message["content"], str), message
        for call in message.get("tool_calls", []):
            assert call["type"] == "function" and isinstance(call["id"], str), call
            assert isinstance(call["function"]["name"], str), call
            arguments = call["function"]["arguments"]
            assert isinstance(json.loads(arguments, parse_constant=_refuse), dict), call
        usage = body["usage"]
        for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
            assert _is_int(usage[key]) and usage[key] >= 0, usage
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    else:
        assert body["type"] == "message" and body["role"] == "assistant", body
        assert isinstance(body["id"], str) and isinstance(body["model"], str), body
        for block in body["content"]:
            kind = block["type"]
            assert kind in ("text", "thinking", "tool_use"), block
            if kind == "text":
                assert isinstance(block["text"], str) and block["text"], block
            elif kind == "thinking":
                assert isinstance(block["thinking"], str), block
                assert isinstance(block["signature"], str), block
            else:
                assert isinstance(block["id"], str) and block["id"], block
                assert isinstance(block["name"], str) and isinstance(block["input"], dict)
        assert body["stop_reason"] in STOP_REASONS and body["stop_sequence"] is None, body
        for key, value in body["usage"].items():
            assert _is_int(value) and value >= 0, (key, value)


def check_reply(pair: Translator, status: int, data: bytes) -> Any:
    """A whole reply to the client: a real status, strict UTF-8 JSON (no NaN or Infinity,
    whatever the upstream sent), its response or its error."""
    assert isinstance(status, int) and 200 <= status <= 599, status
    body = json.loads(data.decode("utf-8"), parse_constant=_refuse)
    if 200 <= status < 300:
        check_response(pair, body)
    else:
        check_error(pair, body)
    return body


def _refuse(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


# --- the client's event streams --------------------------------------------------------------


def sse_events(raw: bytes) -> list[tuple[str | None, str]]:
    """(event, data) of each event, read by the SSE rules; the stream must end on an event's
    end (a blank line) and every line must be a field the API uses."""
    text = raw.decode("utf-8")
    if not text:
        return []
    assert text.endswith("\n\n"), text[-200:]
    events = []
    for block in text[:-2].split("\n\n"):
        name: str | None = None
        data = []
        for line in block.split("\n"):
            field, colon, value = line.partition(": ")
            assert colon and field in ("event", "data"), (line, text[-500:])
            if field == "event":
                assert name is None, block
                name = value
            else:
                data.append(value)
        assert data, block
        events.append((name, "\n".join(data)))
    return events


def check_openai_stream(raw: bytes, complete: bool) -> str:
    """OpenAI chunks: ``data:`` only, chunk objects, then ``[DONE]`` or an error object, and
    nothing after either. Returns how it ended."""
    events = sse_events(raw)
    assert events, "an empty stream: the client would wait for [DONE] forever"
    ending = "open"
    ids = set()
    for i, (name, data) in enumerate(events):
        assert name is None, events
        assert ending == "open", f"an event after the end: {events[i:]}"
        if data == "[DONE]":
            ending = "done"
            continue
        value = json.loads(data, parse_constant=_refuse)
        assert isinstance(value, dict), data
        if "error" in value:
            check_error(TO_OPENAI_CLIENT, value)
            ending = "error"
            continue
        assert value["object"] == "chat.completion.chunk", value
        ids.add(value["id"])
        for choice in value["choices"]:
            assert choice["index"] == 0, choice
            assert isinstance(choice["delta"], dict), choice
            reason = choice["finish_reason"]
            assert reason is None or reason in FINISH_REASONS, choice
        if not value["choices"]:
            usage = value["usage"]
            assert all(_is_int(usage[k]) for k in ("prompt_tokens", "completion_tokens"))
    assert ending != "open", "a stream that ends without [DONE] or an error"
    if complete:
        assert ending == "done", events[-1]
        assert len(ids) == 1, ids  # (an upstream that sends events out of order may differ)
    return ending


def check_anthropic_stream(raw: bytes, complete: bool) -> str:
    """Anthropic events: named, their data a JSON object of that type; message_start first,
    content blocks opened in order, message_delta then message_stop last (or an ``error``
    event, which ends the stream). Returns how it ended."""
    events = sse_events(raw)
    assert events, "an empty stream: the client would wait forever"
    parsed = []
    for name, data in events:
        value = json.loads(data, parse_constant=_refuse)
        assert isinstance(value, dict) and value.get("type") == name, (name, data)
        parsed.append(value)
    kinds = [value["type"] for value in parsed]
    assert kinds.count("message_stop") + kinds.count("error") == 1, kinds
    if kinds[-1] == "error":
        check_error(TO_ANTHROPIC_CLIENT, parsed[-1])
        ending = "error"
        body = parsed[:-1]
    else:
        assert kinds[-2:] == ["message_delta", "message_stop"], kinds
        ending = "message_stop"
        body = parsed[:-2]
        delta = parsed[-2]
        assert delta["delta"]["stop_reason"] in STOP_REASONS, delta
        for value in delta["usage"].values():
            assert _is_int(value) and value >= 0, delta
    if body or ending == "message_stop":
        assert body and body[0]["type"] == "message_start", kinds
        start = body[0]["message"]
        assert start["role"] == "assistant" and start["content"] == [], start
        assert start["stop_reason"] is None, start
    started: list[str] = []
    open_index: int | None = None
    for value in body[1:]:
        kind = value["type"]
        if kind == "content_block_start":
            assert open_index is None and value["index"] == len(started), (kinds, value)
            block = value["content_block"]
            assert block["type"] in ("text", "thinking", "tool_use"), block
            if block["type"] == "tool_use":
                assert isinstance(block["id"], str) and block["id"], block
                assert isinstance(block["name"], str), block
            started.append(block["type"])
            open_index = value["index"]
        elif kind == "content_block_delta":
            # A tool call's late fragments go to its block, closed or not (the module's
            # documented rough edge); anything else to the open block.
            index, delta = value["index"], value["delta"]
            assert 0 <= index < len(started), (kinds, value)
            expected = {"text": "text_delta", "thinking": "thinking_delta"}
            expected["tool_use"] = "input_json_delta"
            assert delta["type"] == expected[started[index]], (started, value)
            if delta["type"] != "input_json_delta":
                assert index == open_index, (kinds, value)
        elif kind == "content_block_stop":
            assert value["index"] == open_index, (kinds, value)
            open_index = None
        else:
            raise AssertionError(f"{kind} inside the message: {kinds}")
    if ending == "message_stop":
        assert open_index is None, kinds
    if complete:
        assert ending == "message_stop", parsed[-1]
    return ending


def check_stream(pair: Translator, raw: bytes, complete: bool) -> str:
    if _client_is_openai(pair):
        return check_openai_stream(raw, complete)
    return check_anthropic_stream(raw, complete)


def run_stream(pair: Translator, pieces: list[bytes], include_usage: bool | None = None) -> bytes:
    request: dict[str, Any] = {"stream": True}
    if include_usage is not None:
        request["stream_options"] = {"include_usage": include_usage}
    stream = pair.stream(request)
    out = b""
    for piece in pieces:
        chunk = stream.feed(piece)
        assert isinstance(chunk, bytes)
        out += chunk
    end = stream.finish()
    assert isinstance(end, bytes)
    assert stream.feed(b"data: [DONE]\n\n") == b"" and stream.finish() == b""  # closed
    return out + end


def pieces_at(raw: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *sorted({min(max(cut, 0), len(raw)) for cut in cuts}), len(raw)]
    return [raw[a:b] for a, b in itertools.pairwise(bounds)]


# ---------------------------------------------------------------------------------------------
# Requests


def check_request(pair: Translator, body: Any) -> dict[str, Any] | None:
    """What the processor makes of ``pair.request``: the upstream body, or None when refused.
    Only a TranslationError may come out, or the processor's own refusal of a number JSON
    cannot write."""
    try:
        out = pair.request(body, MODEL_ID)
    except TranslationError as refused:
        _record("refused by the translator")
        assert isinstance(refused.message, str) and refused.message, refused
        status, reply = pair.refusal(refused)
        assert 400 <= status < 500, status
        check_error(pair, json.loads(reply.decode("utf-8")))
        return None
    assert isinstance(out, dict) and out["model"] == MODEL_ID, out
    try:
        written = processor_json(out)
    except ValueError:
        # processor._translated refuses these with a 400 (allow_nan=False; a lone surrogate
        # has no UTF-8).
        assert not _finite(out) or _has_surrogate(out), out
        _record("refused by the processor")
        return None
    forwarded: dict[str, Any] = json.loads(written.decode("utf-8"), parse_constant=_refuse)
    assert isinstance(forwarded["messages"], list), forwarded
    if pair.upstream_api == "anthropic":
        assert _is_int(forwarded["max_tokens"]) and forwarded["max_tokens"] >= 1, forwarded
        for message in forwarded["messages"]:
            assert message["role"] in ("user", "assistant"), forwarded
    else:
        for message in forwarded["messages"]:
            assert message["role"] in ("system", "user", "assistant", "tool"), forwarded
    _record("translated")
    return forwarded


@FUZZ
@given(pair=PAIR, body=ANY_OBJECTS)
def test_request_of_any_json_object(pair: Translator, body: dict[str, Any]) -> None:
    check_request(pair, body)


@FUZZ
@given(pair=PAIR, body=SHAPED_BODIES)
def test_request_of_bodies_shaped_like_requests(pair: Translator, body: dict[str, Any]) -> None:
    check_request(pair, body)


@settings(FUZZ, max_examples=min(EXAMPLES, 100))
@given(pair=PAIR, body=JSON_VALUES)
def test_request_of_what_is_not_an_object(pair: Translator, body: Any) -> None:
    if isinstance(body, dict):
        check_request(pair, body)
    else:
        with pytest.raises(TranslationError):
            pair.request(body, MODEL_ID)


# --- valid in, valid out: the fakes hold the real APIs' rules ---------------------------------

NONEMPTY = st.sampled_from(["hi", "Write a poem", "Grüße 日本語 🎉", "x"]) | st.text(
    min_size=1, max_size=20
)
TOOL_NAMES = ("get_weather", "get_time", "Bash")
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNgAAIAAAUAAen63NgAAAAASUVORK5CYII="
TOOL_ID = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_-.:", min_size=1, max_size=10)


@st.composite
def messages_requests(draw: st.DrawFn) -> dict[str, Any]:
    """Anthropic Messages bodies, most of which the API takes."""
    messages: list[dict[str, Any]] = []
    pending: list[str] = []
    used: set[str] = set()
    turns = draw(st.sampled_from([1, 1, 2, 2, 3]))
    for t in range(turns):
        blocks: list[dict[str, Any]] = []
        for call_id in pending:
            result: dict[str, Any] = {"type": "tool_result", "tool_use_id": call_id}
            content = draw(
                weighted(
                    (2, st.none()),
                    (3, NONEMPTY),
                    (2, st.lists(st.builds(lambda t: {"type": "text", "text": t}, NONEMPTY))),
                    (
                        1,
                        st.just(
                            [{"type": "image", "source": {"type": "base64",
                                                          "media_type": "image/png", "data": PNG}}]
                        ),
                    ),
                )
            )  # fmt: skip
            if content is not None:
                result["content"] = content
            if draw(st.booleans()):
                result["is_error"] = draw(st.booleans())
            blocks.append(result)
        pending = []
        for _ in range(draw(st.integers(0 if blocks else 1, 3))):
            blocks.append(
                draw(
                    weighted(
                        (6, st.builds(lambda t: {"type": "text", "text": t}, NONEMPTY)),
                        (
                            1,
                            st.sampled_from(
                                [
                                    {"type": "image", "source": {"type": "base64",
                                     "media_type": "image/jpeg", "data": PNG}},
                                    {"type": "image", "source": {"type": "url",
                                     "url": "https://example.com/a.png"}},
                                    {"type": "document", "source": {"type": "text",
                                     "media_type": "text/plain", "data": "doc"}},
                                    {"type": "document", "source": {"type": "base64",
                                     "media_type": "application/pdf", "data": "JVBERi0="}},
                                ]
                            ),
                        ),
                    )
                )
            )  # fmt: skip
        if len(blocks) == 1 and blocks[0]["type"] == "text" and draw(st.booleans()):
            messages.append({"role": "user", "content": blocks[0]["text"]})
        else:
            messages.append({"role": "user", "content": blocks})
        if t == turns - 1:
            break
        answer: list[dict[str, Any]] = []
        if draw(st.integers(0, 3)) == 3:
            answer.append({"type": "thinking", "thinking": "hmm", "signature": "sig"})
        answer += draw(st.lists(st.builds(lambda t: {"type": "text", "text": t}, NONEMPTY),
                                max_size=2))  # fmt: skip
        for _ in range(draw(st.integers(0, 2))):
            call_id = "toolu_" + draw(st.text(alphabet="abc123_", min_size=1, max_size=8))
            if call_id in pending:
                continue
            name = draw(st.sampled_from(TOOL_NAMES))
            tool_input = draw(st.dictionaries(st.text(max_size=5), JSON_VALUES, max_size=3))
            answer.append({"type": "tool_use", "id": call_id, "name": name, "input": tool_input})
            pending.append(call_id)
            used.add(name)
        messages.append({"role": "assistant", "content": answer if answer else draw(NONEMPTY)})
    body: dict[str, Any] = {
        "model": "claude-sonnet-4-5",
        "max_tokens": draw(st.integers(1, 64000)),
        "messages": messages,
    }
    names = sorted(used | set(draw(st.sets(st.sampled_from(TOOL_NAMES), max_size=2))))
    if names:
        body["tools"] = [
            {"name": n, "description": "a tool", "input_schema": {"type": "object"}} for n in names
        ]
        if draw(st.booleans()):
            body["tool_choice"] = draw(
                st.sampled_from([{"type": "auto"}, {"type": "any"}, {"type": "none"},
                                 {"type": "auto", "disable_parallel_tool_use": True}])
                | st.builds(lambda n: {"type": "tool", "name": n}, st.sampled_from(names))
            )  # fmt: skip
    optional = {
        "system": NONEMPTY
        | st.lists(st.builds(lambda t: {"type": "text", "text": t}, NONEMPTY), max_size=2),
        "temperature": st.floats(0, 1),
        "top_p": st.floats(0, 1),
        "top_k": st.integers(0, 100),
        "stop_sequences": st.lists(st.text(max_size=5), max_size=6),
        "stream": st.booleans(),
        "metadata": st.fixed_dictionaries({"user_id": st.text(max_size=10)}),
        "thinking": st.sampled_from(
            [{"type": "enabled", "budget_tokens": 1024}, {"type": "adaptive"}, {"type": "disabled"}]
        ),
        "output_config": st.sampled_from(
            [
                {"effort": "low"},
                {"effort": "max"},
                {"format": {"type": "json_schema", "schema": {"type": "object"}}},
            ]
        ),
    }
    for key, strategy in optional.items():
        if draw(st.integers(0, 2)) == 2:
            body[key] = draw(strategy)
    return body


@st.composite
def chat_requests(draw: st.DrawFn) -> dict[str, Any]:
    """OpenAI chat-completions bodies, most of which the API takes."""
    messages: list[dict[str, Any]] = []
    if draw(st.booleans()):
        role = draw(st.sampled_from(["system", "developer"]))
        messages.append({"role": role, "content": draw(NONEMPTY)})
    used: set[str] = set()
    turns = draw(st.sampled_from([1, 1, 2, 2, 3]))
    for t in range(turns):
        content = draw(
            weighted(
                (4, NONEMPTY),
                (
                    2,
                    st.lists(
                        weighted(
                            (4, st.builds(lambda t: {"type": "text", "text": t}, NONEMPTY)),
                            (
                                1,
                                st.sampled_from(
                                    [
                                        {"type": "image_url",
                                         "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                                        {"type": "image_url",
                                         "image_url": {"url": "https://example.com/a.png",
                                                       "detail": "low"}},
                                        {"type": "file", "file": {"filename": "a.pdf",
                                         "file_data": "data:application/pdf;base64,JVBERi0="}},
                                    ]
                                ),
                            ),
                        ),
                        min_size=1,
                        max_size=3,
                    ),
                ),
            )
        )  # fmt: skip
        messages.append({"role": "user", "content": content})
        if t == turns - 1:
            break
        answer: dict[str, Any] = {"role": "assistant"}
        calls = []
        for j in range(draw(st.integers(0, 2))):
            call_id = f"call_{t}_{j}_" + draw(TOOL_ID)
            name = draw(st.sampled_from(TOOL_NAMES))
            arguments = draw(st.dictionaries(st.text(max_size=5), JSON_VALUES, max_size=2))
            assume(_finite(arguments))
            calls.append(
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": name, "arguments": json.dumps(arguments)},
                }
            )
            used.add(name)
        answer["content"] = draw(NONEMPTY) if not calls or draw(st.booleans()) else None
        if calls:
            answer["tool_calls"] = calls
        messages.append(answer)
        for call in calls:
            messages.append({"role": "tool", "tool_call_id": call["id"], "content": draw(NONEMPTY)})
        if calls:
            messages.append({"role": "user", "content": draw(NONEMPTY)})
    body: dict[str, Any] = {"model": "gpt-5.2", "messages": messages}
    names = sorted(used | set(draw(st.sets(st.sampled_from(TOOL_NAMES), max_size=2))))
    if names and draw(st.integers(0, 3)) != 0:
        body["tools"] = [
            {"type": "function", "function": {"name": n, "parameters": {"type": "object"}}}
            for n in names
        ]
        if draw(st.booleans()):
            body["tool_choice"] = draw(
                st.sampled_from(["auto", "none", "required"])
                | st.builds(
                    lambda n: {"type": "function", "function": {"name": n}},
                    st.sampled_from(names),
                )
            )
        if draw(st.booleans()):
            body["parallel_tool_calls"] = draw(st.booleans())
    optional = {
        "temperature": st.floats(0, 2),
        "top_p": st.floats(0, 1),
        "max_completion_tokens": st.integers(1, 64000),
        "max_tokens": st.integers(1, 64000),
        "stop": st.text(max_size=5) | st.lists(st.text(max_size=5), max_size=4),
        "stream": st.booleans(),
        "user": st.text(max_size=10),
        "reasoning_effort": st.sampled_from(["none", "minimal", "low", "medium", "high"]),
        "response_format": st.sampled_from(
            [
                {"type": "text"},
                {"type": "json_object"},
                {"type": "json_schema", "json_schema": {"name": "r", "schema": {"type": "object"}}},
            ]
        ),
        "seed": st.integers(0, 100),
        "n": st.just(1),
    }
    for key, strategy in optional.items():
        if draw(st.integers(0, 2)) == 2:
            body[key] = draw(strategy)
    if body.get("stream") is True and draw(st.booleans()):
        body["stream_options"] = {"include_usage": draw(st.booleans())}
    return body


def _anthropic_refuses(body: dict[str, Any]) -> str | None:
    """FakeAnthropic's refusal of ``body`` (as the gateway's version of the API reads it),
    or None. Signatures are not checked: the fuzzer cannot sign thinking."""
    judge = FakeAnthropic("judge", verify_signatures=False)
    try:
        judge._validate(body, False, "2023-06-01")
    except Exception as refused:  # its _ApiError
        return str(refused)
    return None


def _openai_refuses(body: dict[str, Any]) -> str | None:
    try:
        _validate_chat(body)
    except Exception as refused:  # its _ApiError
        return str(refused)
    return None


@FUZZ
@given(body=messages_requests(), pair=st.sampled_from([TO_ANTHROPIC_CLIENT, MAX_TOKENS_FIELD]))
def test_a_valid_messages_request_stays_valid_for_openai(
    body: dict[str, Any], pair: Translator
) -> None:
    assume(_anthropic_refuses(body) is None)
    forwarded = check_request(pair, body)
    if forwarded is not None:
        assert _openai_refuses(forwarded) is None, (_openai_refuses(forwarded), forwarded)


@FUZZ
@given(body=chat_requests())
def test_a_valid_chat_request_stays_valid_for_anthropic(body: dict[str, Any]) -> None:
    assume(_openai_refuses(body) is None)
    forwarded = check_request(TO_OPENAI_CLIENT, body)
    if forwarded is not None:
        assert _anthropic_refuses(forwarded) is None, (_anthropic_refuses(forwarded), forwarded)


# ---------------------------------------------------------------------------------------------
# Whole responses


def _paths(value: Any) -> list[list[Any]]:
    """Every place in a JSON value, as the keys and indexes that lead to it."""
    paths: list[list[Any]] = []
    stack: list[tuple[Any, list[Any]]] = [(value, [])]
    while stack:
        node, path = stack.pop()
        paths.append(path)
        if isinstance(node, dict):
            stack.extend((child, [*path, key]) for key, child in node.items())
        elif isinstance(node, list):
            stack.extend((child, [*path, i]) for i, child in enumerate(node))
    return paths


@st.composite
def mangled(draw: st.DrawFn, value: Any) -> Any:
    """``value`` with a few of its parts replaced, removed or added."""
    value = json.loads(json.dumps(value))
    for _ in range(draw(st.integers(0, 4))):
        path = draw(st.sampled_from(_paths(value)))
        if not path:
            value = draw(JSON_VALUES) if draw(st.integers(0, 9)) == 9 else value
            continue
        parent = value
        for step in path[:-1]:
            parent = parent[step]
        action = draw(st.sampled_from(["replace", "replace", "delete", "add"]))
        if action == "replace":
            parent[path[-1]] = draw(weighted((3, JSON_VALUES), (1, st.sampled_from(BLOCK_TYPES))))
        elif action == "delete":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(st.text(max_size=6))] = draw(JSON_VALUES)
        else:
            parent.append(draw(JSON_VALUES))
    return value


UPSTREAM_BODIES = {
    "anthropic": [ANTHROPIC_MESSAGE, *(body for _, body in ANTHROPIC_ERROR_BODIES.values())],
    "openai": [OPENAI_COMPLETION, *(body for _, body in OPENAI_ERROR_BODIES.values())],
}
STATUSES = weighted(
    (3, st.just(200)),
    (4, st.sampled_from([200, 200, 201, 400, 401, 402, 403, 404, 413, 429, 500, 502, 503, 529])),
    (1, st.integers(min_value=0, max_value=1000)),
    (1, st.sampled_from([0, 1, 100, 204, 299, 300, 304, 399, 600, 999, 10**6])),
)


@st.composite
def upstream_replies(draw: st.DrawFn, api: str) -> bytes:
    kind = draw(st.sampled_from(["mangled", "mangled", "mangled", "json", "bytes", "cut"]))
    if kind == "bytes":
        return draw(st.binary(max_size=300))
    if kind == "json":
        text = json.dumps(draw(JSON_VALUES))
    else:
        text = json.dumps(draw(mangled(draw(st.sampled_from(UPSTREAM_BODIES[api])))))
    raw = text.encode("utf-8", "surrogatepass")
    if kind == "cut":
        raw = raw[: draw(st.integers(0, len(raw)))]
    return raw


@FUZZ
@given(pair=PAIR, status=STATUSES, data=st.data())
def test_response_bytes_of_any_reply(pair: Translator, status: int, data: st.DataObject) -> None:
    raw = data.draw(upstream_replies(pair.upstream_api))
    out_status, out = pair.response_bytes(status, raw)
    check_reply(pair, out_status, out)
    if not 200 <= status < 300:
        assert not 200 <= out_status < 300, "an upstream error became a success"
    event(f"{'ok' if out_status < 300 else 'error'}")


@FUZZ
@given(pair=PAIR, body=weighted((3, mangled(ANTHROPIC_MESSAGE)), (3, mangled(OPENAI_COMPLETION)),
                                (1, JSON_VALUES)))  # fmt: skip
def test_response_of_any_value(pair: Translator, body: Any) -> None:
    """``response`` (the parsed body): the client's response, or its error shape."""
    out = pair.response(body)
    if isinstance(out, dict) and "error" in out:
        check_error(pair, out)
    else:
        # As response_bytes writes it for the client.
        check_reply(pair, 200, sse_dumps(out).encode())


@settings(FUZZ, max_examples=min(EXAMPLES, 100))
@given(pair=PAIR, status=STATUSES, raw=st.binary(max_size=200))
def test_error_of_any_reply(pair: Translator, status: int, raw: bytes) -> None:
    out_status, out = pair.error(status, raw)
    assert 400 <= out_status <= 599, out_status
    check_error(pair, json.loads(out.decode("utf-8")))


# ---------------------------------------------------------------------------------------------
# Streams

COMPLETE_UPSTREAM = {
    "anthropic": [ANTHROPIC_STREAM],
    "openai": [OPENAI_STREAM, OPENAI_REASONING_STREAM],
}
UPSTREAM_EVENTS: dict[str, list[tuple[str | None, Any]]] = {
    "anthropic": list(ANTHROPIC_STREAM_EVENTS),
    "openai": [(None, chunk) for chunk in OPENAI_STREAM_CHUNKS],
}
SSE_BITS = st.sampled_from(
    [b"data: ", b"event: ", b"\n", b"\r\n", b"\r", b"\n\n", b": ping\n\n", b"data: [DONE]\n\n",
     b'data: {"type": "message_stop"}\n\n', b"event: error\n", b"\xef\xbb\xbf", b"\xff",
     b"\xc3", b"id: 1\n", b"retry: 5\n", b'{"choices": []}', b"data:{}\n\n"]
)  # fmt: skip


@FUZZ
@given(
    pair=PAIR,
    pieces=st.lists(weighted((1, st.binary(max_size=40)), (2, SSE_BITS)), max_size=12),
    include_usage=st.none() | st.booleans(),
)
def test_stream_of_any_bytes(
    pair: Translator, pieces: list[bytes], include_usage: bool | None
) -> None:
    out = run_stream(pair, pieces, include_usage)
    event(f"ended by {check_stream(pair, out, complete=False)}")


@FUZZ
@given(pair=PAIR, data=st.data(), include_usage=st.none() | st.booleans())
def test_a_complete_upstream_stream_split_anywhere(
    pair: Translator, data: st.DataObject, include_usage: bool | None
) -> None:
    """A real upstream stream, cut into pieces anywhere (inside "data:", inside a UTF-8
    character, between \\r and \\n): a complete client stream, the same bytes as in one
    piece."""
    raw = data.draw(st.sampled_from(COMPLETE_UPSTREAM[pair.upstream_api]))
    if data.draw(st.booleans()):
        raw = raw.replace(b"\n", b"\r\n")
    cuts = data.draw(st.lists(st.integers(0, len(raw)), max_size=20))
    whole = run_stream(pair, [raw], include_usage)
    check_stream(pair, whole, complete=True)
    if pair is TO_OPENAI_CLIENT:  # its clock ticks: the created time may differ
        return
    assert run_stream(pair, pieces_at(raw, cuts), include_usage) == whole


@st.composite
def mangled_streams(draw: st.DrawFn, api: str) -> bytes:
    """A real stream's events dropped, repeated, reordered, mangled or cut."""
    events = list(UPSTREAM_EVENTS[api])
    for _ in range(draw(st.integers(0, 4))):
        if not events:
            break
        i = draw(st.integers(0, len(events) - 1))
        action = draw(st.sampled_from(["drop", "repeat", "swap", "mangle", "mangle", "garbage"]))
        name, value = events[i]
        if action == "drop":
            del events[i]
        elif action == "repeat":
            events.insert(i, events[i])
        elif action == "swap":
            j = draw(st.integers(0, len(events) - 1))
            events[i], events[j] = events[j], events[i]
        elif action == "mangle":
            events[i] = (name, draw(mangled(value)))
        else:
            events[i] = (name, draw(st.text(max_size=20)))
    raw = sse(*events) if events else b""
    if draw(st.integers(0, 3)) == 3:
        raw = raw[: draw(st.integers(0, len(raw)))]
    return raw


@FUZZ
@given(pair=PAIR, data=st.data(), include_usage=st.none() | st.booleans())
def test_a_mangled_upstream_stream(
    pair: Translator, data: st.DataObject, include_usage: bool | None
) -> None:
    raw = data.draw(mangled_streams(pair.upstream_api))
    cuts = data.draw(st.lists(st.integers(0, len(raw)), max_size=10))
    out = run_stream(pair, pieces_at(raw, cuts), include_usage)
    event(f"ended by {check_stream(pair, out, complete=False)}")
    if pair is not TO_OPENAI_CLIENT:
        assert run_stream(pair, [raw], include_usage) == out


# ---------------------------------------------------------------------------------------------
# The response filter: TranslatedResponse

CONTENT_TYPES = st.sampled_from(
    ["text/event-stream", "text/event-stream; charset=utf-8", "TEXT/EVENT-STREAM",
     "application/json", "application/json; charset=utf-8", "text/html", "", "text/plain"]
) | st.text(max_size=20)  # fmt: skip
# What Envoy puts in :status is the upstream's three ASCII digits; anything else is a local
# process talking to the port directly (a non-ASCII digit is pinned below).
STATUS_TEXT = weighted(
    (4, STATUSES.map(str)),
    (1, st.text(alphabet="0123456789 -+.xa", max_size=6)),
    (1, st.sampled_from(["", "200 OK", "0200", "99999999999999999999", "-1"])),
)


@st.composite
def headers_message(draw: st.DrawFn) -> pb.ProcessingRequest:
    raw = draw(st.booleans())
    fields = [(":status", draw(STATUS_TEXT)), ("content-type", draw(CONTENT_TYPES))]
    fields += draw(
        st.lists(
            st.tuples(st.sampled_from(["content-length", "x-request-id"]), TEXT)
            | st.tuples(st.just(":status"), STATUS_TEXT),  # a second one: the last counts
            max_size=2,
        )
    )
    if draw(st.integers(0, 7)) == 7:  # Envoy's own reply, marked by its local-reply mapper
        fields.append((LOCAL_REPLY_HEADER, "1"))
    fields = draw(st.permutations(fields))
    headers = []
    for key, value in fields:
        if raw:
            headers.append(pb.HeaderValue(key=key, raw_value=value.encode("utf-8", "replace")))
        else:
            headers.append(pb.HeaderValue(key=key, value=value.encode("utf-8", "replace").decode()))
    message = pb.ProcessingRequest(
        response_headers=pb.HttpHeaders(headers=pb.HeaderMap(headers=headers))
    )
    usage = draw(st.none() | st.booleans())
    if usage is not None:
        message.metadata_context.filter_metadata[RESPONSE_NAMESPACE].update(
            {INCLUDE_USAGE_KEY: usage}
        )
    return message


def body_message(data: bytes, end: bool) -> pb.ProcessingRequest:
    return pb.ProcessingRequest(response_body=pb.HttpBody(body=data, end_of_stream=end))


OTHER_MESSAGES = st.sampled_from(
    [
        pb.ProcessingRequest(response_trailers=pb.HttpTrailers()),
        pb.ProcessingRequest(request_headers=pb.HttpHeaders()),
        pb.ProcessingRequest(request_body=pb.HttpBody(body=b"{}", end_of_stream=True)),
        pb.ProcessingRequest(),
    ]
)
ANSWER_KIND = {
    "response_headers": "response_headers",
    "response_body": "response_body",
    "response_trailers": "response_trailers",
}


@st.composite
def message_sequences(draw: st.DrawFn, api: str) -> tuple[list[pb.ProcessingRequest], bool]:
    """Mostly what Envoy sends (headers, then body chunks, the last with end_of_stream), now
    and then with messages out of place; and whether it is in Envoy's order."""
    messages = [draw(headers_message())]
    body = draw(
        weighted(
            (2, st.sampled_from(COMPLETE_UPSTREAM[api])),
            (2, upstream_replies(api)),
            (1, mangled_streams(api)),
            (1, st.binary(max_size=100)),
        )
    )
    cuts = draw(st.lists(st.integers(0, len(body)), max_size=6))
    pieces = pieces_at(body, cuts)
    for i, piece in enumerate(pieces):
        messages.append(body_message(piece, i == len(pieces) - 1))
    extras = draw(st.integers(0, 2)) if draw(st.integers(0, 3)) == 3 else 0
    for _ in range(extras):
        at = draw(st.integers(0, len(messages)))
        extra = draw(
            weighted(
                (2, OTHER_MESSAGES),
                (1, headers_message()),
                (1, st.builds(body_message, st.binary(max_size=30), st.booleans())),
            )
        )
        messages.insert(at, extra)
    return messages, extras == 0


@FUZZ
@given(pair=PAIR, data=st.data())
def test_translated_response_of_any_messages(pair: Translator, data: st.DataObject) -> None:
    """Never an exception, each message answered in kind; in Envoy's order, what the client
    gets is its own API's: a whole reply valid JSON in its shape under a real status (an
    error body under a 2xx only for a 2xx that was no response), a stream valid SSE."""
    messages, in_order = data.draw(message_sequences(pair.upstream_api))
    response = TranslatedResponse(pair)
    told: int | None = None  # the status the headers answer set (a whole reply)
    streamed = False
    upstream, client = b"", b""
    for message in messages:
        answer, last = response.handle(message)
        assert isinstance(answer, pb.ProcessingResponse) and isinstance(last, bool)
        pb.ProcessingResponse.FromString(answer.SerializeToString())  # it goes on the wire
        kind = message.WhichOneof("request")
        assert answer.WhichOneof("response") == ANSWER_KIND.get(kind, "request_headers"), (
            kind,
            answer,
        )
        if kind == "response_headers":
            common = answer.response_headers.response
            set_headers = {
                h.header.key: h.header.raw_value for h in common.header_mutation.set_headers
            }
            if ":status" in set_headers:
                told = int(set_headers[":status"])
                assert set_headers["content-type"] == b"application/json", set_headers
            streamed = common.HasField("header_mutation") and ":status" not in set_headers
        elif kind == "response_body":
            upstream += message.response_body.body
            common = answer.response_body.response
            mutation = common.body_mutation.WhichOneof("mutation")
            if mutation == "body":
                client += common.body_mutation.body
            elif mutation is None:  # untouched: Envoy's own reply
                client += message.response_body.body
    if not in_order:
        return
    if told is not None:
        assert 200 <= told <= 599, told
        value = json.loads(client.decode("utf-8"), parse_constant=_refuse)
        if isinstance(value, dict) and ("error" in value or value.get("type") == "error"):
            check_error(pair, value)
            event("whole: error")
        else:
            assert 200 <= told < 300, (told, value)
            check_response(pair, value)
            event("whole: response")
    elif streamed:
        event(f"stream ended by {check_stream(pair, client, complete=False)}")


@FUZZ
@given(pair=PAIR, data=st.data(), include_usage=st.none() | st.booleans())
def test_translated_response_of_a_stream_split_anywhere(
    pair: Translator, data: st.DataObject, include_usage: bool | None
) -> None:
    """Envoy's messages for a 2xx event stream: the body mutations are the client's stream,
    complete after a complete upstream stream, whatever the chunking."""
    raw = data.draw(
        weighted(
            (2, st.sampled_from(COMPLETE_UPSTREAM[pair.upstream_api])),
            (1, mangled_streams(pair.upstream_api)),
        )
    )
    complete = raw in COMPLETE_UPSTREAM[pair.upstream_api]
    pieces = pieces_at(raw, data.draw(st.lists(st.integers(0, len(raw)), max_size=12)))
    response = TranslatedResponse(pair)
    headers = pb.ProcessingRequest(
        response_headers=pb.HttpHeaders(
            headers=pb.HeaderMap(
                headers=[
                    pb.HeaderValue(key=":status", raw_value=b"200"),
                    pb.HeaderValue(key="content-type", raw_value=b"text/event-stream"),
                ]
            )
        )
    )
    if include_usage is not None:
        headers.metadata_context.filter_metadata[RESPONSE_NAMESPACE].update(
            {INCLUDE_USAGE_KEY: include_usage}
        )
    answer, last = response.handle(headers)
    assert not last and not answer.HasField("mode_override")
    out = b""
    for i, piece in enumerate(pieces):
        end = i == len(pieces) - 1
        answer, last = response.handle(body_message(piece, end))
        assert last is end
        mutation = answer.response_body.response.body_mutation
        out += mutation.body if mutation.WhichOneof("mutation") == "body" else b""
    event(f"ended by {check_stream(pair, out, complete)}")


# --- what the fuzzers found (fixed since): each one pinned --------------------------------


@pytest.mark.parametrize("temperature", [10**400, -(10**400)], ids=["huge", "huge-negative"])
def test_an_integer_temperature_past_a_double_is_refused(temperature: int) -> None:
    """_sampling's float() of it raised OverflowError, out of request(): a 500 per request."""
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    assert check_request(TO_OPENAI_CLIENT, {**body, "temperature": temperature}) is None


def test_a_status_of_non_ascii_digits_is_a_502() -> None:
    """'²00' is digits to str.isdigit, not to int(): TranslatedResponse raised ValueError."""
    headers = [pb.HeaderValue(key=":status", raw_value="²00".encode("latin-1"))]
    message = pb.ProcessingRequest(
        response_headers=pb.HttpHeaders(headers=pb.HeaderMap(headers=headers))
    )
    answer, _ = TranslatedResponse(TO_ANTHROPIC_CLIENT).handle(message)
    set_headers = answer.response_headers.response.header_mutation.set_headers
    assert {h.header.key: h.header.raw_value for h in set_headers}[":status"] == b"502"


@pytest.mark.parametrize("arguments", ['{"x": NaN}', '{"x": 1e999}', '{"x": -Infinity}'])
def test_non_finite_tool_arguments_reach_an_anthropic_client_as_json(arguments: str) -> None:
    """A model's tool-call arguments with NaN or an infinity were passed on as bare NaN /
    Infinity: a body JSON.parse (Claude Code) cannot read."""
    completion = json.loads(json.dumps(OPENAI_COMPLETION))
    completion["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] = arguments
    status, out = TO_ANTHROPIC_CLIENT.response_bytes(200, json.dumps(completion).encode())
    check_reply(TO_ANTHROPIC_CLIENT, status, out)


def test_a_huge_tool_input_number_reaches_an_openai_client_as_json() -> None:
    """1e999 in a tool_use input was written as Infinity into the arguments string."""
    message = json.dumps(ANTHROPIC_MESSAGE).replace('"Paris"', "1e999").encode()
    status, out = TO_OPENAI_CLIENT.response_bytes(200, message)
    check_reply(TO_OPENAI_CLIENT, status, out)
