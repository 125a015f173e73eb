"""Provider fallback end to end (issue 11), through real Envoy, with the official SDKs.

One gateway serves the module (``timeout: 1s`` on the listener: a provider silent that long
is failed over): four fakes, each checking its own key, so a key that reaches the wrong
provider is a 401 there (never failed over) and shows in the recordings:

==============  ===========================  =========================================
fake            API                          models (entries of the config)
==============  ===========================  =========================================
``oa1``         OpenAI chat completions      gpt-p, gpt-px, gpt-three, gpt-eject, gpt-solo
``oa2``         OpenAI chat completions      gpt-f
``an1``         Anthropic Messages (native)  claude-p, claude-px
``an2``         Anthropic Messages (native)  claude-f
==============  ===========================  =========================================

The chains (a provider entry's ``fallbacks``, an alias's, followed through each member's
own): gpt-p -> gpt-f (OpenAI -> OpenAI, and the default), claude-p -> claude-f (Anthropic ->
Anthropic), gpt-px -> claude-f (OpenAI-compatible -> native Anthropic, written as Plano's
``- target:``), claude-px -> gpt-f (the reverse), gpt-three -> gpt-f -> claude-f,
gpt-eject -> gpt-f (outlier detection, used by one test only), gpt-down (nothing listens)
-> gpt-f; aliases ``sturdy`` (gpt-solo -> claude-f), ``sturdy-plano`` (gpt-solo -> gpt-f,
``- target:``), ``deep`` (gpt-solo -> gpt-px, and on through gpt-px's own to claude-f) and
``around`` (gpt-f -> claude-px, whose own fallback, gpt-f, is the target: not repeated).
gpt-solo named directly has no fallbacks. A second gateway, started only for the route
tests, has the embedded router and a top-level ``routing_preferences`` route whose
``models`` fail over.

Every test asserts what each provider received and in which order (the fakes' recordings,
by arrival), that each got its own path, model id and key and no other provider's key (nor
the client's), and what the client got: the status, a body of its own API's shape, the text
of the member that answered, ``x-plano-model`` and ``x-plano-attempts``.

Outlier detection (3 gateway failures in a row eject a member for 30 s) would carry one
test's failures into the next: after each test, each member the test reached is "healed"
through the first chain that has it, by a request on which each member but the last answers
429 (not a 5xx: it resets the member's counts) and the last 200 (``heal``).

bench/fallback_matrix.py runs the same gateway for the fallback matrix (failure kind x
plain/streamed x schema pair) and imports this module's config and helpers.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.fake_providers import Failure, FakeAnthropic, FakeOpenAI, Recorded
from tests.fakes import free_port
from tests.translate_fixtures import http as sdk_http

from .conftest import Gateway, start_gateway

pytestmark = pytest.mark.integration

OPENAI, ANTHROPIC = "openai", "anthropic"
CLIENT_KEY = "client-key-never-forwarded"
TIMEOUT = 10.0  # the clients'; the listener's is 1 s
LISTENER_TIMEOUT_S = 1.0
UPSTREAM_PATH = {OPENAI: "/v1/chat/completions", ANTHROPIC: "/v1/messages"}

# fake -> (API, the gateway's key for it, the environment variable the config names)
FAKES: dict[str, tuple[str, str, str]] = {
    "oa1": (OPENAI, "sk-oa1-primary-key", "FB_OA1_KEY"),
    "oa2": (OPENAI, "sk-oa2-fallback-key", "FB_OA2_KEY"),
    "an1": (ANTHROPIC, "sk-ant-an1-primary-key", "FB_AN1_KEY"),
    "an2": (ANTHROPIC, "sk-ant-an2-fallback-key", "FB_AN2_KEY"),
}
KEY_ENV = {env: key for _, key, env in FAKES.values()}
GATEWAY_KEYS = frozenset(KEY_ENV.values())
# The fakes' names: their default reply is "from <name>: <the last user text>".
FAKE_NAME = {
    "oa1": "openai-primary",
    "oa2": "openai-fallback",
    "an1": "anthropic-primary",
    "an2": "anthropic-fallback",
}

Fake = FakeOpenAI | FakeAnthropic
Fakes = Mapping[str, Fake]


@dataclass(frozen=True)
class Member:
    """A configured model that can be a chain member, and the fake behind it."""

    name: str  # provider/model-id
    fake: str  # a FAKES key, or "down" (nothing listens)

    @property
    def model_id(self) -> str:
        return self.name.split("/", 1)[1]

    @property
    def api(self) -> str:
        return FAKES[self.fake][0] if self.fake in FAKES else OPENAI

    @property
    def key(self) -> str:
        return FAKES[self.fake][1]

    @property
    def reply_from(self) -> str:
        return FAKE_NAME[self.fake]


MEMBERS = {
    m.name: m
    for m in (
        Member("openai/gpt-p", "oa1"),
        Member("openai/gpt-px", "oa1"),
        Member("openai/gpt-three", "oa1"),
        Member("openai/gpt-eject", "oa1"),
        Member("openai/gpt-solo", "oa1"),
        Member("openai/gpt-c", "oa1"),  # the route gateway's
        Member("openai/gpt-f", "oa2"),
        Member("anthropic/claude-p", "an1"),
        Member("anthropic/claude-px", "an1"),
        Member("anthropic/claude-f", "an2"),
        Member("openai/gpt-down", "down"),
    )
}

# What a client names -> the chain's members, in order.
CHAINS: dict[str, tuple[str, ...]] = {
    "openai/gpt-p": ("openai/gpt-p", "openai/gpt-f"),
    "anthropic/claude-p": ("anthropic/claude-p", "anthropic/claude-f"),
    "openai/gpt-px": ("openai/gpt-px", "anthropic/claude-f"),
    "anthropic/claude-px": ("anthropic/claude-px", "openai/gpt-f"),
    "openai/gpt-three": ("openai/gpt-three", "openai/gpt-f", "anthropic/claude-f"),
    "openai/gpt-eject": ("openai/gpt-eject", "openai/gpt-f"),
    "openai/gpt-down": ("openai/gpt-down", "openai/gpt-f"),
    "sturdy": ("openai/gpt-solo", "anthropic/claude-f"),
    "sturdy-plano": ("openai/gpt-solo", "openai/gpt-f"),
    "deep": ("openai/gpt-solo", "openai/gpt-px", "anthropic/claude-f"),
    # claude-px's own fallback is gpt-f, the alias's target: tried first, not again.
    "around": ("openai/gpt-f", "anthropic/claude-px"),
}
# Not healed: gpt-eject is meant to stay ejected, gpt-down cannot answer.
UNHEALABLE = {"openai/gpt-eject", "openai/gpt-down"}

# The four schema pairs of a two-member chain: the primary's API > the fallback's.
SCHEMAS = {
    "openai>openai": "openai/gpt-p",
    "anthropic>anthropic": "anthropic/claude-p",
    "openai>anthropic": "openai/gpt-px",
    "anthropic>openai": "anthropic/claude-px",
}

# How a primary fails, for the fail-over matrix. "hang": silent past the listener's timeout.
FAILURES: dict[str, Failure] = {
    "429": Failure.error(429),
    "429-retry-after-30": Failure.error(429, retry_after=30),
    "500": Failure.error(500),
    "502": Failure.error(502),
    "503": Failure.error(503),
    "502-html": Failure.raw(
        502, "<html><body><h1>502 Bad Gateway</h1></body></html>", content_type="text/html"
    ),
    "hang": Failure.hang(3.0),
    "disconnect": Failure.disconnect(),
}


def gateway_config(fakes: Fakes, down_port: int, timeout: str = "1s") -> str:
    """The module gateway's config (``{port}`` for start_gateway to fill)."""

    def base(name: str) -> str:
        return fakes[name].base_url()

    env = {name: env for name, (_, _, env) in FAKES.items()}
    return f"""
listeners:
  egress_traffic:
    address: 127.0.0.1
    port: {{port}}
    timeout: {timeout}
    max_body_size: 1MiB
model_providers:
  - model: openai/gpt-p
    access_key: ${env["oa1"]}
    base_url: {base("oa1")}
    default: true
    fallbacks: [openai/gpt-f]
  - model: openai/gpt-px
    access_key: ${env["oa1"]}
    base_url: {base("oa1")}
    fallbacks:
      - target: anthropic/claude-f
  - model: openai/gpt-three
    access_key: ${env["oa1"]}
    base_url: {base("oa1")}
    fallbacks: [openai/gpt-f, anthropic/claude-f]
  - model: openai/gpt-eject
    access_key: ${env["oa1"]}
    base_url: {base("oa1")}
    fallbacks: [openai/gpt-f]
  - model: openai/gpt-down
    access_key: ${env["oa1"]}
    base_url: http://127.0.0.1:{down_port}/v1
    fallbacks: [openai/gpt-f]
  - model: openai/gpt-solo
    access_key: ${env["oa1"]}
    base_url: {base("oa1")}
  - model: openai/gpt-f
    access_key: ${env["oa2"]}
    base_url: {base("oa2")}
  - model: anthropic/claude-p
    access_key: ${env["an1"]}
    base_url: {base("an1")}
    fallbacks: [anthropic/claude-f]
  - model: anthropic/claude-px
    access_key: ${env["an1"]}
    base_url: {base("an1")}
    fallbacks: [openai/gpt-f]
  - model: anthropic/claude-f
    access_key: ${env["an2"]}
    base_url: {base("an2")}
model_aliases:
  sturdy:
    target: openai/gpt-solo
    fallbacks: [anthropic/claude-f]
  sturdy-plano:
    target: openai/gpt-solo
    fallbacks:
      - target: openai/gpt-f
  deep:
    target: openai/gpt-solo
    fallbacks: [openai/gpt-px]
  around:
    target: openai/gpt-f
    fallbacks: [anthropic/claude-px]
"""


def start_fakes() -> dict[str, Fake]:
    fakes: dict[str, Fake] = {}
    for name, (api, key, _) in FAKES.items():
        cls = FakeOpenAI if api == OPENAI else FakeAnthropic
        fakes[name] = cls(FAKE_NAME[name], api_key=key).start()
    return fakes


def admin_socket(gw: Gateway) -> Path | None:
    """Envoy's admin socket, next to the bootstrap `up` names in its log."""
    found = re.search(rb"bootstrap (\S+)\)", gw.log.read_bytes())
    if not found:
        return None
    socket = Path(found.group(1).decode()).parent / "envoy-admin.sock"
    return socket if socket.exists() else None


def ejections_active(gw: Gateway) -> int | None:
    """Members ejected by outlier detection now (None: the admin API is out of reach)."""
    socket = admin_socket(gw)
    if socket is None:
        return None
    with httpx.Client(transport=httpx.HTTPTransport(uds=str(socket)), timeout=2) as admin:
        text = admin.get("http://envoy/stats?filter=outlier_detection.ejections_active").text
    return sum(int(n) for n in re.findall(r"ejections_active: (\d+)", text))


# ---------------------------------------------------------------------------------------------
# The gateways


@pytest.fixture(scope="module")
def fakes() -> Iterator[dict[str, Fake]]:
    started = start_fakes()
    yield started
    for fake in started.values():
        fake.stop()


@pytest.fixture(scope="module")
def gateway(fakes: dict[str, Fake], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gw = start_gateway(
        gateway_config(fakes, free_port()), tmp_path_factory.mktemp("fallback"), env=KEY_ENV
    )
    yield gw
    gw.stop()


def reset(fakes: Fakes) -> None:
    for fake in fakes.values():
        fake.reset()
        fake.event_pause_s = 0.0


def heal(gw: Gateway, fakes: Fakes, name: str, http: httpx.Client | None = None) -> None:
    """One request along the chain ``name``: each member but the last answers 429, the last
    200, which resets every member's count of failures in a row."""
    chain = [MEMBERS[m] for m in CHAINS[name]]
    reset(fakes)
    for member in chain[:-1]:
        fakes[member.fake].fail(Failure.error(429))
    response = (http or httpx).post(
        f"{gw.url}/v1/chat/completions",
        json={"model": name, "messages": [{"role": "user", "content": "heal"}]},
        timeout=TIMEOUT,
    )
    reset(fakes)
    assert response.status_code == 200, (name, response.status_code, response.text)
    assert response.headers.get("x-plano-attempts") == str(len(chain)), (
        f"healing {name}: a member was skipped (ejected by an earlier test?)",
        dict(response.headers),
    )


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    """Keeps its connections: a client made per request costs ~20 ms (its TLS context)."""
    with httpx.Client(timeout=TIMEOUT) as client:
        yield client


@pytest.fixture(autouse=True)
def _fresh(
    request: pytest.FixtureRequest, fakes: dict[str, Fake], http: httpx.Client
) -> Iterator[None]:
    reset(fakes)
    yield
    touched = set(calls(fakes)) - UNHEALABLE
    if "gateway" in request.fixturenames:
        gw = request.getfixturevalue("gateway")
        # Each member the test reached, through the first chain that has it.
        for name, members in CHAINS.items():
            if touched & set(members) and not set(members) & UNHEALABLE:
                heal(gw, fakes, name, http)
                touched -= set(members)
    reset(fakes)


# ---------------------------------------------------------------------------------------------
# What the providers received


def calls(fakes: Fakes) -> list[str]:
    """Every request the fakes received, as the member it was for, in arrival order."""
    by_model = {(m.fake, m.model_id): m.name for m in MEMBERS.values()}
    stamped: list[tuple[float, str]] = []
    for fake_name, fake in fakes.items():
        for got in list(fake.received):
            try:
                model = str(got.json.get("model"))
            except ValueError:
                model = "?"
            stamped.append((got.at, by_model.get((fake_name, model), f"{fake_name}:{model}")))
    return [name for _, name in sorted(stamped)]


def received(fakes: Fakes, member: str) -> list[Recorded]:
    m = MEMBERS[member]
    return [r for r in fakes[m.fake].received if r.json.get("model") == m.model_id]


def check_received(got: Recorded, member: Member, stream: bool, chained: bool = True) -> None:
    """A member got its own endpoint, model id and key, and nobody else's key. ``chained``:
    sent through a chain (off one, Envoy's x-envoy-attempt-count goes along, as
    envoy/README.md says: the virtual host asks for it)."""
    assert got.method == "POST"
    assert got.route == UPSTREAM_PATH[member.api], got.path
    assert got.json["model"] == member.model_id
    assert (got.json.get("stream") is True) == stream, got.json
    assert got.headers["content-length"] == str(len(got.raw_body))
    foreign = (GATEWAY_KEYS - {member.key}) | {CLIENT_KEY}
    for name, value in got.raw_headers:
        leaked = [key for key in foreign if key in value]
        assert not leaked, f"{member.name} got {name}: {value}"
        lower = name.lower()
        # Off a chain the count goes along (2 for a retry after a short retry-after).
        if not chained and lower == "x-envoy-attempt-count" and value in ("1", "2"):
            continue
        assert not lower.startswith(("x-plano-", "x-envoy-", "plano-")), (name, value)
    if member.api == OPENAI:
        assert got.headers.get("authorization") == f"Bearer {member.key}"
        assert "x-api-key" not in got.headers and "api-key" not in got.headers
        # Anthropic's own headers mean nothing to an OpenAI-compatible provider.
        assert not [name for name in got.headers if name.startswith("anthropic-")], got.headers
    else:
        assert got.headers.get("x-api-key") == member.key
        assert "authorization" not in got.headers
        assert got.headers.get("anthropic-version")


def check_chain_calls(
    fakes: Fakes, expected: list[str], stream: bool, chained: bool = True
) -> list[Recorded]:
    """The members were called in this order, once each, each as check_received wants
    (a member where nothing listens records nothing)."""
    assert calls(fakes) == [name for name in expected if MEMBERS[name].fake != "down"]
    requests = []
    for name in expected:
        if MEMBERS[name].fake == "down":
            continue
        (got,) = received(fakes, name)
        check_received(got, MEMBERS[name], stream, chained)
        requests.append(got)
    return requests


# ---------------------------------------------------------------------------------------------
# What the client got, through its SDK


def oc(gw: Gateway) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{gw.url}/v1", api_key=CLIENT_KEY, max_retries=0, timeout=TIMEOUT
    )


def ac(gw: Gateway) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key=CLIENT_KEY, max_retries=0, timeout=TIMEOUT)


@dataclass
class Got:
    status: int
    headers: Mapping[str, str]
    text: str  # the reply's text, or the error's message
    error_type: str | None  # the error's type in the client's API (None on success)
    seconds: float  # until the response headers
    error_code: str | None = None  # an OpenAI error's code

    @property
    def model(self) -> str | None:
        return self.headers.get("x-plano-model")

    @property
    def attempts(self) -> str | None:
        return self.headers.get("x-plano-attempts")


def error_of(client: str, response: sdk_http.Response) -> tuple[str, str, str | None]:
    """(type, message, OpenAI code) of an error body, checked to be the client's API's
    shape."""
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    if client == OPENAI:
        assert set(body) == {"error"}, body
        error = body["error"]
        assert set(error) == {"message", "type", "param", "code"}, body
        return str(error["type"]), str(error["message"]), error["code"]
    assert set(body) <= {"type", "error", "request_id"}, body
    assert body["type"] == "error" and set(body["error"]) == {"type", "message"}, body
    return str(body["error"]["type"]), str(body["error"]["message"]), None


def ask(
    gw: Gateway,
    client: str,
    model: str,
    stream: bool,
    prompt: str = "Say hello",
    messages: list[dict[str, str]] | None = None,
) -> Got:
    """One request with the client's SDK; a success is checked to be whole and of the
    client's API (an OpenAI stream ends with one finish reason, an Anthropic one with
    message_stop)."""
    messages = messages or [{"role": "user", "content": prompt}]
    sdk: openai.OpenAI | anthropic.Anthropic = oc(gw) if client == OPENAI else ac(gw)
    started = time.monotonic()
    try:
        if isinstance(sdk, openai.OpenAI):
            return _ask_openai(sdk, model, stream, messages, started)
        return _ask_anthropic(sdk, model, stream, messages, started)
    except (openai.APIStatusError, anthropic.APIStatusError) as error:
        seconds = time.monotonic() - started
        kind, message, code = error_of(client, error.response)
        return Got(error.status_code, error.response.headers, message, kind, seconds, code)


def _ask_openai(
    sdk: openai.OpenAI, model: str, stream: bool, messages: list[Any], started: float
) -> Got:
    completions = sdk.chat.completions.with_raw_response
    if not stream:
        raw = completions.create(model=model, messages=messages)
        seconds = time.monotonic() - started
        completion = raw.parse()
        assert completion.object == "chat.completion"
        (choice,) = completion.choices
        assert choice.finish_reason == "stop"
        return Got(raw.status_code, raw.headers, choice.message.content or "", None, seconds)
    raw_stream = completions.create(model=model, messages=messages, stream=True)
    seconds = time.monotonic() - started
    chunks = list(raw_stream.parse())
    assert chunks and all(c.object == "chat.completion.chunk" for c in chunks)
    with_choices = [c for c in chunks if c.choices]
    finishes = [c.choices[0].finish_reason for c in with_choices if c.choices[0].finish_reason]
    assert finishes == ["stop"], finishes
    text = "".join(c.choices[0].delta.content or "" for c in with_choices)
    return Got(raw_stream.status_code, raw_stream.headers, text, None, seconds)


def _ask_anthropic(
    sdk: anthropic.Anthropic, model: str, stream: bool, messages: list[Any], started: float
) -> Got:
    create = sdk.messages.with_raw_response.create
    if not stream:
        raw = create(model=model, max_tokens=256, messages=messages)
        seconds = time.monotonic() - started
        message = raw.parse()
        assert message.type == "message" and message.role == "assistant"
        assert message.stop_reason == "end_turn"
        text = "".join(block.text for block in message.content if block.type == "text")
        return Got(raw.status_code, raw.headers, text, None, seconds)
    raw_stream = create(model=model, max_tokens=256, messages=messages, stream=True)
    seconds = time.monotonic() - started
    events = list(raw_stream.parse())
    kinds = [event.type for event in events]
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop", kinds
    stops = [e.delta.stop_reason for e in events if e.type == "message_delta"]
    assert stops == ["end_turn"], stops
    text = "".join(
        e.delta.text
        for e in events
        if e.type == "content_block_delta" and e.delta.type == "text_delta"
    )
    return Got(raw_stream.status_code, raw_stream.headers, text, None, seconds)


# The gateway's internal headers (envoy/README.md): the chain route's attempt count and the
# marker of Envoy's own replies, which the response's header_mutation turns into
# x-plano-attempts or removes.
INTERNAL_HEADERS = ("plano-attempts", "plano-served-model", "x-plano-local-reply")


def check_client_headers(headers: Mapping[str, str]) -> None:
    """No internal header, and nothing of Envoy's, reaches the client."""
    names = [name.lower() for name in headers]
    assert not [n for n in names if n in INTERNAL_HEADERS or n.startswith("x-envoy-")], names


def check_answered_by(got: Got, member: str, prompt: str, attempts: int, routing: str) -> None:
    assert got.status == 200, (got.status, got.text)
    assert got.text == f"from {MEMBERS[member].reply_from}: {prompt}"
    assert got.model == member
    assert got.attempts == str(attempts)
    assert got.headers.get("x-plano-routing") == routing
    # The answer is the member's: no retry-after of a member before it.
    assert "retry-after" not in got.headers
    check_client_headers(got.headers)


CLIENTS = [OPENAI, ANTHROPIC]
STREAMS = [pytest.param(False, id="plain"), pytest.param(True, id="stream")]


# ---------------------------------------------------------------------------------------------
# A chain whose primary answers


@pytest.mark.parametrize("stream", STREAMS)
@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("schema", list(SCHEMAS))
def test_a_primary_that_answers_is_the_only_one_asked(
    gateway: Gateway, fakes: Fakes, schema: str, client: str, stream: bool
) -> None:
    model = SCHEMAS[schema]
    primary = CHAINS[model][0]
    got = ask(gateway, client, model, stream)
    check_answered_by(got, primary, "Say hello", 1, "direct")
    check_chain_calls(fakes, [primary], stream)


# ---------------------------------------------------------------------------------------------
# The matrix: failure kind x plain/streamed x schema pair x client


@pytest.mark.parametrize("stream", STREAMS)
@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("schema", list(SCHEMAS))
@pytest.mark.parametrize("kind", list(FAILURES))
def test_a_failing_primary_is_failed_over(
    gateway: Gateway, fakes: Fakes, kind: str, schema: str, client: str, stream: bool
) -> None:
    model = SCHEMAS[schema]
    primary, fallback = CHAINS[model]
    fakes[MEMBERS[primary].fake].fail(FAILURES[kind])
    prompt = f"{kind} on {schema}, {client} client"
    got = ask(gateway, client, model, stream, prompt)

    check_answered_by(got, fallback, prompt, 2, "direct")
    first, second = check_chain_calls(fakes, [primary, fallback], stream)
    waited = second.at - first.at
    if kind == "hang":
        # No first byte within the listener's timeout: the next member, then.
        assert LISTENER_TIMEOUT_S * 0.9 <= waited < LISTENER_TIMEOUT_S + 1.5, waited
        assert got.seconds >= LISTENER_TIMEOUT_S * 0.9
    else:
        # At once: a 429's retry-after (30 s) is not waited out.
        assert waited < 1.0, waited
        assert got.seconds < 2.0, got.seconds


@pytest.mark.parametrize("stream", STREAMS)
@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("model", ["anthropic/claude-p", "anthropic/claude-px"])
def test_anthropic_overloaded_529_is_failed_over(
    gateway: Gateway, fakes: Fakes, model: str, client: str, stream: bool
) -> None:
    primary, fallback = CHAINS[model]
    fakes["an1"].fail(Failure.error(529))
    got = ask(gateway, client, model, stream, "overloaded")
    check_answered_by(got, fallback, "overloaded", 2, "direct")
    check_chain_calls(fakes, [primary, fallback], stream)


@pytest.mark.parametrize("client", CLIENTS)
def test_a_primary_that_cannot_be_reached_is_failed_over(
    gateway: Gateway, fakes: Fakes, client: str
) -> None:
    """Nothing listens at gpt-down: a connect failure. Two requests only: a third would
    eject the member (outlier detection), and this test is about the connect failure."""
    stream = client == ANTHROPIC
    got = ask(gateway, client, "openai/gpt-down", stream, "anyone there?")
    check_answered_by(got, "openai/gpt-f", "anyone there?", 2, "direct")
    check_chain_calls(fakes, ["openai/gpt-down", "openai/gpt-f"], stream)


# ---------------------------------------------------------------------------------------------
# What is not failed over


@pytest.mark.parametrize("stream", STREAMS)
@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("schema", list(SCHEMAS))
def test_a_400_is_returned_as_is(
    gateway: Gateway, fakes: Fakes, schema: str, client: str, stream: bool
) -> None:
    model = SCHEMAS[schema]
    primary = CHAINS[model][0]
    fakes[MEMBERS[primary].fake].fail(Failure.error(400, message="the primary refuses this"))
    got = ask(gateway, client, model, stream)
    assert got.status == 400
    assert got.text == "the primary refuses this"
    assert got.error_type == "invalid_request_error"
    assert got.model == primary
    assert got.attempts == "1"
    check_client_headers(got.headers)
    check_chain_calls(fakes, [primary], stream)


@pytest.mark.parametrize("status", [401, 403, 404, 413, 422])
@pytest.mark.parametrize("client", CLIENTS)
def test_other_4xx_are_returned_as_is(
    gateway: Gateway, fakes: Fakes, status: int, client: str
) -> None:
    fakes["oa1"].fail(Failure.error(status, message=f"the primary says {status}"))
    got = ask(gateway, client, "openai/gpt-px", False)
    assert got.status == status
    assert got.text == f"the primary says {status}"
    assert got.model == "openai/gpt-px"
    assert got.attempts == "1"
    check_chain_calls(fakes, ["openai/gpt-px"], False)


MID_STREAM = {
    "cut": Failure.cut(5),
    "stream-error": Failure.stream_error(5, message="broke mid-stream"),
}
LONG_PROMPT = "one two three four five six seven eight nine ten eleven twelve"


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("schema", list(SCHEMAS))
@pytest.mark.parametrize("kind", list(MID_STREAM))
def test_a_stream_failing_after_its_first_bytes_is_the_clients(
    gateway: Gateway, fakes: Fakes, kind: str, schema: str, client: str
) -> None:
    """The primary sent its 200 and a few events, then broke: the client's stream fails
    (an error, never a clean end), and the fallback is not asked."""
    model = SCHEMAS[schema]
    primary = MEMBERS[CHAINS[model][0]]
    fakes[primary.fake].event_pause_s = 0.05
    fakes[primary.fake].fail(MID_STREAM[kind])
    text, ended, error, headers = stream_until_it_breaks(gateway, client, model, LONG_PROMPT)
    assert headers.get("x-plano-model") == primary.name
    assert headers.get("x-plano-attempts") == "1"
    assert not ended, "the client's stream ended as if complete"
    assert error is not None, "the client's stream stopped without an error"
    assert f"from {primary.reply_from}: {LONG_PROMPT}".startswith(text), text
    if kind == "stream-error":
        assert "broke mid-stream" in str(error)
        time.sleep(0.1)  # a fallback would have been asked by now
    check_chain_calls(fakes, [primary.name], True)


def stream_until_it_breaks(
    gw: Gateway, client: str, model: str, prompt: str
) -> tuple[str, bool, Exception | None, Mapping[str, str]]:
    """(the text before the break, whether the stream ended cleanly, the error, headers)."""
    messages: Any = [{"role": "user", "content": prompt}]
    pieces: list[str] = []
    ended = False
    if client == OPENAI:
        raw = oc(gw).chat.completions.with_raw_response.create(
            model=model, messages=messages, stream=True
        )
        assert raw.status_code == 200
        try:
            for chunk in raw.parse():
                for choice in chunk.choices:
                    pieces.append(choice.delta.content or "")
                    ended = ended or choice.finish_reason is not None
        except (httpx.HTTPError, openai.APIError) as error:
            return "".join(pieces), ended, error, raw.headers
        return "".join(pieces), ended, None, raw.headers
    raw_stream = ac(gw).messages.with_raw_response.create(
        model=model, max_tokens=256, messages=messages, stream=True
    )
    assert raw_stream.status_code == 200
    try:
        for event in raw_stream.parse():
            if event.type == "content_block_delta" and event.delta.type == "text_delta":
                pieces.append(event.delta.text)
            ended = ended or event.type == "message_stop"
    except (httpx.HTTPError, anthropic.APIError) as error:
        return "".join(pieces), ended, error, raw_stream.headers
    return "".join(pieces), ended, None, raw_stream.headers


@pytest.mark.parametrize(
    ("schema", "client"),
    [
        ("openai>openai", OPENAI),
        ("anthropic>anthropic", ANTHROPIC),
        ("openai>anthropic", ANTHROPIC),
        ("anthropic>openai", OPENAI),
    ],
)
def test_a_whole_reply_cut_after_its_headers_is_not_failed_over(
    gateway: Gateway, fakes: Fakes, schema: str, client: str
) -> None:
    """The primary's 200 headers came, then half the body and a closed connection: the
    response had begun, so the client gets an error (a 502, or a cut body), never a
    fallback's answer."""
    model = SCHEMAS[schema]
    primary = CHAINS[model][0]
    fakes[MEMBERS[primary].fake].fail(Failure.cut(0))
    try:
        got = ask(gateway, client, model, False)
    except (httpx.HTTPError, openai.APIError, anthropic.APIError) as error:
        assert not isinstance(error, openai.APIStatusError | anthropic.APIStatusError)
    else:
        assert got.status == 502, (got.status, got.text)
    check_chain_calls(fakes, [primary], False)


@pytest.mark.xfail(
    strict=True,
    reason="product bug: when a chain's primary resets after its 200 headers on a translated "
    "route (client API != primary's) before the response translation answered the headers, "
    "Envoy's 502 upstream_unavailable reaches the client with the internal headers "
    "plano-attempts: 1 and x-plano-local-reply: 1, and without x-plano-attempts, "
    "x-plano-model or x-plano-routing (x-plano-local-reply leaks off chains too: "
    "anthropic/claude-f for an OpenAI client)",
)
def test_envoys_own_reply_on_a_chain_carries_no_internal_header(
    gateway: Gateway, fakes: Fakes
) -> None:
    """Which of a 502 or a cut 200 the client gets is a race (the 502 most times): each try
    is on another chain (each primary is asked at most twice, below outlier detection's
    three), until one answers 502."""
    tries = [
        ("anthropic/claude-px", OPENAI),
        ("anthropic/claude-p", OPENAI),
        ("openai/gpt-px", ANTHROPIC),
        ("openai/gpt-three", ANTHROPIC),
        ("sturdy", ANTHROPIC),
        ("openai/gpt-p", ANTHROPIC),
    ]
    for model, client in tries:
        primary = MEMBERS[CHAINS[model][0]]
        reset(fakes)
        fakes[primary.fake].fail(Failure.cut(0))
        try:
            got = ask(gateway, client, model, True)
        except (httpx.HTTPError, openai.APIError, anthropic.APIError):
            continue  # the cut 200
        assert got.status == 502, got
        assert calls(fakes) == [primary.name]  # not failed over
        check_client_headers(got.headers)
        assert got.attempts == "1"
        assert got.model == primary.name
        return
    pytest.skip("every try was a cut 200: no 502 to look at")


# ---------------------------------------------------------------------------------------------
# Every member failing


# The last member's (an2's) failure -> what each client gets: (status, error type, OpenAI
# code; None: not checked). An Anthropic error reaches an OpenAI client with the Anthropic
# type as its code (translate/error_shapes.py); Envoy's own replies name themselves by code.
LAST_FAILURES: dict[str, tuple[Failure, dict[str, tuple[int, str, str | None]]]] = {
    "500": (
        Failure.error(500, message="the last one failed"),
        {OPENAI: (500, "server_error", None), ANTHROPIC: (500, "api_error", None)},
    ),
    "429": (
        Failure.error(429, message="the last one is rate limited", retry_after=7),
        {OPENAI: (429, "rate_limit_error", None), ANTHROPIC: (429, "rate_limit_error", None)},
    ),
    "529": (
        Failure.error(529, message="the last one is overloaded"),
        {OPENAI: (503, "server_error", None), ANTHROPIC: (529, "overloaded_error", None)},
    ),
    "hang": (
        Failure.hang(3.0),
        {
            OPENAI: (504, "server_error", "upstream_timeout"),
            ANTHROPIC: (504, "timeout_error", None),
        },
    ),
    "disconnect": (
        Failure.disconnect(),
        {
            OPENAI: (503, "server_error", "upstream_unavailable"),
            ANTHROPIC: (503, "api_error", None),
        },
    ),
}


@pytest.mark.parametrize("stream", STREAMS)
@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("last", list(LAST_FAILURES))
def test_every_member_failing_gives_the_last_ones_error(
    gateway: Gateway, fakes: Fakes, last: str, client: str, stream: bool
) -> None:
    """gpt-three (oa1) -> gpt-f (oa2) -> claude-f (an2): 503, 429, then ``last``."""
    failure, expected = LAST_FAILURES[last]
    fakes["oa1"].fail(Failure.error(503, message="the first one failed"))
    fakes["oa2"].fail(Failure.error(429, message="the second one is rate limited"))
    fakes["an2"].fail(failure)
    got = ask(gateway, client, "openai/gpt-three", stream)
    status, error_type, code = expected[client]
    assert (got.status, got.error_type) == (status, error_type), got
    if code is not None:
        assert got.error_code == code
    if failure.kind == "error":
        assert got.text == failure.message
        assert got.model == "anthropic/claude-f"
    if last == "429":
        assert got.headers.get("retry-after") == "7"
    assert got.attempts == "3"
    check_client_headers(got.headers)
    check_chain_calls(fakes, list(CHAINS["openai/gpt-three"]), stream)


@pytest.mark.parametrize("last", ["hang", "disconnect"])
def test_envoys_own_error_after_the_last_member_names_the_decisions_model(
    gateway: Gateway, fakes: Fakes, last: str
) -> None:
    """No member answered: Envoy's 504/503 names the decision's model (README: a member
    names itself only in a response it sent), and the attempts made."""
    fakes["oa1"].fail(Failure.error(503))
    fakes["oa2"].fail(Failure.error(429))
    fakes["an2"].fail(LAST_FAILURES[last][0])
    got = ask(gateway, OPENAI, "openai/gpt-three", False)
    assert (got.status, got.attempts) == ((504, "3") if last == "hang" else (503, "3"))
    check_chain_calls(fakes, list(CHAINS["openai/gpt-three"]), False)
    assert got.model == "openai/gpt-three"


@pytest.mark.parametrize("stream", STREAMS)
@pytest.mark.parametrize("client", CLIENTS)
def test_every_member_failing_anthropic_primary(
    gateway: Gateway, fakes: Fakes, client: str, stream: bool
) -> None:
    """claude-px (an1) -> gpt-f (oa2): 529, then an OpenAI 500."""
    fakes["an1"].fail(Failure.error(529, message="the first one is overloaded"))
    fakes["oa2"].fail(Failure.error(500, message="the last one failed"))
    got = ask(gateway, client, "anthropic/claude-px", stream)
    expected = (500, "server_error" if client == OPENAI else "api_error")
    assert (got.status, got.error_type) == expected, got
    assert got.text == "the last one failed"
    assert got.model == "openai/gpt-f"
    assert got.attempts == "2"
    check_chain_calls(fakes, list(CHAINS["anthropic/claude-px"]), stream)


# ---------------------------------------------------------------------------------------------
# Which requests have a chain: provider/model, a bare id, the default, aliases


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize(
    ("model", "routing", "chain"),
    [
        ("openai/gpt-p", "direct", "openai/gpt-p"),
        ("gpt-p", "direct", "openai/gpt-p"),  # a bare id, as unique
        ("auto", "default", "openai/gpt-p"),  # no model named: the default, gpt-p
        ("sturdy", "alias", "sturdy"),
        ("sturdy-plano", "alias", "sturdy-plano"),  # Plano's `- target:` shape
    ],
)
def test_entry_points_with_a_chain(
    gateway: Gateway, fakes: Fakes, model: str, routing: str, chain: str, client: str
) -> None:
    primary, fallback = CHAINS[chain]
    fakes[MEMBERS[primary].fake].fail(Failure.error(503))
    got = ask(gateway, client, model, client == ANTHROPIC, f"via {model}")
    check_answered_by(got, fallback, f"via {model}", 2, routing)
    check_chain_calls(fakes, [primary, fallback], client == ANTHROPIC)


@pytest.mark.parametrize("stream", STREAMS)
def test_no_model_in_the_body_is_the_defaults_chain(
    gateway: Gateway, fakes: Fakes, stream: bool
) -> None:
    fakes["oa1"].fail(Failure.error(503))
    body: dict[str, Any] = {"messages": [{"role": "user", "content": "no model"}]}
    if stream:
        body["stream"] = True
    response = httpx.post(f"{gateway.url}/v1/chat/completions", json=body, timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    assert response.headers["x-plano-model"] == "openai/gpt-f"
    assert response.headers["x-plano-routing"] == "default"
    assert response.headers["x-plano-attempts"] == "2"
    if stream:
        assert response.text.endswith("data: [DONE]\n\n")
        chunks = [json.loads(line[6:]) for line in response.text.split("\n\n")[:-2]]
        text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    else:
        text = response.json()["choices"][0]["message"]["content"]
    assert text == "from openai-fallback: no model"
    check_chain_calls(fakes, ["openai/gpt-p", "openai/gpt-f"], stream)


@pytest.mark.parametrize("client", CLIENTS)
def test_an_alias_chain_follows_its_members_own_fallbacks(
    gateway: Gateway, fakes: Fakes, client: str
) -> None:
    """deep: gpt-solo, then gpt-px and gpt-px's own fallback claude-f."""
    fakes["oa1"].fail(Failure.error(503), Failure.error(500))
    got = ask(gateway, client, "deep", False, "deep")
    check_answered_by(got, "anthropic/claude-f", "deep", 3, "alias")
    check_chain_calls(fakes, list(CHAINS["deep"]), False)


@pytest.mark.parametrize("client", CLIENTS)
def test_an_alias_chain_leading_back_to_its_target_does_not_repeat_it(
    gateway: Gateway, fakes: Fakes, client: str
) -> None:
    """around: gpt-f, then claude-px, whose own fallback is gpt-f again: both fail, and the
    client gets claude-px's error after two attempts, gpt-f asked once."""
    fakes["oa2"].fail(Failure.error(503), Failure.error(503))
    fakes["an1"].fail(Failure.error(500, message="claude-px failed too"))
    got = ask(gateway, client, "around", True, "around")
    assert (got.status, got.text, got.attempts) == (500, "claude-px failed too", "2"), got
    assert got.model == "anthropic/claude-px"
    check_chain_calls(fakes, ["openai/gpt-f", "anthropic/claude-px"], True)


@pytest.mark.parametrize("client", CLIENTS)
def test_an_alias_chain_leading_back_to_its_target_fails_over(
    gateway: Gateway, fakes: Fakes, client: str
) -> None:
    fakes["oa2"].fail(Failure.error(429))
    got = ask(gateway, client, "around", False, "around")
    check_answered_by(got, "anthropic/claude-px", "around", 2, "alias")
    check_chain_calls(fakes, ["openai/gpt-f", "anthropic/claude-px"], False)


@pytest.mark.parametrize("client", CLIENTS)
def test_the_aliases_fallbacks_are_not_its_targets(
    gateway: Gateway, fakes: Fakes, client: str
) -> None:
    """gpt-solo named directly has no fallbacks of its own: its 503 reaches the client."""
    fakes["oa1"].fail(Failure.error(503, message="solo is down"))
    got = ask(gateway, client, "openai/gpt-solo", False)
    assert got.status == (503 if client == OPENAI else 529), got
    assert got.text == "solo is down"
    assert got.model == "openai/gpt-solo"
    assert got.attempts in (None, "1")
    check_chain_calls(fakes, ["openai/gpt-solo"], False, chained=False)


@pytest.mark.parametrize(
    ("status", "retry_after", "retried"),
    [(429, 1, True), (503, 1, True), (429, 30, False), (429, None, False), (500, None, False)],
)
def test_a_model_without_fallbacks_is_retried_after_a_short_retry_after(
    gateway: Gateway, fakes: Fakes, status: int, retry_after: int | None, retried: bool
) -> None:
    """gpt-solo has no fallbacks: an answer whose retry-after is within the listener's
    retry_after_max (2 s by default) is retried on the same provider once that time has
    passed; a longer one, or none, reaches the client at once."""
    fakes["oa1"].fail(Failure.error(status, retry_after=retry_after, message="wait"))
    got = ask(gateway, OPENAI, "openai/gpt-solo", False)
    if retried:
        assert got.status == 200, got
        assert got.seconds >= 0.9  # the retry-after was waited out
        assert calls(fakes) == ["openai/gpt-solo", "openai/gpt-solo"]
        for request in received(fakes, "openai/gpt-solo"):
            check_received(request, MEMBERS["openai/gpt-solo"], False, False)
    else:
        assert (got.status, got.text) == (status, "wait"), got
        assert got.seconds < 0.9
        check_chain_calls(fakes, ["openai/gpt-solo"], False, chained=False)


# ---------------------------------------------------------------------------------------------
# Outlier detection


def test_a_member_that_keeps_failing_is_skipped(gateway: Gateway, fakes: Fakes) -> None:
    """After three 503s in a row, gpt-eject is ejected: the next requests go straight to
    gpt-f, in one attempt, without paying for the primary."""
    assert ejections_active(gateway) in (None, 0), "a member was ejected before this test"
    for i in range(3):
        fakes["oa1"].fail(Failure.error(503, message=f"eject me {i}"))
        got = ask(gateway, OPENAI, "openai/gpt-eject", False, f"failing {i}")
        check_answered_by(got, "openai/gpt-f", f"failing {i}", 2, "direct")
    assert calls(fakes) == ["openai/gpt-eject", "openai/gpt-f"] * 3
    # The ejection is decided on Envoy's main thread and reaches the worker soon after.
    deadline = time.monotonic() + 3
    while ejections_active(gateway) == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    if ejections_active(gateway) is None:
        time.sleep(0.5)
    assert ejections_active(gateway) in (None, 1)
    primary_before = len(fakes["oa1"].received)
    fakes["oa1"].fail(Failure.error(503, message="should not be asked"))
    for client, stream in [(OPENAI, False), (ANTHROPIC, True), (OPENAI, True)]:
        got = ask(gateway, client, "openai/gpt-eject", stream, f"skip {client}")
        check_answered_by(got, "openai/gpt-f", f"skip {client}", 1, "direct")
        assert got.seconds < 1.0
    assert len(fakes["oa1"].received) == primary_before
    assert calls(fakes)[6:] == ["openai/gpt-f"] * 3
    for received in fakes["oa2"].received[3:]:
        check_received(received, MEMBERS["openai/gpt-f"], received.json.get("stream") is True)


# ---------------------------------------------------------------------------------------------
# A route's models (top-level routing_preferences): a gateway with the router

POEM = [{"role": "user", "content": "Write a short poem about autumn leaves on a quiet lake."}]


@pytest.fixture(scope="module")
def routed(fakes: dict[str, Fake], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    env = {name: env for name, (_, _, env) in FAKES.items()}
    config = f"""
listeners:
  egress_traffic:
    address: 127.0.0.1
    port: {{port}}
    timeout: 1s
model_providers:
  - model: openai/gpt-p
    access_key: ${env["oa1"]}
    base_url: {fakes["oa1"].base_url()}
    default: true
  - model: openai/gpt-c
    access_key: ${env["oa1"]}
    base_url: {fakes["oa1"].base_url()}
  - model: openai/gpt-f
    access_key: ${env["oa2"]}
    base_url: {fakes["oa2"].base_url()}
  - model: anthropic/claude-f
    access_key: ${env["an2"]}
    base_url: {fakes["an2"].base_url()}
routing_preferences:
  - name: creative_tasks
    description: creative writing and content generation
    models: [openai/gpt-c, anthropic/claude-f]
  - name: complex_reasoning
    description: deep analysis and complex problem solving
    models: [openai/gpt-f]
"""
    gw = start_gateway(config, tmp_path_factory.mktemp("fallback-routed"), env=KEY_ENV)
    yield gw
    gw.stop()


@pytest.mark.parametrize("client", CLIENTS)
def test_a_routes_models_fail_over(routed: Gateway, fakes: Fakes, client: str) -> None:
    stream = client == ANTHROPIC
    fakes["oa1"].fail(Failure.error(503))
    got = ask(routed, client, "auto", stream, messages=POEM)
    assert got.status == 200, got
    assert got.text == f"from anthropic-fallback: {POEM[0]['content']}"
    assert got.headers.get("x-plano-routing") == "preference"
    assert got.headers.get("x-plano-route") == "creative_tasks"
    assert got.model == "anthropic/claude-f"
    assert got.attempts == "2"
    check_chain_calls(fakes, ["openai/gpt-c", "anthropic/claude-f"], stream)


def test_a_routes_first_model_named_directly_has_no_fallback(routed: Gateway, fakes: Fakes) -> None:
    fakes["oa1"].fail(Failure.error(503, message="gpt-c is down"))
    got = ask(routed, OPENAI, "openai/gpt-c", False)
    assert (got.status, got.text) == (503, "gpt-c is down")
    assert got.attempts in (None, "1")
    check_chain_calls(fakes, ["openai/gpt-c"], False, chained=False)


# ---------------------------------------------------------------------------------------------
# The config, through the CLI


def _cli(*args: str, stdin: str = "", config: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "plano_extproc", *args, str(config)],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env={**KEY_ENV, "PATH": "/usr/bin:/bin"},
        check=False,
    )


def test_route_prints_each_decisions_fallbacks(gateway: Gateway) -> None:
    lines = [
        {"model": "openai/gpt-three"},
        {"model": "sturdy-plano"},
        {"model": "deep"},
        {"model": "around"},
        {},  # the default
        {"model": "openai/gpt-solo"},
    ]
    stdin = "".join(
        json.dumps({**line, "messages": [{"role": "user", "content": "hi"}]}) + "\n"
        for line in lines
    )
    done = _cli("route", stdin=stdin, config=gateway.config)
    assert done.returncode == 0, done.stderr
    decisions = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(d["model"], d.get("fallbacks", [])) for d in decisions] == [
        ("openai/gpt-three", ["openai/gpt-f", "anthropic/claude-f"]),
        ("openai/gpt-solo", ["openai/gpt-f"]),
        ("openai/gpt-solo", ["openai/gpt-px", "anthropic/claude-f"]),
        ("openai/gpt-f", ["anthropic/claude-px"]),
        ("openai/gpt-p", ["openai/gpt-f"]),
        ("openai/gpt-solo", []),
    ]


@pytest.mark.parametrize(
    ("fallbacks", "where", "says"),
    [
        (
            "[openai/gpt-b]\n  - model: openai/gpt-b\n    access_key: x\n"
            "    fallbacks: [openai/gpt-a]",
            "fallbacks",
            "cycle",
        ),
        ("[openai/gpt-nope]", "model_providers[0].fallbacks[0]", "gpt-nope"),
        ("\n      - target: nope/x", "model_providers[0].fallbacks[0].target", "nope/x"),
    ],
    ids=["cycle", "unknown", "unknown-target"],
)
def test_bad_fallbacks_are_located_errors(
    tmp_path: Path, fallbacks: str, where: str, says: str
) -> None:
    config = tmp_path / "plano.yaml"
    config.write_text(
        f"""
listeners:
  egress_traffic:
    address: 127.0.0.1
    port: 12000
model_providers:
  - model: openai/gpt-a
    access_key: x
    fallbacks: {fallbacks}
"""
    )
    done = _cli("validate", config=config)
    assert done.returncode != 0
    assert where in done.stderr + done.stdout
    assert says in done.stderr + done.stdout
