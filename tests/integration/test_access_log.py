"""The access log through real Envoy: one JSON line per request with the decision, and no
provider key anywhere an operator looks (issue 13, part 1).

One gateway (`plano-extproc up`, the access log on its default, Envoy's stdout) in front of
three fakes that each require their own key: an OpenAI one, a native Anthropic one, and an
OpenAI one that only a fail-over chain's fallback member reaches. Every kind of request goes
through it once, each with an x-request-id of its own: model-routed, alias, preference (the
embedded router), streamed, Anthropic's Messages (native, translated, streamed, a token
count), errors (the server's, Envoy's, a provider's) and a chain that fails over. Then:
each request has exactly one JSON line, with the exact decision, status and stream flag,
and the upstream timings where a provider answered; and no configured key's value is in
any line the gateway wrote (Envoy's and the server's, stdout and stderr), in its bootstrap,
in Envoy's stats or in any of its admin pages. Two small gateways more: --access-log PATH
(the lines appended to that file, none on stdout) and --access-log off.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from plano_extproc.envoy_config import EnvoyOptions
from plano_extproc.envoy_runner import admin_get
from tests.fake_providers import Failure, FakeAnthropic, FakeOpenAI

from .conftest import Gateway, listener_yaml, start_gateway

pytestmark = pytest.mark.integration

# Values no log line, stat or admin page may hold. Long and unlike anything else in a log.
KEYS = {
    "AL_OPENAI_KEY": "sk-al-openai-4c1f9e07d2b85a36",
    "AL_ANTHROPIC_KEY": "sk-ant-al-anthropic-9b3e51c8f0a2d674",
    "AL_FALLBACK_KEY": "sk-al-fallback-e27d0a94c61b3f58",
}
POEM = "Write a short poem about autumn leaves falling on a quiet lake."
ADMIN_PAGES = (
    "/stats",
    "/stats?format=json",
    "/stats/prometheus",
    "/config_dump",
    "/config_dump?include_eds",
    "/clusters",
    "/clusters?format=json",
    "/listeners",
    "/listeners?format=json",
    "/server_info",
    "/runtime",
    "/certs",
    "/memory",
)


@dataclass(frozen=True)
class Fakes:
    openai: FakeOpenAI
    anthropic: FakeAnthropic
    fallback: FakeOpenAI


@dataclass
class Running:
    gateway: Gateway
    fakes: Fakes
    admin: EnvoyOptions
    bootstrap: Path
    sent: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # request id, expected


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    fakes = Fakes(
        FakeOpenAI("al-openai", api_key=KEYS["AL_OPENAI_KEY"]).start(),
        FakeAnthropic("al-anthropic", api_key=KEYS["AL_ANTHROPIC_KEY"]).start(),
        FakeOpenAI("al-fallback", api_key=KEYS["AL_FALLBACK_KEY"]).start(),
    )
    config = (
        listener_yaml()
        + f"""llm_providers:
  - model: openai/gpt-5.2
    access_key: $AL_OPENAI_KEY
    base_url: {fakes.openai.base_url()}
    default: true
  - model: openai/gpt-5
    access_key: $AL_OPENAI_KEY
    base_url: {fakes.openai.base_url()}
    routing_preferences:
      - name: complex_reasoning
        description: deep analysis and complex problem solving
  - model: anthropic/claude-sonnet-4-5
    access_key: $AL_ANTHROPIC_KEY
    base_url: {fakes.anthropic.base_url()}
    routing_preferences:
      - name: creative_tasks
        description: creative writing and content generation
  - model: openai/gpt-p
    access_key: $AL_OPENAI_KEY
    base_url: {fakes.openai.base_url()}
    fallbacks: [openai/gpt-f]
  - model: openai/gpt-f
    access_key: $AL_FALLBACK_KEY
    base_url: {fakes.fallback.base_url()}
model_aliases:
  fast-model:
    target: gpt-5.2
"""
    )
    tmp = tmp_path_factory.mktemp("access-log")
    gateway = start_gateway(config, tmp, env=KEYS)
    try:
        started = re.search(rb"Envoy admin unix:(\S+), bootstrap (\S+)\)", gateway.log.read_bytes())
        assert started, gateway.log.read_text()
        admin = EnvoyOptions(admin_socket=started.group(1).decode())
        yield Running(gateway, fakes, admin, Path(started.group(2).decode()))
    finally:
        gateway.stop()
        for fake in (fakes.openai, fakes.anthropic, fakes.fallback):
            fake.stop()


# What every routed line has; a test's expectations add to it or replace it.
def routed(model: str, routing: str = "direct", **more: Any) -> dict[str, Any]:
    return {
        "model": model,
        "provider": model,
        "routing": routing,
        "route": None,
        "router_ms": None,
        "chain": None,
        "api": "openai",
        "stream": False,
        "status": 200,
        "method": "POST",
        "attempts": 1,
        "response_flags": "-",
        "details": "via_upstream",
        "served_model": model,
        **more,
    }


UNROUTED = {
    "model": None,
    "provider": None,
    "routing": None,
    "route": None,
    "router_ms": None,
    "chain": None,
    "api": None,
    "stream": None,
    "served_model": None,
    "attempts": 0,
    "upstream_host": None,
    "upstream_ttfb_ms": None,
}


def chat(model: str | None, stream: bool = False, text: str = "hello") -> dict[str, Any]:
    body: dict[str, Any] = {"messages": [{"role": "user", "content": text}]}
    if model is not None:
        body["model"] = model
    if stream:
        body["stream"] = True
    return body


def messages(model: str, stream: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": 64,
        "messages": [{"role": "user", "content": "hello"}],
    }
    if stream:
        body["stream"] = True
    return body


ANTHROPIC_HEADERS = {"anthropic-version": "2023-06-01", "x-api-key": "client-key-never-forwarded"}


def send(
    run: Running,
    expected: dict[str, Any],
    path: str,
    body: dict[str, Any] | None,
    headers: dict[str, str] | None = None,
    method: str = "POST",
) -> httpx.Response:
    request_id = f"al-{len(run.sent):02d}-{time.monotonic_ns()}"
    all_headers = {"x-request-id": request_id, "authorization": "Bearer client-key-never-fwd"}
    response = httpx.request(
        method,
        run.gateway.url + path,
        json=body,
        headers={**all_headers, **(headers or {})},
        timeout=15,
    )
    response.read()
    run.sent.append((request_id, {"path": path.split("?")[0], **expected}))
    return response


def test_traffic_of_every_kind(running: Running) -> None:
    """Sends it all (the next tests read what it left); each answer as the README says."""
    run, fakes = running, running.fakes
    oa_host = f"127.0.0.1:{fakes.openai.port}"
    an_host = f"127.0.0.1:{fakes.anthropic.port}"
    fb_host = f"127.0.0.1:{fakes.fallback.port}"
    chat_path, messages_path = "/v1/chat/completions", "/v1/messages"

    def upstream(host: str) -> dict[str, Any]:
        return {"upstream_host": host}

    ok = send(run, routed("openai/gpt-5.2", **upstream(oa_host)), chat_path, chat("openai/gpt-5.2"))
    assert ok.status_code == 200, ok.text
    alias = send(
        run, routed("openai/gpt-5.2", "alias", **upstream(oa_host)), chat_path, chat("fast-model")
    )
    assert alias.status_code == 200, alias.text
    # The router reads the poem and picks creative_tasks: an Anthropic upstream, translated.
    preference = send(
        run,
        routed(
            "anthropic/claude-sonnet-4-5",
            "preference",
            route="creative_tasks",
            router_ms="number",
            **upstream(an_host),
        ),
        chat_path,
        chat(None, text=POEM),
    )
    assert preference.status_code == 200, preference.text
    assert preference.headers["x-plano-route"] == "creative_tasks"
    streamed = send(
        run,
        routed("openai/gpt-5.2", stream=True, **upstream(oa_host)),
        chat_path,
        chat("openai/gpt-5.2", stream=True),
    )
    assert streamed.status_code == 200 and "data: [DONE]" in streamed.text, streamed.text
    native = send(
        run,
        routed("anthropic/claude-sonnet-4-5", api="anthropic", **upstream(an_host)),
        messages_path,
        messages("anthropic/claude-sonnet-4-5"),
        ANTHROPIC_HEADERS,
    )
    assert native.status_code == 200, native.text
    translated = send(
        run,
        routed("openai/gpt-5.2", api="anthropic", stream=True, **upstream(oa_host)),
        messages_path,
        messages("openai/gpt-5.2", stream=True),
        ANTHROPIC_HEADERS,
    )
    assert translated.status_code == 200 and "message_stop" in translated.text, translated.text
    counted = send(
        run,
        routed("anthropic/claude-sonnet-4-5", api="anthropic-count-tokens", **upstream(an_host)),
        messages_path + "/count_tokens",
        messages("anthropic/claude-sonnet-4-5"),
        ANTHROPIC_HEADERS,
    )
    assert counted.status_code == 200, counted.text
    # Errors: the server's (no such model), Envoy's own (a wrong method), a provider's.
    unknown = send(
        run,
        {**UNROUTED, "status": 400, "details": "plano_extproc_reply"},
        chat_path,
        chat("no-such-model"),
    )
    assert unknown.status_code == 400, unknown.text
    wrong_method = send(
        run, {**UNROUTED, "status": 405, "method": "GET"}, chat_path, None, method="GET"
    )
    assert wrong_method.status_code == 405, wrong_method.text
    fakes.openai.fail(Failure.error(500))
    failed = send(
        run,
        routed("openai/gpt-5.2", status=500, **upstream(oa_host)),
        chat_path,
        chat("openai/gpt-5.2"),
    )
    assert failed.status_code == 500, failed.text
    # A chain that fails over: the primary answers 503, its fallback member answers.
    fakes.openai.fail(Failure.error(503))
    chained = send(
        run,
        routed(
            "openai/gpt-p",
            chain="chain",
            attempts=2,
            served_model="openai/gpt-f",
            **upstream(fb_host),
        ),
        chat_path,
        chat("openai/gpt-p"),
    )
    assert chained.status_code == 200, chained.text
    assert chained.headers["x-plano-model"] == "openai/gpt-f"
    assert chained.headers["x-plano-attempts"] == "2"
    # Every fake got its own key: the keys were in flight, so their absence below means
    # something.
    for fake, name in (
        (fakes.openai, "AL_OPENAI_KEY"),
        (fakes.anthropic, "AL_ANTHROPIC_KEY"),
        (fakes.fallback, "AL_FALLBACK_KEY"),
    ):
        assert fake.received, fake.name
        for got in fake.received:
            credential = got.headers.get("authorization") or got.headers.get("x-api-key")
            assert KEYS[name] in (credential or ""), (fake.name, credential)


def access_lines(run: Running, count: int) -> list[dict[str, Any]]:
    """The JSON lines of the gateway's output, once there are ``count`` (Envoy writes its
    access log out each second)."""
    deadline = time.monotonic() + 10
    while True:
        text = run.gateway.log.read_text(errors="replace")
        lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
        if len(lines) >= count or time.monotonic() > deadline:
            return lines
        time.sleep(0.2)


def test_one_line_per_request_with_the_decision(running: Running) -> None:
    assert len(running.sent) == 11, "test_traffic_of_every_kind runs first"
    lines = access_lines(running, len(running.sent))
    assert len(lines) == len(running.sent), lines
    by_id: dict[str, list[dict[str, Any]]] = {}
    for line in lines:
        by_id.setdefault(line["request_id"], []).append(line)
    for request_id, expected in running.sent:
        (line,) = by_id.pop(request_id)  # exactly one line, with the client's request id
        for name, value in expected.items():
            if name == "chain":
                # The chain's id (config.Chain.id) when one ran.
                assert (line[name] is not None) == (value is not None), (request_id, line)
            elif name == "router_ms" and value == "number":
                assert isinstance(line[name], (int, float)) and line[name] > 0, line
            elif name == "path" and expected.get("model") is not None:
                assert line[name].startswith("/"), line  # the provider's path (README)
            else:
                assert line[name] == value, (request_id, name, line)
        # Timings: typed numbers, and the upstream's wherever a provider answered.
        assert isinstance(line["duration_ms"], int) and line["duration_ms"] >= 0, line
        if expected.get("upstream_host"):
            assert isinstance(line["upstream_ttfb_ms"], int), line
            assert isinstance(line["upstream_ms"], int), line
            assert line["upstream_ms"] >= line["upstream_ttfb_ms"] >= 0, line
            assert line["upstream_cluster"], line
            assert line["bytes_received"] > 0 and line["bytes_sent"] > 0, line
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["start_time"]), line
    assert not by_id, by_id


def test_no_key_in_logs_stats_or_admin(running: Running) -> None:
    assert running.sent, "test_traffic_of_every_kind runs first"
    access_lines(running, len(running.sent))  # everything written out
    places: dict[str, bytes] = {
        "gateway output": running.gateway.log.read_bytes(),
        "bootstrap": running.bootstrap.read_bytes(),
    }
    for page in ADMIN_PAGES:
        status, body = admin_get(running.admin, page, timeout=5)
        assert status == 200, (page, body[:200])
        places[page] = body
    # The admin pages are what they claim (a bug that answers empty would pass otherwise).
    assert b"http.egress_traffic.downstream_rq_completed" in places["/stats"]
    assert b"envoy_cluster_upstream_rq" in places["/stats/prometheus"]
    assert b"provider_" in places["/clusters"] and b"egress_traffic" in places["/listeners"]
    for where, text in places.items():
        for name, key in KEYS.items():
            assert key.encode() not in text, f"{name}'s value in {where}"
            # Nor a recognisable piece of it (a log that cut it short, or escaped it).
            assert key[-16:].encode() not in text, f"part of {name} in {where}"


@pytest.mark.parametrize("where", ["file", "off"])
def test_the_log_goes_to_a_file_or_nowhere(tmp_path: Path, where: str) -> None:
    """--access-log PATH: the lines go to that file (appended to), none to stdout; off: none
    anywhere."""
    with FakeOpenAI("al-small", api_key=KEYS["AL_OPENAI_KEY"]) as fake:
        config = f"""
listeners:
  egress_traffic:
    address: 127.0.0.1
    port: {{port}}
llm_providers:
  - model: openai/gpt-5.2
    access_key: $AL_OPENAI_KEY
    base_url: {fake.base_url()}
"""
        path = tmp_path / "logs" / "access.log"
        path.parent.mkdir()
        path.write_text("an earlier line\n")
        flag = str(path) if where == "file" else "off"
        gateway = start_gateway(config, tmp_path, env=KEYS, extra_args=("--access-log", flag))
        try:
            ids = [f"al-file-{i}" for i in range(3)]
            for request_id in ids:
                response = httpx.post(
                    gateway.url + "/v1/chat/completions",
                    json=chat("openai/gpt-5.2"),
                    headers={"x-request-id": request_id},
                    timeout=10,
                )
                assert response.status_code == 200, response.text
            time.sleep(2.5)  # two of Envoy's flushes (one a second)
        finally:
            gateway.stop()
    stdout = gateway.log.read_text()
    assert not [line for line in stdout.splitlines() if line.startswith("{")], stdout
    first, *lines = path.read_text().splitlines()
    assert first == "an earlier line"  # appended, not truncated
    if where == "off":
        assert lines == []
    else:
        assert [json.loads(line)["request_id"] for line in lines] == ids
        assert all(json.loads(line)["model"] == "openai/gpt-5.2" for line in lines)
    assert KEYS["AL_OPENAI_KEY"] not in path.read_text() + stdout
