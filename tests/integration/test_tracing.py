"""Tracing through real Envoy (issue 13, part 5): Envoy's spans with the decision as
attributes, the server's router span as their child, exported by OTLP to a collector; and
with tracing off, nothing rendered and nothing sent.

A fake OTLP/gRPC collector (tests/otlp_collector.py) on a free port; a gateway whose config
has Plano's ``tracing`` section naming it, in front of fakes that each require their own
key. A model-routed and a preference-routed request, each with its own x-request-id (Envoy
tags its request span with it). Then: each request's span has the exact decision; the
router's span (the preference request's only) is in the same trace, the child of Envoy's
span for the ext_proc call, itself the child of the request's span; no key's value is in
anything the collector was sent.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.fake_providers import FakeAnthropic, FakeOpenAI
from tests.otlp_collector import FakeCollector, Received

from .conftest import Gateway, listener_yaml, start_gateway

pytestmark = pytest.mark.integration

KEYS = {
    "TR_OPENAI_KEY": "sk-tr-openai-5d0c8e21f7a94b36",
    "TR_ANTHROPIC_KEY": "sk-ant-tr-anthropic-a71f3c09e2d84b55",
}
POEM = "Write a short poem about autumn leaves falling on a quiet lake."
GATEWAY_SERVICE, SERVER_SERVICE = "plano-gateway", "plano-extproc"
INGRESS = "ingress"
EXTPROC_CALL = "async envoy.service.ext_proc.v3.ExternalProcessor.Process egress"
ROUTER_SPAN = "plano.router"


def config(openai: FakeOpenAI, anthropic: FakeAnthropic, tracing: str) -> str:
    return (
        listener_yaml()
        + f"""llm_providers:
  - model: openai/gpt-5.2
    access_key: $TR_OPENAI_KEY
    base_url: {openai.base_url()}
    default: true
  - model: openai/gpt-5
    access_key: $TR_OPENAI_KEY
    base_url: {openai.base_url()}
    routing_preferences:
      - name: complex_reasoning
        description: deep analysis and complex problem solving
  - model: anthropic/claude-sonnet-4-5
    access_key: $TR_ANTHROPIC_KEY
    base_url: {anthropic.base_url()}
    routing_preferences:
      - name: creative_tasks
        description: creative writing and content generation
{tracing}
"""
    )


@pytest.fixture(scope="module")
def fakes() -> Iterator[tuple[FakeOpenAI, FakeAnthropic]]:
    openai = FakeOpenAI("tr-openai", api_key=KEYS["TR_OPENAI_KEY"]).start()
    anthropic = FakeAnthropic("tr-anthropic", api_key=KEYS["TR_ANTHROPIC_KEY"]).start()
    try:
        yield openai, anthropic
    finally:
        openai.stop()
        anthropic.stop()


def send(
    gateway: Gateway, request_id: str, model: str | None, text: str, **headers: str
) -> httpx.Response:
    body: dict[str, object] = {"messages": [{"role": "user", "content": text}]}
    if model is not None:
        body["model"] = model
    response = httpx.post(
        gateway.url + "/v1/chat/completions",
        json=body,
        headers={
            "x-request-id": request_id,
            "authorization": "Bearer client-key-never-fwd",
            **headers,
        },
        timeout=15,
    )
    assert response.status_code == 200, response.text
    return response


def rendered(gateway: Gateway) -> str:
    """What Envoy runs: its bootstrap and the xDS files beside it (the listener, clusters)."""
    text = gateway.log.read_text()
    bootstrap = Path(text.split("bootstrap ", 1)[1].split(")", 1)[0])
    xds = sorted((bootstrap.parent / "xds").glob("*.json"))
    assert xds, "no xDS files beside the bootstrap"
    return "".join(p.read_text() for p in (bootstrap, *xds))


def test_spans_carry_the_decision_and_the_router_span_descends_from_envoys(
    fakes: tuple[FakeOpenAI, FakeAnthropic], tmp_path: Path
) -> None:
    collector = FakeCollector().start()
    tracing = (
        f"tracing:\n  random_sampling: 100\n  opentracing_grpc_endpoint: {collector.endpoint}\n"
    )
    gateway = start_gateway(config(*fakes, tracing), tmp_path, env=KEYS)
    try:
        direct_id, preference_id = (
            f"tr-direct-{time.monotonic_ns()}",
            f"tr-pref-{time.monotonic_ns()}",
        )
        send(gateway, direct_id, "openai/gpt-5.2", "hello")
        routed = send(gateway, preference_id, None, POEM)
        assert routed.headers["x-plano-route"] == "creative_tasks"
        assert "opentelemetry" in rendered(gateway)
        # A client's own trace context is continued: Envoy's span is its child.
        client_trace, client_span = "1a2b3c4d5e6f70819a0b1c2d3e4f5061", "0f1e2d3c4b5a6978"
        continued_id = f"tr-continued-{time.monotonic_ns()}"
        send(
            gateway,
            continued_id,
            "openai/gpt-5.2",
            "hello",
            traceparent=f"00-{client_trace}-{client_span}-01",
        )

        def complete(spans: list[Received]) -> bool:
            ingress = [s for s in spans if s.span.name == INGRESS]
            routers = [s for s in spans if s.span.name == ROUTER_SPAN]
            return len(ingress) >= 3 and len(routers) >= 1

        spans = collector.wait_for(complete)
        # Envoy's request spans, by the request id it tags them with.
        requests = {
            s.attributes.get("guid:x-request-id"): s
            for s in spans
            if s.service == GATEWAY_SERVICE and s.span.name == INGRESS
        }
        assert set(requests) == {direct_id, preference_id, continued_id}, [
            s.span.name for s in spans
        ]
        direct, preference = requests[direct_id], requests[preference_id]
        continued = requests[continued_id]
        assert (continued.trace_id, continued.parent_id) == (client_trace, client_span)
        decision = {k: v for k, v in direct.attributes.items() if k.startswith("plano.")}
        assert decision == {
            "plano.model": "openai/gpt-5.2",
            "plano.provider": "openai/gpt-5.2",
            "plano.routing": "direct",
        }
        decision = {k: v for k, v in preference.attributes.items() if k.startswith("plano.")}
        assert decision == {
            "plano.model": "anthropic/claude-sonnet-4-5",
            "plano.provider": "anthropic/claude-sonnet-4-5",
            "plano.routing": "preference",
            "plano.route": "creative_tasks",
        }
        assert direct.attributes["http.status_code"] == "200"
        assert direct.trace_id != preference.trace_id

        # The router ran for the preference request only: one span, in its trace, under
        # Envoy's span for the ext_proc call, under the request's span.
        routers = [s for s in spans if s.span.name == ROUTER_SPAN]
        assert len(routers) == 1, routers
        router = routers[0]
        assert router.service == SERVER_SERVICE
        assert router.trace_id == preference.trace_id
        calls = {s.span_id: s for s in spans if s.span.name == EXTPROC_CALL}
        assert router.parent_id in calls
        call = calls[router.parent_id]
        assert call.service == GATEWAY_SERVICE
        assert call.trace_id == preference.trace_id
        assert call.parent_id == preference.span_id
        attributes = router.attributes
        router_ms = attributes.pop("plano.router_ms")
        confidence = attributes.pop("plano.router.confidence")
        assert isinstance(router_ms, float) and router_ms > 0
        assert isinstance(confidence, float) and 0 < confidence <= 1
        assert attributes == {
            "plano.model": "anthropic/claude-sonnet-4-5",
            "plano.provider": "anthropic/claude-sonnet-4-5",
            "plano.routing": "preference",
            "plano.route": "creative_tasks",
            "plano.router.choice": "creative_tasks",
        }
        # The router span lies within Envoy's call span.
        assert call.span.start_time_unix_nano <= router.span.start_time_unix_nano
        assert router.span.end_time_unix_nano <= call.span.end_time_unix_nano + 5_000_000

        # The direct request's ext_proc call has no child: the server made no span for it.
        direct_calls = [s for s in calls.values() if s.parent_id == direct.span_id]
        assert len(direct_calls) == 1
        assert not [s for s in spans if s.parent_id == direct_calls[0].span_id]

        # No key in anything sent to the collector, nor in the spans as read.
        sent = b"".join(collector.raw)
        for key in KEYS.values():
            assert key.encode() not in sent
            assert all(key not in repr(s.span) for s in spans)
    finally:
        gateway.stop()
        collector.stop()


def test_without_tracing_nothing_is_rendered_or_sent(
    fakes: tuple[FakeOpenAI, FakeAnthropic], tmp_path: Path
) -> None:
    collector = FakeCollector().start()
    gateway = start_gateway(config(*fakes, ""), tmp_path, env=KEYS)
    try:
        send(gateway, "tr-off-direct", "openai/gpt-5.2", "hello")
        send(gateway, "tr-off-pref", None, POEM)
        envoy = rendered(gateway)
        assert "x-request-id" in envoy or "egress_traffic" in envoy  # it is the listener's
        for word in ("tracing", "opentelemetry", "plano_otlp_collector", "custom_tags"):
            assert word not in envoy
        time.sleep(2)
        assert collector.snapshot() == []
        assert collector.raw == []
    finally:
        gateway.stop()
        collector.stop()


def test_a_sampled_share_of_requests_is_traced_and_only_those_by_the_server(
    fakes: tuple[FakeOpenAI, FakeAnthropic], tmp_path: Path
) -> None:
    """At 10%, about one preference request in ten has Envoy's span, and the server makes a
    router span for exactly those (the others' traceparent says not sampled)."""
    collector = FakeCollector().start()
    tracing = (
        f"tracing:\n  random_sampling: 10\n  opentracing_grpc_endpoint: {collector.endpoint}\n"
    )
    gateway = start_gateway(config(*fakes, tracing), tmp_path, env=KEYS)
    try:
        with httpx.Client(timeout=15) as client:
            for i in range(100):
                answer = client.post(
                    gateway.url + "/v1/chat/completions",
                    json={"messages": [{"role": "user", "content": POEM}]},
                    headers={"x-request-id": f"tr-sampled-{i}"},
                )
                assert answer.status_code == 200, answer.text
        # Both exporters flush within 5 s; then nothing more arrives.
        time.sleep(7)
        spans = collector.snapshot()
        ingress = {s.trace_id for s in spans if s.span.name == INGRESS}
        routers = [s for s in spans if s.span.name == ROUTER_SPAN]
        # 100 requests at 10%: 10 expected (sd 3); 0 or more than 30 is a sampling bug.
        assert 1 <= len(ingress) <= 30, len(ingress)
        assert sorted(s.trace_id for s in routers) == sorted(ingress)
    finally:
        gateway.stop()
        collector.stop()
