"""Tracing (issue 13, part 5): Plano's ``tracing`` section, what Envoy is given for it (and
nothing without it), and the server's router span (tests/integration/test_tracing.py runs
it all through real Envoy and a fake collector)."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from plano_extproc.config import ConfigError, Tracing, load_config, parse_config
from plano_extproc.decide import Pending
from plano_extproc.envoy_config import render_bootstrap, render_yaml, validate_with_envoy
from plano_extproc.envoy_config.tracing import COLLECTOR_CLUSTER, SPAN_TAGS
from plano_extproc.extproc.processor import Processor
from plano_extproc.extproc.server import ExtProcService, TracedExtProcService
from plano_extproc.router.base import RouteChoice
from plano_extproc.wire import AUTH_KEY, METADATA_NAMESPACE
from tests.configs import TWO_PROVIDERS

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
BASE = (
    TWO_PROVIDERS
    + """    routing_preferences:
      - name: creative_tasks
        description: creative writing
"""
)
ENV = {"OPENAI_API_KEY": "sk-unit-openai", "ANTHROPIC_API_KEY": "sk-unit-anthropic"}
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def parse(tracing: str) -> Any:
    return parse_config(BASE + tracing, "t.yaml", ENV)


# --- the config ------------------------------------------------------------------------------


def test_plano_tracing_section_maps_to_a_collector_and_a_percentage() -> None:
    config = parse(
        "tracing:\n  random_sampling: 25\n  opentracing_grpc_endpoint: http://otel:4317\n"
        "  trace_arch_internal: true\n"
    )
    assert config.tracing == Tracing(host="otel", port=4317, sampling_percent=25.0)
    assert any("tracing.trace_arch_internal" in w for w in config.warnings)
    # host:port without a scheme is read as http; every request unless random_sampling says.
    assert parse("tracing:\n  opentracing_grpc_endpoint: c\n").tracing == Tracing("c", 4317)
    assert parse(
        "tracing:\n  random_sampling: 5\n  opentracing_grpc_endpoint: 127.0.0.1:14317\n"
    ).tracing == Tracing("127.0.0.1", 14317, 5.0)


@pytest.mark.parametrize(
    "tracing",
    [
        "",
        "tracing:\n  random_sampling: 0\n  opentracing_grpc_endpoint: http://c:4317\n",
        "tracing:\n  random_sampling: 100\n",
        "tracing:\n  trace_arch_internal: true\n",
    ],
)
def test_no_section_no_sampling_or_no_collector_is_no_tracing(tracing: str) -> None:
    """Without a collector named nothing is sent anywhere; the section is then named in the
    warning about Plano's keys this gateway ignores."""
    config = parse(tracing)
    assert config.tracing is None
    ignored = [w for w in config.warnings if "does not implement" in w]
    if tracing and "opentracing_grpc_endpoint" not in tracing:
        assert "tracing (line" in ignored[0], config.warnings
    else:
        # No section, or one naming a collector: the gateway implements it, no warning.
        assert not [w for w in ignored if "tracing (line" in w], config.warnings


@pytest.mark.parametrize(
    ("tracing", "message"),
    [
        (
            "tracing:\n  random_sampling: 101\n  opentracing_grpc_endpoint: c:1\n",
            "random_sampling: must be a percentage",
        ),
        (
            "tracing:\n  random_sampling: yes\n  opentracing_grpc_endpoint: c:1\n",
            "random_sampling: must be a percentage",
        ),
        (
            "tracing:\n  random_sampling: 1\n  opentracing_grpc_endpoint: https://c:4317\n",
            "TLS is not supported",
        ),
        (
            "tracing:\n  random_sampling: 1\n  opentracing_grpc_endpoint: http://c:4317/v1\n",
            "opentracing_grpc_endpoint: must be",
        ),
        (
            "tracing:\n  opentracing_grpc_endpoint: c:1\n  colour: red\n",
            "tracing.colour: unknown key",
        ),
    ],
)
def test_a_bad_tracing_section_is_refused_where_it_is(tracing: str, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse(tracing)
    assert message in str(raised.value)
    assert "t.yaml:" in str(raised.value)


# --- what Envoy is given ---------------------------------------------------------------------


def manager(boot: Any) -> dict[str, Any]:
    listeners = boot["static_resources"]["listeners"]
    (gateway,) = [x for x in listeners if x["name"] == "egress_traffic"]
    config: dict[str, Any] = gateway["filter_chains"][0]["filters"][0]["typed_config"]
    return config


def test_the_tracer_tags_each_span_with_one_decision_key_never_the_credential() -> None:
    config = parse(
        "tracing:\n  random_sampling: 30\n  opentracing_grpc_endpoint: http://127.0.0.1:4317\n"
    )
    boot: Any = render_bootstrap(config)
    tracing = manager(boot)["tracing"]
    # Every request reaches the tracer, whose sampler keeps 30%: a client's trace context
    # decides for its own requests (parent based), the trace id for the others.
    assert tracing["random_sampling"] == {"value": 100.0}
    parent_based = tracing["provider"]["typed_config"]["sampler"]
    assert parent_based["name"] == "envoy.tracers.opentelemetry.samplers.parent_based"
    ratio = parent_based["typed_config"]["wrapped_sampler"]
    assert ratio["name"] == "envoy.tracers.opentelemetry.samplers.trace_id_ratio_based"
    assert ratio["typed_config"]["sampling_percentage"] == {
        "numerator": 300_000,
        "denominator": "MILLION",
    }
    assert tracing["provider"]["name"] == "envoy.tracers.opentelemetry"
    assert tracing["provider"]["typed_config"]["grpc_service"]["envoy_grpc"] == {
        "cluster_name": COLLECTOR_CLUSTER
    }
    tags = {t["tag"]: t["metadata"] for t in tracing["custom_tags"]}
    assert set(tags) == set(SPAN_TAGS)
    for name, tag in tags.items():
        assert tag["kind"] == {"request": {}}
        key = tag["metadata_key"]
        assert key["key"] == METADATA_NAMESPACE
        # One key, never the namespace whole (it holds the provider's credential).
        assert key["path"] == [{"key": SPAN_TAGS[name]}]
        assert key["path"][0]["key"] != AUTH_KEY
    assert "auth" not in json.dumps(tracing)
    # Sampling is Envoy's own, not a client's x-request-id's bits.
    request_ids = manager(boot)["request_id_extension"]["typed_config"]
    assert request_ids["use_request_id_for_trace_sampling"] is False
    (collector,) = [
        c for c in boot["static_resources"]["clusters"] if c["name"] == COLLECTOR_CLUSTER
    ]
    assert collector["type"] == "STRICT_DNS"
    # Envoy exports in batches, not every fifth span.
    (layer,) = boot["layered_runtime"]["layers"]
    assert layer["static_layer"] == {"tracing.opentelemetry.min_flush_spans": 512.0}
    validate_with_envoy(render_yaml(config))


def test_without_tracing_nothing_is_rendered() -> None:
    boot: Any = render_bootstrap(parse(""))
    assert "tracing" not in manager(boot)
    assert "request_id_extension" not in manager(boot)
    assert "layered_runtime" not in boot
    assert COLLECTOR_CLUSTER not in json.dumps(boot)


def test_the_reference_bootstrap_is_rendered_as_before() -> None:
    """config/plano.yaml has no tracing: envoy/plano.envoy.yaml has none either."""
    config = load_config(ROOT / "config" / "plano.yaml", env={})
    assert config.tracing is None
    assert "tracing" not in (ROOT / "envoy" / "plano.envoy.yaml").read_text()


# --- the server ------------------------------------------------------------------------------


def test_the_server_loads_no_tracing_library_without_tracing() -> None:
    code = (
        "import sys, plano_extproc.cli, plano_extproc.extproc.server, plano_extproc.launcher\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry.sdk') "
        "or m.startswith('opentelemetry.exporter') or m == 'plano_extproc.ops.tracing'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.strip() == "[]"


class Spans:
    """Stands in for RouterTracer: keeps what it is asked to make."""

    def __init__(self) -> None:
        self.made: list[tuple[str, float, dict[str, Any]]] = []

    def router_span(self, traceparent: str, router_ms: float, attributes: Any) -> None:
        self.made.append((traceparent, router_ms, dict(attributes)))


def test_a_decision_stream_with_a_traceparent_gets_the_router_span() -> None:
    config = parse("tracing:\n  opentracing_grpc_endpoint: http://127.0.0.1:4317\n")
    spans = Spans()
    traced = TracedExtProcService(Processor(config), None, None, spans)  # type: ignore[arg-type]
    handler = traced.open_stream({"traceparent": TRACEPARENT})
    assert isinstance(handler, functools.partial)
    assert handler.keywords["trace"] == TRACEPARENT
    # No traceparent (Envoy does not trace), or one of a request it did not sample: the
    # plain handler.
    for metadata in ({}, {"traceparent": TRACEPARENT[:-2] + "00"}, {"traceparent": "junk"}):
        plain = traced.open_stream(metadata)
        assert "trace" not in getattr(plain, "keywords", {}), metadata
    # Without tracing the service is the plain one: no per-stream check at all.
    assert type(ExtProcService(Processor(config), None)) is ExtProcService

    processor = Processor(config)
    pending = processor.on_request_body(
        json.dumps({"messages": [{"role": "user", "content": "a poem"}]}).encode()
    )
    assert isinstance(pending, Pending)
    choice = RouteChoice("creative_tasks", 0.91234, {"creative_tasks": 0.91234, "other": 0.1})
    answer = processor.on_route_choice(pending, choice, 7.25)
    traced._trace_router(TRACEPARENT, 7.25, choice, answer)
    ((parent, router_ms, attributes),) = spans.made
    assert (parent, router_ms) == (TRACEPARENT, 7.25)
    assert attributes == {
        "plano.model": "anthropic/claude-sonnet-4-5",
        "plano.provider": "anthropic/claude-sonnet-4-5",
        "plano.routing": "preference",
        "plano.route": "creative_tasks",
        "plano.router_ms": 7.25,
        "plano.router.choice": "creative_tasks",
        "plano.router.confidence": 0.9123,
    }
    assert not any(key in str(attributes) for key in ENV.values())
