"""Generated requests thrown at a real gateway (Envoy + the ext_proc server + a recording fake
provider), as an adversarial client would: random chat bodies, broken JSON, odd encodings,
model names of every kind, and raw HTTP with odd methods, paths and headers.

Whatever is sent, the gateway must answer with a status it documents, never a 5xx (the fake
provider always answers 200), with an OpenAI JSON error whenever it refuses, and a provider
must only ever get strict JSON that is the client's body with only ``model`` changed, under
the provider's own credential. Seeded and bounded: ``make test`` runs a few hundred examples;
``PLANO_FUZZ_EXAMPLES=10000`` runs as many by hand.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.api_vocabulary import json_values
from tests.fakes import FakeProvider

from .conftest import Gateway, config_for, start_gateway

pytestmark = pytest.mark.integration

EXAMPLES = int(os.environ.get("PLANO_FUZZ_EXAMPLES", "300"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,  # the same examples every run: CI is reproducible
    suppress_health_check=list(HealthCheck),
    database=None,
)
NAMES = {
    "openai/gpt-5.2": "gpt-5.2",
    "openai/gpt-5": "gpt-5",
    "anthropic/claude-sonnet-4-5": "claude-sonnet-4-5",
    "gpt-5.2": "gpt-5.2",
    "gpt-5": "gpt-5",
    "claude-sonnet-4-5": "claude-sonnet-4-5",
    "fast-model": "gpt-5.2",
    "reasoning-model": "gpt-5",
    "creative-model": "claude-sonnet-4-5",
}
AUTO = ("", "auto", "plano/auto", " auto ")
# What the gateway may answer; anything else (a 5xx above all) is a defect.
DOCUMENTED = {200, 400, 403, 404, 405, 413, 431}
CLIENT_SECRET = "client-secret-never-forwarded"


@pytest.fixture(scope="module")
def fuzz_gateway(
    openai_fake: FakeProvider,
    anthropic_fake: FakeProvider,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Gateway]:
    config = config_for(openai_fake, anthropic_fake).replace(
        "max_body_size: 2MiB", "max_body_size: 256KiB"
    )
    gw = start_gateway(config, tmp_path_factory.mktemp("fuzz"))
    yield gw
    gw.stop()
    log = gw.log.read_text()
    assert "Traceback" not in log, log[-3000:]
    assert "envoy_bug" not in log, log[-3000:]


def _strict(raw: bytes) -> Any:
    """What json.loads with strict constants makes of ``raw``; ValueError when it refuses
    (NaN and Infinity are not JSON; 1e999 is, though Python reads it as infinity)."""

    def refuse(name: str) -> None:
        raise ValueError(name)

    return json.loads(raw, parse_constant=refuse)


def _has_lone_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        return any(0xD800 <= ord(c) <= 0xDFFF for c in value)
    if isinstance(value, dict):
        return any(_has_lone_surrogate(k) or _has_lone_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_lone_surrogate(v) for v in value)
    return False


# --- strategies ---

JSON_VALUES = json_values(max_leaves=12)
TEXT = st.text(max_size=200) | st.sampled_from(
    ["Write a poem about the sea", "Prove that sqrt(2) is irrational", "hi", "", "  "]
)
PART = st.fixed_dictionaries({"type": st.just("text"), "text": TEXT}) | st.fixed_dictionaries(
    {
        "type": st.just("image_url"),
        "image_url": st.fixed_dictionaries({"url": st.text(max_size=40)}),
    }
)
MESSAGE = st.fixed_dictionaries(
    {
        "role": st.sampled_from(["user", "assistant", "system", "developer", "tool"])
        | st.text(max_size=10),
        "content": TEXT | st.lists(PART, max_size=3) | JSON_VALUES,
    },
    optional={"name": st.text(max_size=10), "tool_call_id": st.text(max_size=10)},
)
MODEL = (
    # Names the gateway serves come up most: the routed paths are where a defect costs most.
    st.sampled_from(sorted(NAMES))
    | st.sampled_from(sorted(NAMES))
    | st.sampled_from(sorted(NAMES))
    | st.sampled_from(AUTO)
    | st.text(max_size=40)
    | st.sampled_from(["openai/nope", "nope", "\udc80", "fast-model\x00", "OPENAI/GPT-5"])
    | JSON_VALUES.filter(lambda v: not isinstance(v, str))
)
ABSENT = object()


@st.composite
def chat_bodies(draw: st.DrawFn) -> bytes:
    body: dict[str, Any] = {}
    model = draw(st.one_of(st.just(ABSENT), MODEL, MODEL))
    if model is not ABSENT:
        body["model"] = model
    messages = draw(st.one_of(*[st.lists(MESSAGE, min_size=1, max_size=5)] * 4, JSON_VALUES))
    if draw(st.integers(0, 9)):  # one in ten has none
        body["messages"] = messages
    extras = draw(st.dictionaries(st.text(max_size=12), JSON_VALUES, max_size=4))
    for key, value in extras.items():
        body.setdefault(key, value)
    if draw(st.booleans()):
        body["stream"] = draw(st.booleans())
    text = json.dumps(
        body,
        ensure_ascii=draw(st.booleans()),
        indent=draw(st.sampled_from([None, 0, 2])),
        separators=draw(st.sampled_from([None, (",", ":"), (" , ", " : ")])),
    )
    raw = text.encode("utf-8", "surrogatepass")
    mutation = draw(
        st.sampled_from(
            ["none"] * 16
            + ["truncate", "bom", "utf16", "duplicate_model", "huge_number", "nan", "deep",
               "garbage", "not_object", "trailing", "lone_escape", "big"]
        )
    )  # fmt: skip
    if mutation == "truncate":
        raw = raw[: draw(st.integers(min_value=0, max_value=max(0, len(raw) - 1)))]
    elif mutation == "bom":
        raw = b"\xef\xbb\xbf" + raw
    elif mutation == "utf16":
        raw = text.encode("utf-16", "surrogatepass")
    elif mutation == "duplicate_model":
        raw = b'{"model": "fast-model", ' + raw[1:] if raw.startswith(b"{") else raw
    elif mutation == "huge_number":
        raw = raw.replace(b"{", b'{"temperature": 1e999, ', 1)
    elif mutation == "nan":
        raw = raw.replace(b"{", b'{"top_p": NaN, ', 1)
    elif mutation == "deep":
        depth = draw(st.integers(min_value=500, max_value=5000))
        raw = raw.replace(b"{", b'{"x": ' + b"[" * depth + b"]" * depth + b", ", 1)
    elif mutation == "garbage":
        raw = draw(st.binary(max_size=200))
    elif mutation == "not_object":
        raw = json.dumps(draw(JSON_VALUES)).encode()
    elif mutation == "trailing":
        raw = raw + draw(st.sampled_from([b" ", b"\n", b"x", b"}", b",{}"]))
    elif mutation == "lone_escape":
        raw = raw.replace(b"{", b'{"user": "\\udc80\\ud800x", ', 1)
    elif mutation == "big":
        size = draw(st.sampled_from([200 * 1024, 256 * 1024 - 10, 256 * 1024 + 1, 400 * 1024]))
        raw = raw.replace(b"{", b'{"pad": "' + b"p" * size + b'", ', 1)
    return raw


def _expected_model_id(client: Any) -> str | None:
    """The model id the provider must get, or None when the gateway must refuse."""
    if not isinstance(client, dict):
        return None
    messages = client.get("messages")
    if not isinstance(messages, list) or not messages:
        return None
    model = client.get("model")
    if model is None or (isinstance(model, str) and model.strip() in AUTO):
        return "*"  # the router or the default decides
    if not isinstance(model, str):
        return None
    return NAMES.get(model)


def _check_error(response: httpx.Response) -> str:
    assert response.headers.get("content-type", "").startswith("application/json"), response
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["code"], str) and error["code"]
    return str(error["code"])


@FUZZ
@given(raw=chat_bodies(), extra_headers=st.dictionaries(
    st.sampled_from(["x-plano-model", "x-plano-route", "x-plano-secret", "cookie",
                     "proxy-authorization", "x-api-key", "api-key", "content-type",
                     "x-request-id", "accept-encoding"]),
    st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=30),
    max_size=4,
))  # fmt: skip
def test_fuzzed_chat_requests(
    fuzz_gateway: Gateway,
    openai_fake: FakeProvider,
    anthropic_fake: FakeProvider,
    raw: bytes,
    extra_headers: dict[str, str],
) -> None:
    openai_fake.received.clear()
    anthropic_fake.received.clear()
    headers = {"authorization": f"Bearer {CLIENT_SECRET}", **extra_headers}
    response = httpx.post(
        f"{fuzz_gateway.url}/v1/chat/completions", content=raw, headers=headers, timeout=30
    )
    received = openai_fake.received + anthropic_fake.received
    event(f"status {response.status_code}")
    assert response.status_code in DOCUMENTED, (response.status_code, response.text[:500])
    try:
        client: Any = _strict(raw)
        strict = True
    except (ValueError, RecursionError):
        client, strict = None, False
    expected = _expected_model_id(client) if strict else None
    if response.status_code != 200:
        code = _check_error(response)
        assert not received, "a refused request reached a provider"
        if expected is not None and len(raw) <= 256 * 1024:
            # Only the exceptional cases may refuse a request that a strict reader accepts.
            assert code in {"invalid_json", "invalid_body", "request_too_large"} or (
                _has_lone_surrogate(client)
            ), (code, raw[:300])
        if len(raw) > 256 * 1024:
            assert response.status_code == 413 and code == "request_too_large"
        return
    assert len(raw) <= 256 * 1024
    assert strict and expected is not None, (raw[:300], response.headers)
    assert len(received) == 1, received
    got = received[0]
    forwarded = _strict(got.raw_body)  # never Infinity, NaN or broken JSON to a provider
    model = forwarded.pop("model")
    assert expected == "*" or model == expected, (model, expected)
    client.pop("model", None)
    assert forwarded == client
    assert got.headers["authorization"].startswith("Bearer sk-fake-")
    assert CLIENT_SECRET not in str(got.headers)
    assert not [h for h in got.headers if h.startswith("x-plano-")]
    assert "cookie" not in got.headers and "proxy-authorization" not in got.headers
    assert set(response.headers) & {"x-plano-model", "x-plano-routing"} == {
        "x-plano-model",
        "x-plano-routing",
    }
    assert response.headers["x-plano-model"].endswith("/" + model)


METHODS = st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "TRACE"])
PATHS = st.sampled_from(
    ["/v1/chat/completions", "/v1/models", "/v1/models/fast-model", "/v1/models/x/y", "/",
     "/v1/chat/completions/", "/v1//chat/completions", "/v1/chat/completions?beta=true",
     "/v1/chat/../models", "/%2e%2e/v1/models", "/v1/embeddings", "/v1/models/%ff"]
) | st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789/%.-_?=&", max_size=60).map(
    lambda p: "/" + p
)  # fmt: skip
HEADER_NAME = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-0123456789", min_size=1, max_size=20)
# Mostly what clients send; sometimes bytes HTTP does not allow in a header.
HEADER_VALUE = st.text(
    alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40
).map(str.encode) | st.binary(max_size=40).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))


@st.composite
def raw_requests(draw: st.DrawFn) -> tuple[bytes, bool]:
    """A raw HTTP/1.1 request, and whether it is complete (a content-length past the bytes
    sent leaves Envoy rightly waiting for the rest)."""
    # Half the requests are chat POSTs: the path through ext_proc is where a defect costs most.
    chat = draw(st.booleans())
    method = (
        "POST" if chat else draw(METHODS | st.text(alphabet="ABCXYZ<>", min_size=1, max_size=8))
    )
    path = "/v1/chat/completions" if chat else draw(PATHS)
    body = draw(st.one_of(st.just(b""), chat_bodies()))
    lines = [f"{method} {path} HTTP/1.1".encode(), b"host: gateway"]
    framing = draw(st.sampled_from(["length", "chunked", "none", "wrong_length", "both"]))
    if framing in ("length", "both"):
        lines.append(f"content-length: {len(body)}".encode())
    complete = True
    if framing == "wrong_length":
        extra = draw(st.integers(-5, 5))
        lines.append(f"content-length: {max(0, len(body) + extra)}".encode())
        complete = extra <= 0
    if framing in ("chunked", "both"):
        lines.append(b"transfer-encoding: chunked")
        body = (f"{len(body):x}\r\n".encode() + body + b"\r\n" if body else b"") + b"0\r\n\r\n"
    for name, value in draw(st.lists(st.tuples(HEADER_NAME, HEADER_VALUE), max_size=3)):
        lines.append(name.encode() + b": " + value)
    lines.append(b"connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + body, complete


def _read_response(sock: socket.socket) -> bytes:
    """One HTTP/1.1 response, read up to its end (by its framing), or whatever came before
    the connection closed or went quiet."""
    data = b""
    while True:
        head, found, rest = data.partition(b"\r\n\r\n")
        if found:
            lowered = head.lower()
            if b"transfer-encoding: chunked" in lowered:
                if rest.endswith(b"0\r\n\r\n"):
                    return data
            else:
                length = 0
                for line in lowered.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip() == b"content-length":
                        length = int(value.strip())
                if len(rest) >= length:
                    return data
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            return data
        if not chunk:
            return data
        data += chunk


def _body_of(head: bytes, rest: bytes) -> bytes:
    if b"transfer-encoding: chunked" not in head.lower():
        return rest
    body, at = b"", 0
    while True:
        end = rest.index(b"\r\n", at)
        size = int(rest[at:end], 16)
        if size == 0:
            return body
        body += rest[end + 2 : end + 2 + size]
        at = end + 2 + size + 2


@FUZZ
@given(request=raw_requests())
def test_fuzzed_raw_http(
    fuzz_gateway: Gateway,
    openai_fake: FakeProvider,
    anthropic_fake: FakeProvider,
    request: tuple[bytes, bool],
) -> None:
    openai_fake.received.clear()
    anthropic_fake.received.clear()
    raw, complete = request
    # No half-close: Envoy takes a client's half-close for a disconnect and drops the request.
    with socket.create_connection(
        ("127.0.0.1", fuzz_gateway.port), timeout=30 if complete else 1
    ) as sock:
        sock.sendall(raw)
        answer = _read_response(sock)
    if not complete and not answer:
        event("waited for the rest of the body")
        return
    assert answer, f"no answer to a complete request: {raw[:300]!r}"
    head, _, rest = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    event(f"status {status}")
    assert status in DOCUMENTED, answer[:600]
    if status >= 400 and not raw.startswith(b"HEAD "):
        assert b"content-type: application/json" in head.lower(), answer[:600]
        error = json.loads(_body_of(head, rest))["error"]
        assert error["code"] and error["message"], error
    for got in openai_fake.received + anthropic_fake.received:
        _strict(got.raw_body)
        assert not [h for h in got.headers if h.startswith("x-plano-")]
