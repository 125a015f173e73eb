"""The server's metrics (ops/metrics.py), its scrape endpoint (ops/endpoint.py) and Envoy's
per-request stats (envoy_config/metrics.py): what is counted, and that no label value can
come from a client."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
from pathlib import Path

import pytest
import yaml
from prometheus_client import REGISTRY

from plano_extproc.config import Config, load_config
from plano_extproc.envoy_config import EnvoyOptions, render_bootstrap, render_yaml
from plano_extproc.envoy_config.binary import validate_with_envoy
from plano_extproc.ops import endpoint, metrics
from plano_extproc.resolve import LOW_CONFIDENCE, NO_ROUTE, unplaced
from plano_extproc.router.base import OTHER, RouteChoice
from tests.fakes import free_port

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def choice(route: str, confidence: float) -> RouteChoice:
    return RouteChoice(route, confidence, {route: confidence})


@pytest.fixture(scope="module")
def config() -> Config:
    # Set only while loading: a key left in os.environ would reach later tests' children.
    with pytest.MonkeyPatch.context() as patch:
        for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
            patch.setenv(name, os.environ.get(name, "sk-unit"))
        return load_config(str(ROOT / "config" / "plano.yaml"))


def test_router_answers_are_counted_by_route_or_reason(config: Config) -> None:
    config = dataclasses.replace(
        config, router=dataclasses.replace(config.router, min_confidence=0.5)
    )
    floor = config.router.min_confidence
    routes = [r.name for r in config.routes]
    before = {r: sample("plano_router_decisions_total", route=r) for r in routes}
    fallbacks = {
        r: sample("plano_router_fallbacks_total", reason=r) for r in metrics.FALLBACK_REASONS
    }
    metrics.count_router_answer(choice(routes[0], 1.0), config)
    metrics.count_router_answer(choice(routes[0], 1.0), config)
    metrics.count_router_answer(choice(OTHER, 1.0), config)
    metrics.count_router_answer(choice(routes[1], floor / 2), config)
    # A route the config does not have (a router's mistake) is no label: `other`.
    metrics.count_router_answer(choice("made-up-route-5e1", 1.0), config)
    metrics.count_router_answer(None, config)  # counted by the router service, not here
    assert sample("plano_router_decisions_total", route=routes[0]) == before[routes[0]] + 2
    assert sample("plano_router_decisions_total", route=routes[1]) == before[routes[1]]
    assert sample("plano_router_fallbacks_total", reason="other") == fallbacks["other"] + 2
    assert (
        sample("plano_router_fallbacks_total", reason="low_confidence")
        == fallbacks["low_confidence"] + 1
    )
    assert sample("plano_router_fallbacks_total", reason="timeout") == fallbacks["timeout"]
    assert "made-up-route-5e1" not in metrics.exposition().decode()


def test_unplaced_says_why_the_router_placed_a_request_on_no_route(config: Config) -> None:
    config = dataclasses.replace(
        config, router=dataclasses.replace(config.router, min_confidence=0.5)
    )
    route = config.routes[0].name
    assert unplaced(choice(OTHER, 0.9), config) == NO_ROUTE == "other"
    assert unplaced(choice(route, 0.4), config) == LOW_CONFIDENCE == "low_confidence"
    assert unplaced(choice(route, 0.5), config) is None
    # A name the config has no route for (a router model's answer) places nothing.
    assert unplaced(choice("made-up-route", 0.9), config) == "other"


def test_router_service_counts_timeouts_failures_and_time() -> None:
    from plano_extproc.router.service import RouterService

    class Slow:
        routes = ()

        def choose(self, messages: object) -> RouteChoice:
            import time

            time.sleep(0.2)
            return choice("code", 1.0)

    class Broken:
        routes = ()

        def choose(self, messages: object) -> RouteChoice:
            raise RuntimeError("boom")

    timeouts = sample("plano_router_fallbacks_total", reason="timeout")
    failures = sample("plano_router_fallbacks_total", reason="failure")
    timed = sample("plano_router_decision_seconds_count", cached="false")
    messages = [{"role": "user", "content": "hi"}]
    for router, timeout in ((Slow(), 0.01), (Broken(), 1.0)):
        service = RouterService(router, timeout)  # type: ignore[arg-type]
        assert asyncio.run(service.choose(messages)) is None
        service.close()
    assert sample("plano_router_fallbacks_total", reason="timeout") == timeouts + 1
    assert sample("plano_router_fallbacks_total", reason="failure") == failures + 1
    assert sample("plano_router_decision_seconds_count", cached="false") == timed + 2


def test_every_label_set_is_fixed_but_routes() -> None:
    """The server's labels take only this module's constants (and configured route names)."""
    text = metrics.exposition().decode()
    for line in text.splitlines():
        if line.startswith(("plano_router_fallbacks_total{", "plano_extproc_errors_total{")):
            value = line.split('"')[1]
            assert value in metrics.FALLBACK_REASONS + metrics.ERROR_KINDS, line


def test_the_endpoint_serves_get_metrics_only() -> None:
    async def scenario() -> list[bytes]:
        server = await endpoint.start(f"127.0.0.1:{free_port()}", None)
        port = server.sockets[0].getsockname()[1]
        answers = []
        for request in (
            b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET /metrics?x=1 HTTP/1.1\r\nHost: x\r\n\r\n",
            b"POST /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET /quitquitquit HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET /stats/prometheus HTTP/1.1\r\nHost: x\r\n\r\n",
        ):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request)
            answers.append(await reader.read())
            writer.close()
        server.close()
        return answers

    answers = asyncio.run(scenario())
    assert [a.split(b" ", 2)[1] for a in answers] == [b"200", b"200", b"404", b"404", b"404"]
    assert b"plano_router_fallbacks_total" in answers[0]


def test_the_endpoint_serves_a_few_connections_at_once() -> None:
    async def scenario() -> tuple[bytes, bytes]:
        server = await endpoint.start(f"127.0.0.1:{free_port()}", None)
        port = server.sockets[0].getsockname()[1]
        idle = [
            await asyncio.open_connection("127.0.0.1", port) for _ in range(endpoint.MAX_CLIENTS)
        ]
        await asyncio.sleep(0.1)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        try:  # closed at once, unanswered (a reset: the request was not read)
            refused = await asyncio.wait_for(reader.read(), 5)
        except ConnectionResetError:
            refused = b""
        for _, idle_writer in idle:
            idle_writer.close()
        await asyncio.sleep(0.1)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        served = await asyncio.wait_for(reader.read(), 5)
        server.close()
        return refused, served

    refused, served = asyncio.run(scenario())
    assert refused == b""
    assert served.startswith(b"HTTP/1.1 200")


def test_envoy_stats_missing_admin_leaves_the_servers_metrics(tmp_path: Path) -> None:
    async def scenario() -> bytes | None:
        return await endpoint.envoy_stats(str(tmp_path / "no-such.sock"), timeout=0.5)

    assert asyncio.run(scenario()) is None


def _stats_logger(rendered: dict[str, object]) -> dict[str, object] | None:
    text = json.dumps(rendered)
    if "envoy.access_loggers.stats" not in text:
        return None
    listeners = rendered["static_resources"]["listeners"]  # type: ignore[index]
    manager = listeners[0]["filter_chains"][0]["filters"][0]["typed_config"]
    found = [
        log for log in manager.get("access_log", []) if log["name"] == "envoy.access_loggers.stats"
    ]
    return {"loggers": found}


def test_request_stats_are_off_unless_asked(config: Config) -> None:
    assert _stats_logger(render_bootstrap(config)) is None
    logger = _stats_logger(render_bootstrap(config, EnvoyOptions(decision_stats=True)))
    assert logger is not None
    formats = json.dumps(logger)
    # The decision's entry (config-bounded), never the model a client chose.
    assert "%DYNAMIC_METADATA(plano:provider)%" in formats
    assert "plano:model)" not in formats and "plano:model_id" not in formats
    # No request header, path or body text is read into a tag.
    for operator in ("%REQ(", "%PATH", "%REQUEST_HEADER", "%DOWNSTREAM_REMOTE"):
        assert operator not in formats
    # The key's metadata is never read.
    assert "plano:auth" not in formats


def test_rendered_with_request_stats_passes_envoy_validate(config: Config) -> None:
    text = render_yaml(config, EnvoyOptions(decision_stats=True))
    validate_with_envoy(text)
    assert yaml.safe_load(text)


def test_token_counts_only_when_asked(config: Config) -> None:
    without = json.dumps(render_bootstrap(config, EnvoyOptions(decision_stats=True)))
    assert "json_to_metadata" not in without and "plano_usage" not in without
    with_tokens = json.dumps(
        render_bootstrap(config, EnvoyOptions(decision_stats=True, token_stats=True))
    )
    assert "envoy.extensions.filters.http.json_to_metadata.v3.JsonToMetadata" in with_tokens
    assert "%DYNAMIC_METADATA(plano_usage:input_tokens)%" in with_tokens
    # Alone, the token switch does nothing: the counters are the request stats'.
    alone = json.dumps(render_bootstrap(config, EnvoyOptions(token_stats=True)))
    assert "json_to_metadata" not in alone
    validate_with_envoy(render_yaml(config, EnvoyOptions(decision_stats=True, token_stats=True)))
