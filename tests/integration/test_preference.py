"""Preference routing end to end: real Envoy, the ext_proc server with a real ONNX router
(the embedded encoder, and Arch-Router's code on a tiny model), the openai SDK as client."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.fakes import FakeProvider
from tests.tiny_arch_router import build_tiny_arch_router

from .conftest import Gateway, config_for, start_gateway

pytestmark = pytest.mark.integration

POEM: list[ChatCompletionMessageParam] = [
    {"role": "system", "content": "You are a helpful assistant for a tax accounting firm."},
    {"role": "user", "content": "Write a short poem about autumn leaves falling on a quiet lake."},
]
ANALYSIS: list[ChatCompletionMessageParam] = [
    {
        "role": "user",
        "content": "Prove that there are infinitely many prime numbers, and explain each step "
        "of the reasoning.",
    }
]


def post(
    gateway: Gateway, messages: list[ChatCompletionMessageParam], model: str | None
) -> httpx.Response:
    body: dict[str, object] = {"messages": messages}
    if model is not None:
        body["model"] = model
    return httpx.post(f"{gateway.url}/v1/chat/completions", json=body, timeout=10)


@pytest.mark.parametrize("model", ["auto", None, "", "plano/auto"])
def test_no_model_is_routed_by_preference(
    gateway: Gateway, openai_fake: FakeProvider, anthropic_fake: FakeProvider, model: str | None
) -> None:
    response = post(gateway, POEM, model)
    assert response.status_code == 200, response.text
    assert response.headers["x-plano-routing"] == "preference"
    assert response.headers["x-plano-route"] == "creative_tasks"
    assert response.headers["x-plano-model"] == "anthropic/claude-sonnet-4-5"
    assert not openai_fake.received
    (got,) = anthropic_fake.received
    # Only the model changed: the system prompt the router ignored still reaches the model.
    assert got.json == {"model": "claude-sonnet-4-5", "messages": POEM}
    assert got.headers["authorization"] == "Bearer sk-fake-anthropic"


def test_the_openai_sdk_gets_a_preference_route(
    gateway: Gateway, openai_fake: FakeProvider, anthropic_fake: FakeProvider
) -> None:
    raw = gateway.client().chat.completions.with_raw_response.create(
        model="auto", messages=ANALYSIS
    )
    assert raw.parse().choices[0].message.content == "from fake-openai"
    assert raw.headers["x-plano-route"] == "complex_reasoning"
    assert raw.headers["x-plano-model"] == "openai/gpt-5"
    assert [r.json["model"] for r in openai_fake.received] == ["gpt-5"]


def test_streaming_preference_route(gateway: Gateway, anthropic_fake: FakeProvider) -> None:
    stream = gateway.client().chat.completions.create(
        model="auto",
        messages=POEM,
        stream=True,
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text.startswith("from fake-anthropic")
    assert anthropic_fake.received[0].json["stream"] is True


def test_a_named_model_or_alias_is_never_rerouted(
    gateway: Gateway, openai_fake: FakeProvider, anthropic_fake: FakeProvider
) -> None:
    for model, routing in (("fast-model", "alias"), ("openai/gpt-5.2", "direct")):
        response = post(gateway, POEM, model)
        assert response.headers["x-plano-routing"] == routing
        assert "x-plano-route" not in response.headers
    assert [r.json["model"] for r in openai_fake.received] == ["gpt-5.2", "gpt-5.2"]
    assert not anthropic_fake.received


def test_a_spoofed_route_header_is_ignored(gateway: Gateway, openai_fake: FakeProvider) -> None:
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json={"model": "fast-model", "messages": POEM},
        headers={"x-plano-route": "creative_tasks", "x-plano-routing": "preference"},
    )
    assert response.headers["x-plano-routing"] == "alias"
    assert "x-plano-route" not in response.headers


def test_preference_and_direct_requests_together(
    gateway: Gateway, openai_fake: FakeProvider, anthropic_fake: FakeProvider
) -> None:
    # Decisions run in the router's thread: direct requests keep flowing beside them.
    def one(i: int) -> tuple[int, str]:
        model = "auto" if i % 2 else "openai/gpt-5.2"
        response = post(gateway, POEM, model)
        return response.status_code, response.headers["x-plano-routing"]

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(40)))
    assert results.count((200, "preference")) == 20
    assert results.count((200, "direct")) == 20
    assert len(anthropic_fake.received) == 20 and len(openai_fake.received) == 20


def test_the_route_command_agrees_with_the_server(gateway: Gateway) -> None:
    lines = [{"messages": m} for m in (POEM, ANALYSIS)] + [
        {"messages": POEM, "model": "fast-model"}
    ]
    result = subprocess.run(
        [sys.executable, "-m", "plano_extproc", "route", str(gateway.config)],
        input="\n".join(json.dumps(line) for line in lines),
        capture_output=True,
        text=True,
        check=True,
    )
    answers = [json.loads(line) for line in result.stdout.splitlines()]
    for line, answer in zip(lines, answers, strict=True):
        response = post(gateway, line["messages"], line.get("model"))  # type: ignore[arg-type]
        assert answer["routing"] == response.headers["x-plano-routing"]
        assert answer["model"] == response.headers["x-plano-model"]
        assert answer["route"] == response.headers.get("x-plano-route")


def test_a_router_timeout_falls_back_to_the_default(
    openai_fake: FakeProvider, anthropic_fake: FakeProvider, tmp_path: Path
) -> None:
    extra = "routing:\n  timeout: 1ms\n"
    gw = start_gateway(config_for(openai_fake, anthropic_fake, extra), tmp_path)
    try:
        response = post(gw, POEM, "auto")
    finally:
        gw.stop()
    assert response.status_code == 200
    assert response.headers["x-plano-routing"] == "default"
    assert response.headers["x-plano-model"] == "openai/gpt-5.2"
    assert "route decision exceeded 1 ms" in gw.log.read_text()


def test_a_missing_router_model_stops_start_up(
    openai_fake: FakeProvider, anthropic_fake: FakeProvider, tmp_path: Path
) -> None:
    extra = f"routing:\n  model_dir: {tmp_path / 'nowhere'}\n"
    with pytest.raises(RuntimeError) as info:
        start_gateway(config_for(openai_fake, anthropic_fake, extra), tmp_path)
    assert "cannot load the router" in str(info.value)
    assert "make models" in str(info.value)


def test_arch_router_through_the_gateway(
    openai_fake: FakeProvider, anthropic_fake: FakeProvider, tmp_path: Path
) -> None:
    # A random tiny model picks an arbitrary route: the test checks that whatever it
    # picks, the request reaches exactly the provider the decision headers name.
    model_dir = build_tiny_arch_router(tmp_path / "arch")
    extra = f"routing:\n  router: arch\n  model_dir: {model_dir}\n  max_tokens: 1024\n"
    gw = start_gateway(config_for(openai_fake, anthropic_fake, extra), tmp_path)
    try:
        responses = [post(gw, m, "auto") for m in (POEM, ANALYSIS)]
    finally:
        gw.stop()
    received = {"openai": openai_fake.received, "anthropic": anthropic_fake.received}
    for response in responses:
        assert response.status_code == 200, response.text
        assert response.headers["x-plano-routing"] in ("preference", "default")
        provider, model = response.headers["x-plano-model"].split("/", 1)
        assert received[provider].pop(0).json["model"] == model
