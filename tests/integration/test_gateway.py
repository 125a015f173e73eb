"""End to end through real Envoy + the ext_proc server, driven by the official openai SDK."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.fakes import FakeProvider, Received

from .conftest import Gateway, config_for, start_gateway

pytestmark = pytest.mark.integration

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Say hello"}]


def chat(gateway: Gateway, model: str, **kwargs: Any) -> tuple[dict[str, str], str]:
    raw = gateway.client().chat.completions.with_raw_response.create(
        model=model, messages=MESSAGES, **kwargs
    )
    completion = raw.parse()
    return dict(raw.headers), completion.choices[0].message.content or ""


def only(fake: FakeProvider, *others: FakeProvider) -> Received:
    assert all(not other.received for other in others), "another provider was called"
    assert len(fake.received) == 1, fake.received
    return fake.received[0]


def test_model_based_routing(
    gateway: Gateway, openai_fake: FakeProvider, anthropic_fake: FakeProvider
) -> None:
    headers, content = chat(gateway, "openai/gpt-5")
    assert content == "from fake-openai"
    assert headers["x-plano-model"] == "openai/gpt-5"
    assert headers["x-plano-routing"] == "direct"
    got = only(openai_fake, anthropic_fake)
    assert got.path == "/v1/chat/completions"
    assert got.json == {"model": "gpt-5", "messages": MESSAGES}
    assert got.headers["authorization"] == "Bearer sk-fake-openai"
    assert got.headers["content-length"] == str(len(got.raw_body))


def test_bare_model_id_goes_to_the_provider_that_has_it(
    gateway: Gateway, openai_fake: FakeProvider, anthropic_fake: FakeProvider
) -> None:
    headers, content = chat(gateway, "claude-sonnet-4-5")
    assert content == "from fake-anthropic"
    assert headers["x-plano-model"] == "anthropic/claude-sonnet-4-5"
    got = only(anthropic_fake, openai_fake)
    # The provider's base_url path prefix replaces the client's /v1.
    assert got.path == "/anthropic/v1/chat/completions"
    assert got.json["model"] == "claude-sonnet-4-5"
    assert got.headers["authorization"] == "Bearer sk-fake-anthropic"


@pytest.mark.parametrize(
    ("alias", "model", "fake_name"),
    [
        ("fast-model", "gpt-5.2", "openai"),
        ("reasoning-model", "gpt-5", "openai"),
        ("creative-model", "claude-sonnet-4-5", "anthropic"),
    ],
)
def test_alias_based_routing(
    gateway: Gateway,
    openai_fake: FakeProvider,
    anthropic_fake: FakeProvider,
    alias: str,
    model: str,
    fake_name: str,
) -> None:
    headers, _ = chat(gateway, alias)
    fake, other = (
        (openai_fake, anthropic_fake) if fake_name == "openai" else (anthropic_fake, openai_fake)
    )
    got = only(fake, other)
    assert got.json["model"] == model
    assert headers["x-plano-model"] == f"{fake_name}/{model}"
    assert headers["x-plano-routing"] == "alias"


def test_auto_and_absent_model_fitting_no_route_go_to_default(
    gateway: Gateway, openai_fake: FakeProvider
) -> None:
    # No model named: the router reads it, finds no route ("other"), the default serves it.
    thanks = [{"role": "user", "content": "Thanks, that's all I needed. Bye!"}]
    raw = gateway.client().chat.completions.with_raw_response.create(model="auto", messages=thanks)  # type: ignore[arg-type]
    assert raw.headers["x-plano-routing"] == "default"
    assert raw.headers["x-plano-model"] == "openai/gpt-5.2"
    assert "x-plano-route" not in raw.headers
    response = httpx.post(f"{gateway.url}/v1/chat/completions", json={"messages": thanks})
    assert response.status_code == 200
    assert response.headers["x-plano-routing"] == "default"
    assert [r.json["model"] for r in openai_fake.received] == ["gpt-5.2", "gpt-5.2"]


def test_client_credentials_and_spoofed_headers_never_reach_the_provider(
    gateway: Gateway, openai_fake: FakeProvider
) -> None:
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json={"model": "openai/gpt-5", "messages": MESSAGES},
        headers={
            "authorization": "Bearer client",
            "x-api-key": "client",
            "x-plano-model": "anthropic/claude-sonnet-4-5",
            "x-plano-routing": "spoofed",
            "x-plano-route": "spoofed",
        },
    )
    assert response.status_code == 200
    assert response.headers["x-plano-routing"] == "direct"
    assert response.headers["x-plano-model"] == "openai/gpt-5"
    assert "x-plano-route" not in response.headers
    got = openai_fake.received[0]
    assert got.headers["authorization"] == "Bearer sk-fake-openai"
    assert "x-api-key" not in got.headers
    assert not [h for h in got.headers if h.startswith("x-plano-")]


def test_streaming_is_not_buffered(gateway: Gateway, openai_fake: FakeProvider) -> None:
    start = time.monotonic()
    stream = gateway.client().chat.completions.create(
        model="fast-model", messages=MESSAGES, stream=True
    )
    arrivals: list[tuple[float, str]] = []
    for chunk in stream:
        arrivals.append((time.monotonic() - start, chunk.choices[0].delta.content or ""))
    text = "".join(piece for _, piece in arrivals)
    assert text == "from fake-openai streamed reply"
    # The fake pauses 1 s after its first chunk: that chunk must arrive before the pause ends.
    assert arrivals[0][0] < 0.8, arrivals
    assert arrivals[-1][0] >= 1.0, arrivals
    assert openai_fake.received[0].json["stream"] is True


def test_streaming_response_carries_decision_headers(gateway: Gateway) -> None:
    with httpx.stream(
        "POST",
        f"{gateway.url}/v1/chat/completions",
        json={"model": "fast-model", "messages": MESSAGES, "stream": True},
    ) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["x-plano-model"] == "openai/gpt-5.2"
        assert r.headers["x-plano-routing"] == "alias"
        assert b"[DONE]" in r.read()


def test_models_endpoint(gateway: Gateway, openai_fake: FakeProvider) -> None:
    ids = [m.id for m in gateway.client().models.list()]
    assert ids == [
        "openai/gpt-5.2",
        "openai/gpt-5",
        "anthropic/claude-sonnet-4-5",
        "openai/down-model",
        "fast-model",
        "reasoning-model",
        "creative-model",
    ]
    assert gateway.client().models.retrieve("fast-model").id == "fast-model"
    assert not openai_fake.received


def test_unknown_model(
    gateway: Gateway, openai_fake: FakeProvider, anthropic_fake: FakeProvider
) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        chat(gateway, "gpt-4o")
    error = info.value.body
    assert isinstance(error, dict)
    assert error["code"] == "model_not_found" and error["param"] == "model"
    assert "fast-model" in error["message"] and "openai/gpt-5" in error["message"]
    assert not openai_fake.received and not anthropic_fake.received


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b'{"model": "openai/gpt-5", "messages": [', "invalid_json"),
        (b'["not", "an", "object"]', "invalid_body"),
        (b'{"model": "openai/gpt-5"}', "missing_required_parameter"),
    ],
)
def test_bad_bodies_get_openai_errors(
    gateway: Gateway, openai_fake: FakeProvider, raw: bytes, code: str
) -> None:
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        content=raw,
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["code"] == code
    assert not openai_fake.received


def test_large_body_passes_whole(gateway: Gateway, openai_fake: FakeProvider) -> None:
    document = "lorem ipsum dolor sit amet " * 55_000  # ~1.5 MB, under the 2 MiB limit
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        timeout=20,
        json={"model": "openai/gpt-5", "messages": [{"role": "user", "content": document}]},
    )
    assert response.status_code == 200, response.text
    got = openai_fake.received[0]
    assert got.json["messages"][0]["content"] == document
    assert got.headers["content-length"] == str(len(got.raw_body))


def test_oversized_body_is_a_413_json_error(gateway: Gateway, openai_fake: FakeProvider) -> None:
    document = "x" * (3 * 1024 * 1024)
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        timeout=20,
        json={"model": "openai/gpt-5", "messages": [{"role": "user", "content": document}]},
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"
    assert not openai_fake.received


def test_unknown_endpoint(gateway: Gateway) -> None:
    response = httpx.post(f"{gateway.url}/v1/embeddings", json={"model": "x", "input": "y"})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "unknown_url"


def test_provider_down_is_a_quick_json_5xx(gateway: Gateway) -> None:
    start = time.monotonic()
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json={"model": "openai/down-model", "messages": MESSAGES},
    )
    elapsed = time.monotonic() - start
    assert 500 <= response.status_code < 600
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["type"] and error["message"] and error["code"]
    assert elapsed < 6, elapsed


@pytest.fixture
def keyless_gateway(
    openai_fake: FakeProvider, anthropic_fake: FakeProvider, tmp_path: Path
) -> Iterator[Gateway]:
    gw = start_gateway(
        config_for(openai_fake, anthropic_fake), tmp_path, env={"FAKE_OPENAI_KEY": "sk-fake-openai"}
    )
    yield gw
    gw.stop()


def test_missing_key_variable(
    keyless_gateway: Gateway, openai_fake: FakeProvider, anthropic_fake: FakeProvider
) -> None:
    log = keyless_gateway.log.read_text()
    assert "FAKE_ANTHROPIC_KEY is not set" in log
    with pytest.raises(openai.InternalServerError) as info:
        chat(keyless_gateway, "creative-model")
    assert info.value.status_code == 500
    body = info.value.body
    assert isinstance(body, dict) and "FAKE_ANTHROPIC_KEY" in body["message"]
    assert not anthropic_fake.received
    _, content = chat(keyless_gateway, "fast-model")  # the other provider still serves
    assert content == "from fake-openai"
    assert "sk-fake" not in keyless_gateway.log.read_text()


def test_chunked_upload_is_rewritten_with_a_content_length(
    gateway: Gateway, openai_fake: FakeProvider
) -> None:
    payload = json.dumps({"model": "reasoning-model", "messages": MESSAGES}).encode()

    def pieces() -> Iterator[bytes]:
        yield payload[:10]
        yield payload[10:]

    response = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        content=pieces(),
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 200, response.text
    got = openai_fake.received[0]
    assert got.json["model"] == "gpt-5"
    assert "transfer-encoding" not in got.headers
    assert got.headers["content-length"] == str(len(got.raw_body))


def test_keys_never_reach_the_log(gateway: Gateway) -> None:
    chat(gateway, "fast-model")
    assert "sk-fake" not in gateway.log.read_text()


def test_silent_provider_is_a_504_json_error(anthropic_fake: FakeProvider, tmp_path: Path) -> None:
    slow = FakeProvider("slow", reply_delay_s=3.0).start()
    config = config_for(slow, anthropic_fake).replace("timeout: 10s", "timeout: 500ms")
    gw = start_gateway(config, tmp_path)
    try:
        start = time.monotonic()
        response = httpx.post(
            f"{gw.url}/v1/chat/completions", json={"model": "fast-model", "messages": MESSAGES}
        )
        assert time.monotonic() - start < 2.5
        assert response.status_code == 504
        assert response.json()["error"]["code"] == "upstream_timeout"
        assert response.headers["x-plano-model"] == "openai/gpt-5.2"
    finally:
        gw.stop()
        slow.stop()
