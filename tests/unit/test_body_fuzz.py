"""Whatever a client sends, through the server's own entry point (ExtProcService.handle):
never an exception, every reply a 4xx with an OpenAI error in UTF-8 JSON, every forwarded
body strict JSON equal to the client's with only ``model`` changed, and the same answer
whether the body was read in place or by the helper that reads big bodies.

Bounded and repeatable (derandomized); PLANO_FUZZ_EXAMPLES=20000 runs a long one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import pickle
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, Future
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plano_extproc._proto import ext_proc_pb2 as pb
from plano_extproc.config import parse_config
from plano_extproc.extproc.offload import BodyReader
from plano_extproc.extproc.processor import Processor
from plano_extproc.extproc.server import ExtProcService
from plano_extproc.router.base import OTHER, RouteChoice
from plano_extproc.router.conversation import conversation, reading_for
from plano_extproc.wire import ROUTER_MS_KEY

pytestmark = pytest.mark.unit

EXAMPLES = int(os.environ.get("PLANO_FUZZ_EXAMPLES", "400"))

CONFIG = parse_config(
    """
llm_providers:
  - model: openai/gpt-5.2
    access_key: sk-o
    default: true
  - model: anthropic/claude-sonnet-4-5
    provider_interface: openai  # the splice path: only model changes
    access_key: sk-a
    routing_preferences:
      - name: code
        description: writing code
  - model: groq/shared-model
    access_key: sk-g
  - model: mistral/shared-model
    access_key: sk-m
    routing_preferences:
      - name: poetry
        description: poems
model_aliases:
  fast-model:
    target: gpt-5.2
""",
    "fuzz.yaml",
    {},
)
READING = reading_for(CONFIG.router)
MODELS = ["openai/gpt-5.2", "gpt-5.2", "claude-sonnet-4-5", "fast-model", "shared-model"]
MODELS += ["auto", "plano/auto", "", " ", "gpt-4o", "mistral/shared-model"]
MODELS += ["shared-model", "fast-model"]  # more often: they take the rarer paths


class StubRouter:
    """Stands in for RouterService: reads the conversation as a router does and picks a
    route from it, so both ways of reading a body must hand the router the same turns."""

    async def choose(self, messages: Sequence[object]) -> RouteChoice | None:
        turns = conversation(messages, READING)
        for turn in turns:
            turn.text.encode("utf-8")  # what a tokenizer needs
            assert len(turn.text) <= READING.turn_chars
        if not turns:
            return RouteChoice(OTHER, 1.0, {OTHER: 1.0})
        route = ("code", "poetry", OTHER, None)[sum(len(t.text) for t in turns) % 4]
        return None if route is None else RouteChoice(route, 0.9, {route: 0.9})


class InProcess(Executor):
    """The helper process without the process: arguments and answer pickled as they travel."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        fn, args = pickle.loads(pickle.dumps((fn, args)))
        future.set_result(pickle.loads(pickle.dumps(fn(*args))))
        return future


class InProcessReader(BodyReader):
    def _new_pool(self) -> Executor:  # type: ignore[override]
        return InProcess()


class Problems(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def run() -> Iterator[Callable[[bytes], tuple[pb.ProcessingResponse, pb.ProcessingResponse]]]:
    processor = Processor(CONFIG)
    router = StubRouter()
    in_place = ExtProcService(processor, router)  # type: ignore[arg-type]
    helper = ExtProcService(processor, router, InProcessReader(READING), big_body=0)  # type: ignore[arg-type]
    loop = asyncio.new_event_loop()
    problems = Problems()
    logging.getLogger("plano_extproc").addHandler(problems)

    def answer(service: ExtProcService, raw: bytes) -> pb.ProcessingResponse:
        message = pb.ProcessingRequest(request_body=pb.HttpBody(body=raw, end_of_stream=True))
        result = service.handle(message.SerializeToString())
        if not isinstance(result, bytes):
            result = loop.run_until_complete(result)
        return pb.ProcessingResponse.FromString(result)

    def both(raw: bytes) -> tuple[pb.ProcessingResponse, pb.ProcessingResponse]:
        problems.records.clear()
        answers = answer(in_place, raw), answer(helper, raw)
        assert not problems.records, [r.getMessage() for r in problems.records]
        return answers

    yield both
    logging.getLogger("plano_extproc").removeHandler(problems)
    loop.close()


# --- what a client sends ---

SURROGATES = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF, categories=["Cs"])
TEXT = st.one_of(
    st.text(max_size=20),
    st.text(max_size=20),
    st.text(st.one_of(st.characters(), SURROGATES), max_size=8),
    st.sampled_from(["model", "messages", "\ufeff", "\u2028", "\x00", "日本", "\\", '"']),
)
NUMBERS = st.one_of(
    st.integers(),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0, -0.0, 1e308, 5e-324, 2**63, -(2**64)]),
)
JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), NUMBERS, TEXT),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(TEXT, inner, max_size=4)),
    max_leaves=12,
)
PART = st.one_of(
    st.fixed_dictionaries({"type": st.sampled_from(["text", "input_text"]), "text": TEXT}),
    st.fixed_dictionaries({"type": st.sampled_from(["image_url", "text"]), "image_url": JSON}),
    JSON,
)
PLAIN_MESSAGE = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "assistant"]), "content": st.text(min_size=1, max_size=30)}
)
MESSAGE = st.one_of(
    PLAIN_MESSAGE,
    PLAIN_MESSAGE,
    st.fixed_dictionaries(
        {
            "role": st.one_of(
                st.sampled_from(["user", "assistant", "system", "tool", "developer"]), JSON
            ),
            "content": st.one_of(TEXT, st.lists(PART, max_size=4), st.none(), JSON),
        },
        optional={"name": TEXT, "tool_calls": JSON},
    ),
    JSON,
)
MODEL = st.one_of(
    st.sampled_from(MODELS),
    st.sampled_from(MODELS),
    TEXT,
    st.text(SURROGATES, min_size=1, max_size=3).map(lambda s: f"gpt-{s}"),
    JSON,
)


@st.composite
def chat_requests(draw: st.DrawFn) -> dict[str, Any]:
    body: dict[str, Any] = draw(st.dictionaries(TEXT, JSON, max_size=3))
    if draw(st.integers(0, 9)):
        messages = st.lists(MESSAGE, min_size=1, max_size=5)
        body["messages"] = draw(st.one_of(messages, messages, messages, JSON))
    if draw(st.booleans()):
        body["model"] = draw(MODEL)
    for key in draw(st.lists(st.sampled_from(["temperature", "top_p", "n", "stream"]))):
        body[key] = draw(st.one_of(NUMBERS, JSON))
    return body


@st.composite
def serialized(draw: st.DrawFn, value: Any) -> bytes:
    """``value`` as JSON text, written in one of the many ways clients write it."""
    text = json.dumps(
        value,
        ensure_ascii=draw(st.booleans()),
        indent=draw(st.sampled_from([None, None, 0, 2, "\t"])),
        separators=draw(st.sampled_from([None, (",", ":"), (" , ", " : ")])),
    )
    encoding = draw(st.sampled_from(["utf-8"] * 6 + ["utf-8-sig", "utf-16", "utf-16-be"]))
    encoding = draw(st.sampled_from([encoding, encoding, "utf-32-le"]))
    return text.encode(encoding, "surrogatepass")


def splice(raw: bytes, at: int, new: bytes, cut: int = 0) -> bytes:
    at = min(at, len(raw))
    return raw[:at] + new + raw[at + cut :]


def member(raw: bytes, key: bytes, value: bytes, first: bool) -> bytes:
    """``raw`` with a member added first or last, if it is an object written in UTF-8."""
    body = raw.rstrip()
    if not body.startswith(b"{") or not body.endswith(b"}"):
        return raw
    if first:
        return b"{" + key + b": " + value + b"," + body[1:]
    return body[:-1] + (b", " if body[1:-1].strip() else b"") + key + b": " + value + b"}"


@st.composite
def mutated(draw: st.DrawFn, raw: bytes) -> bytes:
    """A written body, damaged or made unusual in one of the ways that broke servers."""
    kind = draw(st.integers(0, 12))
    at = draw(st.integers(0, max(len(raw), 1)))
    first = draw(st.booleans())  # the first of two members, or the one json.loads keeps
    if kind == 0:  # a second model
        return member(raw, b'"model"', json.dumps(draw(MODEL)).encode(), first)
    if kind == 1:  # numbers out of a double's range, or too long for Python's int
        number = draw(st.sampled_from([b"1e999", b"-1E400", b"1" * 5000, b"0." + b"9" * 400]))
        return member(raw, b'"temperature"', number, first)
    if kind == 2:  # nesting deep and deeper
        depth = draw(st.sampled_from([10, 300, 2000, 100_000]))
        nested = b"[" * depth + b"]" * depth
        return member(raw, b'"deep"', nested, first) if raw.startswith(b"{") else nested
    if kind == 3:  # truncated
        return raw[:at]
    if kind == 4:  # a random byte or two
        return splice(raw, at, draw(st.binary(min_size=1, max_size=2)), draw(st.integers(0, 2)))
    if kind == 5:  # constants Python's json reads and no other parser does
        constant = draw(st.sampled_from([b"NaN", b"Infinity", b"-Infinity"]))
        return member(raw, b'"x"', constant, first) if raw.startswith(b"{") else constant
    if kind == 6:  # whitespace around, JSON's or not
        pad = draw(st.sampled_from([b" \r\n\t", b"\xc2\xa0", b"\x00", b"\xef\xbb\xbf"]))
        return pad + raw if draw(st.booleans()) else raw + pad
    if kind in (7, 8):  # a lone surrogate written as an escape, or as (invalid) UTF-8 bytes
        value = draw(st.sampled_from([b'"\\udc80"', b'"\\ud83d"', b'"\xed\xb2\x80"']))
        key = draw(st.sampled_from([b'"model"', b'"model"', b'"messages"', b'"x"']))
        return member(raw, key, value, first) if raw.startswith(b"{") else value
    return raw


CHAT = chat_requests().flatmap(serialized)
# Requests as clients mostly send them: each way of routing one comes up often.
PLAIN = st.fixed_dictionaries(
    {"model": st.sampled_from(MODELS), "messages": st.lists(PLAIN_MESSAGE, min_size=1, max_size=3)},
    optional={"temperature": NUMBERS, "stream": st.booleans()},
).flatmap(serialized)
BODIES = st.one_of(
    PLAIN,
    CHAT,
    CHAT,
    CHAT.flatmap(mutated),
    CHAT.flatmap(mutated),
    JSON.flatmap(serialized).flatmap(mutated),
    st.binary(max_size=64),
)


def refuse(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def client_json(raw: bytes) -> Any:
    return json.loads(raw, parse_constant=refuse)


@settings(
    max_examples=EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(raw=BODIES)
def test_any_body(
    run: Callable[[bytes], tuple[pb.ProcessingResponse, pb.ProcessingResponse]], raw: bytes
) -> None:
    in_place, helper = run(raw)
    kind = in_place.WhichOneof("response")
    assert kind in ("immediate_response", "request_body"), in_place
    if kind == "immediate_response":
        reply = in_place.immediate_response
        assert 400 <= reply.status.code < 500, reply
        headers = {h.header.key: h.header.raw_value for h in reply.headers.set_headers}
        assert headers["content-type"] == b"application/json"
        error = json.loads(reply.body.decode("utf-8"), parse_constant=refuse)
        assert list(error) == ["error"]
        assert set(error["error"]) == {"message", "type", "param", "code"}
        assert isinstance(error["error"]["message"], str) and error["error"]["message"]
        error["error"]["message"].encode("utf-8")  # no lone surrogate
        assert helper == in_place
        return
    metadata = in_place.dynamic_metadata.fields["plano"].struct_value.fields
    provider = CONFIG.by_name[metadata["model"].string_value]
    mutation = in_place.request_body.response.body_mutation
    forwarded = mutation.body if in_place.request_body.response.HasField("body_mutation") else raw
    sent = json.loads(forwarded.decode("utf-8"), parse_constant=refuse)
    assert sent == {**client_json(raw), "model": provider.model_id}
    # The helper's answer: the same decision and the same bytes forwarded.
    assert helper.request_body.response.body_mutation.body == forwarded
    helper.request_body.response.ClearField("body_mutation")
    in_place.request_body.response.ClearField("body_mutation")
    # The router's time (preference-routed requests) is a timing of each run.
    for answer in (helper, in_place):
        answer.dynamic_metadata.fields["plano"].struct_value.fields.pop(ROUTER_MS_KEY, None)
    assert helper == in_place


def test_the_fuzzer_reaches_every_outcome(
    run: Callable[[bytes], tuple[pb.ProcessingResponse, pb.ProcessingResponse]],
) -> None:
    # A check of the generators: each kind of answer is among the first bodies they give.
    codes: set[str] = set()

    # Enough examples that no outcome hangs on the luck of the draw (model_ambiguous, the
    # rarest, was missed at 400 when other tests ran first).
    @settings(max_examples=1000, derandomize=True, deadline=None, database=None)
    @given(raw=BODIES)
    def collect(raw: bytes) -> None:
        answer, _ = run(raw)
        if answer.HasField("immediate_response"):
            codes.add(json.loads(answer.immediate_response.body)["error"]["code"])
        else:
            routing = answer.dynamic_metadata.fields["plano"].struct_value.fields["routing"]
            codes.add(routing.string_value)

    collect()
    assert codes >= {
        "invalid_json",
        "invalid_body",
        "invalid_type",
        "missing_required_parameter",
        "model_not_found",
        "model_ambiguous",
        "direct",
        "alias",
        "default",
        "preference",
    }, sorted(codes)
